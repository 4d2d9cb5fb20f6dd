"""Input files that cannot be read are bad input: one line naming the file, exit 2."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from hpcgan.errors import UserError, one_line


@contextmanager
def reading(path: object) -> Iterator[None]:
    """Turn an OSError while reading the user's file `path` into a UserError naming it."""
    try:
        yield
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror or one_line(err)})") from err
