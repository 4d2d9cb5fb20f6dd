"""The training command end to end: run directory, resume, preemption, bad input."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest
import torch
from conftest import ROOT, assert_refused_resume_wrote_nothing, launch, mpi_env, run_files, tiny

from hpcgan.data.write import write_dataset

pytestmark = pytest.mark.slow


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1 and lines[0].startswith("hpcgan: error: "), proc.stderr
    return lines[0]


def test_run_directory_layout(tmp_path, digits_h5):
    run = tmp_path / "run"
    args = tiny(run, digits_h5, "train.steps=30", "run.sample_every=10", "run.checkpoint_every=10")
    proc = launch([*args, "run.keep=2"])
    assert proc.returncode == 0, proc.stderr
    assert "step 30/30" in proc.stdout and "img/s" in proc.stdout and "eta" in proc.stdout

    assert "width: 8" in (run / "config.yaml").read_text()
    assert "checkpoint" in (run / "log.txt").read_text()
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [5, 10, 15, 20, 25, 30]
    assert {"loss/D", "loss/G", "throughput/img_s", "time/step_s"} <= set(records[-1])
    assert sorted(p.name for p in (run / "samples").iterdir()) == [
        "step-00000010.png",
        "step-00000020.png",
        "step-00000030.png",
    ]
    ckpts = sorted(p.name for p in (run / "checkpoints").glob("*.pt"))
    assert ckpts == ["step-00000020.pt", "step-00000030.pt"]  # run.keep=2 pruned step 10
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-00000030.pt"
    state = torch.load(run / "checkpoints" / "step-00000030.pt", weights_only=True)
    assert {"step", "config", "G", "D", "opt_G", "opt_D"} <= set(state)
    assert state["step"] == 30 and state["config"]["model"]["width"] == 8


def test_resume_continues_to_the_new_step_count(tmp_path, digits_h5):
    run = tmp_path / "run"
    assert launch(tiny(run, digits_h5, "train.steps=10", "run.checkpoint_every=10")).returncode == 0
    proc = launch(tiny(run, digits_h5, "train.steps=20", "run.checkpoint_every=10"))
    assert proc.returncode == 0, proc.stderr
    assert "resuming from" in proc.stdout and "step-00000010.pt at step 10" in proc.stdout
    assert "training steps 10..20" in proc.stdout
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-00000020.pt"


@pytest.mark.parametrize("norm,noted", [("batch", True), ("none", False)])
def test_wgan_gp_with_batch_norm_in_d_gets_a_note(tmp_path, digits_h5, norm, noted):
    args = tiny(tmp_path / "run", digits_h5, "train.steps=2", "train.loss=wgan-gp")
    proc = launch([*args, f"model.norm={norm}"])
    assert proc.returncode == 0, proc.stderr
    assert ("batch norm in D mixes the samples" in proc.stdout) == noted


def test_built_in_dataset_is_prepared_on_first_use(tmp_path):
    run, data = tmp_path / "run", tmp_path / "data"
    args = [
        f"run.dir={run}",
        f"data.root={data}",
        "model.width=8",
        "train.steps=2",
        "train.batch_size=16",
    ]
    proc = launch(args, np=2)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (data / "digits-32.h5").is_file()
    assert not list(data.glob(".*tmp*"))


@pytest.mark.parametrize(
    "override,needle",
    [
        ("train.stepz=3", "unknown config key 'train.stepz'"),
        ("train.loss=mse", "train.loss"),
        ("data.path=/nonexistent/x.h5", "/nonexistent/x.h5"),
        ("train.batch_size=4000", "fewer than one global batch"),
        ("run.dir=/proc/forbidden", "not writable"),
        ("run.best_metric=eval/fd", "run.best_metric=eval/fd is not reported"),
        ("model.attention=32", "model.attention needs model.arch=resnet"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, digits_h5, override, needle):
    run = tmp_path / "run"
    proc = launch([*tiny(run, digits_h5, "train.steps=2"), override])
    assert needle in _one_error_line(proc)
    assert not (run / "checkpoints").exists()  # refused before anything was written


def test_indivisible_batch_under_mpirun_exits_2_on_every_rank(tmp_path, digits_h5):
    proc = launch(tiny(tmp_path / "run", digits_h5, "train.batch_size=33"), np=2, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "not divisible by the 2 ranks" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()  # nothing written


def test_changed_model_against_checkpoint_is_refused(tmp_path, digits_h5):
    run = tmp_path / "run"
    assert launch(tiny(run, digits_h5, "train.steps=4", "run.checkpoint_every=4")).returncode == 0
    before = (run / "checkpoints" / "step-00000004.pt").read_bytes()
    files = run_files(run)
    proc = launch([*tiny(run, digits_h5, "train.steps=8"), "model.width=16"])
    assert "model.width=8" in _one_error_line(proc)
    assert (run / "checkpoints" / "step-00000004.pt").read_bytes() == before
    # config.yaml, log.txt, metrics.jsonl, TensorBoard's events: not one byte, not one mtime.
    assert list((run / "tensorboard").iterdir())
    assert_refused_resume_wrote_nothing(files, run)


def _start(args: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "hpcgan.train", *args]
    return subprocess.Popen(cmd, cwd=ROOT, env=mpi_env(), stdout=subprocess.PIPE, text=True)


def test_sigusr1_checkpoints_and_exits_75(tmp_path, digits_h5):
    run = tmp_path / "run"
    proc = _start(tiny(run, digits_h5, "train.steps=100000", "run.log_every=1"))
    for line in proc.stdout:  # wait until training is under way
        if "step 3/" in line:
            break
    t0 = time.monotonic()
    proc.send_signal(signal.SIGUSR1)
    assert proc.wait(timeout=30) == 75
    assert time.monotonic() - t0 < 30
    latest = (run / "checkpoints" / "latest").read_text().strip()
    step = torch.load(run / "checkpoints" / latest, weights_only=True)["step"]
    assert step >= 3
    assert "SIGUSR1" in (run / "log.txt").read_text()


def test_max_minutes_stops_with_75(tmp_path, digits_h5):
    run = tmp_path / "run"
    proc = launch(tiny(run, digits_h5, "train.steps=100000", "train.max_minutes=0.05"))
    assert proc.returncode == 75, proc.stderr
    assert "train.max_minutes" in (run / "log.txt").read_text()
    assert (run / "checkpoints" / "latest").is_file()


def _bad_h5(path, make) -> str:
    import h5py

    with h5py.File(path, "w") as f:
        make(f)
    return str(path)


@pytest.mark.parametrize(
    "name,make,needle",
    [
        ("nokey", lambda f: f.create_dataset("data", data=[1]), "/images"),
        ("rank3", lambda f: f.create_dataset("images", shape=(70, 32, 32), dtype="u1"), "rank"),
        ("int16", lambda f: f.create_dataset("images", shape=(70, 1, 32, 32), dtype="i2"), "dtype"),
    ],
)
def test_bad_dataset_files_are_one_line_errors(tmp_path, name, make, needle):
    path = _bad_h5(tmp_path / f"{name}.h5", make)
    proc = launch(tiny(tmp_path / "run", Path(path), "train.steps=2"))
    line = _one_error_line(proc)
    assert needle in line and name in line
    assert not (tmp_path / "run").exists()


def test_non_hdf5_file_is_refused(tmp_path):
    bogus = tmp_path / "images.h5"
    bogus.write_text("not an HDF5 file\n")
    line = _one_error_line(launch(tiny(tmp_path / "run", bogus, "train.steps=2")))
    assert "images.h5" in line


def test_checkpoint_of_other_data_is_refused_but_a_copy_resumes(tmp_path, digits_h5, indexed_h5):
    """Same model keys, other data (another resolution, or the same shape with other values)
    is refused; the same file copied elsewhere (node-local disk) resumes."""
    run = tmp_path / "run"
    assert launch(tiny(run, digits_h5, "train.steps=2", "run.checkpoint_every=2")).returncode == 0
    before = sorted(p.read_bytes() for p in (run / "checkpoints").iterdir())
    files = run_files(run)
    inverted = tmp_path / "inverted.h5"
    with h5py.File(digits_h5, "r") as f:
        write_dataset(inverted, 255 - f["images"][:], f["labels"][:], kind="image", source="t")
    for other in (indexed_h5, inverted):
        line = _one_error_line(launch(tiny(run, other, "train.steps=4")))
        assert "was trained on other data" in line and other.name in line
    assert sorted(p.read_bytes() for p in (run / "checkpoints").iterdir()) == before
    assert_refused_resume_wrote_nothing(files, run)
    copy = tmp_path / "scratch" / "digits.h5"
    copy.parent.mkdir()
    shutil.copy(digits_h5, copy)
    proc = launch(tiny(run, copy, "train.steps=4"))
    assert proc.returncode == 0 and "at step 2" in proc.stdout, proc.stderr


def test_evaluation_during_training_keeps_best_and_writes_tensorboard(tmp_path, digits_h5):
    run = tmp_path / "run"
    args = tiny(
        run,
        digits_h5,
        "train.steps=12",
        "run.eval_every=5",
        "run.eval_n=256",
        "run.checkpoint_every=10",
    )
    proc = launch(args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval/fd_classifier" in r]
    assert [r["step"] for r in evals] == [5, 10, 12]  # and the final model
    assert all(0 <= r["eval/coverage_min"] <= 1 and r["eval/ks"] >= 0 for r in evals)
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert best["best"]["metric"] == "eval/fd_classifier"
    assert best["best"]["value"] == min(r["eval/fd_classifier"] for r in evals)
    assert "G_ema" in best
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
