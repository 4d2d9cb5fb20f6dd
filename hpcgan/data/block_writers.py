"""Block writers: check blocks of samples, summarise their chunks (ChunkTable) and store them.

`RawChunkWriter` writes whole chunks of a preallocated, uncompressed file with plain `pwrite`, so
several processes (MPI ranks, nodes of a shared file system) can fill one file at once without
a parallel HDF5 build; the file's owner (hpcgan.data.write.DatasetWriter) later adopts their
tables and adds the attributes.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from hpcgan.data.chunks import ChunkTable, first_nonfinite
from hpcgan.data.format import NonFiniteError, SchemaError

# Raw writers start writeback in the background every this many bytes, so the fsync before
# the rename finds little left to do (the disk works while the CPU converts).
_FLUSH_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Layout:
    """Where a preallocated, uncompressed dataset file keeps its bytes: enough for any process
    (any MPI rank, any node of a shared file system) to write whole chunks with `pwrite`."""

    path: str  # the temporary file
    n: int
    sample_shape: tuple[int, ...]
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
        sample_shape: tuple[int, ...],
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
            first = start + first_nonfinite(images)
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


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    """pwrite may write less than asked (2 GiB per call on Linux): loop until done."""
    while data:
        done = os.pwrite(fd, data, offset)
        data, offset = data[done:], offset + done
