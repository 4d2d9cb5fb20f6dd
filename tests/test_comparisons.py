"""The suite's own comparisons prove what the tests that use them claim: the bitwise-resume
check (conftest.assert_bitwise_equal) sees a one-bit change in any entry of a checkpoint, and
the refused-resume check (conftest.assert_refused_resume_wrote_nothing) sees a rewrite."""

from __future__ import annotations

import copy
import os

import pytest
import torch
from conftest import (
    RESUME_STATE,
    assert_bitwise_equal,
    assert_refused_resume_wrote_nothing,
    run_files,
    small_trainer,
)

from hpcgan.condition import Condition


@pytest.fixture(scope="module")
def saved() -> dict:
    """What an fp16 run at 2 ranks saves, the trainer's part from a real step."""
    trainer = small_trainer("train.precision=fp16")
    real = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    trainer.step(0, [(real, Condition())])
    return {
        **trainer.state_dict(),
        "config": {"run": {"dir": "a"}},
        "step": 1,
        "data": {"batches": 1, "identity": {"n": 8, "shape": [1, 16, 16]}},
        "guard": {"lr_scale": 1.0, "recovered": False},
        "rng": [torch.get_rng_state(), torch.get_rng_state()],
        "best": {"metric": "", "value": None},
    }


def _leaves(x, where=()):
    """(path, value) of every tensor, number and string in nested dicts and lists."""
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _leaves(v, (*where, k))
    elif isinstance(x, (list, tuple)):
        for i, v in enumerate(x):
            yield from _leaves(v, (*where, i))
    elif isinstance(x, (torch.Tensor, int, float, str)):
        yield where, x


def _changed(value):
    """``value`` with one bit (or one unit) changed."""
    if isinstance(value, torch.Tensor):
        out = value.clone()
        flat = out.reshape(-1).view(torch.uint8) if out.numel() else None
        if flat is None:
            return None
        flat[-1] ^= 1
        return out
    if isinstance(value, bool):
        return not value
    if isinstance(value, float):
        return float(torch.nextafter(torch.tensor(value, dtype=torch.float64),
                                     torch.tensor(float("inf"), dtype=torch.float64)))  # fmt: skip
    if isinstance(value, int):
        return value + 1
    return value + "x"


def _replaced(x, where, value):
    """A copy of ``x`` with the entry at path ``where`` set to ``value`` (the rest shared)."""
    if not where:
        return value
    head, rest = where[0], where[1:]
    if isinstance(x, dict):
        return {**x, head: _replaced(x[head], rest, value)}
    items = list(x)
    items[head] = _replaced(items[head], rest, value)
    return type(x)(items)


def test_bitwise_comparison_catches_one_bit_in_any_entry_but_the_config(saved):
    a = saved
    assert {*RESUME_STATE, "G_ema", "scaler_G", "scaler_D"} <= set(a)
    assert_bitwise_equal(a, copy.deepcopy(a), (*RESUME_STATE, "G_ema", "scaler_G", "scaler_D"))
    checked = set()
    for where, value in _leaves(a):
        changed = _changed(value)
        if changed is None:
            continue
        b = _replaced(a, where, changed)
        if where[0] == "config":  # run.dir and train.steps may differ between the runs
            assert_bitwise_equal(a, b)
            continue
        with pytest.raises(AssertionError):
            assert_bitwise_equal(a, b)
        checked.add(where[0])
    assert {"G", "D", "G_ema", "opt_G", "opt_D", "scaler_G", "scaler_D", "rng"} <= checked


def test_bitwise_comparison_catches_a_missing_entry_and_minus_zero(saved):
    a = saved
    b = copy.deepcopy(a)
    del b["scaler_D"]
    with pytest.raises(AssertionError):
        assert_bitwise_equal(a, b)
    with pytest.raises(AssertionError):  # an entry the caller expects, absent from both
        assert_bitwise_equal(b, b, (*RESUME_STATE, "scaler_D"))
    zero, minus = {"G": {"w": torch.zeros(2)}}, {"G": {"w": torch.tensor([0.0, -0.0])}}
    with pytest.raises(AssertionError):
        assert_bitwise_equal(zero, minus, ("G",))


def test_refused_resume_check_sees_a_rewrite_a_new_file_and_a_touch(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for name in ("config.yaml", "log.txt", "metrics.jsonl", "checkpoints/latest"):
        (run / name).write_text(name)
    before = run_files(run)
    assert_refused_resume_wrote_nothing(before, run)
    (run / "log.txt").write_text("log.txt")  # the same bytes, written again
    with pytest.raises(AssertionError, match="log.txt"):
        assert_refused_resume_wrote_nothing(before, run)
    before = run_files(run)
    (run / "tensorboard").mkdir()
    (run / "tensorboard" / "events.out.tfevents.1").write_bytes(b"")
    with pytest.raises(AssertionError, match="appeared"):
        assert_refused_resume_wrote_nothing(before, run)
    (run / "tensorboard" / "events.out.tfevents.1").unlink()
    stat = (run / "config.yaml").stat()
    os.utime(run / "config.yaml", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1000))
    with pytest.raises(AssertionError, match="config.yaml"):
        assert_refused_resume_wrote_nothing(before, run)
