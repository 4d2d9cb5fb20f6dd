"""The Trainer in one process: skipped steps decided on the device, and G_ema's own batch-norm
statistics."""

from __future__ import annotations

import pytest
import torch
from conftest import small_trainer
from torch import nn

from hpcgan.comm.base import SingleProcess
from hpcgan.condition import Condition
from hpcgan.trainer import Trainer


def make(*overrides: str) -> Trainer:
    return small_trainer(*overrides)


def real(seed: int) -> torch.Tensor:
    return torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def snapshot(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_nonfinite_gradients_skip_the_update_and_are_counted(optimizer):
    trainer = make(f"train.optimizer={optimizer}")
    trainer.step(0, [(real(0), Condition())])
    assert trainer.bad_run() == 0
    d, g, ema = snapshot(trainer.D), snapshot(trainer.G), snapshot(trainer.G_ema)
    poisoned = real(1)
    poisoned[0, 0, 0, 0] = float("nan")  # D's gradients become nan; G's stay finite
    trainer.step(1, [(poisoned, Condition())])
    assert same(d, snapshot(trainer.D))  # D's update was skipped...
    assert not same(g, snapshot(trainer.G))  # ...G's was not
    assert not same(ema, snapshot(trainer.G_ema))
    trainer.step(2, [(poisoned, Condition())])
    assert trainer.bad_run() == 2  # two consecutive skipped steps
    trainer.step(3, [(real(3), Condition())])
    assert not same(d, snapshot(trainer.D))
    assert trainer.bad_run() == 2  # the run that reached into this interval
    trainer.step(4, [(real(4), Condition())])
    assert trainer.bad_run() == 0  # it ended with a good step
    stats = trainer.pop_stats()
    assert stats["steps/skipped_nonfinite"] == 2
    assert all(torch.isfinite(torch.tensor(v)) for v in stats.values())


def test_skipped_generator_step_leaves_g_ema_and_adam_state_alone():
    trainer = make()
    trainer.step(0, [(real(0), Condition())])
    steps_before = [s["step"].item() for s in trainer.opt_G.state.values()]
    with torch.no_grad():
        next(trainer.D.parameters()).fill_(float("nan"))  # every gradient becomes nan
    g, ema = snapshot(trainer.G), snapshot(trainer.G_ema)
    trainer.step(1, [(real(1), Condition())])
    assert same(g, snapshot(trainer.G)) and same(ema, snapshot(trainer.G_ema))
    assert [s["step"].item() for s in trainer.opt_G.state.values()] == steps_before
    assert trainer.bad_run() == 1


def test_g_ema_gets_batch_norm_statistics_of_its_own_weights():
    trainer = make()
    for step in range(3):
        trainer.step(step, [(real(step), Condition())])
    with torch.no_grad():  # G_ema's weights far from G's: G's running statistics do not fit
        for p in trainer.G_ema.parameters():
            if p.dim() > 1:
                p.mul_(3.0)
    z = torch.randn(512, 8, generator=torch.Generator().manual_seed(5))

    def gap() -> float:
        """Eval-mode output against batch-statistics output on many latents."""
        G = trainer.G_ema
        with torch.no_grad():
            evaluated = G.eval()(z)
            batch = G.train()(z)
            G.eval()
        return float((evaluated - batch).abs().mean())

    # Copies G's running statistics, as every step does.
    trainer.ema.update(torch.zeros(()), trainer.images_seen)
    stale = gap()
    fresh = gap() if trainer.sampler() is trainer.G_ema else float("inf")
    assert fresh < 0.2 * stale, (fresh, stale)
    assert "running_var" in "".join(trainer.state_dict()["G_ema"])


def test_fp16_overflow_is_skipped_by_fused_adam_and_lowers_the_scale():
    trainer = make("train.precision=fp16")
    for step in range(4):  # the first steps may overflow while the loss scale settles
        trainer.step(step, [(real(step), Condition())])
    trainer.bad_run()
    d, scale = snapshot(trainer.D), trainer.scaler_D.get_scale()
    trainer.step(4, [(real(4) * 1e6, Condition())])  # overflows D's half-precision forward
    assert same(d, snapshot(trainer.D))
    assert trainer.scaler_D.get_scale() < scale
    assert trainer.bad_run() >= 1
    for step in range(5, 10):
        trainer.step(step, [(real(step), Condition())])
    assert not same(d, snapshot(trainer.D))


@pytest.mark.parametrize("penalty", ["train.r1_gamma=1", "train.loss=wgan-gp"])
def test_penalties_train_a_compiled_discriminator(monkeypatch, penalty):
    """R1 and WGAN-GP need D's input gradient differentiated again, which compiled modules
    (AOTAutograd) refuse; the trainer runs the penalties through the eager D."""
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda m: compile_(m, backend="aot_eager"))
    trainer = make("train.compile=true", "model.norm=none", penalty)
    d = snapshot(trainer.D)
    for step in range(2):
        trainer.step(step, [(real(step), Condition())])
    assert trainer.bad_run() == 0
    assert not same(d, snapshot(trainer.D))


@pytest.mark.parametrize("penalty", ["train.r1_gamma=1", "train.loss=wgan-gp"])
def test_penalties_train_a_compiled_discriminator_with_batch_norm(monkeypatch, penalty):
    """A compiled forward writes batch norm's running statistics back with copy_, which made
    R1's double backward through the eager real pass fail ("modified by an inplace
    operation"); with batch norm in D the fake pass of such an update runs eager too. The
    statistics then follow an uncompiled run's: both passes of each update counted."""
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda m: compile_(m, backend="aot_eager"))
    compiled, plain = (make(*c, "model.norm=batch", penalty) for c in (["train.compile=true"], []))
    d = snapshot(compiled.D)
    for step in range(2):
        for trainer in (compiled, plain):
            trainer.step(step, [(real(step), Condition())])
    assert compiled.bad_run() == 0
    assert not same(d, snapshot(compiled.D))
    stats = [
        {k: v for k, v in t.D.state_dict().items() if "running" in k or "tracked" in k}
        for t in (compiled, plain)
    ]
    assert stats[0] and stats[0].keys() == stats[1].keys()
    for k, v in stats[0].items():
        assert torch.allclose(v.float(), stats[1][k].float(), atol=1e-4), k


class SummingComm(SingleProcess):
    """One process that folds 1/2 into the loss, as the flat engines do at two ranks."""

    backward_scale = 0.5


def test_fp16_loss_scale_is_saved_as_one_rank_would_have_it():
    cfg = ["train.precision=fp16"]
    summing = make(*cfg)
    summing.__init__(summing.cfg, SummingComm(), summing.G, summing.D, torch.device("cpu"))
    assert summing.scaler_D.get_scale() == 2.0**17  # the same fp16 gradients as Horovod's
    state = summing.state_dict()
    assert state["scaler_D"]["scale"] == 2.0**16 and state["scaler_G"]["scale"] == 2.0**16
    one_rank = make(*cfg)
    one_rank.load_state_dict(state)
    assert one_rank.scaler_D.get_scale() == 2.0**16
    summing.load_state_dict(state)
    assert summing.scaler_G.get_scale() == 2.0**17


def test_ema_rampup_counts_one_batch_per_generator_step():
    """ema_rampup=0.5 after one G step of 8 images: half-life 4 images, so G_ema moves 3/4 of
    the way to G (beta = 0.5 ** (8 / 4)), however many D batches the step read."""
    trainer = make("train.d_steps=3", "train.ema_rampup=0.5", "train.ema_halflife_images=1e9")
    before = snapshot(trainer.G_ema)
    trainer.step(0, [(real(i), Condition()) for i in range(3)])
    for p0, p_ema, p in zip(before, trainer.G_ema.parameters(), trainer.G.parameters()):
        assert torch.allclose(p_ema, p0 + 0.75 * (p - p0), atol=1e-6)


def test_logit_means_leave_out_a_step_with_any_skipped_d_update():
    clean = make("train.d_steps=2")
    clean.step(0, [(real(0), Condition()), (real(1), Condition())])
    expected = clean.pop_stats()
    poisoned = make("train.d_steps=2")
    poisoned.step(0, [(real(0), Condition()), (real(1), Condition())])
    bad = real(2)
    bad[0, 0, 0, 0] = float("nan")  # the first D update of step 1 is skipped, the second not
    poisoned.step(1, [(bad, Condition()), (real(3), Condition())])
    stats = poisoned.pop_stats()
    assert stats["steps/skipped_nonfinite"] == 1
    for key in ("D/real_logit", "D/fake_logit"):
        assert stats[key] == pytest.approx(expected[key], rel=1e-6)


def test_without_g_ema_every_rank_samples_with_the_same_batch_norm_statistics():
    """G's running statistics come from each rank's own batches; the sampler recomputes them
    from the same fixed latents everywhere."""
    ranks = [make("train.ema_halflife_images=0") for _ in range(2)]
    for r, trainer in enumerate(ranks):
        with torch.no_grad():  # a rank's local batch moves only its running statistics
            trainer.G(torch.randn(8, 8, generator=torch.Generator().manual_seed(r)))
    a, b = ([x.clone() for x in t.G.buffers()] for t in ranks)
    assert not same(a, b)
    samplers = [t.sampler() for t in ranks]
    assert samplers[0] is ranks[0].G and samplers[0].training  # G goes on training
    assert same(list(samplers[0].buffers()), list(samplers[1].buffers()))


@pytest.mark.parametrize("precision", ["fp32", "fp64"])
def test_fingerprint_catches_a_one_element_change_in_any_parameter(precision):
    """The replica check (Loop.check_replicas) rests on this: the smallest change of one
    element of any of G's or D's parameters (one ulp) changes the fingerprint, and undoing it
    restores it."""
    trainer = make(f"train.precision={precision}")
    trainer.step(0, [(real(0), Condition())])  # trained values, not only the initialisation
    original = trainer.fingerprint()
    assert trainer.fingerprint() == original  # a pure function of the parameters
    named = [(f"{n}.{k}", p) for n, m in (("G", trainer.G), ("D", trainer.D))
             for k, p in m.named_parameters()]  # fmt: skip
    assert len(named) > 10
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in named:
            flat = p.view(-1)
            i = int(torch.randint(flat.numel(), (1,), generator=g))
            kept = flat[i].clone()
            flat[i] = torch.nextafter(kept, torch.tensor(float("inf"), dtype=kept.dtype))
            assert trainer.fingerprint() != original, f"a change of {name}[{i}] was missed"
            flat[i] = kept
            assert trainer.fingerprint() == original, name


def test_fingerprint_leaves_out_batch_norm_statistics():
    """Running statistics are each rank's own (it normalises its own slice of the batch), so
    they must not make identical replicas look different."""
    trainer = make()
    original = trainer.fingerprint()
    stats = [b for m in (trainer.G, trainer.D) for n, b in m.named_buffers() if "running" in n]
    assert stats
    with torch.no_grad():
        stats[0].add_(1.0)
    assert trainer.fingerprint() == original
