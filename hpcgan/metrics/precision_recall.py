"""Precision and recall of generated samples (Kynkaanniemi et al. 2019, "Improved Precision and
Recall Metric for Assessing Generative Models"), in a feature space.

Each set's manifold is the union of balls around its feature vectors, each of radius the
distance to its k-th nearest neighbour in the same set (k = 3, as in the paper). Precision: the
share of generated samples inside the real manifold (are the samples realistic?). Recall: the
share of real samples inside the generated manifold (is the data's variety covered?). Both are
in [0, 1], higher is better; docs/evaluation.md, "Precision and recall".
"""

from __future__ import annotations

import numpy as np

K = 3
CHUNK = 2048  # rows of the distance matrix computed at once


def radii(features: np.ndarray, k: int = K) -> np.ndarray:
    """Distance [N] of each row to its k-th nearest other row."""
    from sklearn.neighbors import NearestNeighbors  # lazily: see hpcgan.metrics

    nn = NearestNeighbors(n_neighbors=min(k + 1, len(features))).fit(features)
    return nn.kneighbors(features)[0][:, -1]


def inside(points: np.ndarray, centres: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Whether each point lies in some ball (centre, radius), [len(points)] bool."""
    from sklearn.metrics import pairwise_distances  # lazily: see hpcgan.metrics

    out = np.zeros(len(points), dtype=bool)
    for start in range(0, len(points), CHUNK):
        d = pairwise_distances(points[start : start + CHUNK], centres)
        out[start : start + CHUNK] = (d <= radius[None, :]).any(axis=1)
    return out


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = K) -> tuple[float, float]:
    """(precision, recall) of feature rows ``fake`` [N1, D] against ``real`` [N2, D]; NaN when
    a set has k rows or fewer."""
    if min(len(real), len(fake)) <= k:
        return float("nan"), float("nan")
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    precision = inside(fake, real, radii(real, k)).mean()
    recall = inside(real, fake, radii(fake, k)).mean()
    return float(precision), float(recall)
