"""The Trainer in one process: skipped steps decided on the device, and G_ema's own batch-norm
statistics."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hpcgan.comm.base import SingleProcess
from hpcgan.config import load_config
from hpcgan.models import build_models
from hpcgan.trainer import Trainer


def make(*overrides: str) -> Trainer:
    cfg = load_config(
        None,
        [
            "model.width=4",
            "model.z_dim=8",
            "train.batch_size=8",
            "train.ema_halflife_images=100",
            *overrides,
        ],
    )
    torch.manual_seed(0)
    G, D = build_models(cfg.model, (1, 16, 16))
    return Trainer(cfg, SingleProcess(), G, D, torch.device("cpu"))


def real(seed: int) -> torch.Tensor:
    return torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def snapshot(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_nonfinite_gradients_skip_the_update_and_are_counted(optimizer):
    trainer = make(f"train.optimizer={optimizer}")
    trainer.step(0, [(real(0), None)])
    assert trainer.bad_run() == 0
    d, g, ema = snapshot(trainer.D), snapshot(trainer.G), snapshot(trainer.G_ema)
    poisoned = real(1)
    poisoned[0, 0, 0, 0] = float("nan")  # D's gradients become nan; G's stay finite
    trainer.step(1, [(poisoned, None)])
    assert same(d, snapshot(trainer.D))  # D's update was skipped...
    assert not same(g, snapshot(trainer.G))  # ...G's was not
    assert not same(ema, snapshot(trainer.G_ema))
    trainer.step(2, [(poisoned, None)])
    assert trainer.bad_run() == 2  # two consecutive skipped steps
    trainer.step(3, [(real(3), None)])
    assert not same(d, snapshot(trainer.D))
    assert trainer.bad_run() == 2  # the run that reached into this interval
    trainer.step(4, [(real(4), None)])
    assert trainer.bad_run() == 0  # it ended with a good step
    stats = trainer.pop_stats()
    assert stats["steps/skipped_nonfinite"] == 2
    assert all(torch.isfinite(torch.tensor(v)) for v in stats.values())


def test_skipped_generator_step_leaves_g_ema_and_adam_state_alone():
    trainer = make()
    trainer.step(0, [(real(0), None)])
    steps_before = [s["step"].item() for s in trainer.opt_G.state.values()]
    with torch.no_grad():
        next(trainer.D.parameters()).fill_(float("nan"))  # every gradient becomes nan
    g, ema = snapshot(trainer.G), snapshot(trainer.G_ema)
    trainer.step(1, [(real(1), None)])
    assert same(g, snapshot(trainer.G)) and same(ema, snapshot(trainer.G_ema))
    assert [s["step"].item() for s in trainer.opt_G.state.values()] == steps_before
    assert trainer.bad_run() == 1


def test_g_ema_gets_batch_norm_statistics_of_its_own_weights():
    trainer = make()
    for step in range(3):
        trainer.step(step, [(real(step), None)])
    with torch.no_grad():  # G_ema's weights far from G's: G's running statistics do not fit
        for p in trainer.G_ema.parameters():
            if p.dim() > 1:
                p.mul_(3.0)
    z = torch.randn(512, 8, generator=torch.Generator().manual_seed(5))

    def gap() -> float:
        """Eval-mode output against batch-statistics output on many latents."""
        G = trainer.G_ema
        with torch.no_grad():
            evaluated = G.eval()(z, None)
            batch = G.train()(z, None)
            G.eval()
        return float((evaluated - batch).abs().mean())

    trainer._update_ema(torch.zeros(()))  # copies G's running statistics, as every step does
    stale = gap()
    fresh = gap() if trainer.sampler() is trainer.G_ema else float("inf")
    assert fresh < 0.2 * stale, (fresh, stale)
    assert "running_var" in "".join(trainer.state_dict()["G_ema"])


def test_fp16_overflow_is_skipped_by_fused_adam_and_lowers_the_scale():
    trainer = make("train.precision=fp16")
    for step in range(4):  # the first steps may overflow while the loss scale settles
        trainer.step(step, [(real(step), None)])
    trainer.bad_run()
    d, scale = snapshot(trainer.D), trainer.scaler_D.get_scale()
    trainer.step(4, [(real(4) * 1e6, None)])  # overflows D's half-precision forward
    assert same(d, snapshot(trainer.D))
    assert trainer.scaler_D.get_scale() < scale
    assert trainer.bad_run() >= 1
    for step in range(5, 10):
        trainer.step(step, [(real(step), None)])
    assert not same(d, snapshot(trainer.D))
