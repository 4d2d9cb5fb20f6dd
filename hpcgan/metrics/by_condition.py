"""Metrics in bins of each continuous condition, next to their floors (docs/evaluation.md,
"By condition").

Generated samples are made at the held-out samples' conditions, row for row, so every bin of
a condition holds matched pairs: row i of ``fake`` was generated at the conditions of row i of
``real``. Per condition (a column of ``conditions`` [n, K], physical units):

- bins: decades when the column is positive and spans more than 10x (an energy from 1 GeV to
  1 TeV: 3 bins), else up to MAX_BINS quantile bins; a bin with fewer than ``min_count``
  rows is merged into its smaller neighbour;
- per bin and per-sample summary (the high-level features of hpcgan.metrics.features,
  ``total`` by default): ``cond/<summary>_mean_rel_err`` = |mean_fake / mean_real - 1| and
  ``cond/<summary>_ks``, the two-sample Kolmogorov-Smirnov distance of the summaries;
- the floor of each: the same metric between two halves of the bin's real rows, halved as
  the pairs are matched: rows sorted by the condition, each neighbouring pair split between
  the halves (by a seeded coin), averaged over SPLITS such halvings. Halves of a random
  split would differ by the spread of the condition within the bin (a decade of energies:
  totals that vary 10x), which the matched pairs do not see.

Pure functions of arrays: the evaluator gathers the summaries, these make the numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from hpcgan.errors import UserError
from hpcgan.metrics import features
from hpcgan.metrics.verdict import judge

MAX_BINS = 5  # quantile bins per condition, at most
MIN_COUNT = 100  # rows per bin, at least (fewer rows: fewer bins)
SPLITS = 16  # matched halvings averaged for a bin's floor
DECADE_SPAN = 10.0  # a positive column spanning more than this factor is binned in decades
# What the evaluation compares per bin (docs/evaluation.md, "By condition"): the sample total
# (a calorimeter's response to the incident energy), its brightest cell and its empty share.
SUMMARIES = ("total", "max", "sparsity")
LOGGED = "total"  # the summary whose worst bins training logs (metrics.jsonl)


@dataclass(frozen=True)
class Bins:
    """The bins of one condition: ``edges`` [B + 1] (the last bin holds its upper edge) and
    the bin of each row, ``index`` [n]."""

    name: str
    unit: str
    binning: str  # "decades" or "quantiles"
    edges: np.ndarray  # [B + 1]
    index: np.ndarray  # [n] int, 0 .. B - 1

    @property
    def count(self) -> int:
        return len(self.edges) - 1


def make_bins(values: np.ndarray, name: str, unit: str = "", min_count: int = MIN_COUNT) -> Bins:
    """Bins of one condition's values [n] (see the module docstring)."""
    v = np.asarray(values, np.float64)
    if v.ndim != 1 or not len(v):
        raise UserError(f"condition {name}: expected one value per sample, got shape {v.shape}")
    if not np.isfinite(v).all():
        raise UserError(f"condition {name}: {int((~np.isfinite(v)).sum())} values are NaN or inf")
    lo, hi = float(v.min()), float(v.max())
    if lo > 0 and hi > DECADE_SPAN * lo:
        binning = "decades"
        edges = 10.0 ** np.arange(np.floor(np.log10(lo)), np.ceil(np.log10(hi)) + 1)
        edges[0], edges[-1] = min(edges[0], lo), max(edges[-1], hi)  # rounding of 10 ** k
    else:
        binning = "quantiles"
        wanted = max(1, min(MAX_BINS, len(v) // max(min_count, 1)))
        edges = np.unique(np.quantile(v, np.linspace(0.0, 1.0, wanted + 1)))
        if len(edges) < 2:  # a constant column: one bin
            edges = np.array([lo, hi])
    edges = _merge_small(v, edges, min_count)
    return Bins(name, unit, binning, edges, _assign(v, edges))


def _assign(v: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each value: [edges[b], edges[b + 1]), the last bin closed."""
    return np.clip(np.searchsorted(edges, v, side="right") - 1, 0, len(edges) - 2)


def _merge_small(v: np.ndarray, edges: np.ndarray, min_count: int) -> np.ndarray:
    """Remove edges until every bin holds at least ``min_count`` values (or one bin is left):
    the smallest bin joins its smaller neighbour."""
    edges = edges.copy()
    while len(edges) > 2:
        counts = np.bincount(_assign(v, edges), minlength=len(edges) - 1)
        b = int(np.argmin(counts))
        if counts[b] >= min_count:
            break
        if b == 0 or (b < len(counts) - 1 and counts[b + 1] < counts[b - 1]):
            edges = np.delete(edges, b + 1)  # join the right neighbour
        else:
            edges = np.delete(edges, b)  # join the left neighbour
    return edges


def condition_bins(
    conditions: np.ndarray, names: list[str], units: list[str], min_count: int = MIN_COUNT
) -> list[Bins]:
    """The bins of every column of ``conditions`` [n, K]."""
    c = np.asarray(conditions, np.float64)
    if c.ndim != 2 or c.shape[1] != len(names) or len(units) != len(names):
        raise UserError(
            f"conditions of shape {c.shape} need one name and unit per column; "
            f"got {len(names)} names and {len(units)} units"
        )
    return [make_bins(c[:, k], names[k], units[k], min_count) for k in range(c.shape[1])]


def summaries(
    x: torch.Tensor, stats: dict[str, float], which: tuple[str, ...] = ("total",)
) -> dict[str, np.ndarray]:
    """Per-sample summaries [n] by name of samples x [n, C, *S] in physical units: the
    high-level features of hpcgan.metrics.features (``stats``: the file's min/max/mean/std)."""
    known = features.names(x.dim() - 2, field=False)
    unknown = [w for w in which if w not in known]
    if unknown:
        raise UserError(f"no per-sample summary {unknown[0]}; one of: {', '.join(known)}")
    rows = features.per_sample(x, stats, field=False).cpu().numpy()  # [n, F]
    return {w: rows[:, known.index(w)] for w in which}


def mean_rel_err(fake: np.ndarray, real: np.ndarray) -> float:
    """|mean(fake) / mean(real) - 1| (|mean(fake)| when the real mean is 0)."""
    mf, mr = float(np.mean(fake)), float(np.mean(real))
    return abs(mf / mr - 1.0) if mr != 0 else abs(mf)


def ks(fake: np.ndarray, real: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov distance: the largest gap of the empirical CDFs."""
    a, b = np.sort(fake), np.sort(real)
    v = np.concatenate([a, b])
    gap = np.searchsorted(a, v, "right") / len(a) - np.searchsorted(b, v, "right") / len(b)
    return float(np.abs(gap).max())


BIN_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "mean_rel_err": mean_rel_err,
    "ks": ks,
}  # the table's rows cond/<feature>_<metric> (hpcgan.metrics.table)


def matched_halves(order: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two halves of the rows ``order`` (sorted by the condition): rows 2i and 2i+1 go one to
    each half, which one by a coin; an odd last row is left out."""
    pairs = order[: len(order) // 2 * 2].reshape(-1, 2)  # [m, 2]
    flip = rng.integers(0, 2, len(pairs))
    return pairs[np.arange(len(pairs)), flip], pairs[np.arange(len(pairs)), 1 - flip]


def compare_bin(
    real: np.ndarray, fake: np.ndarray, condition: np.ndarray, rng: np.random.Generator
) -> tuple[dict[str, float], dict[str, float]]:
    """(metric -> value, metric -> floor) of one summary in one bin: ``real``, ``fake`` and
    ``condition`` [m] are matched rows. NaN with fewer than 4 rows."""
    if len(real) < 4:
        nan = {name: float("nan") for name in BIN_METRICS}
        return nan, dict(nan)
    values = {name: fn(fake, real) for name, fn in BIN_METRICS.items()}
    order = np.argsort(condition, kind="stable")
    floors = {name: 0.0 for name in BIN_METRICS}
    for _ in range(SPLITS):
        a, b = matched_halves(order, rng)
        for name, fn in BIN_METRICS.items():
            floors[name] += fn(real[a], real[b]) / SPLITS
    return values, floors


def by_condition(
    real: dict[str, np.ndarray],
    fake: dict[str, np.ndarray],
    conditions: np.ndarray,
    names: list[str],
    units: list[str],
    seed: int = 0,
    min_count: int = MIN_COUNT,
) -> dict[str, dict]:
    """Per condition, its bins and in each the metrics of every summary next to their floors
    and verdicts (hpcgan.metrics.verdict). ``real`` and ``fake``: summary name -> [n], row i of
    both at the conditions ``conditions[i]`` [n, K]. JSON-ready::

        {"incident_energy": {"unit": "MeV", "binning": "decades", "bins": [
            {"lo": 1000.0, "hi": 10000.0, "centre": 3162.3, "count": 2000,
             "metrics": {"cond/total_mean_rel_err": 0.004, "cond/total_ks": 0.02},
             "baseline": {...the same names...}, "verdict": {...},
             "mean_real": {"total": ...}, "mean_fake": {"total": ...}}, ...]}}

    ``centre`` is the median condition of the bin's rows."""
    n = len(conditions)
    for which, side in (("real", real), ("fake", fake)):
        bad = [k for k, v in side.items() if np.shape(v) != (n,)]
        if bad:
            raise UserError(f"{which} summary {bad[0]} needs {n} values, one per condition row")
    if set(real) != set(fake):
        raise UserError(f"real and generated summaries differ: {sorted(real)} vs {sorted(fake)}")
    out: dict[str, dict] = {}
    for k, bins in enumerate(condition_bins(conditions, names, units, min_count)):
        column = np.asarray(conditions, np.float64)[:, k]
        rows = []
        for b in range(bins.count):
            inside = np.flatnonzero(bins.index == b)
            rng = np.random.default_rng([seed, k, b])
            entry = {
                "lo": float(bins.edges[b]),
                "hi": float(bins.edges[b + 1]),
                "centre": float(np.median(column[inside])) if len(inside) else float("nan"),
                "count": len(inside),
                "metrics": {},
                "baseline": {},
                "mean_real": {s: float(np.mean(real[s][inside])) for s in real},
                "mean_fake": {s: float(np.mean(fake[s][inside])) for s in real},
            }
            for s in real:
                values, floors = compare_bin(real[s][inside], fake[s][inside], column[inside], rng)
                for metric in BIN_METRICS:
                    entry["metrics"][f"cond/{s}_{metric}"] = values[metric]
                    entry["baseline"][f"cond/{s}_{metric}"] = floors[metric]
            entry["verdict"] = {
                name: judge(name, value, entry["baseline"][name])
                for name, value in entry["metrics"].items()
            }
            rows.append(entry)
        out[bins.name] = {"unit": bins.unit, "binning": bins.binning, "bins": rows}
    return out


def by_condition_of_rows(
    real: np.ndarray,
    fake: np.ndarray,
    feature_names: list[str],
    conditions: np.ndarray,
    names: list[str],
    units: list[str],
    seed: int = 0,
) -> dict[str, dict]:
    """:func:`by_condition` of the SUMMARIES columns of high-level feature rows ``real`` and
    ``fake`` [n, >= F] (columns in the order of ``feature_names``; hpcgan.metrics.features),
    row i of both at ``conditions[i]`` [n, K] (physical units)."""
    cols = {s: feature_names.index(s) for s in SUMMARIES}
    return by_condition(
        {s: real[:, i] for s, i in cols.items()},
        {s: fake[:, i] for s, i in cols.items()},
        conditions,
        names,
        units,
        seed,
    )


def worst_bins(result: dict[str, dict]) -> dict[str, float]:
    """A few numbers per condition for training's log: eval/cond/<condition>/<metric>_max,
    the worst bin of each LOGGED metric, and eval/cond/<condition>/distinguishable, the bins
    where any metric is distinguishable from its floor."""
    out = {}
    for cond, part in result.items():
        for name in BIN_METRICS:
            values = [b["metrics"][f"cond/{LOGGED}_{name}"] for b in part["bins"]]
            finite = [v for v in values if np.isfinite(v)]
            out[f"eval/cond/{cond}/{LOGGED}_{name}_max"] = max(finite, default=float("nan"))
        told = [b for b in part["bins"] if "distinguishable" in b["verdict"].values()]
        out[f"eval/cond/{cond}/distinguishable"] = float(len(told))
    return out


def plot_rows(result: dict[str, dict]) -> list[dict]:
    """One row per (condition, metric, bin) of a :func:`by_condition` result, for plots of a
    metric against the condition: condition, unit, metric, centre, lo, hi, value, floor."""
    return [
        {
            "condition": cond,
            "unit": part["unit"],
            "metric": name,
            "centre": entry["centre"],
            "lo": entry["lo"],
            "hi": entry["hi"],
            "value": value,
            "floor": entry["baseline"][name],
        }
        for cond, part in result.items()
        for entry in part["bins"]
        for name, value in entry["metrics"].items()
    ]
