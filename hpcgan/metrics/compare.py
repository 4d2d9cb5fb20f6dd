"""Metrics of generated vs real samples, from their reduced sums (hpcgan.metrics.stats).

Every value is a distance: lower is better, 0 means indistinguishable at this sample size;
except the class fractions (``eval/coverage_min`` higher is better). Names carry the prefix
``eval/``; units are those of the data for ``eval/w1``, fractions elsewhere.
"""

from __future__ import annotations

import numpy as np
import torch

from hpcgan import spectrum
from hpcgan.data.transforms import ValueTransform
from hpcgan.metrics import frechet, histogram, minkowski
from hpcgan.metrics.stats import Layout, Totals

# Thresholds of the Minkowski functionals: these quantiles of the real pixel values.
QUANTILES = np.linspace(0.05, 0.95, 19)

Comparison = tuple[dict[str, float], dict[str, np.ndarray]]  # (metrics by name, curves for plots)


def _physical(transform: ValueTransform, y: np.ndarray) -> np.ndarray:
    return transform.decode(torch.from_numpy(y)).double().numpy()


def _moments(t: Totals, layout: Layout) -> tuple[float, float]:
    values = t["count"][0] * np.prod(layout.shape)
    mean = t["moments"][0] / values
    return mean, float(np.sqrt(max(t["moments"][1] / values - mean**2, 0.0)))


def value_summary(real: Totals, fake: Totals, layout: Layout) -> dict[str, dict[str, float]]:
    """Mean and std of every value of the real and the generated samples, in data units."""
    return {
        side: dict(zip(("mean", "std"), map(float, _moments(t, layout)), strict=True))
        for side, t in (("reference", real), ("generated", fake))
    }


def compare(real: Totals, fake: Totals, layout: Layout, transform: ValueTransform) -> Comparison:
    """(metrics by name, curves for plots) of ``fake`` against ``real``."""
    metrics: dict[str, float] = {}
    values = _physical(transform, histogram.centers(layout.bins))  # bin centres, physical
    metrics["eval/ks"] = histogram.ks_distance(fake["pixels"], real["pixels"])
    metrics["eval/w1"] = histogram.w1_distance(fake["pixels"], real["pixels"], values)
    (mean_r, std_r), (mean_f, std_f) = _moments(real, layout), _moments(fake, layout)
    metrics["eval/mean_rel_err"] = float(abs(mean_f / mean_r - 1.0)) if mean_r else abs(mean_f)
    metrics["eval/std_rel_err"] = float(abs(std_f / std_r - 1.0)) if std_r else std_f
    curves = {"values": values, "pixels_real": real["pixels"], "pixels_fake": fake["pixels"]}
    parts = [_power_spectrum(real, fake, layout)] if layout.spatial else []
    if layout.minkowski:
        parts.append(_minkowski(real, fake, layout, transform))
    for part_metrics, part_curves in parts:
        metrics.update(part_metrics)
        curves.update(part_curves)
    for name in layout.features:
        metrics.update(_feature_distances(real, fake, name, layout.kid_rows))
    if layout.num_classes:
        fractions = fake["classes"] / max(fake["classes"].sum(), 1.0)
        metrics["eval/coverage_min"] = float(fractions.min())
        metrics.update({f"eval/class_frac/{c}": float(v) for c, v in enumerate(fractions)})
        curves["class_frac_fake"] = fractions
        curves["class_frac_real"] = real["classes"] / max(real["classes"].sum(), 1.0)
    return metrics, curves


def _power_spectrum(real: Totals, fake: Totals, layout: Layout) -> Comparison:
    """Radially averaged power spectrum (fields and one-channel images, any rank)."""
    c, *spatial = layout.shape
    p_real = spectrum.spectrum(real["power"], real["count"][0] * c, tuple(spatial))
    p_fake = spectrum.spectrum(fake["power"], fake["count"][0] * c, tuple(spatial))
    metrics = {"eval/ps_rel_err": float(spectrum.relative_error(p_fake, p_real).mean())}
    return metrics, {"k": np.arange(len(p_real)), "ps_real": p_real, "ps_fake": p_fake}


def _minkowski(real: Totals, fake: Totals, layout: Layout, transform: ValueTransform) -> Comparison:
    """Minkowski functionals of excursion sets over thresholds (2-D: V0..V2, 3-D: V0..V3)."""
    thresholds = histogram.quantile_bins(real["pixels"], QUANTILES)
    m_real = minkowski.functionals(real["pixels"], real["minkowski"], thresholds)
    m_fake = minkowski.functionals(fake["pixels"], fake["minkowski"], thresholds)
    errors = minkowski.curve_errors(m_fake, m_real)
    metrics = {"eval/minkowski_err": float(errors.mean())}
    for name, err in zip(minkowski.names(layout.ndim), errors):
        metrics[f"eval/minkowski_{name.lower()}_err"] = float(err)
    edges = -1.0 + thresholds * (2.0 / layout.bins)  # lower edge of each threshold bin
    curves = {"thresholds": _physical(transform, edges), "mink_real": m_real, "mink_fake": m_fake}
    return metrics, curves


def _feature_distances(real: Totals, fake: Totals, name: str, kid_rows: int) -> dict[str, float]:
    mu_r, cov_r = frechet.moments(real["count"][0], real[f"{name}/sum"], real[f"{name}/outer"])
    mu_f, cov_f = frechet.moments(fake["count"][0], fake[f"{name}/sum"], fake[f"{name}/outer"])
    out = {f"eval/fd_{name}": frechet.frechet_distance(mu_f, cov_f, mu_r, cov_r)}
    if kid_rows >= 2:  # the unbiased estimator needs two samples a side
        out[f"eval/kid_{name}"] = frechet.kernel_distance(fake[f"{name}/kid"], real[f"{name}/kid"])
    return out
