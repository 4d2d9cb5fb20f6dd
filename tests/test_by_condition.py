"""Evaluation by condition (issue 22): bins per condition, per-bin metrics of the sample
totals next to their matched floors, on synthetic showers whose total scales with energy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hpcgan.errors import UserError
from hpcgan.metrics import by_condition as bc

NAMES, UNITS = ["incident_energy", "theta"], ["MeV", "rad"]


def _showers(energy: np.ndarray, seed: int, scale: np.ndarray | None = None) -> torch.Tensor:
    """Samples [n, 1, 6, 5] whose total is the energy x (1 + 10% noise) x ``scale``."""
    rng = np.random.default_rng(seed)
    n = len(energy)
    profile = rng.random((n, 1, 6, 5))
    profile /= profile.sum(axis=(1, 2, 3), keepdims=True)
    total = energy * (1 + 0.1 * rng.standard_normal(n)) * (1 if scale is None else scale)
    return torch.from_numpy(profile * total[:, None, None, None])


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    n = 6000
    energy = 10 ** rng.uniform(3, 6, n)  # 1 GeV .. 1 TeV in MeV, log-uniform: 3 decades
    theta = rng.uniform(0.2, 1.2, n)
    conditions = np.stack([energy, theta], 1)  # [n, 2]
    stats = {"min": 0.0, "max": 1e6, "mean": 1.0, "std": 1.0}
    real = bc.summaries(_showers(energy, 1), stats)
    return conditions, stats, real


def test_bins_are_decades_for_wide_positive_columns_else_quantiles(data):
    conditions, _, _ = data
    energy, theta = bc.condition_bins(conditions, NAMES, UNITS)
    assert energy.binning == "decades" and np.allclose(energy.edges, [1e3, 1e4, 1e5, 1e6])
    assert theta.binning == "quantiles" and theta.count == 5
    assert np.bincount(theta.index).min() >= 1100  # quantile bins: equal shares of 6000
    sparse = bc.make_bins(np.r_[np.full(500, 5.0), [50.0] * 20, [500.0] * 500], "e")
    assert sparse.count == 2 and np.bincount(sparse.index).min() >= bc.MIN_COUNT  # merged


def test_a_right_generator_is_within_the_floor_and_a_5_percent_miss_is_caught_in_its_bin(data):
    conditions, stats, real = data
    energy = conditions[:, 0]
    good = bc.summaries(_showers(energy, 2), stats)  # generated at the same conditions
    result = bc.by_condition(real, good, conditions, NAMES, UNITS)
    for cond in NAMES:
        for entry in result[cond]["bins"]:
            assert entry["verdict"]["cond/total_mean_rel_err"] == "within noise", (cond, entry)
    off = np.where((energy >= 1e4) & (energy < 1e5), 1.05, 1.0)  # 5% too much, one decade
    bad = bc.summaries(_showers(energy, 2, off), stats)
    result = bc.by_condition(real, bad, conditions, NAMES, UNITS)
    told = [e["verdict"]["cond/total_mean_rel_err"] for e in result["incident_energy"]["bins"]]
    assert told == ["within noise", "distinguishable", "within noise"]
    middle = result["incident_energy"]["bins"][1]
    assert middle["metrics"]["cond/total_mean_rel_err"] == pytest.approx(0.05, abs=0.01)
    ratio = middle["mean_fake"]["total"] / middle["mean_real"]["total"]
    assert ratio == pytest.approx(1.05, abs=0.01)
    assert 1e4 < middle["centre"] < 1e5 and middle["count"] == int(np.sum(off > 1))
    rows = bc.plot_rows(result)
    assert {r["metric"] for r in rows} == {"cond/total_mean_rel_err", "cond/total_ks"}
    assert len(rows) == 2 * (3 + 5)  # two metrics in 3 energy and 5 angle bins
    assert all(np.isfinite(r["floor"]) and r["floor"] > 0 for r in rows)


def test_the_matched_floor_ignores_the_spread_of_the_condition_within_a_bin(data):
    """Halves of a random split differ by the spread of energies in a decade; the matched
    halves only by the showers' own 10% noise: less than half of it here."""
    conditions, _, real = data
    inside = (conditions[:, 0] >= 1e4) & (conditions[:, 0] < 1e5)
    total, energy = real["total"][inside], conditions[inside, 0]
    rng = np.random.default_rng(0)
    _, floors = bc.compare_bin(total, total, energy, rng)
    random = np.mean([
        bc.mean_rel_err(*np.split(total[rng.permutation(len(total))][: len(total) // 2 * 2], 2))
        for _ in range(16)
    ])  # fmt: skip
    assert floors["mean_rel_err"] < random / 2, (floors, random)


def test_bad_conditions_are_refused_in_one_line(data):
    conditions, _, real = data
    with pytest.raises(UserError, match="1 values are NaN"):
        bc.make_bins(np.r_[1.0, np.nan, 3.0], "theta")
    with pytest.raises(UserError, match="one name and unit per column"):
        bc.condition_bins(conditions, ["incident_energy"], ["MeV"])
    with pytest.raises(UserError, match="needs 6000 values"):
        bc.by_condition(real, {"total": real["total"][:10]}, conditions, NAMES, UNITS)
    with pytest.raises(UserError, match="no per-sample summary energy"):
        bc.summaries(torch.zeros(2, 1, 4), {"min": 0, "max": 1}, ("energy",))


def test_report_plots_each_metric_against_each_condition(data, tmp_path):
    from hpcgan.report import plot_by_condition

    conditions, stats, real = data
    fake = bc.summaries(_showers(conditions[:, 0], 2), stats)
    result = bc.by_condition(real, fake, conditions, NAMES, UNITS)
    written = plot_by_condition(result, tmp_path)
    assert [p.name for p in written] == [
        "by_condition-incident_energy.png",
        "by_condition-theta.png",
    ]
    assert all(p.stat().st_size > 10_000 for p in written)
