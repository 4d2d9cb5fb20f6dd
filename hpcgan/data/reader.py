"""Each rank reads its slice of each global batch from the HDF5 file, and nothing else."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import h5py
import numpy as np
import torch

from hpcgan.condition import Condition
from hpcgan.data.format import DatasetInfo
from hpcgan.data.holdout import Split, file_runs
from hpcgan.data.integrity import ChunkCheck
from hpcgan.data.sharding import ShardPlan
from hpcgan.data.transforms import ConditionTransform, ValueTransform, make_condition_transform

# What ShardReader.read returns: images [n, C, *S] in [-1, 1], labels [n] int64 or None,
# encoded conditions [n, K] float32 or None, all of the same samples in the same order.
Batch = tuple[np.ndarray, np.ndarray | None, np.ndarray | None]


class ShardReader:
    """Reads rank ``rank``'s part of global batch ``b`` as contiguous runs (see sharding.py),
    of the training samples only (holdout.py), with those samples' labels and conditions.

    The file is opened on first use, in the process that reads (never before a fork), without
    HDF5 file locking (which parallel file systems often do not support). What it reads is
    checked against the file's CRC-32s (hpcgan.data.integrity): a damaged chunk is a
    SchemaError naming the file and the chunk.
    """

    def __init__(
        self,
        info: DatasetInfo,
        plan: ShardPlan,
        rank: int,
        world: int,
        transform: ValueTransform,
        split: Split | None = None,
        conditions: ConditionTransform | None = None,
    ) -> None:
        self.info, self.plan, self.rank, self.world = info, plan, rank, world
        self.split = split  # data.holdout; the plan's positions are split.train_indices
        self.pool = split.train_indices if split is not None and split.held else None
        self.transform = transform
        # /conditions are encoded by `conditions` (default: data.condition_transform=auto)
        self.conditions = conditions or make_condition_transform(info)
        self._file: h5py.File | None = None
        self._check: ChunkCheck | None = None
        self.samples_read = 0

    def _datasets(self) -> tuple[h5py.Dataset, h5py.Dataset | None, h5py.Dataset | None]:
        if self._file is None:
            # Without compression, no chunk cache: the reads are contiguous runs, and the cache
            # would read whole chunks to serve a part (measured 1.7-1.9x faster raw reads).
            cache = {} if self.info.compression else {"rdcc_nbytes": 0}
            f = h5py.File(self.info.path, "r", locking=False, **cache)
            try:
                self._check = ChunkCheck(self.info.path, f, self.info.chunk_samples)
            except BaseException:
                f.close()
                raise
            self._file = f
        labels = self._file["labels"] if self.info.has_labels else None
        conditions = self._file["conditions"] if self.info.has_conditions else None
        return self._file["images"], labels, conditions

    def read(self, global_batch: int) -> Batch:
        """Images in [-1, 1] as float32 ``[n, C, *S]``, labels ``[n]`` (or None) and encoded
        conditions ``[n, K]`` float32 (or None) of this rank's samples of the batch."""
        images, labels, conditions = self._datasets()
        runs = file_runs(self.plan.runs(global_batch, self.rank, self.world), self.pool)
        n = sum(b - a for a, b in runs)
        raw = np.empty((n, *self.info.shape), dtype=images.dtype)
        out_labels = np.empty(n, dtype=np.int64) if labels is not None else None
        values = None if conditions is None else np.empty((n, conditions.shape[1]), np.float32)
        pos = 0
        for a, b in runs:
            rows = np.s_[pos : pos + b - a]
            self._check.read(images, raw, a, b, pos)
            if labels is not None:
                labels.read_direct(out_labels, np.s_[a:b], rows)
            if values is not None:
                conditions.read_direct(values, np.s_[a:b], rows)
            pos += b - a
        self.samples_read += n
        if values is not None:
            values = self.conditions.encode(values)
        return self.transform.encode(raw), out_labels, values

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = self._check = None


class Prefetcher:
    """Reads batch ``b+1`` on a background thread while the step on batch ``b`` computes.

    With ``pin``, batches land in page-locked memory, so the copy to the GPU is asynchronous.
    ``read`` replaces ``reader.read`` (hpcgan.bench passes a wrapper that times the reads).
    """

    def __init__(
        self,
        reader: ShardReader,
        first_batch: int,
        pin: bool = False,
        read: Callable[[int], Batch] | None = None,
    ) -> None:
        self.reader, self.pin = reader, pin
        self.read = reader.read if read is None else read
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hpcgan-data")
        self._next = first_batch
        self._pending: Future = self._pool.submit(self._load, first_batch)

    def _load(self, global_batch: int) -> tuple[torch.Tensor, Condition]:
        images, labels, values = self.read(global_batch)
        tensors = [None if a is None else torch.from_numpy(a) for a in (images, labels, values)]
        if self.pin:
            tensors = [None if t is None else t.pin_memory() for t in tensors]
        x, y, v = tensors
        return x, Condition(y, v)

    def next(self) -> tuple[torch.Tensor, Condition]:
        """This rank's real samples ``[n, C, *S]`` of the next batch and their conditions."""
        batch = self._pending.result()
        self._next += 1
        self._pending = self._pool.submit(self._load, self._next)
        return batch

    def seek(self, global_batch: int) -> None:
        """Continue from another batch (after reloading a checkpoint)."""
        self._pending.cancel()
        self._next = global_batch
        self._pending = self._pool.submit(self._load, global_batch)

    def close(self) -> None:
        self._pending.cancel()
        self._pool.shutdown(wait=True)
        self.reader.close()
