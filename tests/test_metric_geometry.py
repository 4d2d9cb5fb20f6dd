"""Metrics that respect the data's geometry (issue 22): the metric table decides which metrics
apply from the symmetry attribute and the grid, says why the others are skipped, and the
remaining metrics (value histogram, features, C2ST, memorisation) work on any grid, 1-D too."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import Replay

from hpcgan.comm.base import SingleProcess
from hpcgan.data import synth
from hpcgan.data.format import DatasetInfo, read_info
from hpcgan.data.transforms import make_transform
from hpcgan.data.write import write_dataset
from hpcgan.errors import UserError
from hpcgan.metrics import features, memorisation, stats, table, two_sample
from hpcgan.metrics.compare import compare
from hpcgan.metrics.evaluate import Evaluator, best_metric_name, metric_names
from hpcgan.symmetry import Symmetry

STATS = {"min": 0.1, "max": 10.0, "mean": 1.0, "std": 1.0}
GEOMETRY = ("eval/ps_rel_err", "eval/minkowski_err", "eval/sep/peaks", "eval/ps_std_rel_err")


def _info(spatial: tuple[int, ...], symmetry: Symmetry, kind: str = "field") -> DatasetInfo:
    return DatasetInfo("x.h5", 10, 1, spatial, "float32", kind, "t", STATS, False, 0, 10, None,
                       symmetry)  # fmt: skip


def test_the_table_skips_what_the_geometry_does_not_support_and_says_why():
    box = _info((16, 16), Symmetry.periodic_box((16, 16)))
    assert set(GEOMETRY) <= set(metric_names(box)) and table.skipped(box).keys().isdisjoint(
        GEOMETRY
    )
    cylinder = _info((45, 16, 9), Symmetry((False, True, False), (False,) * 3))
    why = table.skipped(cylinder)
    assert why["eval/ps_rel_err"] == "needs a periodic box; sides 45x16x9 are not equal"
    walls = _info((16, 16, 16), Symmetry((False, True, False), (False,) * 3))
    assert table.skipped(walls)["eval/ps_rel_err"] == (
        "needs a periodic box; axes 0 and 2 are not periodic"
    )
    vectors = _info((368,), Symmetry.none(1))
    assert table.skipped(vectors)["eval/minkowski_err"] == "needs 2-D or 3-D samples; these are 1-D"
    for info in (cylinder, walls, vectors):
        assert set(GEOMETRY).isdisjoint(metric_names(info))
        assert {"eval/ks", "eval/w1", "eval/c2st_auc", "eval/sep/total"} <= set(metric_names(info))
        assert best_metric_name("auto", info) == "eval/w1"  # never a skipped metric
        with pytest.raises(UserError, match="ps_rel_err is not reported .*needs a periodic box"):
            best_metric_name("eval/ps_rel_err", info)
    assert best_metric_name("auto", box) == "eval/ps_rel_err"
    # square one-channel images keep the spectrum and Minkowski functionals they had
    digits = _info((32, 32), Symmetry.none(2), kind="image")
    assert {"eval/ps_rel_err", "eval/minkowski_err"} <= set(metric_names(digits))
    assert "eval/sep/peaks" not in metric_names(digits)


def test_the_table_holds_direction_and_verdict_rule():
    from hpcgan.metrics.verdict import judge

    for row in table.METRICS:  # every rule and requirement named exists
        assert row.verdict in table.VERDICTS and set(row.needs) <= set(table.REQUIREMENTS)
    assert table.find("eval/sep/peaks").needs == ("field", "maps", "periodic box")
    assert table.find("eval/class_frac/7").verdict == "none"
    assert table.find("eval/minkowski_v3_err").name == "eval/minkowski_<v>_err"
    assert table.higher_is_better("eval/recall") and not table.higher_is_better("eval/ks")
    assert judge("eval/c2st_auc", 0.6, 0.5) == "distinguishable"  # the AUC rule, not 3x
    assert judge("cond/total_mean_rel_err", 0.05, 0.01) == "distinguishable"


def test_laplacian_wraps_only_periodic_axes():
    ramp = torch.arange(8.0).repeat(5, 1)[None, None]  # [1, 1, 5, 8]: rises along the last axis
    wrapped = two_sample.laplacian(ramp)
    assert torch.all(wrapped[..., 0] == 8) and torch.all(wrapped[..., -1] == -8)  # the seam
    assert torch.equal(two_sample.laplacian(ramp, (True, False)), torch.zeros_like(ramp))
    assert torch.equal(two_sample.laplacian(ramp, (True, True)), wrapped)
    x = torch.randn(3, 2, 6, 7)  # the interior is the usual 5-point stencil
    flat = two_sample.laplacian(x, (False, False))
    stencil = x[..., :-2, 1:-1] + x[..., 2:, 1:-1] + x[..., 1:-1, :-2] + x[..., 1:-1, 2:]
    assert torch.allclose(flat[..., 1:-1, 1:-1], stencil - 4 * x[..., 1:-1, 1:-1])
    line = torch.randn(4, 1, 2)  # sides below 3: no second difference along them
    assert torch.equal(two_sample.laplacian(line, (False,)), torch.zeros_like(line))


def test_a_seam_shared_by_both_sets_is_no_signal_without_wrapping():
    """Fields with a strong left-right discontinuity that both sets share: the wrapping view
    sees a seam of the same size in both (no separation either), and the non-wrapping one sees
    none at all: its inputs are the same fields' small-scale structure, so AUC ~ 0.5."""
    a, b = (torch.from_numpy(np.log(synth.grf(300, 16, seed=s)).astype("f4")) for s in (0, 1))
    ramp = torch.linspace(0, 20, 16)  # [W]: 20x the fields' std from left to right
    value = two_sample.auc(a + ramp, b + ramp, seed=0, epochs=6, view="laplacian",
                           periodic=(False, False))  # fmt: skip
    assert 0.35 < value < 0.65, value


@pytest.mark.parametrize("shape", [(1, 45, 16, 9), (1, 12, 20), (2, 368), (1, 1, 3, 5)])
def test_c2st_accepts_any_grid(shape):
    """Odd, small, 1-D: every side shrinks to 1 and is pooled; a wider spread of values is
    told apart by both views (the Laplacian removes a constant shift, not a wider spread)."""
    g = torch.Generator().manual_seed(0)
    a, b = (torch.rand(64, *shape, generator=g) for _ in range(2))
    periodic = (False,) * (len(shape) - 1)
    for view in two_sample.VIEWS:
        value = two_sample.auc(a, 3 * b, epochs=3, view=view, periodic=periodic)
        assert value > 0.8, (shape, view, value)


def test_1d_samples_get_histogram_features_and_memorisation():
    """1-D vectors (CaloChallenge dataset 1's layout): value KS/W1, moments and high-level
    features from the summed statistics; no spectrum or Minkowski sums are kept."""
    info = _info((368,), Symmetry.none(1))
    layout = stats.Layout(
        info.shape, spatial=table.applies("eval/ps_rel_err", info),
        highlevel=tuple(features.names(1, False)), rows=256,
        value_stats=tuple(STATS.items()),
    )  # fmt: skip
    assert "power" not in layout.shapes() and not layout.minkowski
    transform = make_transform(info, "linear")
    g = torch.Generator().manual_seed(0)
    real_x = torch.rand(256, 1, 368, generator=g) * 5 + 0.1
    sets = (real_x, torch.rand(256, 1, 368, generator=g) * 5 + 0.1, real_x * 1.5)
    totals = []
    for x in sets:
        s = stats.SampleStats(layout, torch.device("cpu"))
        s.add(torch.from_numpy(transform.encode(x.numpy())), x, 0, {})
        totals.append(s.reduce(SingleProcess()))
    same, _ = compare(totals[0], totals[1], layout, transform)
    far, _ = compare(totals[0], totals[2], layout, transform)
    assert set(same) == {"eval/ks", "eval/w1", "eval/mean_rel_err", "eval/std_rel_err"}
    assert far["eval/ks"] > 10 * same["eval/ks"] and far["eval/mean_rel_err"] > 0.4
    rows = [t["highlevel/rows"][:, :-1] for t in totals]
    assert features.names(1, False) == ["total", "max", "sparsity", "centre_x", "width_x"]
    assert features.compare(rows[2], rows[0], features.names(1, False))["eval/sep/total"] > 0.9
    found = memorisation.memorisation(real_x[:128].numpy(), sets[1][:64].numpy(),
                                      real_x[64:128].numpy())  # fmt: skip
    assert found.copy_share > 0.9  # copies of training vectors are caught in 1-D too


def test_non_periodic_2d_grid_is_evaluated_without_the_box_metrics(tmp_path):
    """A 12x20 field (no symmetry attribute: not a box): KS, features and the C2ST, no
    spectrum, Minkowski or peaks, with the reasons; a perfect generator sits at the floor."""
    data = tmp_path / "grid.h5"
    fields = synth.grf(640, size=32, seed=0)[:, :, :12, :20]  # [N, 1, 12, 20]
    write_dataset(data, np.ascontiguousarray(fields), None, kind="field", source="t")
    info = read_info(data)
    assert info.symmetry == Symmetry.none(2)
    transform = make_transform(info, "auto")
    fresh = synth.grf(384, size=32, seed=3)[:, :, :12, :20]
    evaluator = Evaluator(info, transform, SingleProcess(), torch.device("cpu"), 8, n=256)
    metrics = evaluator.evaluate(Replay(torch.from_numpy(transform.encode(fresh))))
    assert set(metrics) == set(metric_names(info))
    assert set(GEOMETRY).isdisjoint(metrics) and "eval/c2st_auc" in metrics
    assert evaluator.skipped["eval/ps_rel_err"] == "needs a periodic box; sides 12x20 are not equal"
    assert evaluator.skipped["eval/sep/peaks"].startswith("needs a periodic box")
    floor = evaluator.baseline().metrics
    assert metrics["eval/ks"] < 3 * floor["eval/ks"] + 0.005
    assert metrics["eval/c2st_auc"] < 0.7


def test_run_best_metric_naming_a_skipped_metric_is_one_line_exit_2(tmp_path):
    """A 16x16 field whose symmetry attribute says no axis is periodic: training refuses
    run.best_metric=eval/ps_rel_err before writing anything, and says why."""
    import h5py
    from conftest import launch

    data = tmp_path / "walls.h5"
    write_dataset(data, synth.grf(64, size=16, seed=0), None, kind="field", source="t")
    with h5py.File(data, "a") as f:
        f.attrs["symmetry"] = Symmetry.none(2).to_json()
    assert best_metric_name("auto", read_info(data)) == "eval/w1"
    run = tmp_path / "run"
    args = ["model.width=8", "model.z_dim=16", "train.batch_size=16", "train.steps=2"]
    override = "run.best_metric=eval/ps_rel_err"
    proc = launch([*args, f"data.path={data}", f"run.dir={run}", override])
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("hpcgan: error: run.best_metric=eval/ps_rel_err is not reported")
    assert "needs a periodic box; axes 0 and 1 are not periodic" in lines[0]
    assert not (run / "checkpoints").exists()
