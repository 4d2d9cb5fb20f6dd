"""Durable file replacement: the one way hpcgan writes a file that someone may be reading.

A file is written under a temporary name next to its final one, flushed to disk (fsync), and
renamed over the final name; the directory is then fsynced so the rename itself survives a
crash. A reader therefore sees the old file or the complete new one, never a half-written one,
and a failure leaves what the user had untouched (docs/design.md, section 6).

A write that fails for a reason the user can fix (a full file system, a quota, a read-only or
protected directory) is a :class:`WriteFailed`: one line naming the file and the cause, exit 2.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from hpcgan.errors import UserError

T = TypeVar("T")

# What the user can fix: free space or quota, make the directory writable, or choose another.
FIXABLE = frozenset(
    (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG)
)


class WriteFailed(UserError):
    """A file that could not be written for a reason in FIXABLE (exit 2)."""


def fixable_cause(error: BaseException) -> OSError | None:
    """The OSError in FIXABLE that ``error`` is or arose from (a writer may raise its own
    error while the disk-full one is being handled: torch.save's zip writer does)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in FIXABLE:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


@contextmanager
def writing(path: Path | str) -> Iterator[None]:
    """Writes of ``path`` inside: an error from a cause in FIXABLE becomes a WriteFailed naming
    ``path`` (not a temporary name) and the cause; any other error passes unchanged (exit 1)."""
    try:
        yield
    except WriteFailed:
        raise
    except Exception as e:
        cause = fixable_cause(e)
        if cause is None:
            raise
        why = f"{os.strerror(cause.errno)} ({errno.errorcode[cause.errno]})"
        raise WriteFailed(f"cannot write {path}: {why}") from None


class WriteGuard:
    """Writes of one rank that must not raise where they happen: rank 0 writes the run
    directory while the other ranks go on to the next collective, so an error raised there
    would leave them waiting. The first WriteFailed is kept in ``failed``, later writes are
    skipped, and the ranks agree on it at their next common point (hpcgan.loop)."""

    def __init__(self) -> None:
        self.failed: WriteFailed | None = None

    def attempt(self, write: Callable[..., T], *args: Any) -> T | None:
        """``write(*args)``, unless a write failed already; a WriteFailed is kept, not raised."""
        if self.failed is not None:
            return None
        try:
            return write(*args)
        except WriteFailed as e:
            self.failed = e
            return None


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
    failure the temporary file is removed and ``path`` is left as it was (a full disk or a
    read-only directory: WriteFailed)."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        with writing(path):
            write(tmp)
            replace_durably(tmp, path)
    finally:
        with suppress(OSError):  # gone (renamed, never made); else the first error tells why
            tmp.unlink()
    return path


def atomic_write_file(path: Path | str, write: Callable[[BinaryIO], object]) -> Path:
    """:func:`atomic_write` through an open binary file, ``write(f)``: for writers that, given
    a path, report a full disk only in their own words (torch.save: "iostream error")."""

    def fill(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            write(f)

    return atomic_write(path, fill)


def atomic_write_text(path: Path | str, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))
