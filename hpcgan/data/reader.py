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
from hpcgan.data.sharding import ShardPlan
from hpcgan.data.transforms import ValueTransform


class ShardReader:
    """Reads rank ``rank``'s part of global batch ``b`` as contiguous runs (see sharding.py),
    of the training samples only (holdout.py).

    The file is opened on first use, in the process that reads (never before a fork), without
    HDF5 file locking (which parallel file systems often do not support).
    """

    def __init__(
        self,
        info: DatasetInfo,
        plan: ShardPlan,
        rank: int,
        world: int,
        transform: ValueTransform,
        split: Split | None = None,
    ) -> None:
        self.info, self.plan, self.rank, self.world = info, plan, rank, world
        self.split = split  # data.holdout; the plan's positions are split.train_indices
        self.pool = split.train_indices if split is not None and split.held else None
        self.transform = transform
        self._file: h5py.File | None = None
        self.samples_read = 0

    def _datasets(self) -> tuple[h5py.Dataset, h5py.Dataset | None]:
        if self._file is None:
            # Without compression, no chunk cache: the reads are contiguous runs, and the cache
            # would read whole chunks to serve a part (measured 1.7-1.9x faster raw reads).
            cache = {} if self.info.compression else {"rdcc_nbytes": 0}
            self._file = h5py.File(self.info.path, "r", locking=False, **cache)
        labels = self._file["labels"] if self.info.has_labels else None
        return self._file["images"], labels

    def read(self, global_batch: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Images in [-1, 1] as float32 ``[n, C, *S]`` and labels ``[n]`` (or None)."""
        images, labels = self._datasets()
        runs = file_runs(self.plan.runs(global_batch, self.rank, self.world), self.pool)
        n = sum(b - a for a, b in runs)
        raw = np.empty((n, *self.info.shape), dtype=images.dtype)
        out_labels = np.empty(n, dtype=np.int64) if labels is not None else None
        pos = 0
        for a, b in runs:
            images.read_direct(raw, np.s_[a:b], np.s_[pos : pos + b - a])
            if labels is not None:
                labels.read_direct(out_labels, np.s_[a:b], np.s_[pos : pos + b - a])
            pos += b - a
        self.samples_read += n
        return self.transform.encode(raw), out_labels

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


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
        read: Callable[[int], tuple[np.ndarray, np.ndarray | None]] | None = None,
    ) -> None:
        self.reader, self.pin = reader, pin
        self.read = reader.read if read is None else read
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hpcgan-data")
        self._next = first_batch
        self._pending: Future = self._pool.submit(self._load, first_batch)

    def _load(self, global_batch: int) -> tuple[torch.Tensor, Condition]:
        images, labels = self.read(global_batch)
        x = torch.from_numpy(images)
        y = None if labels is None else torch.from_numpy(labels)
        if self.pin:
            x, y = x.pin_memory(), None if y is None else y.pin_memory()
        return x, Condition(labels=y)

    def next(self) -> tuple[torch.Tensor, Condition]:
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
