"""The verdict metrics (docs/evaluation.md): classifier two-sample test, high-level features'
separation power, precision and recall, memorisation; each on constructed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import Replay

from hpcgan.data import synth
from hpcgan.metrics import features, two_sample


def _log_fields(n: int, seed: int, size: int = 16, ndim: int = 2) -> torch.Tensor:
    return torch.from_numpy(np.log(synth.grf(n, size=size, seed=seed, ndim=ndim)).astype("f4"))


@pytest.mark.parametrize("ndim", [2, 3])
def test_c2st_real_vs_real_is_near_chance_and_a_scaled_set_is_told_apart(ndim):
    size = 16 if ndim == 2 else 8
    a, b = _log_fields(300, 0, size, ndim), _log_fields(300, 1, size, ndim)
    same = two_sample.auc(a, b, seed=0, epochs=6)
    scaled = two_sample.auc(a, b * 1.3, seed=0, epochs=6)  # lognormal fields: x^1.3
    assert 0.35 < same < 0.65, same
    assert scaled > (0.9 if ndim == 2 else 0.8), scaled
    assert two_sample.auc(a, b * 1.3, seed=0, epochs=6) == scaled  # seeded: deterministic


def test_c2st_on_images_sees_a_shift():
    g = torch.Generator().manual_seed(0)
    a, b = (torch.rand(300, 3, 8, 8, generator=g) for _ in range(2))
    assert two_sample.auc(a, b + 0.2, epochs=6) > 0.9
    assert two_sample.sample_count((1, 32, 32, 32)) == 256  # the byte cap of big volumes
    assert np.isnan(two_sample.auc(a[:3], b))


def test_c2st_laplacian_view_sees_small_scale_structure():
    """Fields with a faint checkerboard (5% of their std, all at the highest wavenumber), as an
    upsampling artefact: the samples' view misses it, the Laplacian's finds it."""
    a, b = _log_fields(300, 0), _log_fields(300, 1)
    i, j = np.indices((16, 16))
    board = torch.from_numpy(((-1.0) ** (i + j)).astype("f4")) * 0.05 * float(b.std())
    assert two_sample.auc(a, b + board, seed=0, epochs=6, view="laplacian") > 0.9
    assert two_sample.auc(a, b + board, seed=0, epochs=6, view="samples") < 0.75
    assert two_sample.VIEWS == ("samples", "laplacian")


def test_separation_power_of_identical_shifted_and_disjoint_sets():
    rng = np.random.default_rng(0)
    ref, same = rng.normal(size=5000), rng.normal(size=5000)
    assert features.separation_power(ref, ref) == 0.0
    assert features.separation_power(same, ref) < 0.01
    assert features.separation_power(same + 0.5, ref) > 0.05
    assert features.separation_power(same + 100, ref) == pytest.approx(1.0)  # all in overflow
    constant = np.zeros(10)
    assert features.separation_power(constant, constant) == 0.0
    assert features.separation_power(constant + 1, constant) == pytest.approx(1.0)


def test_high_level_features_of_known_samples():
    x = torch.zeros(2, 1, 4, 6)
    x[0, 0, 1, 2] = 3.0  # one bright pixel at (1, 2)
    x[1, 0, :, :] = 1.0  # uniform
    stats = {"min": 0.0, "max": 3.0, "mean": 0.5, "std": 1.0}
    f = features.per_sample(x, stats, field=True)
    row = dict(zip(features.names(2, field=True), f[0].tolist()))
    assert row["total"] == 3.0 and row["max"] == 3.0 and row["sparsity"] == 23 / 24
    assert (row["centre_y"], row["centre_x"], row["width_y"], row["width_x"]) == (1, 2, 0, 0)
    assert row["peaks"] == 1
    uniform = dict(zip(features.names(2, field=True), f[1].tolist()))
    assert uniform["centre_x"] == 2.5 and uniform["width_x"] == pytest.approx(np.std(range(6)))
    assert uniform["peaks"] == 0 and uniform["sparsity"] == 0  # 1 is not above mean + std
    assert features.names(3, field=False)[-1] == "width_x" and "centre_z" in features.names(3, 0)


def test_precision_and_recall():
    from hpcgan.metrics.precision_recall import precision_recall

    rng = np.random.default_rng(0)
    real, other = rng.normal(size=(500, 8)), rng.normal(size=(500, 8))
    p, r = precision_recall(real, other)
    assert p > 0.8 and r > 0.8
    p, r = precision_recall(real, other + 3.0)  # shifted: neither realistic nor covering
    assert p < 0.1 and r < 0.1
    p, r = precision_recall(real, other * 0.3)  # collapsed to the centre: precise, no variety
    assert p > 0.9 and r < 0.3


def test_memorisation_flags_a_generator_that_returns_training_samples():
    from hpcgan.metrics.memorisation import memorisation

    fields = _log_fields(600, 0, size=8).numpy()
    train, held, fresh = fields[:400], fields[400:500], fields[500:]
    honest = memorisation(train, held, fresh)
    assert 0.8 < honest.ratio < 1.25 and honest.copy_share < 0.05 and not honest.flagged
    copies = memorisation(train, held, train[:100])
    assert copies.ratio < 1e-6 and copies.copy_share == 1.0 and copies.flagged
    noisy = memorisation(train, held, train[:100] + 0.01)  # near copies
    assert noisy.ratio < 0.2 and noisy.flagged


def test_verdict_rule():
    from hpcgan.metrics.verdict import judge, verdicts

    assert judge("eval/c2st_auc", 0.77, 0.49) == "distinguishable"
    assert judge("eval/c2st_auc", 0.52, 0.49) == "within noise"
    assert judge("eval/ks", 0.01, 0.002) == "distinguishable"
    assert judge("eval/ks", 0.005, 0.002) == "within noise"
    assert judge("eval/recall", 0.5, 0.9) == "distinguishable"
    assert judge("eval/precision", 0.85, 0.9) == "within noise"
    assert judge("eval/ks", 0.1, 0.0) == judge("eval/w1", 0.1, None) == "no floor"
    assert set(verdicts({"eval/ks": 1.0, "eval/class_frac/3": 0.1}, {})) == {"eval/ks"}


@pytest.fixture(scope="module")
def grf(tmp_path_factory):
    from hpcgan.data.format import read_info
    from hpcgan.data.write import write_dataset

    path = tmp_path_factory.mktemp("verdict") / "grf.h5"
    write_dataset(path, synth.grf(768, size=16, seed=0), None, kind="field", source="t")
    return read_info(path)


def test_evaluator_reports_the_verdict_metrics_with_their_floors(grf, monkeypatch):
    from hpcgan.comm.base import SingleProcess
    from hpcgan.data.transforms import make_transform
    from hpcgan.metrics.evaluate import Evaluator, metric_names

    monkeypatch.setattr(two_sample, "EPOCHS", 6)
    transform = make_transform(grf, "auto")
    ev = Evaluator(grf, transform, SingleProcess(), torch.device("cpu"), 4, n=384)
    assert ev.c2st == 384 // 2 // 128 * 128  # the smaller real half
    floor = ev.baseline().metrics
    fresh = synth.grf(384, size=16, seed=5)
    same = ev.evaluate(Replay(torch.from_numpy(transform.encode(fresh))))
    assert set(same) == set(metric_names(grf)) and "eval/sep/peaks" in same
    assert {"eval/c2st_auc", "eval/sep_max", "eval/ps_std_rel_err"} <= set(floor)
    assert same["eval/c2st_auc"] < 0.65 and floor["eval/c2st_auc"] < 0.65
    assert same["eval/sep_max"] < 3 * floor["eval/sep_max"] + 0.02
    assert same["eval/ps_std_rel_err"] < 3 * floor["eval/ps_std_rel_err"] + 0.05
    bad = ev.evaluate(Replay(torch.from_numpy(transform.encode(fresh**1.3))))
    assert bad["eval/c2st_auc"] > 0.85
    assert bad["eval/sep/max"] > 5 * same["eval/sep/max"] + 0.05
    assert bad["eval/ps_std_rel_err"] > 0.3


SCRIPT = """
import json, sys
import torch
from torch import nn
from hpcgan.comm import control
from hpcgan.data.format import read_info
from hpcgan.data.transforms import make_transform
from hpcgan.metrics import two_sample
from hpcgan.metrics.evaluate import Evaluator

two_sample.EPOCHS = 3
info = read_info(sys.argv[1])
comm = control()
torch.manual_seed(0)
G = nn.Sequential(nn.Linear(8, 256), nn.Tanh(), nn.Unflatten(1, (1, 16, 16)))
ev = Evaluator(info, make_transform(info, "auto"), comm, torch.device("cpu"), z_dim=8, n=300)
out = {"metrics": ev.evaluate(G), "baseline": ev.baseline().metrics, "ranks": comm.size}
if comm.rank == 0:
    print(json.dumps(out))
"""


@pytest.mark.mpi
def test_two_ranks_give_the_one_rank_verdict_metrics(grf, tmp_path):
    import json

    from conftest import launch

    script = tmp_path / "verdict.py"
    script.write_text(SCRIPT)
    runs = []
    for np_ in (None, 2):
        proc = launch([str(script), str(grf.path)], np=np_, module=None, timeout=240)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs.append(json.loads(proc.stdout))
    one, two = runs
    assert (one["ranks"], two["ranks"]) == (1, 2)
    assert "eval/c2st_auc" in one["metrics"] and "eval/sep/peaks" in one["baseline"]
    for part in ("metrics", "baseline"):
        for name, value in one[part].items():
            assert two[part][name] == pytest.approx(value, rel=1e-6, abs=1e-9), name
