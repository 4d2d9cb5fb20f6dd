"""Training on volumes [N, C, D, H, W] (16^3, width 4): every architecture x loss, the penalties
and the spectral term, EMA with standing statistics, every precision, channels_last_3d; and at
np=2 (mpi engine, fp64) what one rank computes, with identical replicas."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import RESUME_STATE, ROOT, assert_bitwise_equal, checkpoint, launch, mpi_env, tiny

from hpcgan import objectives
from hpcgan.comm.base import SingleProcess
from hpcgan.condition import Condition, ConditionSpec
from hpcgan.config import load_config
from hpcgan.data import synth
from hpcgan.data.write import write_dataset
from hpcgan.models import build_models
from hpcgan.trainer import Trainer, memory_format

SHAPE = (1, 16, 16, 16)
SCRIPTS = Path(__file__).parent / "mpi_scripts"


def make(*overrides: str, shape: tuple[int, ...] = SHAPE, classes: int = 0) -> Trainer:
    cfg = load_config(
        None,
        [
            "model.width=4",
            "model.z_dim=8",
            "train.batch_size=4",
            "train.ema_halflife_images=100",
            *overrides,
        ],
    )
    torch.manual_seed(0)
    G, D = build_models(cfg.model, shape, ConditionSpec(classes), cfg.train.aux_classifier)
    return Trainer(cfg, SingleProcess(), G, D, torch.device("cpu"))


def volumes(seed: int, n: int = 4) -> torch.Tensor:
    return torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def params(module: torch.nn.Module) -> list[torch.Tensor]:
    """Weight matrices and kernels, less self-attention's query and key maps: with the
    attention gain starting at 0 their gradients are ~1e-16, too small for Adam's eps to
    move them in a few steps (2-D alike)."""
    skip = (".q.", ".k.")
    return [
        p.detach().clone()
        for name, p in module.named_parameters()
        if p.dim() > 1 and not any(s in name for s in skip)
    ]


def train(
    trainer: Trainer, steps: int = 2, labels: torch.Tensor | None = None, skips: int = 0
) -> dict:
    before = {"G": params(trainer.G), "D": params(trainer.D)}
    for step in range(steps):
        trainer.step(step, [(volumes(step), Condition(labels=labels))])
    stats = trainer.pop_stats()
    assert all(math.isfinite(v) for v in stats.values()), stats
    assert stats["steps/skipped_nonfinite"] <= skips
    for net in ("G", "D"):
        after = params(getattr(trainer, net))
        assert all(not torch.equal(a, b) for a, b in zip(before[net], after)), net
    return stats


@pytest.mark.parametrize("loss", list(objectives.LOSSES))
@pytest.mark.parametrize("arch", ["mlp", "dcgan", "resnet"])
def test_every_arch_and_loss_trains_on_volumes(arch, loss):
    trainer = make(f"model.arch={arch}", f"train.loss={loss}")
    train(trainer)
    assert trainer.samples(3).shape == (3, *SHAPE)


def test_r1_gradient_penalty_and_spectral_term_on_volumes():
    trainer = make(
        "model.arch=resnet",
        "model.attention=8",
        "train.loss=wgan-gp",
        "train.r1_gamma=1",
        "train.r1_every=1",
        "train.spectral_weight=0.1",
    )
    names = {type(term).__name__ for term in trainer.objective.terms}
    assert {"GradientPenalty", "LazyR1", "Spectral"} <= names
    train(trainer)
    # The terms themselves, on 5-D batches: finite, non-zero and differentiable.
    real, fake = volumes(10).requires_grad_(True), volumes(11).requires_grad_(True)
    D = lambda x: trainer.D(x)[0]  # noqa: E731
    gp = objectives.gradient_penalty(D, real, fake, torch.rand(4))
    r1 = objectives.r1_penalty(D(real), real)
    spectral = objectives.spectral_loss(fake, real)
    assert objectives.spectral_loss(real, real).item() == 0
    for value in (gp, r1, spectral):
        assert value.isfinite() and value > 0
    (grad,) = torch.autograd.grad(spectral, fake)
    assert grad.shape == fake.shape and grad.abs().sum() > 0


def test_conditional_ac_gan_on_volumes():
    trainer = make(
        "model.arch=dcgan", "model.conditional=true", "train.aux_classifier=true", classes=3
    )
    train(trainer, labels=torch.tensor([0, 1, 2, 0]))
    assert trainer.samples(3).shape == (3, *SHAPE)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16", "fp64"])
def test_precisions_and_standing_statistics_on_volumes(precision):
    trainer = make("model.arch=dcgan", f"train.precision={precision}")
    # fp16 skips its first steps while the loss scale (from 2^16) settles, as in 2-D.
    train(trainer, steps=5 if precision == "fp16" else 2, skips=3 if precision == "fp16" else 0)
    G = trainer.sampler()  # G_ema with batch-norm statistics of its own weights
    norms = [m for m in G.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert norms and all(m.running_mean.isfinite().all() for m in norms)
    assert any(m.running_mean.abs().sum() > 0 for m in norms)
    assert trainer.samples(2).isfinite().all()


def test_channels_last_uses_the_3d_memory_format():
    trainer = make("model.arch=resnet", "train.channels_last=true")
    assert trainer._memory == torch.channels_last_3d
    convs = [m for m in trainer.D.modules() if isinstance(m, torch.nn.Conv3d)]
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last_3d) for m in convs)
    train(trainer)
    G2, D2 = build_models(trainer.cfg.model, (1, 16, 16))
    assert memory_format(D2) == torch.channels_last  # images keep the 2-D format


@pytest.mark.mpi
def test_two_ranks_compute_what_one_rank_computes_on_volumes():
    """Every arch x loss at np=2 (mpi engine, fp64, no batch norm, R1 on): identical
    replicas, equal to a one-process Trainer on the same global batch; and with batch norm
    in fp32, bf16, fp16 and fp32 channels_last_3d, identical replicas."""
    proc = launch([str(SCRIPTS / "volumes.py")], np=2, module=None, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    combos = [r for r in records if "arch" in r]
    assert len(combos) == 3 * len(objectives.LOSSES)
    for r in combos:
        assert r["identical"] and r["finite"] and r["skipped"] == 0, r
        assert r["moved"] > 1e-4 and r["relative"] < 1e-10, r
        assert r["shape"] == [2, *SHAPE]
    precisions = [r for r in records if "precision" in r]
    assert [r["precision"] for r in precisions] == ["fp32", "bf16", "fp16", "fp32"]
    assert precisions[-1]["channels_last"]
    assert all(r["identical"] and r["moved"] for r in precisions), precisions


@pytest.mark.parametrize("how", ["SIGUSR1", "kill -9"])
def test_train_on_a_volume_file_stops_and_resumes_bitwise(tmp_path, how):
    """python -m hpcgan.train on a 5-D HDF5 file: a run stopped by SIGUSR1 (a checkpoint, exit
    75) or killed with SIGKILL after its step-6 checkpoint (no handler runs) and then resumed
    ends bitwise where the uninterrupted run ends (G, D, G_ema, optimizers)."""
    data = tmp_path / "vol.h5"
    fields = synth.grf(32, size=16, seed=0, ndim=3)  # [32, 1, 16, 16, 16]
    write_dataset(data, fields, None, kind="field", source="test grf3d 16^3")
    common = (
        "model.width=4",
        "model.z_dim=8",
        "train.batch_size=8",
        "train.steps=12",
        "run.checkpoint_every=6",
        "run.log_every=1",
        "train.ema_halflife_images=50",
    )
    straight = tmp_path / "straight"
    proc = launch(tiny(straight, data, *common))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "(1, 16, 16, 16) float32 (field)" in proc.stdout

    stopped = tmp_path / "stopped"
    cmd = [sys.executable, "-m", "hpcgan.train", *tiny(stopped, data, *common)]
    p = subprocess.Popen(cmd, cwd=ROOT, env=mpi_env(), stdout=subprocess.PIPE, text=True)
    for line in p.stdout:
        if how == "SIGUSR1" and "step 2/" in line:
            p.send_signal(signal.SIGUSR1)  # preemption: checkpoint and exit 75
            break
        if how == "kill -9" and "step 8/" in line:  # the step-6 checkpoint is written
            p.kill()
            break
    p.stdout.read()
    assert p.wait(timeout=120) == (75 if how == "SIGUSR1" else -signal.SIGKILL)
    latest = (stopped / "checkpoints" / "latest").read_text().strip()
    at = checkpoint(stopped, int(latest[5:13]))["step"]
    assert 2 <= at < 12 if how == "SIGUSR1" else at == 6
    proc = launch(tiny(stopped, data, *common))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"at step {at}" in proc.stdout
    a, b = checkpoint(straight, 12), checkpoint(stopped, 12)
    assert_bitwise_equal(a, b, expect=(*RESUME_STATE, "G_ema"))


def test_volumes_too_small_for_the_arch_exit_2_with_one_line_and_write_nothing(tmp_path):
    """51x51x25 trains as it is now (tests/test_grids.py); a grid with no side longer than 4
    is what dcgan refuses: exit 2, one line, nothing written."""
    data, run = tmp_path / "tiny.h5", tmp_path / "run"
    cells = torch.rand(4, 1, 4, 4, 3, generator=torch.Generator().manual_seed(0)) + 0.1
    write_dataset(data, cells.numpy(), None, kind="field", source="4x4x3 cells")
    proc = launch(tiny(run, data, "train.steps=2", "train.batch_size=4"))
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "needs a side longer than 4" in line and "4x4x3" in line
    assert not run.exists()


@pytest.mark.parametrize("penalty", ["train.r1_gamma=1", "train.loss=wgan-gp"])
def test_penalties_train_a_compiled_discriminator_on_volumes(monkeypatch, penalty):
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda m: compile_(m, backend="aot_eager"))
    train(make("model.arch=dcgan", "train.compile=true", "model.norm=none", penalty))
