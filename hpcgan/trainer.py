"""G and D replicas and one training step in explicit D and G phases; each phase asks the
objective (hpcgan.objectives, built from train.*) for its loss. The pieces with a job of their
own live beside it: each network's update (hpcgan.update), G's moving average and the sampler
(hpcgan.ema), the step statistics (hpcgan.step_stats)."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd

from hpcgan import nd, objectives
from hpcgan.comm.base import Comm
from hpcgan.condition import Condition
from hpcgan.config import Config
from hpcgan.ema import EMA
from hpcgan.models.base import DOutput
from hpcgan.profile import NoTimer
from hpcgan.rng import STREAM_GP, STREAM_LABEL, STREAM_LATENT, draw
from hpcgan.step_stats import StepStats
from hpcgan.update import NetUpdate, batch_lr_factor

# Parameter dtype per train.precision; bf16 and fp16 keep fp32 weights and autocast the math.
_DTYPES = {"fp64": torch.float64}
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def memory_format(D: nn.Module) -> torch.memory_format:
    """train.channels_last for the models' spatial rank (that of D's convolutions):
    channels_last for images, channels_last_3d for volumes."""
    ranks = {len(m.kernel_size) for m in D.modules() if isinstance(m, _ConvNd)}
    return nd.ops(ranks.pop()).channels_last if len(ranks) == 1 else torch.contiguous_format


class Trainer:
    """G and D replicas, their updates, G's moving average, and the step that updates them.
    What G and D are conditioned on is ``G.spec`` (hpcgan.models.build_models)."""

    def __init__(
        self,
        cfg: Config,
        comm: Comm,
        G: nn.Module,
        D: nn.Module,
        device: torch.device,
        timer: NoTimer | None = None,
        decode: Callable[[torch.Tensor], torch.Tensor] = objectives.g_space_deposit,
    ):
        self.cfg, self.comm, self.device = cfg, comm, device
        t = cfg.train
        self.spec = G.spec
        # An unknown train.loss, or a term the models cannot serve, stops here, before a step.
        # ``decode`` (the data transform's) gives the total-response term the data's units.
        self.objective = objectives.build(t, self.spec, decode)
        self.timer = timer or NoTimer()  # hpcgan.bench passes a StepTimer
        self.dtype = _DTYPES.get(t.precision, torch.float32)
        self._memory = memory_format(D) if t.channels_last else torch.contiguous_format
        self.G = G.to(device=device, dtype=self.dtype, memory_format=self._memory)
        self.D = D.to(device=device, dtype=self.dtype, memory_format=self._memory)
        comm.broadcast_module(self.G)  # all ranks start from rank 0's parameters
        comm.broadcast_module(self.D)
        self._autocast_dtype = _AUTOCAST.get(t.precision)
        # Copied before the engine attaches gradient buffers and hooks to G.
        self.ema = EMA(self.G, t, self.dtype, self._autocast)
        # Both optimizers are created while every parameter requires grad (Horovod hooks).
        self.update_G = NetUpdate(t, comm, self.G, t.lr_g, "G", self.timer)
        self.update_D = NetUpdate(t, comm, self.D, t.lr_d, "D", self.timer)
        self.opt_G, self.opt_D = self.update_G.opt, self.update_D.opt
        self.scaler_G, self.scaler_D = self.update_G.scaler, self.update_D.scaler
        self.G_run = torch.compile(self.G) if t.compile else self.G
        self.D_run = torch.compile(self.D) if t.compile else self.D
        self._d_running_stats = any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
            for m in self.D.modules()
        )
        self.stats = StepStats(device)
        self.lr_scale = 1.0  # lowered by the divergence guard
        self.images_seen = 0  # global real images shown to D (d_steps batches per step)

    @property
    def G_ema(self) -> nn.Module | None:
        return self.ema.G_ema

    # -- random numbers and conditions ----------------------------------------------------

    def _local(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's slice of a global-batch tensor."""
        n = x.shape[0] // self.comm.size
        return x[self.comm.rank * n : (self.comm.rank + 1) * n].to(self.device)

    def latents(self, key: int) -> torch.Tensor:
        shape = (self.cfg.train.batch_size, self.z_dim)
        z = draw(self.cfg.train.seed, key, STREAM_LATENT, shape, device=self.device)
        return self._local(z).to(self.dtype)  # [n_local, z_dim]

    def fake_labels(self, key: int) -> torch.Tensor | None:
        """Uniformly drawn classes for the generated half of batch ``key`` (conditional runs)."""
        classes = self.spec.num_classes
        if not classes:
            return None
        shape = (self.cfg.train.batch_size,)
        u = draw(self.cfg.train.seed, key, STREAM_LABEL, shape, "uniform", self.device)
        return self._local((u * classes).long().clamp_max(classes - 1))

    def real_condition(self, cond: Condition) -> Condition:
        """What the models are conditioned on of a real batch's conditions, on the device."""
        labels = cond.labels if self.spec.num_classes else None
        values = cond.values if self.spec.dim else None
        return Condition(labels, values).to(self.device, self.dtype)

    def fake_condition(self, key: int, real: Condition) -> Condition:
        """The generated half's conditions: drawn classes, and the real batch's continuous
        values (the data's joint distribution of them, as 3DGAN draws)."""
        return Condition(self.fake_labels(key), real.values)

    @property
    def z_dim(self) -> int:
        return self.cfg.model.z_dim

    # -- one step -------------------------------------------------------------------------

    def _autocast(self):
        if self._autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self._autocast_dtype)

    def run_D(self, x: torch.Tensor, cond: Condition, eager: bool = False) -> DOutput:
        """Every evaluation of D goes through here. ``eager``: the uncompiled module, for
        penalties that differentiate D's input gradients (double backward, which a compiled D
        (AOTAutograd) does not support)."""
        return (self.D if eager else self.D_run)(x, cond)

    def d_phase(
        self,
        key: int,
        real: torch.Tensor,
        cond_real: Condition,
        fake: torch.Tensor,
        cond_fake: Condition,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One discriminator update on batch ``key``: real [n, C, *S] vs detached fakes.
        Returns the loss, the skip flag and the mean real and fake logits [2]."""
        t = self.cfg.train
        input_grad = self.objective.input_grad(key)  # lazy R1 on this batch
        if input_grad:
            real = real.detach().requires_grad_(True)
        # R1's double backward reads the batch-norm running statistics that the eager real
        # pass saved; a compiled pass writes them back with copy_ (a version bump, which eager
        # batch norm's update does not make), so the fake pass after it must run eager too.
        eager_fake = input_grad and self._d_running_stats
        with self.timer.section("forward"), self._autocast():
            out_real = self.run_D(real, cond_real, eager=input_grad)
            out_fake = self.run_D(fake, cond_fake, eager=eager_fake)
            batch = objectives.DBatch(
                key,
                real,
                cond_real,
                fake,
                cond_fake,
                out_real.logits,
                out_fake.logits,
                out_real.classes,
                out_fake.classes,
                out_real.values,
                module=self.D,
                critic=lambda x: self.run_D(x, cond_real, eager=True).logits,
                uniform=lambda: self._local(
                    draw(t.seed, key, STREAM_GP, (t.batch_size,), "uniform", self.device)
                ),
            )
            loss = self.objective.d_loss(batch)
        with self.timer.section("forward"):  # penalties: their double backward counts here
            loss = self.objective.d_penalties(loss, batch)
        skipped = self.update_D(loss)
        logits = torch.stack([o.logits.detach().float().mean() for o in (out_real, out_fake)])
        return loss.detach(), skipped, logits

    def g_phase(
        self, fake: torch.Tensor, cond_fake: Condition, real: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One generator update on the last D update's fakes [n, C, *S] (with their graph)."""
        self.D.requires_grad_(False)  # D's gradients must not be computed (nor reduced) here
        try:
            with self.timer.section("forward"), self._autocast():
                out = self.run_D(fake, cond_fake)
                batch = objectives.GBatch(
                    fake, cond_fake, real, out.logits, out.classes, out.values, self.G
                )
                loss = self.objective.g_loss(batch)
            loss = self.objective.g_penalties(loss, batch)
            skipped = self.update_G(loss)
        finally:
            self.D.requires_grad_(True)
        return loss.detach(), skipped

    def _set_learning_rates(self, step: int) -> None:
        t = self.cfg.train
        warm = min(1.0, (step + 1) / t.warmup_steps) if t.warmup_steps else 1.0
        factor = batch_lr_factor(t) * warm * self.lr_scale
        self.update_G.set_lr(t.lr_g * factor)
        self.update_D.set_lr(t.lr_d * factor)

    def _sample_values(self, values: torch.Tensor) -> None:
        """Once, at the first step: the continuous conditions of the first global batch (every
        rank's slice, in rank order, so the same rows at any world size) become those that
        samples are made at, on every rank (a collective)."""
        whole = torch.cat(self.comm.allgather_object(values.detach().cpu()))
        self.ema.set_values(whole)

    def step(self, step: int, batches: list[tuple[torch.Tensor, Condition]]) -> None:
        """Generator step ``step``: ``train.d_steps`` D updates, one on each of this rank's
        slices ``(real [n, C, *S], its Condition)`` of the next global batches, then one
        G update on the last D update's fakes."""
        t = self.cfg.train
        self._set_learning_rates(step)
        skipped = torch.zeros((), device=self.device)
        logits = torch.zeros(2, device=self.device)  # sums over the D updates
        for j, (real, cond) in enumerate(batches):
            key = step * t.d_steps + j  # global batch index: latents, labels, GP draws
            real = real.to(self.device, self.dtype, non_blocking=True)
            real = real.contiguous(memory_format=self._memory)
            cond_real = self.real_condition(cond)
            if cond_real.values is not None and self.ema.values is None:
                self._sample_values(cond_real.values)
            cond_fake = self.fake_condition(key, cond_real)
            last = j == len(batches) - 1
            with self.timer.section("forward"), self._autocast(), torch.set_grad_enabled(last):
                fake = self.G_run(self.latents(key), cond_fake)  # [n, C, *S]; last kept for G
            loss_d, d_skipped, d_logits = self.d_phase(
                key, real, cond_real, fake.detach(), cond_fake
            )
            skipped = torch.maximum(skipped, d_skipped)
            logits += d_logits
            self.images_seen += t.batch_size
        loss_g, g_skipped = self.g_phase(fake, cond_fake, real)
        self.ema.update(1.0 - g_skipped, self.images_seen)
        skipped = torch.maximum(skipped, g_skipped)
        self.stats.add(loss_d, loss_g, logits / t.d_steps, skipped)

    def bad_run(self) -> int:
        """The longest run of consecutive skipped steps since the last call (StepStats)."""
        return self.stats.bad_run()

    def pop_stats(self) -> dict[str, float]:
        """Means since the last call, averaged over ranks (a collective)."""
        return self.stats.pop(self.comm)

    def sampler(self) -> nn.Module:
        """G_ema (else G) with its own batch-norm statistics, the same on every rank."""
        return self.ema.sampler(self.images_seen)

    def samples(self, n: int) -> torch.Tensor:
        """The sampler's output [n, C, *S] for fixed latents (and classes 0, 1, 2, ...)."""
        return self.ema.samples(n, self.images_seen)

    def fingerprint(self) -> str:
        """SHA-1 of G's and D's parameters: equal on all ranks iff the replicas are identical."""
        digest = hashlib.sha1()
        for module in (self.G, self.D):
            for p in module.parameters():
                digest.update(p.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    # -- state ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        self.sampler()  # G_ema (else G) is saved with its own batch-norm statistics
        state = {
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "opt_G": self.opt_G.state_dict(),
            "opt_D": self.opt_D.state_dict(),
            "images_seen": self.images_seen,
            **self.ema.state_dict(),
        }
        if self.scaler_G is not None:
            state["scaler_G"] = self.update_G.scaler_state()
            state["scaler_D"] = self.update_D.scaler_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load a checkpoint; learning rates then follow the config (see _set_learning_rates)."""
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.update_G.load_optimizer(state["opt_G"])
        self.update_D.load_optimizer(state["opt_D"])
        if self.scaler_G is not None and "scaler_G" in state:
            self.update_G.load_scaler(state["scaler_G"])
            self.update_D.load_scaler(state["scaler_D"])
        self.images_seen = int(state.get("images_seen", 0))
        self.ema.load_state_dict(state, self.images_seen)
        self.stats.forget_streak()
