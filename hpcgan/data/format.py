"""HDF5 dataset schema 1: the format and its reader, all that training needs (docs/design.md,
section 5). hpcgan.data.write writes it; hpcgan.data.verify checks every value.

Layout::

    /images         [N, C, L] (1D vectors), [N, C, H, W] (images, maps) or [N, C, D, H, W]
                    (volumes); uint8 (images) or float32 (physical fields), chunked along axis 0
    /labels         optional [N] int64, class indices >= 0
    /conditions     optional [N, K] float32 continuous conditions (hpcgan.data.conditions)
    /images_crc32   [ceil(N / chunk)] uint32: CRC-32 of each chunk's values (C order, as stored
                    uncompressed), so `scan` can tell which samples changed after writing
    root attributes: hpcgan_schema=1, kind ("image" | "field"), source, count,
                     min, max, mean, std (float64, over every value of /images),
                     channel_min, channel_max, channel_mean, channel_std ([C] float64),
                     labels_crc32 (with /labels), conditions_crc32 (with /conditions),
                     symmetry (JSON, hpcgan.symmetry)

Files written before checksums existed lack /images_crc32 and the channel_* attributes; they
stay valid and `scan` checks what they have. A sample is (C, *spatial) with one spatial
dimension (L), two (H, W) or three (D, H, W); everything else (statistics, checksums, chunks,
verify, the reader) treats a sample as C rows of values and does not care which.

Files are opened without HDF5 file locking because parallel file systems (Lustre, GPFS) often
do not support it and many ranks read one file.
"""

from __future__ import annotations

import dataclasses
import math
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hpcgan.data import conditions
from hpcgan.errors import UserError, one_line
from hpcgan.symmetry import ATTRIBUTE as SYMMETRY_ATTRIBUTE
from hpcgan.symmetry import Symmetry

SCHEMA_VERSION = 1
KINDS = ("image", "field")
DTYPES = ("uint8", "float32")
STAT_KEYS = ("min", "max", "mean", "std")
CHANNEL_KEYS = tuple(f"channel_{key}" for key in STAT_KEYS)
COMPRESSIONS = (None, "lzf", "gzip")
CHECKSUMS = "images_crc32"
# Spatial dimensions a schema-1 file may hold: vectors (L), maps and images (H, W), volumes
# (D, H, W). This is the one place that says so.
SPATIAL_RANKS = (1, 2, 3)
SHAPES = "rank 3 [N, C, L], rank 4 [N, C, H, W] or rank 5 [N, C, D, H, W]"

# Values per read/write block: whole chunks, with float64 temporaries of about 8 MiB that stay
# in cache while the statistics make their passes.
_BLOCK_VALUES = 1 << 20

PathLike = str | os.PathLike


class SchemaError(UserError):
    """A dataset file (or data to be written) that does not follow schema 1.

    The message is one line naming the file and what is wrong, ready for `prog: error: ...`.
    """


class NonFiniteError(SchemaError):
    """NaN or Inf in data to be written; `sample` is its index in the writer's numbering, so a
    caller that knows where the data came from can name the input instead."""

    def __init__(self, message: str, sample: int) -> None:
        super().__init__(message)
        self.sample = sample


@dataclass(frozen=True)
class DatasetInfo:
    """What training needs to know about a dataset file, taken from its metadata."""

    path: str
    n: int
    channels: int
    spatial: tuple[int, ...]  # (L,) vectors, (H, W) images and maps, (D, H, W) volumes
    dtype: str
    kind: str
    source: str
    stats: dict[str, float]
    has_labels: bool
    num_classes: int
    chunk_samples: int
    compression: str | None
    symmetry: Symmetry  # exact symmetries of a sample (hpcgan.symmetry)
    # /conditions (hpcgan.data.conditions): column names, units, and per-column statistics
    # (conditions.STAT_KEYS -> K floats); empty without conditions.
    condition_names: tuple[str, ...] = ()
    condition_units: tuple[str, ...] = ()
    condition_stats: dict[str, tuple[float, ...]] = field(default_factory=dict)

    @property
    def has_conditions(self) -> bool:
        return bool(self.condition_names)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one sample (C, *spatial): what the models are built for."""
        return (self.channels, *self.spatial)

    @property
    def ndim(self) -> int:
        """Number of spatial dimensions."""
        return len(self.spatial)

    def identity(self) -> dict[str, Any]:
        """What the data are, wherever the file lies (a copy on node-local disk has the same):
        checkpoints keep it, so a run is not resumed on other data."""
        return {
            "n": self.n,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "kind": self.kind,
            "num_classes": self.num_classes,
            "stats": {k: float(v) for k, v in sorted(self.stats.items())},
            # only with conditions, so files without them keep the identity they had
            **({"conditions": list(self.condition_names)} if self.condition_names else {}),
        }

    def description(self) -> dict[str, Any]:
        """Every field but the path, as plain containers: checkpoints keep it, so a run's
        generator is rebuilt and its samples written even when its training file is gone."""
        out = dataclasses.asdict(self)
        del out["path"]
        out["spatial"] = list(self.spatial)
        out["symmetry"] = self.symmetry.to_json()
        out["condition_names"] = list(self.condition_names)
        out["condition_units"] = list(self.condition_units)
        out["condition_stats"] = {k: list(v) for k, v in self.condition_stats.items()}
        return out

    @classmethod
    def described(cls, description: dict[str, Any], path: str) -> DatasetInfo:
        """The inverse of :meth:`description`, for the file at ``path`` (which may be gone)."""
        d = dict(description)
        spatial = tuple(int(s) for s in d.pop("spatial"))
        return cls(
            path=str(path),
            spatial=spatial,
            symmetry=Symmetry.from_json(d.pop("symmetry"), spatial, f"{path}: saved symmetry"),
            condition_names=tuple(d.pop("condition_names")),
            condition_units=tuple(d.pop("condition_units")),
            condition_stats={k: tuple(v) for k, v in d.pop("condition_stats").items()},
            **d,
        )

    @property
    def sample_nbytes(self) -> int:
        """Bytes of one sample, for sizing reads."""
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize


def chunk_samples_for(sample_nbytes: int, target_bytes: int = 512 * 1024) -> int:
    """Samples per chunk so a chunk holds about `target_bytes`.

    About 0.5 MiB is large enough for efficient reads on parallel file systems and small enough
    that a rank reading its shard wastes little of a partly used first or last chunk.
    """
    if sample_nbytes < 1:
        raise ValueError(f"sample_nbytes must be >= 1, got {sample_nbytes}")
    return max(1, target_bytes // sample_nbytes)


def block_samples(chunk: int, sample_values: int) -> int:
    """Samples per read/write block: a whole number of chunks, about _BLOCK_VALUES values."""
    return chunk * max(1, _BLOCK_VALUES // (chunk * sample_values))


def blocks(n: int, step: int) -> Iterator[tuple[int, int]]:
    """[start, stop) of consecutive blocks of `step` samples covering n."""
    for start in range(0, n, step):
        yield start, min(n, start + step)


def labels_crc32(labels: h5py.Dataset) -> int:
    """The labels_crc32 attribute: CRC-32 of /labels as little-endian int64."""
    crc = 0
    for start, stop in blocks(len(labels), 1 << 20):
        crc = zlib.crc32(np.ascontiguousarray(labels[start:stop], dtype="<i8"), crc)
    return crc


def read_info(path: PathLike) -> DatasetInfo:
    """Validate a file against schema 1 and describe it, reading metadata and labels only.

    Cheap enough for every rank at start-up; `hpcgan.data.verify.scan` checks the values.
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
        raise SchemaError(f"{path}: unreadable HDF5 file ({one_line(err)})") from err


def _describe(f: h5py.File, path: Path) -> DatasetInfo:
    """Check an open file's structure and attributes against schema 1."""
    images = f.get("images")
    if not isinstance(images, h5py.Dataset):
        raise SchemaError(f"{path}: no /images dataset")
    shape = images.shape
    if len(shape) - 2 not in SPATIAL_RANKS:
        raise SchemaError(f"{path}: /images has shape {shape}, expected {SHAPES}")
    if images.dtype.name not in DTYPES:
        raise SchemaError(f"{path}: /images has dtype {images.dtype}, expected uint8 or float32")
    n = shape[0]
    if n == 0:
        raise SchemaError(f"{path}: /images holds zero samples")
    if images.chunks is None or tuple(images.chunks[1:]) != shape[1:]:
        raise SchemaError(
            f"{path}: /images is not chunked along axis 0 (chunks {images.chunks}); "
            "rewrite it with the data preparation tool's convert command"
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
    columns = conditions.describe(f, path, n, SchemaError)
    return DatasetInfo(
        path=str(path),
        n=n,
        channels=shape[1],
        spatial=tuple(shape[2:]),
        dtype=images.dtype.name,
        kind=kind,
        source=_str_attr(path, attrs, "source"),
        stats=stats,
        has_labels=num_classes > 0,
        num_classes=num_classes,
        chunk_samples=images.chunks[0],
        compression=images.compression,
        symmetry=_symmetry(attrs, path, kind, tuple(shape[2:])),
        condition_names=columns.names,
        condition_units=columns.units,
        condition_stats=columns.stats or {},
    )


def _symmetry(attrs: h5py.AttributeManager, path: Path, kind: str, spatial: tuple) -> Symmetry:
    """The symmetry attribute; files written before it existed get what the metrics assumed
    of them then: fields with equal sides are periodic boxes, everything else has none."""
    text = attrs.get(SYMMETRY_ATTRIBUTE)
    if text is None:
        if kind == "field" and len(spatial) >= 2 and len(set(spatial)) == 1:
            return Symmetry.periodic_box(spatial)
        return Symmetry.none(len(spatial))
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return Symmetry.from_json(str(text), spatial, f"{path}: attribute {SYMMETRY_ATTRIBUTE}")


def _check_schema_version(path: Path, value: object) -> None:
    if value is None:
        raise SchemaError(f"{path}: no hpcgan_schema attribute (not an hpcgan dataset?)")
    if np.ndim(value) != 0 or not np.issubdtype(np.asarray(value).dtype, np.integer):
        raise SchemaError(f"{path}: attribute hpcgan_schema is {show(value)}, expected an integer")
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
        raise SchemaError(f"{path}: attribute {key} is {show(value)}, expected a finite number")
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


def show(value: object) -> str:
    """An attribute as Python writes it (`nan`, `'1'`), not numpy's repr."""
    return repr(np.asarray(value).tolist())
