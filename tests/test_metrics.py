"""Metrics against analytic cases, and the block arithmetic that makes them rank-independent."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hpcgan.data.transforms import ValueTransform
from hpcgan.metrics import frechet, histogram, minkowski, sources
from hpcgan.metrics.compare import compare
from hpcgan.metrics.stats import Layout, SampleStats, merge

IDENTITY = ValueTransform("linear", -1.0, 1.0)  # y is its own physical value


def _hist(values: np.ndarray) -> np.ndarray:
    return histogram.count(histogram.bin_index(torch.from_numpy(values))).numpy()


def _normal_quantiles(n: int, mean: float, sd: float) -> np.ndarray:
    """n evenly spaced quantiles of N(mean, sd): a sample with an exact empirical CDF."""
    from statistics import NormalDist

    return np.array([NormalDist(mean, sd).inv_cdf((i + 0.5) / n) for i in range(n)])


def test_ks_and_w1_of_identical_and_shifted_distributions():
    sd, shift = 0.15, 0.06
    a = _normal_quantiles(20000, 0.0, sd)
    b = _normal_quantiles(20000, shift, sd)
    assert histogram.ks_distance(_hist(a), _hist(a)) == 0.0
    assert histogram.w1_distance(_hist(a), _hist(a), histogram.centers()) == 0.0
    exact_ks = 2 * 0.5 * (1 + math.erf(shift / (2 * sd) / math.sqrt(2))) - 1  # 2 Phi(d/2s) - 1
    assert histogram.ks_distance(_hist(a), _hist(b)) == pytest.approx(exact_ks, abs=1e-3)
    w1 = histogram.w1_distance(_hist(a), _hist(b), histogram.centers())
    assert w1 == pytest.approx(shift, abs=2 / histogram.BINS)


def test_w1_is_in_physical_units():
    """A log transform bins in log space; W1 still measures the physical shift."""
    t = ValueTransform("log", math.log(0.5), math.log(8.0))
    a = np.linspace(1.0, 2.0, 5001)
    w1 = histogram.w1_distance(
        _hist(t.encode(a)),
        _hist(t.encode(a + 0.25)),
        t.decode(torch.from_numpy(histogram.centers())).double().numpy(),
    )
    assert w1 == pytest.approx(0.25, rel=2e-3)


def _functionals(index: torch.Tensor, thresholds) -> np.ndarray:
    bins = 4
    pixels = histogram.count(index, bins).numpy()
    return minkowski.functionals(
        pixels, minkowski.edge_vertex_counts(index, bins).numpy(), np.asarray(thresholds)
    )


@pytest.mark.parametrize(
    "shape,area,perimeter,euler",
    [
        (["#"], 1, 4, 1),  # one pixel
        (["#####", "#####", "#####"], 15, 16, 1),  # a 3 x 5 rectangle
        (["###", "#.#", "###"], 8, 16, 0),  # an annulus: one hole
        (["##...", "##..#"], 5, 12, 2),  # two blobs
        (["#.", ".#"], 2, 8, 1),  # diagonal neighbours share a corner: one set
    ],
)
def test_minkowski_functionals_of_known_shapes(shape, area, perimeter, euler):
    grid = torch.zeros(1, 1, 10, 10, dtype=torch.long)
    for i, row in enumerate(shape):
        for j, ch in enumerate(row):
            grid[0, 0, 2 + i, 2 + j] = 1 if ch == "#" else 0
    v0, v1, v2 = _functionals(grid, [1])[:, 0] * 100
    assert (v0, v1, v2) == pytest.approx((area, perimeter, euler))


def test_minkowski_v0_at_a_quantile_is_the_fraction_above():
    y = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    index = histogram.bin_index(y)
    pixels = histogram.count(index).numpy()
    quantiles = np.array([0.1, 0.5, 0.8])
    thresholds = histogram.quantile_bins(pixels, quantiles)
    v = minkowski.functionals(pixels, minkowski.edge_vertex_counts(index).numpy(), thresholds)
    assert v[0] == pytest.approx(1 - quantiles, abs=1e-3)


def test_frechet_distance_analytic_cases():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 5))
    cov = a @ a.T + np.eye(5)
    mu = rng.standard_normal(5)
    assert frechet.frechet_distance(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-9)
    # Diagonal covariances: sum of (mu1 - mu2)^2 + (s1 - s2)^2 per dimension.
    s1, s2 = np.array([1.0, 2.0, 0.5]), np.array([2.0, 2.0, 1.5])
    d = frechet.frechet_distance(np.zeros(3), np.diag(s1**2), np.ones(3), np.diag(s2**2))
    assert d == pytest.approx(3 + ((s1 - s2) ** 2).sum())


def test_moments_from_sums_match_numpy():
    x = np.random.default_rng(1).standard_normal((50, 4))
    mu, cov = frechet.moments(50, x.sum(0), x.T @ x)
    assert mu == pytest.approx(x.mean(0)) and cov == pytest.approx(np.cov(x.T))


def test_kernel_distance_separates_shifted_features():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((400, 8)), rng.standard_normal((400, 8))
    assert abs(frechet.kernel_distance(x, y)) < 0.02
    assert frechet.kernel_distance(x, y + 1.0) > 0.5


def test_latents_depend_on_the_sample_only():
    z = sources.latents(seed=5, block=3, z_dim=4)
    assert torch.equal(sources.latents(5, 3, 4, size=10), z[:10])
    assert not torch.equal(sources.latents(5, 4, 4), z)


@pytest.mark.parametrize("world", [1, 2, 3, 7])
def test_rank_blocks_partition_the_blocks(world):
    handled = [b for r in range(world) for b in sources.rank_blocks(10, r, world)]
    assert sorted(handled) == list(range(10))


def test_real_picks_are_distinct_and_independent_of_the_reader(digits_h5):
    from hpcgan.data.format import read_info

    picks = sources.RealPicks(read_info(digits_h5), n=300, seed=4)
    assert picks.n == 384 and picks.num_blocks == 3  # whole blocks of 128
    labels = np.concatenate([lab for _, _, lab in picks.read(range(3))])
    odd_first = np.concatenate([lab for _, _, lab in picks.read(range(2, -1, -1))])
    assert len(labels) == 384 and sorted(labels) == sorted(odd_first)


def _stats(layout: Layout, batches: list[torch.Tensor], blocks: range) -> SampleStats:
    s = SampleStats(layout, torch.device("cpu"))
    for b in blocks:
        y = batches[b]
        s.add(y, y * 3.0, b * len(y), {"f": y.flatten(1)[:, :4]})
    return s


def test_sums_split_across_ranks_add_up_to_the_one_rank_sums():
    from hpcgan.comm.base import SingleProcess

    layout = Layout((1, 16, 16), spatial=True, features={"f": 4}, kid_rows=6)
    gen = torch.Generator().manual_seed(3)
    batches = [torch.rand(4, 1, 16, 16, generator=gen) * 2 - 1 for _ in range(4)]
    one = _stats(layout, batches, range(4)).reduce(SingleProcess())
    parts = [
        _stats(layout, batches, sources.rank_blocks(4, rank, 2)).reduce(SingleProcess())
        for rank in range(2)
    ]
    for key, value in one.items():
        total = parts[0][key] + parts[1][key]
        assert total == pytest.approx(value, rel=1e-12, abs=1e-12), key
    assert merge(one, one)["count"][0] == 32 and merge(one, one)["f/kid"] is one["f/kid"]
    metrics, _ = compare(one, one, layout, IDENTITY)
    assert metrics["eval/ks"] == 0 and metrics["eval/ps_rel_err"] == 0
    assert metrics["eval/fd_f"] == pytest.approx(0, abs=1e-9)


def test_volumes_get_a_power_spectrum_and_3d_minkowski_functionals():
    """The spectrum is any rank's; volumes get V0..V3 of the voxel complex (issue 14)."""
    from hpcgan.comm.base import SingleProcess

    layout = Layout((1, 8, 8, 8), spatial=True)
    assert layout.ndim == 3 and layout.minkowski
    assert "power" in layout.shapes() and layout.shapes()["minkowski"] == (4, layout.bins)
    gen = torch.Generator().manual_seed(5)
    real, fake = SampleStats(layout, torch.device("cpu")), SampleStats(layout, torch.device("cpu"))
    x = torch.rand(4, 1, 8, 8, 8, generator=gen) * 2 - 1
    real.add(x, x, 0, {})
    fake.add(1.1 * x, 1.1 * x, 0, {})
    metrics, curves = compare(
        real.reduce(SingleProcess()), fake.reduce(SingleProcess()), layout, IDENTITY
    )
    assert metrics["eval/ps_rel_err"] == pytest.approx(0.21)  # 1.1^2 times the power
    assert {f"eval/minkowski_v{i}_err" for i in range(4)} <= set(metrics)
    assert curves["mink_real"].shape == (4, len(curves["thresholds"]))
    assert Layout((1, 16, 16), spatial=True).minkowski
    assert not Layout((1, 16), spatial=True).minkowski
