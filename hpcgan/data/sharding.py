"""Which samples each rank reads: pure arithmetic, no files, no processes.

The epoch is cut into *segments* of ``segment`` consecutive samples (the last may be shorter).
Each epoch permutes the segments with a generator seeded by ``(seed, epoch)``; concatenated, they
give the epoch's sample order. Global batch ``b`` is positions ``[b*B, (b+1)*B)`` of that order
and rank ``r`` of ``W`` holds positions ``[b*B + r*B/W, b*B + (r+1)*B/W)``. So:

* the sequence of global batches depends on the data size, seed, segment and batch size only,
  never on the world size;
* within an epoch no sample repeats (the incomplete last batch is dropped);
* every rank reads a few contiguous runs of the file (one or two per segment it touches),
  never a long list of scattered indices.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

Run = tuple[int, int]  # [start, stop) in file order


@dataclass(frozen=True)
class ShardPlan:
    n: int
    batch_size: int
    segment: int
    seed: int

    def __post_init__(self) -> None:
        if self.n < self.batch_size:
            raise ValueError(
                f"{self.n} samples are fewer than one global batch ({self.batch_size})"
            )
        if self.segment < 1 or self.batch_size < 1:
            raise ValueError("segment and batch_size must be positive")

    @property
    def batches_per_epoch(self) -> int:
        return self.n // self.batch_size

    def locate(self, global_batch: int) -> tuple[int, int]:
        """(epoch, batch within the epoch) of the ``global_batch``-th batch of the run."""
        return divmod(global_batch, self.batches_per_epoch)

    def runs(self, global_batch: int, rank: int, world: int) -> list[Run]:
        """Contiguous file ranges that rank ``rank`` of ``world`` reads for this batch."""
        if self.batch_size % world:
            raise ValueError(f"batch {self.batch_size} is not divisible by {world} ranks")
        epoch, index = self.locate(global_batch)
        local = self.batch_size // world
        first = index * self.batch_size + rank * local
        return _runs_between(self, epoch, first, first + local)


@lru_cache(maxsize=4)
def _epoch_layout(plan: ShardPlan, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """Permuted segment starts and the epoch position where each begins (plus the end)."""
    starts = np.arange(0, plan.n, plan.segment, dtype=np.int64)
    order = np.random.default_rng([plan.seed, epoch]).permutation(len(starts))
    starts = starts[order]
    lengths = np.minimum(plan.segment, plan.n - starts)
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    return starts, offsets


def _runs_between(plan: ShardPlan, epoch: int, first: int, stop: int) -> list[Run]:
    starts, offsets = _epoch_layout(plan, epoch)
    runs: list[Run] = []
    seg = int(np.searchsorted(offsets, first, side="right")) - 1
    pos = first
    while pos < stop:
        seg_begin, seg_end = offsets[seg], offsets[seg + 1]
        a = int(starts[seg] + (pos - seg_begin))
        b = int(starts[seg] + (min(stop, seg_end) - seg_begin))
        if runs and runs[-1][1] == a:  # neighbouring segments in file order: one read
            runs[-1] = (runs[-1][0], b)
        else:
            runs.append((a, b))
        pos = min(stop, int(seg_end))
        seg += 1
    return runs


def indices(runs: list[Run]) -> np.ndarray:
    """Sample indices of a list of runs (for tests and bookkeeping)."""
    if not runs:
        return np.empty(0, dtype=np.int64)
    return np.concatenate([np.arange(a, b) for a, b in runs])
