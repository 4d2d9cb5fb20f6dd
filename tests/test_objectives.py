"""The objectives registry: losses against their definitions, penalties against hand
computations, and that adding a loss is one registry entry."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hpcgan import objectives
from hpcgan.comm.base import SingleProcess
from hpcgan.condition import Condition
from hpcgan.config import load_config
from hpcgan.errors import UserError
from hpcgan.models import build_models
from hpcgan.trainer import Trainer


def test_losses_match_their_definitions():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    ns, hinge, wgan = (objectives.get_loss(name) for name in ("ns", "hinge", "wgan-gp"))
    expected = -(F.logsigmoid(real).mean() + F.logsigmoid(-fake).mean())
    assert torch.allclose(ns.d(real, fake), expected)
    assert torch.allclose(ns.g(fake), -F.logsigmoid(fake).mean())
    assert hinge.d(real, fake).item() == pytest.approx((0 + 2) / 2 + (1.5 + 0) / 2)
    assert wgan.d(real, fake).item() == pytest.approx(-1.25 - 0.5)
    assert hinge.g(fake).item() == pytest.approx(1.25)
    assert wgan.g(fake).item() == pytest.approx(1.25)
    lsgan = objectives.get_loss("lsgan")
    assert lsgan.d(real, fake).item() == pytest.approx(0.5 * ((1 + 4) / 2 + (0.25 + 9) / 2))
    assert lsgan.g(fake).item() == pytest.approx(0.5 * (0.25 + 16) / 2)


def test_every_registered_loss_defines_both_sides():
    """No fall-through: a loss without its own G term cannot be registered unnoticed."""
    for name, cls in objectives.LOSSES.items():
        assert cls.d is not objectives.Loss.d and cls.g is not objectives.Loss.g, name
    assert objectives.get_loss("wgan-gp").gradient_penalty
    assert not objectives.get_loss("hinge").gradient_penalty


def test_gradient_penalty_matches_hand_computation():
    """For D(x) = sum(w * x), grad_x D = w everywhere: penalty = (||w|| - 1)^2."""
    w = torch.randn(1, 2, 3, 3)

    class Linear(torch.nn.Module):
        def forward(self, x):
            return (x * w).flatten(1).sum(1)

    real, fake = torch.randn(4, 2, 3, 3), torch.randn(4, 2, 3, 3)
    gp = objectives.gradient_penalty(Linear(), real, fake, torch.rand(4))
    assert gp.item() == pytest.approx((w.norm().item() - 1) ** 2, rel=1e-5)


def test_r1_penalty_matches_hand_computation():
    """D(x) = sum(w * x**2): grad_x = 2 w x, so R1 = mean_n sum (2 w x_n)^2."""
    w = torch.randn(1, 2, 3, 3)
    real = torch.randn(4, 2, 3, 3, requires_grad=True)
    logits = (w * real**2).flatten(1).sum(1)
    expected = ((2 * w * real) ** 2).flatten(1).sum(1).mean()
    assert objectives.r1_penalty(logits, real).item() == pytest.approx(expected.item(), rel=1e-5)


def test_spectral_loss_is_zero_on_itself_and_differentiable():
    x = torch.randn(64, 1, 32, 32)
    assert objectives.spectral_loss(x, x).item() == pytest.approx(0.0, abs=1e-10)
    fake = torch.randn(8, 1, 32, 32, requires_grad=True)
    objectives.spectral_loss(fake * 2, x).backward()  # differentiable; 4x power: (log 4)^2
    assert fake.grad is not None and fake.grad.abs().sum() > 0


def _config(*overrides: str):
    return load_config(None, ["model.width=4", "model.z_dim=8", "train.batch_size=8", *overrides])


def test_config_picks_the_terms_in_their_order():
    cfg = _config(
        "train.loss=wgan-gp", "train.r1_gamma=1", "train.l2=1e-4", "train.spectral_weight=1"
    )
    objective = objectives.build(cfg.train)
    assert isinstance(objective.loss, objectives.WassersteinGP)
    kinds = [type(term) for term in objective.terms]
    expected = [objectives.Spectral, objectives.GradientPenalty, objectives.LazyR1]
    assert kinds == [*expected, objectives.WeightPenalty]
    assert objective.input_grad(16) and not objective.input_grad(17)  # lazy R1, every 16
    assert objectives.build(_config().train).terms == []


def test_an_unknown_loss_is_refused_before_any_step():
    cfg = _config()
    cfg.train.loss = "relativistic"  # as if the config had let it through
    with pytest.raises(UserError, match="train.loss=relativistic .* one of: ns, hinge, wgan-gp"):
        objectives.build(cfg.train)
    with pytest.raises(UserError, match="train.loss: 'relativistic' is not one of ns, hinge"):
        load_config(None, ["train.loss=relativistic"])
    G, D = build_models(cfg.model, (1, 16, 16))
    with pytest.raises(UserError, match="train.loss=relativistic"):
        Trainer(cfg, SingleProcess(), G, D, torch.device("cpu"))


class Recorded(objectives.LeastSquares):
    """The registry's lsgan entry, recording which phases call it."""

    calls: list[str] = []

    def d(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        self.calls.append("d")
        return super().d(real, fake)

    def g(self, fake: torch.Tensor) -> torch.Tensor:
        self.calls.append("g")
        return super().g(fake)


def test_a_new_loss_is_one_registry_entry(monkeypatch):
    """lsgan was added as one class and one LOSSES entry: the config offers it, and both
    phases of a training step call it."""
    monkeypatch.setitem(objectives.LOSSES, "lsgan", Recorded)
    cfg = _config("train.ema_halflife_images=0", "train.loss=lsgan")
    torch.manual_seed(0)
    G, D = build_models(cfg.model, (1, 16, 16))
    trainer = Trainer(cfg, SingleProcess(), G, D, torch.device("cpu"))
    assert isinstance(trainer.objective.loss, Recorded)
    before = [p.detach().clone() for p in (*trainer.G.parameters(), *trainer.D.parameters())]
    real = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    trainer.step(0, [(real, Condition())])
    after = list(trainer.G.parameters()) + list(trainer.D.parameters())
    assert all(not torch.equal(a, b) for a, b in zip(before, after) if a.dim() > 1)
    assert Recorded.calls == ["d", "g"]  # both phases asked the new loss
    stats = trainer.pop_stats()
    assert stats["steps/skipped_nonfinite"] == 0
    assert stats["loss/D"] > 0 and stats["loss/G"] > 0  # squares
