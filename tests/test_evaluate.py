"""Distributed evaluation, and the sample / evaluate command-line tools on a tiny checkpoint."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import launch
from torch import nn

from hpcgan.comm.base import SingleProcess
from hpcgan.data import synth
from hpcgan.data.format import read_info
from hpcgan.data.transforms import make_transform
from hpcgan.data.write import write_dataset
from hpcgan.errors import UserError
from hpcgan.metrics import classifier, sources
from hpcgan.metrics.evaluate import Evaluator, best_metric_name, better, metric_names

TINY = ["model.width=8", "model.z_dim=16", "train.batch_size=32", "run.log_every=2"]


def make_run(run_dir: Path, data: Path, steps: int = 4) -> Path:
    """A few training steps and a checkpoint; for labelled data, the evaluation classifier is
    trained in advance (briefly, for speed) into the run's cache, where the tools find it."""
    args = [*TINY, f"train.steps={steps}", f"run.checkpoint_every={steps}"]
    proc = launch([*args, f"data.path={data}", f"run.dir={run_dir}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = read_info(data)
    if info.has_labels:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(classifier, "STEPS", 60)
            transform = make_transform(info, "auto")
            device = torch.device("cpu")
            classifier.load_or_train(info, transform, SingleProcess(), device, run_dir / "eval")
    return run_dir


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory, digits_h5) -> Path:
    return make_run(tmp_path_factory.mktemp("eval") / "run", digits_h5)


def _evaluate(run: Path, np_: int | None, *extra: str) -> dict:
    for cached in (run / "eval").glob("reference-*"):
        cached.unlink()  # every launch computes the real statistics itself, across its ranks
    proc = launch([str(run), "--n", "300", *extra], np=np_, module="hpcgan.evaluate")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.mark.mpi
def test_two_ranks_give_the_one_rank_metrics(digits_run):
    one, two = _evaluate(digits_run, None), _evaluate(digits_run, 2)
    assert (one["ranks"], two["ranks"]) == (1, 2)
    expected = {
        "eval/ks", "eval/w1", "eval/ps_rel_err", "eval/minkowski_err", "eval/fd_classifier",
        "eval/kid_classifier", "eval/coverage_min", "eval/class_frac/9",
    }  # fmt: skip
    assert expected <= set(one["metrics"])
    for part in ("metrics", "baseline"):
        for name, value in one[part].items():
            assert two[part][name] == pytest.approx(value, rel=1e-6, abs=1e-9), name
    assert one["n"] == 300 and one["n_real"] == 384 and one["step"] == 4
    assert one["skipped"]["eval/sep/peaks"] == "needs fields; these are images"  # the table's
    assert "eval/ps_rel_err" not in one["skipped"]  # square one-channel images keep it


def test_sample_writes_png_and_physical_hdf5(digits_run, tmp_path):
    png, h5, h5_short = tmp_path / "grid.png", tmp_path / "s.h5", tmp_path / "short.h5"
    for out, n in ((png, 16), (h5, 10), (h5_short, 3)):
        proc = launch([str(digits_run), "--n", str(n), "--out", str(out)], module="hpcgan.sample")
        assert proc.returncode == 0, proc.stderr
    assert png.stat().st_size > 0
    info = read_info(h5)
    assert (info.n, info.shape, info.dtype, info.kind) == (10, (1, 32, 32), "uint8", "image")
    import h5py

    with h5py.File(h5, "r") as a, h5py.File(h5_short, "r") as b:
        assert np.array_equal(a["images"][:3], b["images"][:])  # sample i ignores --n


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("hpcgan: error: "), proc.stderr
    return lines[0]


@pytest.mark.parametrize("module", ["hpcgan.sample", "hpcgan.evaluate", "hpcgan.report"])
def test_bad_input_is_one_error_line(module, tmp_path, digits_h5):
    out = ["--out", str(tmp_path / "x.png")] if module == "hpcgan.sample" else []
    missing = launch([str(tmp_path / "nope"), *out], module=module)
    assert "no such run directory" in _one_error_line(missing)
    (tmp_path / "empty").mkdir()
    empty = launch([str(tmp_path / "empty"), *out], module=module)
    assert "no loadable checkpoint" in _one_error_line(empty)


def test_unreadable_checkpoint_and_bad_output_name(tmp_path, digits_h5, digits_run):
    proc = launch([str(digits_h5), "--out", str(tmp_path / "x.png")], module="hpcgan.sample")
    assert "not a loadable checkpoint" in _one_error_line(proc)
    proc = launch([str(digits_run), "--out", str(tmp_path / "x.jpg")], module="hpcgan.sample")
    assert "expected a .png or .h5" in _one_error_line(proc)
    proc = launch([str(digits_run), "--data", str(tmp_path / "gone.h5")], module="hpcgan.evaluate")
    assert "gone.h5: no such file" in _one_error_line(proc)
    proc = launch(
        [str(digits_run), "--inception", str(tmp_path / "w.pth")], module="hpcgan.evaluate"
    )
    assert "Inception weights not found" in _one_error_line(proc)


class Replay(nn.Module):
    """A perfect generator: it returns fresh fields of the data's own distribution."""

    def __init__(self, fields: torch.Tensor) -> None:
        super().__init__()
        self.fields, self.next = fields, 0
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the evaluator a device and dtype

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.fields[self.next : self.next + len(z)]
        self.next += len(z)
        return out


def test_a_perfect_generator_scores_at_the_noise_floor(tmp_path):
    data = tmp_path / "grf.h5"
    write_dataset(data, synth.grf(1024, size=32, seed=0), None, kind="field", source="t")
    info = read_info(data)
    transform = make_transform(info, "auto")
    fresh = torch.from_numpy(transform.encode(synth.grf(512, size=32, seed=1)))
    evaluator = Evaluator(info, transform, SingleProcess(), torch.device("cpu"), 8, n=512)
    metrics = evaluator.evaluate(Replay(fresh))
    assert set(metrics) == set(metric_names(info))
    floor = evaluator.baseline().metrics
    for name in ("eval/ks", "eval/ps_rel_err", "eval/minkowski_err", "eval/mean_rel_err"):
        assert metrics[name] < 3 * floor[name] + 0.005, (name, metrics[name], floor[name])
    assert metrics["eval/ps_rel_err"] < 0.1 and metrics["eval/ks"] < 0.02
    bad = evaluator.evaluate(Replay(fresh * 0.5))  # a narrower log-distribution
    assert bad["eval/ks"] > 10 * metrics["eval/ks"]
    assert bad["eval/ps_rel_err"] > 5 * metrics["eval/ps_rel_err"]


def test_best_metric_for_each_kind_of_data(tmp_path):
    rgb = tmp_path / "rgb.h5"
    write_dataset(rgb, np.zeros((4, 3, 16, 16), np.uint8) + 7, None, kind="image", source="t")
    info = read_info(rgb)
    assert best_metric_name("auto", info) == "eval/w1"  # no spectrum for colour images
    assert "eval/ps_rel_err" not in metric_names(info)
    with pytest.raises(UserError, match="eval/ps_rel_err is not reported"):
        best_metric_name("eval/ps_rel_err", info)
    assert best_metric_name("none", info) is None


def test_best_metric_direction():
    assert better("eval/ks", 0.1, None) and better("eval/ks", 0.1, 0.2)
    assert not better("eval/ps_rel_err", 0.3, 0.2)
    assert better("eval/coverage_min", 0.08, 0.05) and not better("eval/ks", float("nan"), None)


def test_tensorboard_board_writes_scalars_and_images(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from hpcgan.board import Board

    board = Board(tmp_path)
    board.scalars(5, {"step": 5, "loss/D": 1.5, "eval/ks": 0.25, "bad": float("nan")})
    board.image(5, "samples", np.zeros((8, 12, 1), dtype=np.uint8))
    board.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {"loss/D", "eval/ks"}
    assert events.Scalars("eval/ks")[0].value == pytest.approx(0.25)
    assert events.Tags()["images"] == ["samples"]


def test_generated_uint8_images_are_rounded_like_the_real_pixels(tmp_path):
    """Real uint8 pixels are whole numbers; a generator a third of a grey level off everywhere
    makes the same images once rounded (as hpcgan.sample writes them) and scores at the floor."""
    images, _ = synth.digits(16)
    data = tmp_path / "digits.h5"
    write_dataset(data, images[:512], None, kind="image", source="t")
    info = read_info(data)
    transform = make_transform(info, "auto")
    shifted = images[512:1024].astype(np.float32) + 0.3  # rounds back to the real pixels
    fresh = torch.from_numpy(transform.encode(shifted))
    evaluator = Evaluator(info, transform, SingleProcess(), torch.device("cpu"), 8, n=512)
    blocks = []  # the training loop's watchdog beats once per block, and before the C2ST
    metrics = evaluator.evaluate(Replay(fresh), progress=lambda: blocks.append(1))
    assert len(blocks) == sources.num_fake_blocks(512) + (1 if evaluator.c2st else 0)
    assert set(metrics) == set(metric_names(info))
    floor = evaluator.baseline().metrics
    for name in ("eval/ks", "eval/minkowski_err"):
        assert metrics[name] < 3 * floor[name] + 0.005, (name, metrics[name], floor[name])


def test_sample_of_an_ac_gan_run_writes_its_classes(tmp_path, digits_h5):
    """train.aux_classifier alone makes G class-conditional; sample rebuilds that G."""
    run = tmp_path / "run"
    args = [*TINY, "train.steps=2", "train.aux_classifier=true"]
    proc = launch([*args, f"data.path={digits_h5}", f"run.dir={run}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "s.h5"
    proc = launch([str(run), "--n", "12", "--out", str(out)], module="hpcgan.sample")
    assert proc.returncode == 0, proc.stderr
    import h5py

    with h5py.File(out, "r") as f:
        assert list(f["labels"][:]) == [i % 10 for i in range(12)]


def test_minkowski_metrics_are_reported_for_2d_and_3d_samples():
    from hpcgan.data.format import DatasetInfo
    from hpcgan.symmetry import Symmetry

    stats = {"min": 0.1, "max": 10.0, "mean": 1.0, "std": 1.0}
    box2, box3 = Symmetry.periodic_box((16, 16)), Symmetry.periodic_box((8, 8, 8))
    maps = DatasetInfo(
        "x.h5", 10, 1, (16, 16), "float32", "field", "t", stats, False, 0, 10, None, box2
    )
    volumes = DatasetInfo(
        "x.h5", 10, 1, (8, 8, 8), "float32", "field", "t", stats, False, 0, 10, None, box3
    )
    assert "eval/minkowski_err" in metric_names(maps)
    assert "eval/ps_rel_err" in metric_names(volumes)
    assert "eval/minkowski_v3_err" in metric_names(volumes)
    assert "eval/minkowski_v3_err" not in metric_names(maps)
