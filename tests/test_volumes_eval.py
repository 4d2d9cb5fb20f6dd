"""Evaluation and outputs on volumes (issue 14): the 3-D Minkowski functionals against
brute-force and analytic cases, the 3-D spectrum, and the evaluator on a 5-D dataset."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from conftest import launch
from torch import nn

from hpcgan import images, spectrum
from hpcgan.comm.base import SingleProcess
from hpcgan.data import synth
from hpcgan.data.transforms import make_transform
from hpcgan.data.write import write_dataset
from hpcgan.metrics import histogram, minkowski
from hpcgan.metrics.evaluate import Evaluator, best_metric_name, metric_names
from hpcgan.metrics.stats import Layout, SampleStats


def _counts(voxels: np.ndarray) -> tuple[float, float, float, float, float]:
    """(V0..V3 times the voxel count, boundary faces) of the set {voxel == 1} of a 0/1 volume,
    through the histograms (bins 0 and 1, threshold bin 1)."""
    index = torch.from_numpy(voxels.astype(np.int64))[None, None]
    h = minkowski.cell_counts_3d(index, 2).numpy()
    pixels = histogram.count(index, 2).numpy()
    v = minkowski.functionals(pixels, h, np.array([1]))[:, 0] * voxels.size
    return (*v, h[0, 1] - h[1, 1])


def _put(shape: list[list[str]], size: int = 9) -> np.ndarray:
    """A 0/1 volume [size]^3 with the given z-slices of '#' rows placed at (2, 2, 2)."""
    out = np.zeros((size,) * 3, dtype=np.int64)
    for d, plane in enumerate(shape):
        for i, row in enumerate(plane):
            for j, ch in enumerate(row):
                out[2 + d, 2 + i, 2 + j] = ch == "#"
    return out


def _cube(k: int) -> list[list[str]]:
    return [["#" * k] * k] * k


SHELL = [_cube(5)[0], *[["#####", *["#...#"] * 3, "#####"]] * 3, _cube(5)[0]]


@pytest.mark.parametrize(
    "shape,volume,faces,euler",
    [
        ([["#"]], 1, 6, 1),  # one voxel
        (_cube(3), 27, 54, 1),  # a solid 3^3 cube: 6 k^2 faces
        (SHELL, 125 - 27, 150 + 54, 2),  # a hollow shell: a cavity inside
        ([["###", "#.#", "###"]], 8, 32, 0),  # a ring: one tunnel
        ([["#.#"]], 2, 12, 2),  # two separate voxels
        ([["#."], [".#"]], 2, 12, 1),  # voxels that share an edge are one closed set
        ([["#.", ".."], ["..", ".#"]], 2, 12, 1),  # ... or a vertex
    ],
)
def test_3d_minkowski_functionals_of_known_shapes(shape, volume, faces, euler):
    v0, v1, _v2, v3, boundary = _counts(_put(shape))
    assert (v0, boundary, v3) == pytest.approx((volume, faces, euler))
    assert v1 == pytest.approx(faces / 9)  # 2/3 of the area, / 6


def test_3d_minkowski_functionals_of_a_single_voxel_and_a_ball():
    """A unit cube: V2 = 2/3 (the 2/3 of 6 pi / 6 pi); a digitised ball of radius r tends to
    (4/3 pi r^3, 2/3 pi r^2, 4/3 r, 1)."""
    assert _counts(_put([["#"]]))[2] == pytest.approx(2 / 3)
    r, n = 9.3, 24
    g = np.arange(n) - n / 2 + 0.5
    ball = (g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2) <= r * r
    v = _counts(ball.astype(np.int64))[:4]
    expected = (4 / 3 * np.pi * r**3, 2 / 3 * np.pi * r**2, 4 / 3 * r, 1)
    assert v == pytest.approx(expected, rel=0.06)


def _brute_force(index: np.ndarray, t: int) -> np.ndarray:
    """(cubes, faces, edges, vertices) of {index >= t} in one periodic volume, by enumerating
    for every cell the voxels that share it."""
    inside = index >= t
    size = np.array(index.shape)
    counts = np.zeros(4)
    for cell in itertools.product(*(range(s) for s in index.shape)):
        for free in itertools.product((0, 1), repeat=3):  # offsets spanned by the cell
            dim = 3 - sum(free)  # free == (0,0,0): the cube itself; (1,1,1): a vertex
            around = [
                tuple((np.array(cell) + np.array(o)) % size)
                for o in itertools.product(*[(0, 1) if f else (0,) for f in free])
            ]
            counts[3 - dim] += any(inside[a] for a in around)
    return counts  # [cubes, faces, edges, vertices]


def test_3d_histograms_equal_a_brute_force_count_at_several_thresholds():
    gen = torch.Generator().manual_seed(3)
    index = torch.randint(0, 6, (2, 1, 4, 3, 5), generator=gen)
    h = minkowski.cell_counts_3d(index, 6).numpy()
    pixels = histogram.count(index, 6).numpy()
    for t in range(1, 6):
        cubes, faces, edges, vertices = sum(_brute_force(v[0].numpy(), t) for v in index)
        v = minkowski.functionals(pixels, h, np.array([t]))[:, 0] * index.numel()
        assert v[0] == cubes
        assert v[3] == pytest.approx(vertices - edges + faces - cubes)
        assert v[1] == pytest.approx(2 / 9 * (faces - 3 * cubes))
        assert v[2] == pytest.approx(2 / 9 * (3 * cubes - 2 * faces + edges))


def test_3d_histograms_do_not_depend_on_the_chunking(monkeypatch):
    index = torch.randint(0, 50, (3, 2, 4, 4, 4), generator=torch.Generator().manual_seed(1))
    whole = minkowski.cell_counts_3d(index, 50)
    monkeypatch.setattr(minkowski, "CHUNK", 64)  # one volume at a time
    assert torch.equal(minkowski.cell_counts_3d(index, 50), whole)


def test_3d_v0_at_quantiles_is_the_fraction_above():
    y = torch.rand(3, 1, 8, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    index = histogram.bin_index(y)
    pixels = histogram.count(index).numpy()
    thresholds = histogram.quantile_bins(pixels, np.array([0.1, 0.5, 0.8]))
    v = minkowski.functionals(pixels, minkowski.cell_counts_3d(index).numpy(), thresholds)
    direct = [(index >= t).double().mean().item() for t in thresholds]
    assert v[0] == pytest.approx(direct)


def test_3d_spectrum_of_white_noise_is_flat_and_of_a_grf3d_follows_its_slope():
    x = torch.randn(16, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    p = spectrum.spectrum(spectrum.power_sums(x).numpy(), 16, (16,) * 3)[1:]
    assert abs(p.mean() - 1) < 0.02 and np.abs(p - 1).max() < 0.2  # k=1: few modes
    g = torch.from_numpy(np.log(synth.grf(16, size=16, seed=1, ndim=3)))
    measured = spectrum.spectrum(spectrum.power_sums(g).numpy(), 16, (16,) * 3)
    ks = np.arange(2, 8)
    slope = np.polyfit(np.log(ks), np.log(measured[ks]), 1)[0]
    assert slope == pytest.approx(-3.0, abs=0.3)


def test_sums_of_split_volume_batches_equal_the_sums_of_the_whole():
    """What makes N ranks compute what one rank computes: every statistic is a sum."""
    layout = Layout((1, 8, 8, 8), spatial=True)
    x = torch.rand(6, 1, 8, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1
    whole, a, b = (SampleStats(layout, torch.device("cpu")) for _ in range(3))
    whole.add(x, x, 0, {})
    a.add(x[:2], x[:2], 0, {})
    b.add(x[2:], x[2:], 2, {})
    for k, v in whole.sums.items():
        assert torch.allclose(a.sums[k] + b.sums[k], v, rtol=1e-12, atol=1e-9), k


class _Replay(nn.Module):
    """A stand-in generator that hands out given samples (in [-1, 1]) in order."""

    def __init__(self, y: torch.Tensor) -> None:
        super().__init__()
        self.y, self.at = y, 0
        self.p = nn.Parameter(torch.zeros(1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.y[self.at : self.at + len(z)]
        self.at += len(z)
        return out


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    path = tmp_path_factory.mktemp("vol") / "grf3d.h5"
    info = write_dataset(
        path, synth.grf(256, size=8, seed=0, ndim=3), None, kind="field", source="t"
    )
    return info


def test_evaluator_on_volumes_real_vs_real_is_near_the_floor_and_a_scaled_set_is_caught(volumes):
    info = volumes
    assert info.ndim == 3
    names = metric_names(info)
    assert {"eval/ps_rel_err", "eval/ks", "eval/w1", "eval/minkowski_v3_err"} <= set(names)
    assert best_metric_name("auto", info) == "eval/ps_rel_err"
    transform = make_transform(info, "auto")
    ev = Evaluator(info, transform, SingleProcess(), torch.device("cpu"), z_dim=4, n=256)
    floor = ev.baseline().metrics
    other = synth.grf(256, size=8, seed=7, ndim=3)  # more fields of the same law
    same = ev.run(_Replay(torch.from_numpy(transform.encode(other)))).metrics
    scaled = ev.run(_Replay(torch.from_numpy(transform.encode(other * 1.5)))).metrics
    assert set(names) <= set(same)
    for name in ("eval/ps_rel_err", "eval/ks", "eval/minkowski_err"):
        assert same[name] < 3 * floor[name] + 0.02, name
    assert scaled["eval/ks"] > 5 * same["eval/ks"]
    assert scaled["eval/ps_rel_err"] > 0.5  # 1.5^2 the power
    assert scaled["eval/minkowski_v0_err"] > 3 * same["eval/minkowski_v0_err"]


SCRIPT = """
import json, sys
import torch
from torch import nn
from hpcgan.comm import control
from hpcgan.data.format import read_info
from hpcgan.data.transforms import make_transform
from hpcgan.metrics.evaluate import Evaluator

info = read_info(sys.argv[1])
comm = control()
torch.manual_seed(0)
G = nn.Sequential(nn.Linear(8, 512), nn.Tanh(), nn.Unflatten(1, (1, 8, 8, 8)))
ev = Evaluator(info, make_transform(info, "auto"), comm, torch.device("cpu"), z_dim=8, n=300)
out = {"metrics": ev.evaluate(G), "baseline": ev.baseline().metrics, "ranks": comm.size}
if comm.rank == 0:
    print(json.dumps(out))
"""


@pytest.mark.mpi
def test_two_ranks_evaluate_volumes_as_one_rank(volumes, tmp_path):
    script = tmp_path / "eval3d.py"
    script.write_text(SCRIPT)
    runs = []
    for np_ in (None, 2):
        proc = launch([str(script), str(volumes.path)], np=np_, module=None, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs.append(json.loads(proc.stdout))
    one, two = runs
    assert (one["ranks"], two["ranks"]) == (1, 2)
    assert "eval/minkowski_v3_err" in one["metrics"] and "eval/ps_rel_err" in one["baseline"]
    for part in ("metrics", "baseline"):
        for name, value in one[part].items():
            assert two[part][name] == pytest.approx(value, rel=1e-6, abs=1e-9), name


def test_volume_tiles_show_central_slices_and_mean_projections():
    x = torch.rand(3, 1, 4, 6, 8, generator=torch.Generator().manual_seed(4)) * 2 - 1
    v = images.views(x)  # [N, C, 2, 3, P, P], each view centred on an 8 x 8 panel
    assert v.shape == (3, 1, 2, 3, 8, 8)
    assert torch.equal(v[:, :, 0, 0, 1:7, :], x[:, :, 2])  # across D: H x W
    assert torch.equal(v[:, :, 0, 1, 2:6, :], x[:, :, :, 3])  # across H: D x W
    assert torch.equal(v[:, :, 0, 2, 2:6, 1:7], x[:, :, :, :, 4])  # across W: D x H
    assert torch.allclose(v[:, :, 1, 0, 1:7, :], x.mean(dim=2))
    assert torch.allclose(v[:, :, 1, 2, 2:6, 1:7], x.mean(dim=4))
    assert (v[:, :, 0, 0, 0] == -1).all()  # outside the view: black
    tile = images.planes(x, factor=2)  # 2 x 3 panels of 16 px, 1 px apart
    assert tile.shape == (3, 1, 2 * 16 + 1, 3 * 16 + 2)
    assert torch.equal(tile[:, :, 17:33:2, 34::2], v[:, :, 1, 2])


def test_2d_grids_are_unchanged(tmp_path):
    """A 2-D sample is its own plane; the PNG grid is what it was before volumes."""
    y = torch.rand(5, 1, 16, 12, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert images.planes(y) is y
    pixels = images.save_grid(y, tmp_path / "g.png")
    enlarged = torch.nn.functional.interpolate(y.float(), scale_factor=6)  # ceil(64 / 12)
    assert np.array_equal(pixels, images.grid(enlarged, pad=2))
    assert np.array_equal(images.grid(y), images.grid(y, pad=2))


def test_1d_samples_are_drawn_as_bands(tmp_path):
    """A vector of L values is a band of ceil(L / 16) identical rows; the PNG holds each."""
    x = torch.rand(4, 1, 368, generator=torch.Generator().manual_seed(0)) * 2 - 1
    bands = images.planes(x)
    assert bands.shape == (4, 1, 23, 368)
    assert torch.equal(bands[:, :, 7], x) and torch.equal(bands[:, :, 22], x)
    pixels = images.save_grid(x, tmp_path / "v.png")
    assert pixels.shape == (2 * (23 + 2) + 2, 2 * (368 + 2) + 2, 1)
    expect = ((x[1, 0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    assert np.array_equal(pixels[2 + 5, 2 + 370 : 2 + 370 + 368, 0], expect)
    assert (tmp_path / "v.png").stat().st_size > 0


def test_volume_png_grid_and_tensorboard_spectrum(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from hpcgan.board import Board

    x = torch.rand(5, 1, 8, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    pixels = images.save_grid(x, tmp_path / "v.png")
    panel, pad = 64, images.VOLUME_PAD  # 8^3 panels enlarged 8x
    tile_h, tile_w = 2 * panel + 1, 3 * panel + 2
    assert pixels.shape == (2 * (tile_h + pad) + pad, 3 * (tile_w + pad) + pad, 1)
    board = Board(tmp_path)
    board.image(3, "samples", pixels)
    p = np.linspace(2.0, 1.0, 5)
    board.spectrum(3, {"ps_real": p, "ps_fake": 1.1 * p}, "box")
    board.spectrum(3, {})  # no spectrum (e.g. RGB images): nothing
    board.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert sorted(events.Tags()["images"]) == ["samples", "spectrum"]


@pytest.fixture(scope="module")
def volume_run(tmp_path_factory):
    """Two training steps of a tiny 3-D DCGAN on 16^3 fields, evaluated at the end."""
    root = tmp_path_factory.mktemp("run3d")
    data = root / "grf3d.h5"
    write_dataset(data, synth.grf(64, size=16, seed=0, ndim=3), None, kind="field", source="t")
    args = ["model.width=8", "model.z_dim=16", "train.batch_size=16", "train.steps=2"]
    args += ["run.checkpoint_every=2", "run.log_every=1", f"data.path={data}"]
    args += ["run.eval_every=2", "run.eval_n=64"]
    proc = launch([*args, f"run.dir={root / 'run'}"], timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "run"


def test_training_on_volumes_logs_3d_metrics_and_the_spectrum(volume_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    records = [json.loads(x) for x in (volume_run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval/minkowski_v3_err" in r]
    assert [r["step"] for r in evals] == [2] and evals[0]["eval/ps_rel_err"] >= 0
    events = EventAccumulator(str(volume_run / "tensorboard"))
    events.Reload()
    assert {"samples", "spectrum"} <= set(events.Tags()["images"])


def test_sample_and_report_on_volumes(volume_run, tmp_path):
    import h5py

    from hpcgan import report, sample
    from hpcgan.data.format import read_info
    from hpcgan.trained import generate, load_run, physical

    h5, png = tmp_path / "s.h5", tmp_path / "s.png"
    for out, n in ((h5, 5), (png, 4)):  # in this process: the commands' own code, run faster
        assert sample.main([str(volume_run), "--n", str(n), "--out", str(out)]) == 0
    info = read_info(h5)
    assert (info.n, info.shape, info.dtype, info.kind) == (5, (1, 16, 16, 16), "float32", "field")
    run = load_run(str(volume_run))
    with h5py.File(h5, "r") as f:  # physical units: the decoded generator output
        assert np.allclose(f["images"][:], physical(run, generate(run, 5, 0)), rtol=1e-5)
    assert png.stat().st_size > 0
    out = tmp_path / "report"
    assert report.main([str(volume_run), "--n", "64", "--out", str(out)]) == 0
    for name in ("spectrum.png", "minkowski.png", "samples.png", "histogram.png"):
        assert (out / name).stat().st_size > 0, name
    text = (out / "summary.txt").read_text()
    assert "eval/minkowski_v3_err" in text and "eval/ps_rel_err" in text


def test_big_volume_batches_are_summed_in_parts(monkeypatch):
    from hpcgan.metrics import stats

    layout = Layout((1, 8, 8, 8), spatial=True, features={"f": 2}, kid_rows=4)
    x = torch.rand(5, 1, 8, 8, 8, generator=torch.Generator().manual_seed(6)) * 2 - 1
    f = torch.randn(5, 2, generator=torch.Generator().manual_seed(7))
    whole, parts = (
        SampleStats(layout, torch.device("cpu")),
        SampleStats(layout, torch.device("cpu")),
    )
    whole.add(x, x, 0, {"f": f})
    monkeypatch.setattr(stats, "VOLUME_VALUES", 2 * 512)  # two volumes at a time
    parts.add(x, x, 0, {"f": f})
    for k, v in whole.sums.items():
        assert torch.allclose(parts.sums[k], v, rtol=1e-12, atol=1e-9), k
