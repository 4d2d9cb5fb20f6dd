"""The run state: checkpoint files (atomic writes, the latest pointer, pruning, safe loading),
the format version and its migration, and the fixture written by the code before it."""

import shutil
from pathlib import Path

import pytest
import torch
from conftest import launch

from hpcgan import run_state
from hpcgan.errors import UserError
from hpcgan.run_state import Checkpoint


def _state(step: int) -> dict:
    return {"step": step, "config": {"a": 1}, "G": {"w": torch.full((3,), float(step))}}


def test_save_prunes_and_points_latest(tmp_path):
    for step in (10, 20, 30, 40):
        run_state.save(tmp_path, _state(step), keep=2)
    assert [p.name for p in run_state.list_checkpoints(tmp_path)] == [
        "step-00000030.pt",
        "step-00000040.pt",
    ]
    assert (tmp_path / "latest").read_text().strip() == "step-00000040.pt"
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
    path, state = run_state.load_newest(tmp_path)
    assert path.name == "step-00000040.pt" and state["G"]["w"][0] == 40


def test_failed_write_leaves_previous_checkpoint_and_no_temp(tmp_path, monkeypatch):
    run_state.save(tmp_path, _state(1), keep=3)

    def broken_save(obj, f):  # torch.save writes to the open temporary file
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        run_state.save(tmp_path, _state(2), keep=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step-00000001.pt"]
    assert run_state.load_newest(tmp_path)[1]["step"] == 1


def test_load_newest_skips_corrupt_and_code(tmp_path):
    run_state.save(tmp_path, _state(1), keep=3)
    run_state.save(tmp_path, _state(2), keep=3)
    # A pickle that would run code: weights_only loading refuses it like any corrupt file.
    torch.save({"step": 3, "evil": print}, tmp_path / "step-00000003.pt")
    (tmp_path / "latest").write_text("step-00000003.pt\n")
    warnings = []
    path, state = run_state.load_newest(tmp_path, warn=warnings.append)
    assert state["step"] == 2 and len(warnings) == 1 and "step-00000003.pt" in warnings[0]


def test_an_unreadable_newer_file_never_pushes_out_good_ones(tmp_path):
    run_state.save(tmp_path, _state(4), keep=1)
    run_state.save(tmp_path, _state(8), keep=1)
    (tmp_path / "step-00000008.pt").write_bytes(b"truncated")  # resume fell back to step 4
    run_state.save(tmp_path, _state(4), keep=1)
    for step in (6, 7):
        run_state.save(tmp_path, _state(step), keep=1)
    names = [p.name for p in run_state.list_checkpoints(tmp_path)]
    assert names == ["step-00000007.pt", "step-00000008.pt"]  # the unreadable one is left
    assert run_state.load_newest(tmp_path, warn=lambda _: None)[1]["step"] == 7


def test_empty_directory_has_nothing(tmp_path):
    assert run_state.load_newest(tmp_path / "missing") is None


# -- the format and its versions ----------------------------------------------------------------

FIXTURE = Path(__file__).parent / "fixtures" / "v0" / "step-00000004.pt"
# The keys the fixture was trained with (tests/fixtures/v0/README.md); the data: built-in digits.
FIXTURE_KEYS = ["model.width=4", "model.z_dim=8", "train.batch_size=32", "run.tensorboard=false"]


def test_version_0_is_upgraded_on_load():
    """A checkpoint of the unversioned format (written before the format had a number)."""
    state = run_state.load(FIXTURE)
    assert "format" not in state
    ckpt = Checkpoint.from_state(state, FIXTURE)
    assert (ckpt.step, ckpt.batches, ckpt.sampler) == (4, 4, "G_ema")
    assert ckpt.identity["n"] == 1797 and ckpt.config["model"]["width"] == 4
    assert {"G", "D", "opt_G", "opt_D", "G_ema", "images_seen"} <= set(ckpt.trainer)
    saved = ckpt.to_state()
    assert saved["format"] == run_state.FORMAT and saved["G"] is state["G"]
    assert Checkpoint.from_state(saved, FIXTURE) == ckpt


def test_early_version_0_gets_defaults_from_its_own_config():
    """Early unversioned checkpoints lack data, guard, rng and best: each step had read
    train.d_steps batches of the saved config."""
    state = {"step": 5, "config": {"train": {"d_steps": 3}}, "G": {}, "D": {}}
    ckpt = Checkpoint.from_state(state, "old.pt")
    assert (ckpt.batches, ckpt.identity, ckpt.lr_scale, ckpt.recovered) == (15, None, 1.0, False)
    assert (ckpt.best_metric, ckpt.best_value, ckpt.rng) == ("", None, [])


def test_unknown_formats_and_foreign_files_are_user_errors():
    with pytest.raises(UserError, match="format 3; this hpcgan reads formats up to 2"):
        Checkpoint.from_state({"format": 3, "step": 1, "config": {}, "G": {}}, "new.pt")
    with pytest.raises(UserError, match="x.pt: not an hpcgan checkpoint"):
        Checkpoint.from_state({"weights": torch.zeros(1)}, "x.pt")


@pytest.mark.slow
def test_checkpoint_of_version_0_resumes_and_samples(tmp_path, digits_h5):
    """The fixture, written by the code before the format had a version, resumes training and
    samples (PNG and HDF5)."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(FIXTURE, run / "checkpoints" / FIXTURE.name)
    for out in ("v0.png", "v0.h5"):
        proc = launch(
            [str(run / "checkpoints" / FIXTURE.name), "--n", "8", "--out", str(tmp_path / out),
             "--data", str(digits_h5)],
            module="hpcgan.sample",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert (tmp_path / out).is_file()
    args = [f"data.path={digits_h5}", f"run.dir={run}", *FIXTURE_KEYS, "train.steps=6"]
    proc = launch([*args, "run.checkpoint_every=2", "run.eval_every=0", "run.log_every=1"])
    assert proc.returncode == 0, proc.stderr
    assert "resuming from" in proc.stdout and "step-00000004.pt at step 4" in proc.stdout
    assert "training steps 4..6" in proc.stdout
    assert run_state.load(run / "checkpoints" / "step-00000006.pt")["format"] == run_state.FORMAT
    proc = launch([str(run), "--n", "8", "--out", str(tmp_path / "v1.h5")], module="hpcgan.sample")
    assert proc.returncode == 0 and "(step 6)" in proc.stdout, proc.stderr
