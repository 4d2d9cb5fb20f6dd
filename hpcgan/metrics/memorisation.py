"""Does a generator copy its training samples? Nearest-neighbour distances to the training set.

For each generated sample, the distance to its nearest training sample; for each held-out
sample (real, never trained on), the same. A generator that learnt the distribution puts its
samples as far from the training set as held-out data is; one that copies puts them closer.
Reported (docs/evaluation.md, "Memorisation"):
  ratio        median generated NN distance / median held-out NN distance (about 1 when not
               copying, 0 for exact copies)
  copy_share   share of generated samples strictly closer to a training sample than every
               held-out sample is (closer than the smallest held-out NN distance); about
               1 / (held-out count + 1) for a generator that samples the data's law
  flagged      ratio < RATIO_FLAG or copy_share > SHARE_FLAG
Distances are Euclidean between flattened samples (or any feature rows).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RATIO_FLAG = 0.7
SHARE_FLAG = 0.01
TRAIN_SAMPLES = 10_000  # training samples searched, at most...
TRAIN_BYTES = 256 * 1024 * 1024  # ...and at most this much float32 (big volumes)


def train_count(shape: tuple[int, ...], available: int) -> int:
    """Training samples to search for neighbours: all up to TRAIN_SAMPLES / TRAIN_BYTES. With
    fewer than all, copies of the others go unseen: the share is then a lower bound."""
    per_sample = 4 * int(np.prod(shape))
    return max(1, min(available, TRAIN_SAMPLES, TRAIN_BYTES // per_sample))


@dataclass(frozen=True)
class Memorisation:
    ratio: float
    copy_share: float
    flagged: bool
    generated: np.ndarray  # [N_gen] NN distances to the training set
    held_out: np.ndarray  # [N_held]


def nn_distances(train: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Distance [N] from each query row to its nearest training row."""
    flat = np.asarray(train, np.float64).reshape(len(train), -1)
    from sklearn.neighbors import NearestNeighbors  # lazily: see hpcgan.metrics

    nn = NearestNeighbors(n_neighbors=1).fit(flat)
    return nn.kneighbors(np.asarray(queries, np.float64).reshape(len(queries), -1))[0][:, 0]


def memorisation(train: np.ndarray, held_out: np.ndarray, generated: np.ndarray) -> Memorisation:
    """Compare the generated samples' NN distances to ``train`` with the held-out ones'
    (arrays [N, ...] of samples or features, any trailing shape)."""
    gen, held = nn_distances(train, generated), nn_distances(train, held_out)
    median = float(np.median(held))
    ratio = float(np.median(gen) / median) if median > 0 else float("nan")
    share = float((gen < held.min()).mean())
    flagged = bool(share > SHARE_FLAG or (np.isfinite(ratio) and ratio < RATIO_FLAG))
    return Memorisation(ratio, share, flagged, gen, held)
