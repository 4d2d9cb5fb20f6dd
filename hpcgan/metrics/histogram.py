"""Pixel-value histograms on fixed bins, and the distances computed from them.

Values are binned in the networks' coordinate y in [-1, 1] (``ValueTransform.encode``), a
monotone map of the physical values (log space for positive fields, where a linear grid in
physical units would crowd most pixels into a few bins). The bins are fixed before any data is
seen and are the same on every rank, so per-rank counts simply add up. KS is invariant under a
monotone map, so binned KS differs from the exact one by at most one bin's probability mass
(about 3e-4 for the built-in fields at 16384 bins); W1 is computed in physical units from the
decoded bin centres and differs from the exact one by about a bin width.
"""

from __future__ import annotations

import numpy as np
import torch

BINS = 16384


def bin_index(y: torch.Tensor, bins: int = BINS) -> torch.Tensor:
    """Bin of every value of ``y`` (any shape, nominally in [-1, 1]); outliers go to end bins."""
    return ((y.float() + 1.0) * (bins / 2.0)).floor_().clamp_(0, bins - 1).long()


def count(index: torch.Tensor, bins: int = BINS) -> torch.Tensor:
    """Histogram [bins] (float64, on index's device) of bin indices of any shape."""
    return torch.bincount(index.flatten(), minlength=bins).double()


def centers(bins: int = BINS) -> np.ndarray:
    """Bin centres [bins] in the y coordinate."""
    return -1.0 + (np.arange(bins) + 0.5) * (2.0 / bins)


def _cdf(counts: np.ndarray) -> np.ndarray:
    return np.cumsum(counts) / max(counts.sum(), 1.0)


def ks_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Kolmogorov-Smirnov distance sup |F_p - F_q| of two histograms on the same bins."""
    return float(np.abs(_cdf(p) - _cdf(q)).max())


def w1_distance(p: np.ndarray, q: np.ndarray, values: np.ndarray) -> float:
    """1-Wasserstein distance of two histograms whose bins sit at ``values`` (increasing),
    in the units of ``values``: the integral of |F_p - F_q| between neighbouring bins."""
    gaps = np.diff(values)
    return float((np.abs(_cdf(p) - _cdf(q))[:-1] * gaps).sum())


def quantile_bins(counts: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """For each quantile q, the first bin t with at least a fraction q of the mass below it:
    the threshold "bin >= t" keeps about 1 - q of the values."""
    below = np.concatenate(([0.0], np.cumsum(counts)[:-1])) / max(counts.sum(), 1.0)
    return np.searchsorted(below, quantiles, side="left").clip(0, len(counts) - 1)
