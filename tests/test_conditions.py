"""Continuous conditions (docs/training.md, "Continuous conditions"): G and D take them, the
Trainer makes fakes at the real batch's values, the physics terms reach G, and a resumed run
is bitwise the uninterrupted one."""

from __future__ import annotations

import io

import pytest
import torch
from conftest import assert_bitwise_equal, small_trainer

from hpcgan import objectives
from hpcgan.condition import Condition, ConditionSpec
from hpcgan.config import ModelConfig, load_config
from hpcgan.errors import UserError
from hpcgan.models import build_models
from hpcgan.trainer import Trainer

SPEC = ConditionSpec(names=("incident_energy", "theta"), units=("MeV", "rad"))


def values(seed: int, n: int = 8) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))  # [n, K]


def real(seed: int) -> torch.Tensor:
    return torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def make(*overrides: str, spec: ConditionSpec = SPEC) -> Trainer:
    return small_trainer(*overrides, spec=spec)


@pytest.mark.parametrize("mode", ["concat", "film"])
def test_g_and_d_depend_on_each_continuous_condition(mode):
    cfg = ModelConfig(width=4, z_dim=8, condition=mode)
    G, D = build_models(cfg, (1, 16, 16), SPEC, regression=True)
    assert G.spec == SPEC and G.num_classes == 0
    z, v = torch.randn(3, 8), values(0, 3)
    x = G(z, Condition(values=v))
    for k in range(2):
        moved = v.clone()
        moved[:, k] += 1.0
        assert not torch.allclose(x, G(z, Condition(values=moved)))
        # D's projection term: the same sample scores differently at other conditions.
        assert not torch.allclose(
            D(x, Condition(values=v)).logits, D(x, Condition(values=moved)).logits
        )
    out = D(x, Condition(values=v))
    assert out.logits.shape == (3,) and out.classes is None and out.values.shape == (3, 2)


def test_classes_and_continuous_conditions_together():
    cfg = ModelConfig(width=4, z_dim=8, conditional=True)
    spec = ConditionSpec(3, SPEC.names, SPEC.units)
    G, D = build_models(cfg, (1, 16, 16), spec, aux_classifier=True)
    z, v = torch.randn(3, 8), values(1, 3)
    a, b = Condition(torch.tensor([0, 1, 2]), v), Condition(torch.tensor([1, 1, 1]), v)
    assert not torch.allclose(G(z, a), G(z, b))  # the class still matters
    x = G(z, a)
    assert not torch.allclose(D(x, a).logits, D(x, b).logits)
    assert D(x, a).classes.shape == (3, 3) and D(x, a).values is None


def test_unconditioned_models_have_no_condition_layers():
    """The layers for continuous conditions exist only when the data have them (so the
    models of every existing config are built, and initialised, as before)."""
    G, D = build_models(ModelConfig(width=4, z_dim=8), (1, 16, 16))
    assert G.values is None and D.values is None and D.regress is None


def test_regression_head_needs_conditions():
    with pytest.raises(UserError, match="cond_regression needs a dataset with /conditions"):
        build_models(ModelConfig(width=4, z_dim=8), (1, 16, 16), regression=True)
    cfg = load_config(None, ["train.total_weight=1"])
    with pytest.raises(UserError, match="/conditions"):
        objectives.build(cfg.train, ConditionSpec(10))


def test_fakes_are_made_at_the_real_batch_conditions():
    trainer = make()
    seen = {"G": [], "D": []}
    G_run, run_D = trainer.G_run, trainer.run_D

    def recording_G(z, cond):
        seen["G"].append(cond)
        return G_run(z, cond)

    def recording_D(x, cond, eager=False):
        seen["D"].append(cond)
        return run_D(x, cond, eager)

    trainer.G_run, trainer.run_D = recording_G, recording_D
    trainer.step(0, [(real(0), Condition(values=values(0)))])
    assert len(seen["G"]) == 1 and len(seen["D"]) == 3  # real, fake (D phase), fake (G phase)
    for cond in [*seen["G"], *seen["D"]]:
        assert torch.equal(cond.values, values(0)) and cond.labels is None
    samples = trainer.samples(10)  # at rank 0's first real values, repeated
    assert samples.shape == (10, 1, 16, 16)
    assert torch.equal(trainer.ema.conditions(10).values, values(0)[torch.arange(10) % 8])


def _copy(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _train(trainer: Trainer, steps: range) -> None:
    for step in steps:
        trainer.step(step, [(real(step), Condition(values=values(step)))])


@pytest.mark.parametrize("mode", ["concat", "film"])
def test_resume_with_conditions_is_bitwise(mode):
    terms = ("train.cond_regression=1", "train.total_weight=1", f"model.condition={mode}")
    whole = make(*terms)
    _train(whole, range(2))
    saved = _copy(whole.state_dict())
    _train(whole, range(2, 4))
    resumed = make(*terms)
    resumed.load_state_dict(saved)
    _train(resumed, range(2, 4))
    assert torch.equal(saved["sample_values"], values(0))
    a, b = whole.state_dict(), resumed.state_dict()
    for key in ("G", "D", "G_ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), (key, name)
    # ... and the rest of the trainer's state: both optimizers, the EMA's bookkeeping.
    assert_bitwise_equal(a, b, expect=("G", "D", "G_ema", "opt_G", "opt_D", "images_seen"))
    assert whole.fingerprint() == resumed.fingerprint()


@pytest.mark.parametrize("key", ["cond_regression", "total_weight"])
def test_each_physics_term_reaches_g_and_weight_zero_is_off(key):
    off = load_config(None, [f"train.{key}=0"]).train
    assert objectives.build(off, SPEC).terms == []
    trainer = make(f"train.{key}=2")
    (term,) = trainer.objective.terms
    v = values(3)
    cond = Condition(values=v)
    fake = trainer.G(trainer.latents(0), cond)
    out = trainer.run_D(fake, cond)
    batch = objectives.GBatch(fake, cond, real(3), out.logits, out.classes, out.values, trainer.G)
    loss = term.g(batch)
    assert loss.requires_grad and loss.item() > 0
    loss.backward()
    grads = [p.grad for p in trainer.G.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_condition_regression_trains_ds_head_on_real_samples():
    trainer = make("train.cond_regression=1")
    (term,) = trainer.objective.terms
    cond = Condition(values=values(4))
    out = trainer.run_D(real(4), cond)
    batch = objectives.DBatch(
        0, real(4), cond, real(5), cond, out.logits, out.logits, None, None, out.values,
        module=trainer.D, critic=None, uniform=None,
    )  # fmt: skip
    term.d(batch).backward()
    assert trainer.D.regress.weight.grad.abs().sum() > 0


def test_total_response_is_zero_for_the_real_batch_itself():
    x, v = real(6), values(6)
    assert objectives.total_response_loss(x, x, v).item() == pytest.approx(0.0, abs=1e-10)
    assert objectives.total_response_loss(x * 0.5, x, v).item() > 1e-4
