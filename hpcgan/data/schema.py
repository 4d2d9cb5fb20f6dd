"""HDF5 dataset schema 1, shared by data_prep (the writer) and training (the reader).

Layout (design.md section 5)::

    /images         [N, C, H, W] uint8 (images) or float32 (physical fields), chunked along axis 0
    /labels         optional [N] int64, class indices >= 0
    /images_crc32   [ceil(N / chunk)] uint32: CRC-32 of each chunk's values (C order, as stored
                    uncompressed), so `scan` can tell which samples changed after writing
    root attributes: hpcgan_schema=1, kind ("image" | "field"), source, count,
                     min, max, mean, std (float64, over every value of /images),
                     channel_min, channel_max, channel_mean, channel_std ([C] float64),
                     labels_crc32 (with /labels)

Files written before checksums existed lack /images_crc32 and the channel_* attributes; they
stay valid and `scan` checks what they have.

Files are written under a temporary name and renamed when complete, so a reader never meets a
half-written dataset under the final name. Files are opened without HDF5 file locking because
parallel file systems (Lustre, GPFS) often do not support it and many ranks read one file.

Writing in parallel without a parallel HDF5 build: an uncompressed file is created with every
chunk allocated up front (`DatasetWriter.layout`), so any process can write its whole chunks with
plain `pwrite` (`RawChunkWriter`) while the owner later adds the attributes. Statistics and
checksums are kept per chunk (`ChunkTable`) and combined in chunk order, so they do not depend on
which process wrote which chunk.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import h5py
import numpy as np

SCHEMA_VERSION = 1
KINDS = ("image", "field")
DTYPES = ("uint8", "float32")
STAT_KEYS = ("min", "max", "mean", "std")
CHANNEL_KEYS = tuple(f"channel_{key}" for key in STAT_KEYS)
COMPRESSIONS = (None, "lzf", "gzip")
CHECKSUMS = "images_crc32"

# Values per read/write block: whole chunks, with float64 temporaries of about 8 MiB that stay
# in cache while the statistics make their passes.
_BLOCK_VALUES = 1 << 20
# Raw writers start writeback in the background every this many bytes, so the fsync before
# the rename finds little left to do (the disk works while the CPU converts).
_FLUSH_BYTES = 64 * 1024 * 1024
# Stored vs recomputed statistics: far above float64 rounding, far below real corruption.
_STATS_RTOL = 1e-5

PathLike = str | os.PathLike


class SchemaError(ValueError):
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
        }

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


def block_samples(chunk: int, sample_values: int) -> int:
    """Samples per read/write block: a whole number of chunks, about _BLOCK_VALUES values."""
    return chunk * max(1, _BLOCK_VALUES // (chunk * sample_values))


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
    """Write in-memory arrays as a schema-1 file atomically and return its info.

    The data go to `.NAME.tmp-<pid>` next to `path` and are renamed onto `path` only when
    complete, so a crash, a NaN or a full disk never leaves a truncated file under the final
    name (nor overwrites a good one); the temporary file is removed on any failure.
    """
    path = Path(path)
    images = np.asarray(images)
    labels = _check_inputs(path, images, labels, kind, compression)
    n = len(images)
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
        for start, stop in _blocks(n, writer.block_samples):
            writer.write(start, images[start:stop], None if labels is None else labels[start:stop])
        return writer.commit(kind=kind, source=source)


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
    """Read every value of /images and check it against the stored checksums and statistics.

    This is `data_prep verify`: it catches what `read_info` cannot see without reading the data
    (NaN/Inf in fields, files modified or damaged after writing). `block` is the number of
    samples per read (default: whole chunks, about 4 MiB); it is rounded up to whole chunks.
    Returns a summary of the file with the recomputed statistics.
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
            for start, stop in _blocks(info.n, step):
                values = images[start:stop]  # [B, C, H, W]
                table = ChunkTable.of(values, chunk, helper)
                if not table.finite():
                    first = start + _first_nonfinite(values)
                    raise SchemaError(f"{path}: images hold NaN or Inf (first in sample {first})")
                tables.append(table)
            table = ChunkTable.join(tables)
            checksums = _check_checksums(f, path, table, chunk, info.n)
            _check_labels_checksum(f, path)
            stored_channels = _channel_attrs(f, path, info.channels)
    except OSError as err:
        raise SchemaError(f"{path}: cannot read /images ({_one_line(err)})") from err
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
        "chunk_samples": info.chunk_samples,
        "compression": info.compression,
    }


@dataclass(frozen=True)
class ChunkTable:
    """Per-chunk statistics and CRC-32 of consecutive chunks of /images, in file order.

    Tables of consecutive ranges join by concatenation, and the file's statistics are combined
    from the joined table in chunk order: the same numbers whichever process or block size
    summarised which chunk. Sums are float64 of per-sample sums, exact for uint8 data.
    """

    count: np.ndarray  # [K] values per channel in each chunk (samples x H x W)
    low: np.ndarray  # [K, C] min per chunk and channel
    high: np.ndarray  # [K, C] max
    total: np.ndarray  # [K, C] float64 sum
    squares: np.ndarray  # [K, C] float64 sum of squares
    crc32: np.ndarray  # [K] uint32 of each chunk's bytes in C order

    @classmethod
    def of(cls, block: np.ndarray, chunk: int, helper: Executor | None = None) -> ChunkTable:
        """Summarise a block [B, C, H, W] that starts on a chunk boundary.

        With a `helper` thread the checksums run beside the statistics (CRC-32 and numpy both
        release the GIL): about 20% faster for one process with a spare core.
        """
        block = np.ascontiguousarray(block)
        rows = block.reshape(block.shape[0], block.shape[1], -1)  # [B, C, H*W]
        starts = np.arange(0, len(block), chunk)
        checksums = partial(_crc32s, block, starts, chunk)
        crc = helper.submit(checksums) if helper else None
        low = np.minimum.reduceat(rows.min(axis=2), starts).astype(np.float64)
        high = np.maximum.reduceat(rows.max(axis=2), starts).astype(np.float64)
        values = rows.astype(np.float64)  # per-row sums: independent of the block's length
        total = np.add.reduceat(values.sum(axis=2), starts)
        np.square(values, out=values)
        squares = np.add.reduceat(values.sum(axis=2), starts)
        count = np.diff(np.append(starts, len(block))) * rows.shape[2]
        crc32 = np.array(crc.result() if crc else checksums(), dtype=np.uint32)
        return cls(count, low, high, total, squares, crc32)

    @classmethod
    def join(cls, tables: Sequence[ChunkTable]) -> ChunkTable:
        """One table for consecutive ranges of chunks, given in file order."""
        return cls(*(np.concatenate(parts) for parts in zip(*(t.fields() for t in tables))))

    def fields(self) -> tuple[np.ndarray, ...]:
        return (self.count, self.low, self.high, self.total, self.squares, self.crc32)

    def __len__(self) -> int:
        return len(self.count)

    def finite(self) -> bool:
        """NaN or Inf anywhere makes a chunk's min or max non-finite."""
        return bool(np.isfinite(self.low).all() and np.isfinite(self.high).all())

    def stats(self) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """(min, max, mean, std over all values; the same per channel as channel_* arrays).

        Chunks are combined like Chan et al.'s parallel variance: each chunk's spread about its
        own mean plus its mean's distance from the overall one, so no large sums cancel.
        """
        count = self.count[:, None].astype(np.float64)  # [K, 1]
        chunk_mean = self.total / count
        chunk_m2 = np.maximum(self.squares - self.total * chunk_mean, 0.0)
        n = count.sum()
        mean = self.total.sum(axis=0) / n  # [C]
        m2 = (chunk_m2 + count * np.square(chunk_mean - mean)).sum(axis=0)
        overall = self.total.sum() / (n * len(mean))
        overall_m2 = (chunk_m2 + count * np.square(chunk_mean - overall)).sum()
        channels = {
            "channel_min": self.low.min(axis=0),
            "channel_max": self.high.max(axis=0),
            "channel_mean": mean,
            "channel_std": np.sqrt(m2 / n),
        }
        scalar = {
            "min": float(self.low.min()),
            "max": float(self.high.max()),
            "mean": float(overall),
            "std": math.sqrt(overall_m2 / (n * len(mean))),
        }
        return scalar, channels


@dataclass(frozen=True)
class Layout:
    """Where a preallocated, uncompressed dataset file keeps its bytes: enough for any process
    (any MPI rank, any node of a shared file system) to write whole chunks with `pwrite`."""

    path: str  # the temporary file
    n: int
    sample_shape: tuple[int, int, int]
    dtype: str
    chunk_samples: int
    chunk_offsets: np.ndarray  # [K] int64 byte offset of each chunk of /images
    labels_offset: int | None  # byte offset of the contiguous /labels, if any


class BlockWriter:
    """Checks blocks of samples, summarises their chunks and hands them to `_store`.

    Blocks arrive in order, each starting on a chunk boundary (a multiple of `chunk_samples`
    from the writer's first sample) and holding whole chunks except at the end of the data.
    """

    def __init__(
        self,
        name: str,
        n: int,
        sample_shape: tuple[int, int, int],
        dtype: str,
        chunk: int,
        has_labels: bool,
        first: int = 0,
    ) -> None:
        self.name, self.n, self.sample_shape = name, n, tuple(sample_shape)
        self.dtype, self.chunk, self.has_labels = np.dtype(dtype), chunk, has_labels
        self.next = self.first = first
        self.tables: list[ChunkTable] = []
        self._helper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hpcgan-crc")

    def write(self, start: int, images: np.ndarray, labels: np.ndarray | None = None) -> None:
        """Write samples [start, start + len(images)); NaN/Inf raise NonFiniteError."""
        images = np.ascontiguousarray(images)
        self._check(start, images, labels)
        table = ChunkTable.of(images, self.chunk, self._helper)
        if not table.finite():
            first = start + _first_nonfinite(images)
            raise NonFiniteError(
                f"{self.name}: images hold NaN or Inf (first in sample {first})", first
            )
        if labels is not None:
            labels = np.ascontiguousarray(labels, dtype="<i8")
        self._store(start, images, labels)
        self.adopt(start, len(images), table)

    def __enter__(self) -> BlockWriter:
        return self

    def __exit__(self, kind: type | None, *exc: object) -> None:
        self.close(flush=kind is None)

    def adopt(self, start: int, count: int, table: ChunkTable) -> None:
        """Account for samples [start, start + count) stored by someone else (another rank)."""
        if start != self.next or start + count > self.first + self.n:
            raise ValueError(f"{self.name}: samples {start}..{start + count} out of order")
        self.tables.append(table)
        self.next = start + count

    def table(self) -> ChunkTable:
        if self.next != self.first + self.n:
            raise SchemaError(
                f"{self.name}: only {self.next - self.first} of {self.n} samples written"
            )
        return ChunkTable.join(self.tables)

    def close(self, flush: bool = True) -> None:
        """Release what `_store` holds open, first flushing it to stable storage if `flush`."""
        self._helper.shutdown()

    def _store(self, start: int, images: np.ndarray, labels: np.ndarray | None) -> None:
        raise NotImplementedError

    def _check(self, start: int, images: np.ndarray, labels: np.ndarray | None) -> None:
        stop = start + len(images)
        if images.shape[1:] != self.sample_shape or images.dtype != self.dtype:
            raise SchemaError(
                f"{self.name}: block of {images.dtype} {images.shape[1:]}, expected "
                f"{self.dtype} {self.sample_shape}"
            )
        end = self.first + self.n
        if (start - self.first) % self.chunk or (stop < end and len(images) % self.chunk):
            raise ValueError(f"{self.name}: block {start}..{stop} is not aligned to chunks")
        if (labels is not None) != self.has_labels:
            raise SchemaError(f"{self.name}: labels must be given with every block or never")
        if labels is None:
            return
        labels = np.asarray(labels)
        if labels.shape != (len(images),) or labels.dtype.kind not in "iu":
            raise SchemaError(
                f"{self.name}: labels must be {len(images)} integers, "
                f"got {labels.dtype} {labels.shape}"
            )
        if len(labels) and labels.min() < 0:
            raise SchemaError(f"{self.name}: labels must be >= 0, got {labels.min()}")


class RawChunkWriter(BlockWriter):
    """Writes whole chunks of a preallocated uncompressed file with `pwrite`, no HDF5 library
    call: several processes can fill one file at once, each its own chunks."""

    def __init__(
        self, layout: Layout, first: int = 0, count: int | None = None, name: str | None = None
    ) -> None:
        """Write samples [first, first + count) (default: to the end) of the layout's file."""
        n = layout.n - first if count is None else count
        super().__init__(
            name or layout.path,
            n,
            layout.sample_shape,
            layout.dtype,
            layout.chunk_samples,
            layout.labels_offset is not None,
            first,
        )
        self.layout = layout
        self._fd = os.open(layout.path, os.O_WRONLY)
        self._flusher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hpcgan-flush")
        self._flushing: Future | None = None
        self._unflushed = 0

    def _store(self, start: int, images: np.ndarray, labels: np.ndarray | None) -> None:
        offsets = self.layout.chunk_offsets
        first_chunk = start // self.chunk
        chunk_bytes = self.chunk * images[0].nbytes
        data = memoryview(images).cast("B")
        spans = offsets[first_chunk : first_chunk + -(-len(images) // self.chunk)]
        if np.all(np.diff(spans) == chunk_bytes):  # chunks lie back to back: one call
            _pwrite_all(self._fd, data, int(spans[0]))
        else:
            for k, offset in enumerate(spans):
                _pwrite_all(self._fd, data[k * chunk_bytes : (k + 1) * chunk_bytes], int(offset))
        if labels is not None:
            _pwrite_all(
                self._fd, memoryview(labels).cast("B"), self.layout.labels_offset + 8 * start
            )
        self._unflushed += len(data)
        if self._unflushed >= _FLUSH_BYTES and (self._flushing is None or self._flushing.done()):
            self._flushing = self._flusher.submit(os.fdatasync, self._fd)  # releases the GIL
            self._unflushed = 0

    def close(self, flush: bool = True) -> None:
        """Flushing matters across nodes: the owner renames the file once every writer is done."""
        super().close(flush)
        if self._fd >= 0:
            self._flusher.shutdown(wait=True)
            if flush:
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1


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
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        self._file: h5py.File | None = h5py.File(self.tmp, "w", locking=False)
        try:
            images, label_set = _create_datasets(
                self._file, n, sample_shape, dtype, chunk, compression, labels
            )
            self.layout = None if compression else _layout(self.tmp, images, label_set)
            if self.layout is None:
                self._blocks: BlockWriter = _H5BlockWriter(str(self.path), images, label_set)
            else:
                self._file.close()  # HDF5 must not hold (or rewrite) what pwrite changes
                self._file = None
                self._blocks = RawChunkWriter(self.layout, name=str(self.path))
        except BaseException:
            self.abort()
            raise

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()

    @property
    def chunk_samples(self) -> int:
        return self._blocks.chunk

    def write(self, start: int, images: np.ndarray, labels: np.ndarray | None = None) -> None:
        """Write samples [start, start + len(images)) of [B, C, H, W] images (see BlockWriter)."""
        self._blocks.write(start, images, labels)

    def adopt(self, start: int, count: int, table: ChunkTable) -> None:
        """Samples [start, start + count) were written by another process (RawChunkWriter)."""
        self._blocks.adopt(start, count, table)

    def table(self) -> ChunkTable:
        """Statistics and checksums of every chunk, once all samples are written or adopted."""
        return self._blocks.table()

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
            for offset in range(0, len(source), self.chunk_samples):
                mask, data = source.id.read_direct_chunk((offset, 0, 0, 0))
                images.id.write_direct_chunk((start + offset, 0, 0, 0), data, mask)
            if "labels" in self._file:
                labels = f["labels"]
                for a, b in _blocks(len(labels), 1 << 20):
                    self._file["labels"][start + a : start + b] = labels[a:b]
            self.adopt(start, len(source), table)

    def commit(
        self, *, kind: str, source: str, attrs: dict | None = None, durable: bool = True
    ) -> DatasetInfo:
        """Add statistics, checksums and attributes; flush (if `durable`) and rename onto path."""
        if kind not in KINDS:
            raise SchemaError(f"{self.path}: kind must be 'image' or 'field', got {kind!r}")
        table = self.table()
        self._blocks.close(flush=durable)
        stats, channels = table.stats()
        f = self._file or h5py.File(self.tmp, "r+", locking=False)
        self._file = f
        f.create_dataset(CHECKSUMS, data=table.crc32)
        if "labels" in f:
            f.attrs["labels_crc32"] = np.uint32(_labels_crc32(f["labels"]))
        f.attrs["hpcgan_schema"] = SCHEMA_VERSION
        f.attrs["kind"] = kind
        f.attrs["source"] = source
        f.attrs["count"] = self._blocks.n
        for key in STAT_KEYS:
            f.attrs[key] = np.float64(stats[key])
        for key, values in channels.items():
            f.attrs[key] = values
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
        f.close()
        self._file = None
        if durable:
            _fsync(self.tmp)
        os.replace(self.tmp, self.path)
        return read_info(self.path)

    def abort(self) -> None:
        """Drop the temporary file (no-op after a successful commit)."""
        blocks = getattr(self, "_blocks", None)
        if blocks is not None:
            blocks.close(flush=False)
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


def _check_layout(
    path: Path, n: int, sample_shape: tuple[int, ...], dtype: str, compression: str | None
) -> None:
    if n < 1 or len(sample_shape) != 3 or min(sample_shape) < 1:
        raise SchemaError(f"{path}: cannot write {n} samples of shape {sample_shape}")
    if np.dtype(dtype).name not in DTYPES:
        raise SchemaError(f"{path}: images must be uint8 or float32, got {dtype}")
    if compression not in COMPRESSIONS:
        raise SchemaError(f"{path}: compression must be None, 'lzf' or 'gzip', got {compression!r}")


def _create_datasets(
    f: h5py.File,
    n: int,
    sample_shape: tuple[int, int, int],
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


def _crc32s(block: np.ndarray, starts: np.ndarray, chunk: int) -> list[int]:
    return [zlib.crc32(block[s : s + chunk]) for s in starts]


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    """pwrite may write less than asked (2 GiB per call on Linux): loop until done."""
    while data:
        done = os.pwrite(fd, data, offset)
        data, offset = data[done:], offset + done


def _first_nonfinite(values: np.ndarray) -> int:
    """Index of the first sample holding NaN or Inf (the slow path, after a chunk's min or
    max came out non-finite)."""
    finite = np.isfinite(values.reshape(len(values), -1)).all(axis=1)
    return int(np.flatnonzero(~finite)[0])


def _labels_crc32(labels: h5py.Dataset) -> int:
    crc = 0
    for start, stop in _blocks(len(labels), 1 << 20):
        crc = zlib.crc32(np.ascontiguousarray(labels[start:stop], dtype="<i8"), crc)
    return crc


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
    if int(stored) != _labels_crc32(f["labels"]):
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
                f"{path}: attribute {key} is {_show(value)}, expected {channels} finite numbers"
            )
        found[key] = array.astype(np.float64)
    return found


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
        _compare_stat(path, key, stored[key], measured[key], spread)


def _compare_stat(path: Path, key: str, a: float, b: float, spread: float) -> None:
    if abs(a - b) > _STATS_RTOL * max(abs(a), abs(b)) + 1e-12 * spread:
        raise SchemaError(
            f"{path}: stored {key} {a:.9g} does not match the data ({b:.9g}); "
            "the file was modified or damaged after it was written"
        )


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
