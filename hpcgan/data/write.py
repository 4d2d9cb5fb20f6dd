"""Writing schema-1 files (hpcgan.data.format) crash-safely: `write_dataset` for arrays in
memory, `DatasetWriter` for files streamed block by block by one or many processes.

Files are written under a temporary name and renamed durably when complete (hpcgan.files), so
a reader never meets a half-written dataset under the final name.

Writing in parallel without a parallel HDF5 build: an uncompressed file is created with every
chunk allocated up front (`DatasetWriter.layout`), so any process can write its whole chunks with
plain `pwrite` (hpcgan.data.block_writers.RawChunkWriter) while the owner later adds the
attributes. Statistics and checksums are kept per chunk (hpcgan.data.chunks.ChunkTable) and
combined in chunk order, so they do not depend on which process wrote which chunk.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from hpcgan.data.block_writers import BlockWriter, Layout, RawChunkWriter
from hpcgan.data.chunks import ChunkTable
from hpcgan.data.conditions import Conditions
from hpcgan.data.conditions import write as write_conditions
from hpcgan.data.format import (
    CHECKSUMS,
    COMPRESSIONS,
    DTYPES,
    KINDS,
    SCHEMA_VERSION,
    SHAPES,
    SPATIAL_RANKS,
    STAT_KEYS,
    DatasetInfo,
    PathLike,
    SchemaError,
    block_samples,
    blocks,
    chunk_samples_for,
    labels_crc32,
    read_info,
)
from hpcgan.files import replace_durably, temp_name
from hpcgan.symmetry import ATTRIBUTE as SYMMETRY_ATTRIBUTE
from hpcgan.symmetry import Symmetry


def write_dataset(
    path: PathLike,
    images: np.ndarray,
    labels: np.ndarray | None,
    *,
    kind: str,
    source: str,
    chunk_samples: int | None = None,
    compression: str | None = None,
    conditions: np.ndarray | None = None,
    condition_names: Sequence[str] = (),
    condition_units: Sequence[str] | None = None,
    symmetry: Symmetry | None = None,
) -> DatasetInfo:
    """Write in-memory arrays as a schema-1 file atomically and return its info.

    `conditions` ([N, K] or [N], physical units) become /conditions with one name and unit per
    column; `symmetry` the file's symmetry attribute (without it, readers assume the default
    that hpcgan.data.format describes).

    The data go to `.NAME.tmp-<pid>` next to `path` and are renamed onto `path` only when
    complete, so a crash, a NaN or a full disk never leaves a truncated file under the final
    name (nor overwrites a good one); the temporary file is removed on any failure.
    """
    path = Path(path)
    images = np.asarray(images)
    labels = _check_inputs(path, images, labels, kind, compression)
    n = len(images)
    columns = None
    if conditions is not None:
        columns = Conditions.checked(
            conditions, condition_names, condition_units, n, str(path), SchemaError
        )
    chunk = min(n, chunk_samples or chunk_samples_for(images[0].nbytes))
    if chunk < 1:
        raise SchemaError(f"{path}: chunk_samples must be >= 1, got {chunk_samples}")
    with DatasetWriter(
        path,
        n,
        images.shape[1:],
        images.dtype.name,
        labels=labels is not None,
        chunk_samples=chunk,
        compression=compression,
    ) as writer:
        for start, stop in blocks(n, writer.block_samples):
            writer.write(start, images[start:stop], None if labels is None else labels[start:stop])
        return writer.commit(kind=kind, source=source, conditions=columns, symmetry=symmetry)


class _H5BlockWriter(BlockWriter):
    """Writes blocks through HDF5 (needed for compressed chunks)."""

    def __init__(self, name: str, images: h5py.Dataset, labels: h5py.Dataset | None) -> None:
        super().__init__(
            name,
            len(images),
            images.shape[1:],
            images.dtype.name,
            images.chunks[0],
            labels is not None,
        )
        self.images, self.labels = images, labels

    def _store(self, start: int, images: np.ndarray, labels: np.ndarray | None) -> None:
        self.images[start : start + len(images)] = images
        if labels is not None:
            self.labels[start : start + len(labels)] = labels


class DatasetWriter:
    """Streams a schema-1 file of known size to disk block by block, crash-safely.

    The file is created as `.NAME.tmp-<pid>` next to `path` with /images (and /labels)
    preallocated; blocks are checked and summarised per chunk as they are written; `commit`
    adds the statistics, checksums and attributes, flushes and renames onto `path`. Leaving the
    `with` block without a commit (an exception, an interrupt) deletes the temporary file, and
    a killed process leaves only that hidden temporary, never a file under the final name.

    Uncompressed files expose `layout` so other processes can fill their chunks concurrently
    (`RawChunkWriter`) and the owner `adopt`s their tables; compressed ones are written here or
    assembled from part files with `copy_chunks`.
    """

    def __init__(
        self,
        path: PathLike,
        n: int,
        sample_shape: Sequence[int],
        dtype: str,
        *,
        labels: bool,
        chunk_samples: int | None = None,
        compression: str | None = None,
    ) -> None:
        self.path = Path(path)
        sample_shape = tuple(int(s) for s in sample_shape)
        _check_layout(self.path, n, sample_shape, dtype, compression)
        values = math.prod(sample_shape)
        chunk = chunk_samples or min(n, chunk_samples_for(values * np.dtype(dtype).itemsize))
        if chunk < 1:
            raise SchemaError(f"{self.path}: chunk_samples must be >= 1, got {chunk_samples}")
        self.block_samples = block_samples(chunk, values)
        self.tmp = temp_name(self.path)
        self._file: h5py.File | None = None
        try:  # HDF5 may leave the file it failed to create (a full disk): abort removes it
            self._file = h5py.File(self.tmp, "w", locking=False)
            images, label_set = _create_datasets(
                self._file, n, sample_shape, dtype, chunk, compression, labels
            )
            self.layout = None if compression else _layout(self.tmp, images, label_set)
            if self.layout is None:
                self._sink: BlockWriter = _H5BlockWriter(str(self.path), images, label_set)
            else:
                self._file.close()  # HDF5 must not hold (or rewrite) what pwrite changes
                self._file = None
                self._sink = RawChunkWriter(self.layout, name=str(self.path))
        except BaseException:
            self.abort()
            raise

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()

    @property
    def chunk_samples(self) -> int:
        return self._sink.chunk

    def write(self, start: int, images: np.ndarray, labels: np.ndarray | None = None) -> None:
        """Write samples [start, start + len(images)) of [B, C, *S] images (see BlockWriter)."""
        self._sink.write(start, images, labels)

    def adopt(self, start: int, count: int, table: ChunkTable) -> None:
        """Samples [start, start + count) were written by another process (RawChunkWriter)."""
        self._sink.adopt(start, count, table)

    def table(self) -> ChunkTable:
        """Statistics and checksums of every chunk, once all samples are written or adopted."""
        return self._sink.table()

    def copy_chunks(self, part: PathLike, start: int, table: ChunkTable) -> None:
        """Copy a part file's chunks (written by a DatasetWriter with the same chunking and
        compression) to samples start..., as stored: no decompression, no recompression."""
        if self._file is None:
            raise ValueError("copy_chunks needs a compressed file; use RawChunkWriter")
        images = self._file["images"]
        with h5py.File(part, "r", locking=False) as f:
            source = f["images"]
            if source.chunks != images.chunks or source.compression != images.compression:
                raise ValueError(f"{part}: chunks {source.chunks} differ from {images.chunks}")
            rest = (0,) * (images.ndim - 1)  # a chunk holds whole samples
            for offset in range(0, len(source), self.chunk_samples):
                mask, data = source.id.read_direct_chunk((offset, *rest))
                images.id.write_direct_chunk((start + offset, *rest), data, mask)
            if "labels" in self._file:
                labels = f["labels"]
                for a, b in blocks(len(labels), 1 << 20):
                    self._file["labels"][start + a : start + b] = labels[a:b]
            self.adopt(start, len(source), table)

    def commit(
        self,
        *,
        kind: str,
        source: str,
        attrs: dict | None = None,
        durable: bool = True,
        conditions: Conditions | None = None,
        symmetry: Symmetry | None = None,
    ) -> DatasetInfo:
        """Add statistics, checksums, attributes, /conditions (one row per sample, in order)
        and the symmetry; flush (if `durable`) and rename onto path."""
        if kind not in KINDS:
            raise SchemaError(f"{self.path}: kind must be 'image' or 'field', got {kind!r}")
        if conditions is not None and len(conditions.values) != self._sink.n:
            raise SchemaError(
                f"{self.path}: {len(conditions.values)} condition rows for {self._sink.n} samples"
            )
        if symmetry is not None:
            symmetry.check(self._sink.sample_shape[1:], f"{self.path}: symmetry")
        table = self.table()
        self._sink.close(flush=durable)
        stats, channels = table.stats()
        f = self._file or h5py.File(self.tmp, "r+", locking=False)
        self._file = f
        f.create_dataset(CHECKSUMS, data=table.crc32)
        if "labels" in f:
            f.attrs["labels_crc32"] = np.uint32(labels_crc32(f["labels"]))
        f.attrs["hpcgan_schema"] = SCHEMA_VERSION
        f.attrs["kind"] = kind
        f.attrs["source"] = source
        f.attrs["count"] = self._sink.n
        for key in STAT_KEYS:
            f.attrs[key] = np.float64(stats[key])
        for key, values in channels.items():
            f.attrs[key] = values
        if conditions is not None:
            write_conditions(f, conditions)
        if symmetry is not None:
            f.attrs[SYMMETRY_ATTRIBUTE] = symmetry.to_json()
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
        f.close()
        self._file = None
        replace_durably(self.tmp, self.path, flushed=not durable)
        return read_info(self.path)

    def abort(self) -> None:
        """Drop the temporary file (no-op after a successful commit)."""
        sink = getattr(self, "_sink", None)
        if sink is not None:
            sink.close(flush=False)
        if self._file is not None:
            self._file.close()
            self._file = None
        self.tmp.unlink(missing_ok=True)


def _check_inputs(
    path: Path,
    images: np.ndarray,
    labels: np.ndarray | None,
    kind: str,
    compression: str | None,
) -> np.ndarray | None:
    """Reject data that would not make a schema-1 file; return the labels as int64."""
    if images.ndim - 2 not in SPATIAL_RANKS:
        raise SchemaError(f"{path}: images must be {SHAPES}, got shape {images.shape}")
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


def _check_layout(
    path: Path, n: int, sample_shape: tuple[int, ...], dtype: str, compression: str | None
) -> None:
    if n < 1 or len(sample_shape) - 1 not in SPATIAL_RANKS or min(sample_shape) < 1:
        raise SchemaError(f"{path}: cannot write {n} samples of shape {sample_shape}")
    if np.dtype(dtype).name not in DTYPES:
        raise SchemaError(f"{path}: images must be uint8 or float32, got {dtype}")
    if compression not in COMPRESSIONS:
        raise SchemaError(f"{path}: compression must be None, 'lzf' or 'gzip', got {compression!r}")


def _create_datasets(
    f: h5py.File,
    n: int,
    sample_shape: tuple[int, ...],
    dtype: str,
    chunk: int,
    compression: str | None,
    labels: bool,
) -> tuple[h5py.Dataset, h5py.Dataset | None]:
    """/images (and /labels) at full size; uncompressed ones with their storage allocated now.

    A part file may hold fewer samples than one chunk; HDF5 accepts that chunk shape only for
    an extensible first axis.
    """
    dcpl = None if compression else _preallocated()
    images = f.create_dataset(
        "images",
        shape=(n, *sample_shape),
        dtype=dtype,
        chunks=(chunk, *sample_shape),
        maxshape=(None, *sample_shape) if chunk > n else None,
        compression=compression,
        dcpl=dcpl,
    )
    if not labels:
        return images, None
    return images, f.create_dataset("labels", shape=(n,), dtype="<i8", dcpl=_preallocated())


def _preallocated() -> h5py.h5p.PropDCID:
    """Storage allocated at creation (chunk addresses fixed, for pwrite) and never pre-filled
    with zeros (the writers fill every byte; filling would write the whole file twice)."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    return dcpl


def _layout(tmp: Path, images: h5py.Dataset, labels: h5py.Dataset | None) -> Layout:
    chunk = images.chunks[0]
    offsets = np.full(images.id.get_num_chunks(), -1, dtype=np.int64)

    def note(info: h5py.h5d.StoreInfo) -> None:
        offsets[info.chunk_offset[0] // chunk] = info.byte_offset

    try:
        images.id.chunk_iter(note)
    except (AttributeError, NotImplementedError):  # HDF5 < 1.12.3: one query per chunk
        for index in range(len(offsets)):
            note(images.id.get_chunk_info(index))
    if len(offsets) != -(-len(images) // chunk) or (offsets < 0).any():
        raise SchemaError(f"{tmp}: HDF5 did not preallocate every chunk of /images")
    return Layout(
        path=str(tmp),
        n=len(images),
        sample_shape=images.shape[1:],
        dtype=images.dtype.name,
        chunk_samples=chunk,
        chunk_offsets=offsets,
        labels_offset=None if labels is None else labels.id.get_offset(),
    )
