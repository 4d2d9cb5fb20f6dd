"""Checkpoint files: atomic writes, the latest pointer, pruning, safe loading."""

import pytest
import torch

from hpcgan import checkpoint


def _state(step: int) -> dict:
    return {"step": step, "config": {"a": 1}, "G": {"w": torch.full((3,), float(step))}}


def test_save_prunes_and_points_latest(tmp_path):
    for step in (10, 20, 30, 40):
        checkpoint.save(tmp_path, _state(step), keep=2)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == [
        "step-00000030.pt",
        "step-00000040.pt",
    ]
    assert (tmp_path / "latest").read_text().strip() == "step-00000040.pt"
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
    path, state = checkpoint.load_newest(tmp_path)
    assert path.name == "step-00000040.pt" and state["G"]["w"][0] == 40


def test_failed_write_leaves_previous_checkpoint_and_no_temp(tmp_path, monkeypatch):
    checkpoint.save(tmp_path, _state(1), keep=3)

    def broken_save(obj, f):
        open(f, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        checkpoint.save(tmp_path, _state(2), keep=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step-00000001.pt"]
    assert checkpoint.load_newest(tmp_path)[1]["step"] == 1


def test_load_newest_skips_corrupt_and_code(tmp_path):
    checkpoint.save(tmp_path, _state(1), keep=3)
    checkpoint.save(tmp_path, _state(2), keep=3)
    # A pickle that would run code: weights_only loading refuses it like any corrupt file.
    torch.save({"step": 3, "evil": print}, tmp_path / "step-00000003.pt")
    (tmp_path / "latest").write_text("step-00000003.pt\n")
    warnings = []
    path, state = checkpoint.load_newest(tmp_path, warn=warnings.append)
    assert state["step"] == 2 and len(warnings) == 1 and "step-00000003.pt" in warnings[0]


def test_an_unreadable_newer_file_never_pushes_out_good_ones(tmp_path):
    checkpoint.save(tmp_path, _state(4), keep=1)
    checkpoint.save(tmp_path, _state(8), keep=1)
    (tmp_path / "step-00000008.pt").write_bytes(b"truncated")  # resume fell back to step 4
    checkpoint.save(tmp_path, _state(4), keep=1)
    for step in (6, 7):
        checkpoint.save(tmp_path, _state(step), keep=1)
    names = [p.name for p in checkpoint.list_checkpoints(tmp_path)]
    assert names == ["step-00000007.pt", "step-00000008.pt"]  # the unreadable one is left
    assert checkpoint.load_newest(tmp_path, warn=lambda _: None)[1]["step"] == 7


def test_empty_directory_has_nothing(tmp_path):
    assert checkpoint.load_newest(tmp_path / "missing") is None
