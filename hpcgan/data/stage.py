"""Node-local staging (``data.stage``, docs/data.md "Node-local staging"): one verified copy of
the dataset per node, replaced when the source changes.

One process per node (the session picks local rank 0) calls :func:`stage_file`; it knows
nothing of ranks. Under a lock file in the staging directory it

- removes temporary files that a killed copy left behind;
- keeps the copy when its stamp (a small JSON file beside it) names the source as it is now
  (path, size, mtime and a digest of the source's per-chunk CRC-32 table) and the copy as it
  is now (inode, size, mtime): a changed source, or a truncated or replaced copy, is copied
  again;
- otherwise copies the file under a temporary name, checks every chunk of the copy against
  the source's CRC-32 table (``/images_crc32``, and ``labels_crc32``; a file without checksums
  is compared byte for byte by CRC-32), and renames it into place (hpcgan.files), then writes
  the stamp.

A reader therefore never sees a half copy, and concurrent jobs on one node take turns (the
second finds the first's fresh copy). The copy's name carries a digest of the source's
absolute path, so two datasets of one name never overwrite each other. Every failure is a
UserError of one line.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import socket
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from hpcgan.data import conditions
from hpcgan.data.chunks import chunk_crc32s, chunk_span
from hpcgan.data.format import (
    CHECKSUMS,
    PathLike,
    block_samples,
    blocks,
    labels_crc32,
    read_info,
)
from hpcgan.errors import UserError
from hpcgan.files import atomic_write_text, replace_durably

# How long a copier waits for another job on this node that holds the lock (copying a large
# dataset can take minutes; a holder that dies releases the lock at once).
LOCK_WAIT_S = 1800.0
_POLL_S = 0.2
_BYTES_BLOCK = 8 << 20


@dataclass(frozen=True)
class Staged:
    """Where this node's copy is, and what it took to make it."""

    path: Path
    copied: bool  # False: a fresh copy was already there
    seconds: float
    nbytes: int


def stage_dir(setting: str) -> Path:
    """``data.stage`` with ``~`` and environment variables expanded on this node (node-local
    scratch is often ``$TMPDIR`` or ``/local/$SLURM_JOB_ID``)."""
    expanded = os.path.expanduser(os.path.expandvars(setting))
    if "$" in expanded:
        raise UserError(f"data.stage={setting} names an environment variable that is not set")
    if not os.path.isabs(expanded):
        raise UserError(
            f"data.stage={setting} is a relative path; give node-local storage as an absolute "
            "path (e.g. /tmp/hpcgan or $TMPDIR)"
        )
    return Path(expanded)


def staged_path(source: PathLike, directory: Path) -> Path:
    """The copy of ``source`` in ``directory``: its name plus a digest of its absolute path."""
    src = Path(os.path.abspath(source))
    digest = hashlib.sha1(str(src).encode()).hexdigest()[:8]
    return directory / f"{src.stem}-{digest}{src.suffix}"


def stamp_path(copy: Path) -> Path:
    return copy.with_name(f".{copy.name}.stage.json")


def lock_path(copy: Path) -> Path:
    return copy.with_name(f".{copy.name}.lock")


def stage_file(source: PathLike, directory: Path, lock_wait_s: float = LOCK_WAIT_S) -> Staged:
    """Make ``directory`` hold a verified copy of ``source``, unless a fresh one is there."""
    start = time.monotonic()
    source = Path(source)
    read_info(source)  # a bad source is reported as such, not as a staging failure
    identity = source_identity(source)
    copy = staged_path(source, directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with _locked(lock_path(copy), lock_wait_s):
            _remove_orphans(copy)
            if _is_fresh(copy, identity):
                return Staged(copy, False, time.monotonic() - start, identity["bytes"])
            stamp_path(copy).unlink(missing_ok=True)
            _check_space(directory, copy, identity["bytes"])
            _copy_verified(source, copy, identity)
            stamp = {"source": identity, "copy": _file_identity(copy)}
            atomic_write_text(stamp_path(copy), json.dumps(stamp, indent=1) + "\n")
    except OSError as e:
        raise UserError(_describe_os_error(e, directory)) from None
    return Staged(copy, True, time.monotonic() - start, identity["bytes"])


def source_identity(source: Path) -> dict:
    """What names the source's contents: path, size, mtime, and a digest of its checksums (so
    a file replaced by another of the same size and time is still told apart)."""
    stat = source.stat()
    return {
        "path": os.path.abspath(source),
        "bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "checksums": _checksum_digest(source),
    }


def _checksum_digest(path: Path) -> str | None:
    """SHA-1 of the file's stored CRC-32 table and labels and conditions CRCs (None: written
    without them)."""
    with h5py.File(path, "r", locking=False) as f:
        table = f.get(CHECKSUMS)
        if table is None:
            return None
        h = hashlib.sha1(np.ascontiguousarray(table[()], dtype="<u4").tobytes())
        h.update(str(f.attrs.get("labels_crc32")).encode())
        if conditions.CHECKSUM in f.attrs:  # (files without conditions keep their digest)
            h.update(str(f.attrs[conditions.CHECKSUM]).encode())
        return h.hexdigest()


def _file_identity(path: Path) -> dict:
    stat = path.stat()
    return {"inode": stat.st_ino, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _is_fresh(copy: Path, identity: dict) -> bool:
    try:
        stamp = json.loads(stamp_path(copy).read_text())
        return stamp["source"] == identity and stamp["copy"] == _file_identity(copy)
    except (OSError, ValueError, KeyError, TypeError):
        return False  # no copy, no stamp, or a damaged stamp: copy again


@contextmanager
def _locked(path: Path, wait_s: float) -> Iterator[None]:
    """An exclusive flock on ``path`` (released by the kernel if this process dies)."""
    with open(path, "a") as f:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise UserError(
                        f"data.stage: another process has held {path} for {wait_s:.0f} s"
                    ) from None
                time.sleep(_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _temp_name(copy: Path) -> Path:
    """Hidden, next to the copy (an atomic rename), unique per host and process."""
    return copy.with_name(f".{copy.name}.tmp-{socket.gethostname()}-{os.getpid()}")


def _remove_orphans(copy: Path) -> None:
    """Temporary copies of this host's processes that died mid-copy: every copier holds the
    lock while its temporary file exists, so under the lock any such file is an orphan. Other
    hosts' files are left alone, in case the directory is shared after all."""
    for tmp in copy.parent.glob(f".{copy.name}.tmp-{socket.gethostname()}-*"):
        tmp.unlink(missing_ok=True)


def _check_space(directory: Path, copy: Path, nbytes: int) -> None:
    old = copy.stat().st_size if copy.exists() else 0  # freed once the new copy replaces it
    free = shutil.disk_usage(directory).free
    if free + old < nbytes:
        raise UserError(
            f"data.stage={directory}: no space for the dataset ({_mib(nbytes)} needed, "
            f"{_mib(free)} free)"
        )


def _copy_verified(source: Path, copy: Path, identity: dict) -> None:
    """Copy under a temporary name, check it, rename it into place; nothing is left under the
    final name on any failure."""
    tmp = _temp_name(copy)
    try:
        shutil.copyfile(source, tmp)
        stat = source.stat()
        if (stat.st_size, stat.st_mtime_ns) != (identity["bytes"], identity["mtime_ns"]):
            raise UserError(f"data.stage: {source} changed while it was being copied")
        bad = check_copy(source, tmp, identity["checksums"] is not None)
        if bad:
            where = f"/{bad}" if bad in ("labels", conditions.DATASET) else "/images"
            raise UserError(
                f"data.stage: {where} of the copy of {source} in {copy.parent} fails its "
                f"CRC-32 check ({bad}); the source or the node-local disk is damaged "
                f"(`python -m data_prep verify {source}` tells which)"
            )
        shutil.copystat(source, tmp)  # the source's times: the copy reads as the same file
        replace_durably(tmp, copy)
    finally:
        tmp.unlink(missing_ok=True)


def check_copy(source: Path, copy: Path, has_checksums: bool) -> str | None:
    """What fails in ``copy`` (None: nothing): every chunk of /images against the source's
    CRC-32 table ("K chunk(s), first samples A..B"), /labels and /conditions against their
    CRCs ("labels", "conditions"); without checksums, the whole file's CRC-32."""
    if not has_checksums:
        return None if _file_crc(source) == _file_crc(copy) else "file contents differ"
    with h5py.File(source, "r", locking=False) as f:
        expected = f[CHECKSUMS][()]
        labels = f.attrs.get("labels_crc32")
        conditions_crc = f.attrs.get(conditions.CHECKSUM)
    info = read_info(copy)
    chunk = info.chunk_samples
    step = block_samples(chunk, info.sample_nbytes)
    with h5py.File(copy, "r", locking=False) as f:
        images = f["images"]
        found = np.concatenate(
            [chunk_crc32s(images[start:stop], chunk) for start, stop in blocks(info.n, step)]
        )
        if labels is not None and "labels" in f and int(labels) != labels_crc32(f["labels"]):
            return "labels"
        if conditions_crc is not None and (
            conditions.DATASET not in f
            or int(conditions_crc) != conditions.crc32(f[conditions.DATASET])
        ):
            return conditions.DATASET
    if found.shape != expected.shape:
        return f"{len(found)} chunks, the source's table has {len(expected)}"
    bad = np.flatnonzero(found != expected)
    if len(bad):
        return f"{len(bad)} chunk(s), first {chunk_span(int(bad[0]), chunk, info.n)}"
    return None


def _file_crc(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(_BYTES_BLOCK):
            crc = zlib.crc32(block, crc)
    return crc


def _describe_os_error(e: OSError, directory: Path) -> str:
    if e.errno == errno.ENOSPC:
        return f"data.stage={directory}: no space left on the device while copying the dataset"
    where = f" ({e.filename})" if e.filename else ""
    return f"data.stage={directory} is not usable: {e.strerror or e}{where}"


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MiB"
