"""The held-out split (``data.holdout``): samples that training never reads, kept as the real
reference of evaluation (docs/data.md, "Held-out samples").

The held-out samples are a uniformly random subset of the file's indices, drawn from a fixed
seed: the same file and setting give the same split at any world size, in any run, whatever
``train.seed`` is, so every run on a file is judged against the same samples. Random, not a
contiguous tail: files are often sorted (by writer, run, parameter), and a tail would differ
from the rest. Training samples are renumbered 0..n_train-1 in file order; the sharding plan
works on those positions, and :func:`file_runs` turns its runs back into file ranges, split
where a held-out sample lies in between (so training reads no held-out byte).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from hpcgan.data.sharding import Run
from hpcgan.errors import UserError

SPLIT_SEED = 0x4D5E1D  # the split belongs to the file and the setting, not to a run's seed
AUTO_FRACTION = 0.1
# auto holds out a tenth once that tenth is 1000 samples: enough for the classifier two-sample
# test (1000 per side) and a spectrum to 1%; smaller files keep every sample for training.
AUTO_MIN_SAMPLES = 10_000


def holdout_count(setting: str, n: int) -> int:
    """Samples held out of ``n`` for ``data.holdout``: ``auto``, a fraction in [0, 1) or a
    count; refused (UserError) when it leaves no training sample or is not a number."""
    text = str(setting).strip().lower()
    if text == "auto":
        return int(n * AUTO_FRACTION) if n >= AUTO_MIN_SAMPLES else 0
    try:
        value = float(text)
    except ValueError:
        raise UserError(
            f"data.holdout={setting!r}: use auto, a fraction in [0, 1) or a sample count"
        ) from None
    if not np.isfinite(value) or value < 0 or (value >= 1 and value != int(value)):
        raise UserError(
            f"data.holdout={setting!r}: use auto, a fraction in [0, 1) or a whole sample count"
        )
    count = int(value) if value >= 1 else int(round(value * n))
    if count >= n:
        raise UserError(
            f"data.holdout={setting!r} holds out {count} of the {n} samples: none is left to "
            "train on"
        )
    return count


@dataclass(frozen=True)
class Split:
    """``held`` of the ``n`` samples are held out; the rest train."""

    n: int
    held: int

    @property
    def train_count(self) -> int:
        return self.n - self.held

    @cached_property
    def held_indices(self) -> np.ndarray:
        """The held-out file indices, ascending."""
        rng = np.random.default_rng(SPLIT_SEED)
        return np.sort(rng.choice(self.n, size=self.held, replace=False)).astype(np.int64)

    @cached_property
    def train_indices(self) -> np.ndarray:
        """The training file indices, ascending (position i of the training set is file index
        train_indices[i])."""
        keep = np.ones(self.n, dtype=bool)
        keep[self.held_indices] = False
        return np.flatnonzero(keep).astype(np.int64)


def make_split(setting: str, n: int) -> Split:
    return Split(n, holdout_count(setting, n))


def file_runs(runs: list[Run], pool: np.ndarray | None) -> list[Run]:
    """File ranges of ``runs`` given in positions of ``pool`` (ascending file indices; None:
    positions are file indices). A run is split wherever the pool skips an index."""
    if pool is None:
        return runs
    out: list[Run] = []
    for a, b in runs:
        idx = pool[a:b]
        if not len(idx):
            continue
        breaks = np.flatnonzero(np.diff(idx) != 1) + 1
        for part in np.split(idx, breaks):
            start, stop = int(part[0]), int(part[-1]) + 1
            if out and out[-1][1] == start:
                out[-1] = (out[-1][0], stop)
            else:
                out.append((start, stop))
    return out
