"""The output file of a data_prep command: checked before any work is done."""

from __future__ import annotations

import os
from pathlib import Path


def check_output(out: str, overwrite: bool) -> Path:
    """Fail early if the output cannot or must not be written (the work may take hours)."""
    path = Path(out)
    if path.is_dir():
        raise ValueError(f"{path} is a directory; --out needs a file name")
    if path.exists() and not overwrite:
        raise ValueError(f"{path} exists; pass --overwrite to replace it")
    if not path.parent.is_dir():
        raise ValueError(f"{path}: directory {path.parent} does not exist")
    probe = path.with_name(f".{path.name}.tmp-{os.getpid()}")  # the writer's temporary name
    try:
        probe.touch()
    except OSError as err:
        raise ValueError(f"{path}: cannot write in {path.parent} ({err.strerror})") from err
    finally:
        probe.unlink(missing_ok=True)
    return path
