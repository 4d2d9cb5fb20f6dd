"""The loop's bookkeeping around checkpoints, in one process: which best value survives a
resume and the divergence guard's reload."""

from __future__ import annotations

import time
from types import SimpleNamespace

import torch

from hpcgan import run_state
from hpcgan.comm.base import SingleProcess
from hpcgan.config import load_config
from hpcgan.data.format import read_info
from hpcgan.data.transforms import make_transform
from hpcgan.loop import Loop
from hpcgan.models import build_models
from hpcgan.preempt import StopRequest
from hpcgan.run_state import Checkpoint
from hpcgan.trainer import Trainer

QUIET = SimpleNamespace(info=lambda *_: None, beat=lambda *_: None)


def make_loop(data, run_dir) -> Loop:
    cfg = load_config(None, ["model.width=4", "model.z_dim=8", "train.batch_size=8"])
    info = read_info(data)
    torch.manual_seed(0)
    G, D = build_models(cfg.model, info.shape)
    trainer = Trainer(cfg, SingleProcess(), G, D, torch.device("cpu"))
    reader = SimpleNamespace(info=info, transform=make_transform(info, "auto"), conditions=None)
    return Loop(cfg, SingleProcess(), trainer, reader, QUIET, run_dir, None, QUIET)


def saved(loop: Loop, step: int, metric: str, value: float) -> dict:
    """A checkpoint's dict as today's loop writes it (format 0 lacks the "format" key)."""
    state = {**loop.trainer.state_dict(), "step": step, "best": {"metric": metric, "value": value}}
    return {**state, "config": {}}


def restore(loop: Loop, path, state: dict) -> int:
    return loop.restore(path, Checkpoint.from_state(state, path))


def test_resume_keeps_the_best_value_only_for_the_same_metric(digits_h5, tmp_path):
    loop = make_loop(digits_h5, tmp_path)
    assert loop.best_metric() == "eval/fd_classifier"  # auto, labelled data
    assert restore(loop, tmp_path, saved(loop, 3, "eval/fd_classifier", 2.5)) == 3
    assert loop.best == 2.5
    restore(loop, tmp_path, saved(loop, 3, "eval/coverage_min", 0.09))  # another direction
    assert loop.best is None


def test_reload_after_divergence_keeps_the_best_so_far(digits_h5, tmp_path):
    loop = make_loop(digits_h5, tmp_path)
    run_state.save(tmp_path / "checkpoints", saved(loop, 4, "eval/fd_classifier", 3.0), keep=3)
    loop.best = 1.2  # reached after step 4 and kept in best.pt
    assert loop._recover(9, streak=5) == 4
    assert loop.best == 1.2 and loop.recovered
    assert loop.trainer.lr_scale == loop.cfg.train.recovery_lr_factor


def test_resume_with_another_d_steps_reads_on_where_the_checkpoint_left(digits_h5, tmp_path):
    loop = make_loop(digits_h5, tmp_path)  # train.d_steps=1
    state = {**saved(loop, 5, "", 0.0), "data": {"batches": 10}}  # 5 steps of d_steps=2
    assert restore(loop, tmp_path, state) == 5
    assert [loop.next_batch(s) for s in (5, 6, 7)] == [10, 11, 12]
    assert loop.checkpoint(7).to_state()["data"]["batches"] == 12


def test_eta_is_the_time_to_whichever_limit_comes_first():
    """A 1,000,000-step run with train.max_minutes=20 shows the time to the 20 minutes."""
    cfg = load_config(None, ["train.steps=1000000", "train.max_minutes=20"])
    # StopRequest's own clock, without installing its signal handlers in pytest's process
    stop = SimpleNamespace(deadline=time.monotonic() + 20 * 60)
    stop.seconds_left = lambda: StopRequest.seconds_left(stop)
    loop = SimpleNamespace(cfg=cfg, stop=stop)
    eta = Loop._eta(loop, done=100, rate=2.0)  # 2 steps/s: 138 h to the steps
    assert eta.endswith("(train.max_minutes)")
    minutes, _ = map(int, eta.split()[0].split(":"))  # m:ss under an hour
    assert 19 <= minutes <= 20
    cfg.train.steps = 1000
    assert Loop._eta(loop, done=900, rate=2.0) == "0:50"  # the steps come first
    no_limit = SimpleNamespace(seconds_left=lambda: None)
    assert Loop._eta(SimpleNamespace(cfg=cfg, stop=no_limit), 0, 2.0) == "8:20"
