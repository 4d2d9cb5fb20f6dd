"""HDF5 dataset schema 1, shared by data_prep (the writer) and training (the reader).

Layout (design.md section 5)::

    /images   [N, C, H, W] uint8 (images) or float32 (physical fields), chunked along axis 0
    /labels   optional [N] int64, class indices >= 0
    root attributes: hpcgan_schema=1, kind ("image" | "field"), source, count,
                     min, max, mean, std (float64, over every value of /images)

Files are written under a temporary name and renamed when complete, so a reader never meets a
half-written dataset under the final name. Files are opened without HDF5 file locking because
parallel file systems (Lustre, GPFS) often do not support it and many ranks read one file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

SCHEMA_VERSION = 1
KINDS = ("image", "field")
DTYPES = ("uint8", "float32")
STAT_KEYS = ("min", "max", "mean", "std")
COMPRESSIONS = (None, "lzf", "gzip")

# Bytes per h5py read/write call: many chunks at once (fewer calls) with bounded memory.
_BLOCK_BYTES = 8 * 1024 * 1024
# Stored vs recomputed statistics: far above float64 rounding, far below real corruption.
_STATS_RTOL = 1e-5

PathLike = str | os.PathLike


class SchemaError(ValueError):
    """A dataset file (or data to be written) that does not follow schema 1.

    The message is one line naming the file and what is wrong, ready for `prog: error: ...`.
    """


@dataclass(frozen=True)
class DatasetInfo:
    """What training needs to know about a dataset file, taken from its metadata."""

    path: str
    n: int
    channels: int
    height: int
    width: int
    dtype: str
    kind: str
    source: str
    stats: dict[str, float]
    has_labels: bool
    num_classes: int
    chunk_samples: int
    compression: str | None

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of one sample (C, H, W): what the models are built for."""
        return (self.channels, self.height, self.width)

    @property
    def sample_nbytes(self) -> int:
        """Bytes of one sample, for sizing reads."""
        return self.channels * self.height * self.width * np.dtype(self.dtype).itemsize


def chunk_samples_for(sample_nbytes: int, target_bytes: int = 512 * 1024) -> int:
    """Samples per chunk so a chunk holds about `target_bytes`.

    About 0.5 MiB is large enough for efficient reads on parallel file systems and small enough
    that a rank reading its shard wastes little of a partly used first or last chunk.
    """
    if sample_nbytes < 1:
        raise ValueError(f"sample_nbytes must be >= 1, got {sample_nbytes}")
    return max(1, target_bytes // sample_nbytes)


def write_dataset(
    path: PathLike,
    images: np.ndarray,
    labels: np.ndarray | None,
    *,
    kind: str,
    source: str,
    chunk_samples: int | None = None,
    compression: str | None = None,
) -> DatasetInfo:
    """Write a schema-1 file atomically and return its info.

    The data go to `.NAME.tmp-<pid>` next to `path` and are renamed onto `path` only when
    complete, so a crash, a NaN or a full disk never leaves a truncated file under the final
    name (nor overwrites a good one); the temporary file is removed on any failure.
    """
    path = Path(path)
    images = np.asarray(images)
    labels = _check_inputs(path, images, labels, kind, compression)
    sample_nbytes = images[0].nbytes
    chunk = min(len(images), chunk_samples or chunk_samples_for(sample_nbytes))
    if chunk < 1:
        raise SchemaError(f"{path}: chunk_samples must be >= 1, got {chunk_samples}")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with h5py.File(tmp, "w", locking=False) as f:
            stats = _write_images(f, path, images, chunk, compression)
            if labels is not None:
                f.create_dataset("labels", data=labels)
            f.attrs["hpcgan_schema"] = SCHEMA_VERSION
            f.attrs["kind"] = kind
            f.attrs["source"] = source
            f.attrs["count"] = len(images)
            for key in STAT_KEYS:
                f.attrs[key] = np.float64(stats[key])
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return read_info(path)


def read_info(path: PathLike) -> DatasetInfo:
    """Validate a file against schema 1 and describe it, reading metadata and labels only.

    Cheap enough for every rank at start-up; `scan` is the full check of the values.
    """
    path = Path(path)
    if not path.exists():
        raise SchemaError(f"{path}: no such file")
    if not path.is_file():
        raise SchemaError(f"{path}: not a regular file")
    if not os.access(path, os.R_OK):
        raise SchemaError(f"{path}: not readable (permission denied)")
    try:
        if not h5py.is_hdf5(path):
            raise SchemaError(f"{path}: not an HDF5 file")
        with h5py.File(path, "r", locking=False) as f:
            return _describe(f, path)
    except OSError as err:
        raise SchemaError(f"{path}: unreadable HDF5 file ({_one_line(err)})") from err


def scan(path: PathLike, block: int | None = None) -> dict:
    """Read every value of /images and check it against the stored statistics.

    This is `data_prep verify`: it catches what `read_info` cannot see without reading the data
    (NaN/Inf in fields, files modified or damaged after writing). `block` is the number of
    samples per read (default: whole chunks, about 8 MiB). Returns a summary of the file with
    the recomputed statistics.
    """
    info = read_info(path)
    step = block or _block_samples(info.chunk_samples, info.sample_nbytes)
    if step < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    stats = _RunningStats()
    try:
        with h5py.File(path, "r", locking=False) as f:
            images = f["images"]
            for start, stop in _blocks(info.n, step):
                values = images[start:stop]  # [B, C, H, W]
                _check_finite(path, values, start)
                stats.update(values)
    except OSError as err:
        raise SchemaError(f"{path}: cannot read /images ({_one_line(err)})") from err
    measured = stats.result()
    _compare_stats(path, info.stats, measured)
    return {
        "path": info.path,
        "n": info.n,
        "shape": info.shape,
        "dtype": info.dtype,
        "kind": info.kind,
        "source": info.source,
        "stats": measured,
        "has_labels": info.has_labels,
        "num_classes": info.num_classes,
        "chunk_samples": info.chunk_samples,
        "compression": info.compression,
    }


class _RunningStats:
    """Min, max, mean and std accumulated block by block in float64.

    Chan's parallel update of (count, mean, M2) keeps precision without a second pass or a
    float64 copy of the whole dataset. std is the population std (ddof=0).
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.min = math.inf
        self.max = -math.inf

    def update(self, block: np.ndarray) -> None:
        values = block.astype(np.float64, copy=False)
        k = values.size
        block_mean = float(values.mean())
        block_m2 = float(np.square(values - block_mean).sum())
        total = self.count + k
        delta = block_mean - self.mean
        self.mean += delta * k / total
        self.m2 += block_m2 + delta * delta * self.count * k / total
        self.count = total
        self.min = min(self.min, float(values.min()))
        self.max = max(self.max, float(values.max()))

    def result(self) -> dict[str, float]:
        return {
            "min": self.min,
            "max": self.max,
            "mean": self.mean,
            "std": math.sqrt(self.m2 / self.count),
        }


def _check_inputs(
    path: Path,
    images: np.ndarray,
    labels: np.ndarray | None,
    kind: str,
    compression: str | None,
) -> np.ndarray | None:
    """Reject data that would not make a schema-1 file; return the labels as int64."""
    if images.ndim != 4:
        raise SchemaError(f"{path}: images must be [N, C, H, W], got shape {images.shape}")
    if images.dtype.name not in DTYPES:
        raise SchemaError(f"{path}: images must be uint8 or float32, got {images.dtype}")
    if len(images) == 0 or 0 in images.shape:
        raise SchemaError(f"{path}: images are empty (shape {images.shape})")
    if kind not in KINDS:
        raise SchemaError(f"{path}: kind must be 'image' or 'field', got {kind!r}")
    if compression not in COMPRESSIONS:
        raise SchemaError(f"{path}: compression must be None, 'lzf' or 'gzip', got {compression!r}")
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.shape != (len(images),):
        raise SchemaError(f"{path}: labels must have shape ({len(images)},), got {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise SchemaError(f"{path}: labels must be integers, got {labels.dtype}")
    labels = labels.astype(np.int64)
    if labels.min() < 0:
        raise SchemaError(f"{path}: labels must be >= 0, got {labels.min()}")
    return labels


def _write_images(
    f: h5py.File, path: Path, images: np.ndarray, chunk: int, compression: str | None
) -> dict[str, float]:
    """Copy images into /images block by block, checking values and accumulating statistics
    in the same pass."""
    dataset = f.create_dataset(
        "images",
        shape=images.shape,
        dtype=images.dtype,
        chunks=(chunk, *images.shape[1:]),
        compression=compression,
    )
    stats = _RunningStats()
    for start, stop in _blocks(len(images), _block_samples(chunk, images[0].nbytes)):
        values = images[start:stop]  # [B, C, H, W]
        _check_finite(path, values, start)
        dataset[start:stop] = values
        stats.update(values)
    return stats.result()


def _describe(f: h5py.File, path: Path) -> DatasetInfo:
    """Check an open file's structure and attributes against schema 1."""
    images = f.get("images")
    if not isinstance(images, h5py.Dataset):
        raise SchemaError(f"{path}: no /images dataset")
    shape = images.shape
    if len(shape) != 4:
        raise SchemaError(f"{path}: /images has shape {shape}, expected rank 4 [N, C, H, W]")
    if images.dtype.name not in DTYPES:
        raise SchemaError(f"{path}: /images has dtype {images.dtype}, expected uint8 or float32")
    n = shape[0]
    if n == 0:
        raise SchemaError(f"{path}: /images holds zero samples")
    if images.chunks is None or tuple(images.chunks[1:]) != shape[1:]:
        raise SchemaError(
            f"{path}: /images is not chunked along axis 0 (chunks {images.chunks}); "
            "write it with data_prep"
        )
    attrs = f.attrs
    _check_schema_version(path, attrs.get("hpcgan_schema"))
    kind = _str_attr(path, attrs, "kind")
    if kind not in KINDS:
        raise SchemaError(f"{path}: attribute kind is {kind!r}, expected 'image' or 'field'")
    count = _number_attr(path, attrs, "count")
    if count != n:
        raise SchemaError(f"{path}: attribute count is {count:g} but /images holds {n} samples")
    stats = {key: _number_attr(path, attrs, key) for key in STAT_KEYS}
    if stats["std"] < 0:
        raise SchemaError(f"{path}: attribute std is negative ({stats['std']:g})")
    num_classes = _num_classes(f, path, n)
    return DatasetInfo(
        path=str(path),
        n=n,
        channels=shape[1],
        height=shape[2],
        width=shape[3],
        dtype=images.dtype.name,
        kind=kind,
        source=_str_attr(path, attrs, "source"),
        stats=stats,
        has_labels=num_classes > 0,
        num_classes=num_classes,
        chunk_samples=images.chunks[0],
        compression=images.compression,
    )


def _check_schema_version(path: Path, value: object) -> None:
    if value is None:
        raise SchemaError(f"{path}: no hpcgan_schema attribute (not an hpcgan dataset?)")
    if np.ndim(value) != 0 or not np.issubdtype(np.asarray(value).dtype, np.integer):
        raise SchemaError(f"{path}: attribute hpcgan_schema is {_show(value)}, expected an integer")
    if int(value) != SCHEMA_VERSION:
        raise SchemaError(
            f"{path}: hpcgan_schema is {int(value)}, this version reads schema {SCHEMA_VERSION}"
        )


def _str_attr(path: Path, attrs: h5py.AttributeManager, key: str) -> str:
    value = attrs.get(key)
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if not isinstance(value, str):
        raise SchemaError(f"{path}: attribute {key} is missing or not a string")
    return value


def _number_attr(path: Path, attrs: h5py.AttributeManager, key: str) -> float:
    value = attrs.get(key)
    if value is None:
        raise SchemaError(f"{path}: no {key} attribute")
    array = np.asarray(value)
    if array.ndim != 0 or array.dtype.kind not in "iuf" or not np.isfinite(array):
        raise SchemaError(f"{path}: attribute {key} is {_show(value)}, expected a finite number")
    return float(array)


def _num_classes(f: h5py.File, path: Path, n: int) -> int:
    """Classes in /labels (max + 1), or 0 without labels. Labels are 8 bytes a sample, so
    reading them is cheap next to the images."""
    labels = f.get("labels")
    if labels is None:
        return 0
    if not isinstance(labels, h5py.Dataset) or labels.shape != (n,):
        shape = labels.shape if isinstance(labels, h5py.Dataset) else "a group"
        raise SchemaError(f"{path}: /labels is {shape}, expected shape ({n},) like /images")
    if labels.dtype.kind not in "iu":
        raise SchemaError(f"{path}: /labels has dtype {labels.dtype}, expected int64")
    values = labels[()]
    if values.min() < 0:
        raise SchemaError(f"{path}: /labels holds negative values (min {values.min()})")
    return int(values.max()) + 1


def _compare_stats(path: Path, stored: dict[str, float], measured: dict[str, float]) -> None:
    """Stored statistics must match the data: training normalises with them."""
    spread = measured["max"] - measured["min"]
    for key in STAT_KEYS:
        a, b = stored[key], measured[key]
        if abs(a - b) > _STATS_RTOL * max(abs(a), abs(b)) + 1e-12 * spread:
            raise SchemaError(
                f"{path}: stored {key} {a:.9g} does not match the data ({b:.9g}); "
                "the file was modified or damaged after it was written"
            )


def _check_finite(path: Path, values: np.ndarray, start: int) -> None:
    """NaN/Inf in a field would poison normalisation and every gradient; name the sample."""
    if values.dtype.kind != "f":
        return
    finite = np.isfinite(values).reshape(len(values), -1).all(axis=1)
    if not finite.all():
        first = start + int(np.flatnonzero(~finite)[0])
        raise SchemaError(f"{path}: images hold NaN or Inf (first in sample {first})")


def _block_samples(chunk: int, sample_nbytes: int) -> int:
    """Samples per read/write: a whole number of chunks, about _BLOCK_BYTES."""
    return chunk * max(1, _BLOCK_BYTES // (chunk * sample_nbytes))


def _blocks(n: int, step: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, step):
        yield start, min(n, start + step)


def _fsync(path: Path) -> None:
    """Flush the closed file to stable storage before the rename makes it visible."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _show(value: object) -> str:
    """An attribute as Python writes it (`nan`, `'1'`), not numpy's repr."""
    return repr(np.asarray(value).tolist())


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())
