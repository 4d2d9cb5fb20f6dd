"""Distances between feature distributions: Frechet (FID-style) and kernel (KID-style).

The Frechet distance needs only the count, sum and sum of outer products of the features, which
add across ranks; KID needs the features themselves, so it uses a fixed, small subset.
"""

from __future__ import annotations

import numpy as np


def moments(count: float, total: np.ndarray, outer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [d] and unbiased covariance [d, d] from the sums over ``count`` feature vectors."""
    mu = total / count
    cov = (outer - count * np.outer(mu, mu)) / max(count - 1.0, 1.0)
    return mu, (cov + cov.T) / 2.0


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(a)
    return (vectors * np.sqrt(values.clip(min=0.0))) @ vectors.T


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray):
    """|mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2)) of two Gaussians.

    tr (C1 C2)^(1/2) is computed as the trace of the square root of the symmetric matrix
    C1^(1/2) C2 C1^(1/2), which has the same eigenvalues: no complex sqrtm, no scipy.
    """
    s1 = _sqrt_psd(cov1)
    cross = np.sqrt(np.linalg.eigvalsh(s1 @ cov2 @ s1).clip(min=0.0)).sum()
    value = np.square(mu1 - mu2).sum() + np.trace(cov1) + np.trace(cov2) - 2.0 * cross
    return float(max(value, 0.0))


def kernel_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel (x.y / d + 1)^3 of KID (Binkowski et al.
    2018) between feature sets x [m, d] and y [m', d]."""
    d = x.shape[1]

    def k(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a @ b.T / d + 1.0) ** 3

    kxx, kyy = k(x, x), k(y, y)
    m, n = len(x), len(y)
    within_x = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    within_y = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * k(x, y).mean())
