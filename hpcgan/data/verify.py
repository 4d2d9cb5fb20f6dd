"""Full verification of a schema-1 file: every value read and compared with the stored
checksums and statistics (of /images, /labels and /conditions).

`hpcgan.data.format.read_info` checks the metadata only; this catches what it cannot see
without reading the data: NaN/Inf in fields, files modified or damaged after writing.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np

from hpcgan.data import conditions
from hpcgan.data.chunks import ChunkTable, first_nonfinite
from hpcgan.data.format import (
    CHANNEL_KEYS,
    CHECKSUMS,
    STAT_KEYS,
    PathLike,
    SchemaError,
    block_samples,
    blocks,
    labels_crc32,
    read_info,
    show,
)
from hpcgan.errors import one_line

# Stored vs recomputed statistics: far above float64 rounding, far below real corruption.
_STATS_RTOL = 1e-5


def scan(path: PathLike, block: int | None = None) -> dict:
    """Read every value of /images and check it against the stored checksums and statistics.

    The verify command runs it. `block` is the number of samples per read (default: whole
    chunks, about 4 MiB); it is rounded up to whole chunks. Returns a summary of the file with
    the recomputed statistics.
    """
    info = read_info(path)
    path = Path(path)
    if block is not None and block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    chunk = info.chunk_samples
    step = -(-block // chunk) * chunk if block else block_samples(chunk, info.sample_nbytes)
    tables = []
    try:
        with h5py.File(path, "r", locking=False) as f, ThreadPoolExecutor(1) as helper:
            images = f["images"]
            for start, stop in blocks(info.n, step):
                values = images[start:stop]  # [B, C, *S]
                table = ChunkTable.of(values, chunk, helper)
                if not table.finite():
                    first = start + first_nonfinite(values)
                    raise SchemaError(f"{path}: images hold NaN or Inf (first in sample {first})")
                tables.append(table)
            table = ChunkTable.join(tables)
            checksums = _check_checksums(f, path, table, chunk, info.n)
            _check_labels_checksum(f, path)
            condition_stats = conditions.verify(f, path, SchemaError)
            stored_channels = _channel_attrs(f, path, info.channels)
    except OSError as err:
        raise SchemaError(f"{path}: cannot read /images ({one_line(err)})") from err
    measured, channels = table.stats()
    _compare_stats(path, info.stats, measured)
    for key, values in stored_channels.items():
        for c, (a, b) in enumerate(zip(values, channels[key])):
            _compare_stat(path, f"{key}[{c}]", a, b, measured["max"] - measured["min"])
    return {
        "path": info.path,
        "n": info.n,
        "shape": info.shape,
        "dtype": info.dtype,
        "kind": info.kind,
        "source": info.source,
        "stats": measured,
        "channel_stats": {key: values.tolist() for key, values in channels.items()},
        "checksums": checksums,
        "has_labels": info.has_labels,
        "num_classes": info.num_classes,
        "conditions": condition_stats,  # per-column statistics as recomputed, or None
        "chunk_samples": info.chunk_samples,
        "compression": info.compression,
    }


def _check_checksums(f: h5py.File, path: Path, table: ChunkTable, chunk: int, n: int) -> int | None:
    """Compare each chunk's CRC-32 with /images_crc32; return how many were checked (None for a
    file written without checksums)."""
    stored = f.get(CHECKSUMS)
    if stored is None:
        return None
    stored = stored[()]
    if stored.shape != table.crc32.shape:
        raise SchemaError(
            f"{path}: /{CHECKSUMS} holds {stored.size} checksums for {len(table)} chunks"
        )
    bad = np.flatnonzero(stored != table.crc32)
    if len(bad):
        first = int(bad[0]) * chunk
        last = min(n, first + chunk) - 1
        raise SchemaError(
            f"{path}: {len(bad)} chunk(s) fail their CRC-32 checksum, first samples "
            f"{first}..{last}; the file was modified or damaged after it was written"
        )
    return len(stored)


def _check_labels_checksum(f: h5py.File, path: Path) -> None:
    stored = f.attrs.get("labels_crc32")
    if stored is None or "labels" not in f:
        return
    if int(stored) != labels_crc32(f["labels"]):
        raise SchemaError(
            f"{path}: /labels fail their CRC-32 checksum; the file was modified or damaged "
            "after it was written"
        )


def _channel_attrs(f: h5py.File, path: Path, channels: int) -> dict[str, np.ndarray]:
    """The channel_* attributes present, each [C] finite numbers."""
    found = {}
    for key in CHANNEL_KEYS:
        value = f.attrs.get(key)
        if value is None:
            continue
        array = np.asarray(value)
        if (
            array.shape != (channels,)
            or array.dtype.kind not in "iuf"
            or not np.isfinite(array).all()
        ):
            raise SchemaError(
                f"{path}: attribute {key} is {show(value)}, expected {channels} finite numbers"
            )
        found[key] = array.astype(np.float64)
    return found


def _compare_stats(path: Path, stored: dict[str, float], measured: dict[str, float]) -> None:
    """Stored statistics must match the data: training normalises with them."""
    spread = measured["max"] - measured["min"]
    for key in STAT_KEYS:
        _compare_stat(path, key, stored[key], measured[key], spread)


def _compare_stat(path: Path, key: str, a: float, b: float, spread: float) -> None:
    if abs(a - b) > _STATS_RTOL * max(abs(a), abs(b)) + 1e-12 * spread:
        raise SchemaError(
            f"{path}: stored {key} {a:.9g} does not match the data ({b:.9g}); "
            "the file was modified or damaged after it was written"
        )
