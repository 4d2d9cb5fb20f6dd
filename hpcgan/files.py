"""Durable file replacement: the one way hpcgan writes a file that someone may be reading.

A file is written under a temporary name next to its final one, flushed to disk (fsync), and
renamed over the final name; the directory is then fsynced so the rename itself survives a
crash. A reader therefore sees the old file or the complete new one, never a half-written one,
and a failure leaves what the user had untouched (docs/design.md, section 6).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def temp_name(path: Path) -> Path:
    """The temporary name ``path`` is written under: hidden, in the same directory (so the
    rename is atomic), unique per process."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def fsync_path(path: Path) -> None:
    """Flush a file's data to disk."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def replace_durably(tmp: Path, final: Path, flushed: bool = False) -> None:
    """fsync ``tmp`` (unless ``flushed``), rename it onto ``final``, fsync the directory."""
    if not flushed:
        fsync_path(tmp)
    os.replace(tmp, final)
    dir_fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def atomic_write(path: Path | str, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` to fill a temporary file, then put it in place durably; on any
    failure the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        write(tmp)
        replace_durably(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: Path | str, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))
