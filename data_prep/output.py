"""The output file of a data_prep command: checked before any work is done."""

from __future__ import annotations

from pathlib import Path

from hpcgan.errors import UserError
from hpcgan.files import temp_name


def check_output(out: str, overwrite: bool) -> Path:
    """Fail early if the output cannot or must not be written (the work may take hours)."""
    path = Path(out)
    if path.is_dir():
        raise UserError(f"{path} is a directory; --out needs a file name")
    if path.exists() and not overwrite:
        raise UserError(f"{path} exists; pass --overwrite to replace it")
    if not path.parent.is_dir():
        raise UserError(f"{path}: directory {path.parent} does not exist")
    probe = temp_name(path)  # the writer's temporary name
    try:
        probe.touch()
    except OSError as err:
        raise UserError(f"{path}: cannot write in {path.parent} ({err.strerror})") from err
    finally:
        probe.unlink(missing_ok=True)
    return path
