"""High-level features of each sample, CaloChallenge style, and their separation power.

Per sample, in physical units (docs/evaluation.md, "High-level features"):
  total         sum of all values (all channels)
  max           largest value
  sparsity      share of values near zero: |value| <= NEAR_ZERO x the data's largest |value|
                (the file's stored min/max)
  centre_<a>    first moment of position along axis a (pixel units, 0 .. S-1), weighted by
                value - the data's min (so weights are >= 0)
  width_<a>     square root of the second central moment of position along axis a, same weights
  peaks         fields in a periodic box only (hpcgan.metrics.table): local maxima (3^d
                neighbourhood, periodic) above the data's mean + 1 std (stored statistics)
Axes are named z, y, x (the last two for 2-D samples, x for 1-D ones). For each feature,
the separation power of the generated vs the reference histogram (Diefenbacher et al. /
CaloChallenge 2022):
0.5 * sum_i (h1_i - h2_i)^2 / (h1_i + h2_i) of normalised histograms on BINS equal bins over
the reference's range, plus one overflow bin on each side (0 = identical, 1 = disjoint).

The features of every sample are kept as rows indexed by the sample's position in its set, so
ranks fill disjoint rows and a sum across ranks gives them all (hpcgan.metrics.stats); the
result does not depend on the number of ranks.
"""

from __future__ import annotations

import numpy as np
import torch

from hpcgan import spectrum

NEAR_ZERO = 0.01
BINS = 30
AXES = ("z", "y", "x")


def names(ndim: int, field: bool) -> list[str]:
    """The features of samples with ``ndim`` spatial dimensions; ``field``: with peak counts
    (fields in a periodic box, hpcgan.metrics.table)."""
    axes = AXES[-ndim:] if ndim <= 3 else tuple(f"a{i}" for i in range(ndim))
    out = ["total", "max", "sparsity"]
    out += [f"centre_{a}" for a in axes] + [f"width_{a}" for a in axes]
    return out + (["peaks"] if field else [])


def per_sample(x: torch.Tensor, stats: dict[str, float], field: bool) -> torch.Tensor:
    """Features [N, F] float64 (order of :func:`names`) of samples x [N, C, *S], physical;
    ``field``: with peak counts."""
    xd = x.double()
    n, ndim = len(xd), xd.dim() - 2
    flat = xd.reshape(n, -1)
    scale = max(abs(stats["min"]), abs(stats["max"]), 1e-300)
    cols = [flat.sum(1), flat.max(1).values, (flat.abs() <= NEAR_ZERO * scale).double().mean(1)]
    w = (xd - stats["min"]).clamp_min(0).sum(1)  # [N, *S], weights >= 0
    total = w.reshape(n, -1).sum(1).clamp_min(1e-300)
    centres, widths = [], []
    for axis in range(ndim):
        others = tuple(d for d in range(1, ndim + 1) if d != axis + 1)
        profile = w.sum(others) if others else w  # [N, S_axis]
        pos = torch.arange(profile.shape[1], dtype=torch.float64, device=x.device)
        centre = (profile * pos).sum(1) / total
        var = (profile * (pos - centre[:, None]).square()).sum(1) / total
        centres.append(centre)
        widths.append(var.clamp_min(0).sqrt())
    cols += centres + widths
    if field:
        cols.append(peak_counts(x, stats["mean"] + stats["std"]))
    return torch.stack(cols, dim=1)


def peak_counts(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """Local maxima per sample [N] float64: values equal to the maximum of their periodic 3^d
    neighbourhood (scipy.ndimage.maximum_filter) and above ``threshold``; channels add."""
    a = x.detach().cpu().double().numpy()
    size = (1, 1) + (3,) * (a.ndim - 2)
    import scipy.ndimage  # lazily: see hpcgan.metrics

    peak = (a == scipy.ndimage.maximum_filter(a, size=size, mode="wrap")) & (a > threshold)
    return torch.from_numpy(peak.reshape(len(a), -1).sum(1).astype(np.float64)).to(x.device)


def spectra(x: torch.Tensor) -> torch.Tensor:
    """Each sample's power spectrum P(k) [N, num_bins] float64 (channels averaged), the same
    normalisation as hpcgan.spectrum.spectrum."""
    spatial = tuple(x.shape[2:])
    sums = torch.stack([spectrum.power_sums(x[i : i + 1]) for i in range(len(x))])
    counts = torch.from_numpy(spectrum.mode_counts(spatial)).to(sums)
    return sums / (counts.clamp_min(1) * x.shape[1] * float(np.prod(spatial)))


def separation_power(values: np.ndarray, reference: np.ndarray, bins: int = BINS) -> float:
    """0.5 * sum (h1 - h2)^2 / (h1 + h2) of the normalised histograms of ``values`` and
    ``reference`` on ``bins`` equal bins over the reference's range and two overflow bins."""
    lo, hi = float(reference.min()), float(reference.max())
    if not hi > lo:  # a constant reference: one bin around its value
        lo, hi, bins = lo - 0.5, hi + 0.5, 1
    edges = np.r_[-np.inf, np.linspace(lo, hi, bins + 1), np.inf]
    edges[-2] = np.nextafter(hi, np.inf)  # the reference's max lies inside the last bin
    h1 = np.histogram(values, edges)[0] / max(len(values), 1)
    h2 = np.histogram(reference, edges)[0] / max(len(reference), 1)
    both = h1 + h2
    keep = both > 0
    return float(0.5 * ((h1[keep] - h2[keep]) ** 2 / both[keep]).sum())


def spread_error(ps1: np.ndarray, ps2: np.ndarray, count: float, ref: tuple) -> float:
    """Mean over k >= 1 of |std_gen(k) / std_ref(k) - 1|: the per-k ensemble standard deviation
    of the samples' spectra, from the sums of P_i(k) and P_i(k)^2 (``ref``: the reference's
    (ps1, ps2, count))."""

    def std(s1: np.ndarray, s2: np.ndarray, c: float) -> np.ndarray:
        c = max(c, 2.0)
        return np.sqrt(np.maximum(s2 - s1**2 / c, 0.0) / (c - 1.0))

    gen, real = std(ps1, ps2, count), std(*ref)
    return float(np.mean(np.abs(gen[1:] / np.maximum(real[1:], 1e-300) - 1.0)))


def compare(fake: np.ndarray, real: np.ndarray, feature_names: list[str]) -> dict[str, float]:
    """eval/sep/<feature> for each feature, and eval/sep_max (the largest), of feature rows
    ``fake`` [n1, F] against the reference rows ``real`` [n2, F]."""
    out = {
        f"eval/sep/{name}": separation_power(fake[:, i], real[:, i])
        for i, name in enumerate(feature_names)
    }
    out["eval/sep_max"] = max(out.values()) if out else float("nan")
    return out
