"""G and D replicas, their optimizers, and one training step in explicit D and G phases; each
phase asks the objective (hpcgan.objectives, built from train.*) for its loss."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd

from hpcgan import nd, objectives
from hpcgan.comm.base import Comm
from hpcgan.config import Config, TrainConfig
from hpcgan.profile import NoTimer
from hpcgan.rng import (
    STREAM_FIXED,
    STREAM_GP,
    STREAM_LABEL,
    STREAM_LATENT,
    STREAM_STANDING,
    draw,
)

# Parameter dtype per train.precision; bf16 and fp16 keep fp32 weights and autocast the math.
_DTYPES = {"fp64": torch.float64}
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}

# Batches of latents from which the sampler's batch-norm statistics are recomputed before use.
STANDING_BATCHES = 8

STAT_NAMES = ("loss/D", "loss/G", "D/real_logit", "D/fake_logit", "steps/skipped_nonfinite")


def make_optimizer(t: TrainConfig, module: nn.Module, lr: float) -> torch.optim.Optimizer:
    if t.optimizer == "sgd":
        return torch.optim.SGD(module.parameters(), lr=lr, momentum=t.momentum)
    # Fused: one kernel for all parameters, and it skips a step on a flag that stays on the
    # device (no host synchronisation to decide a skip).
    return torch.optim.Adam(module.parameters(), lr=lr, betas=(t.beta1, t.beta2), fused=True)


def batch_lr_factor(t: TrainConfig) -> float:
    """train.lr_scaling: learning rates relative to the reference batch train.ref_batch."""
    ratio = t.batch_size / t.ref_batch
    return {"none": 1.0, "sqrt": math.sqrt(ratio), "linear": ratio}[t.lr_scaling]


def nonfinite_flag(params: list[nn.Parameter]) -> torch.Tensor:
    """0-dim float32 on the gradients' device: 1 if any gradient element is inf or nan, else 0.
    The sum of |grad| in float64 is finite iff every element is (and cannot overflow)."""
    grads = [p.grad for p in params if p.grad is not None]
    total = torch.stack([g.abs().sum(dtype=torch.float64) for g in grads]).sum()
    return (~total.isfinite()).float()


def memory_format(D: nn.Module) -> torch.memory_format:
    """train.channels_last for the models' spatial rank (that of D's convolutions):
    channels_last for images, channels_last_3d for volumes."""
    ranks = {len(m.kernel_size) for m in D.modules() if isinstance(m, _ConvNd)}
    return nd.ops(ranks.pop()).channels_last if len(ranks) == 1 else torch.contiguous_format


class Trainer:
    """G and D replicas, their optimizers, G's moving average, and the step that updates them."""

    def __init__(
        self,
        cfg: Config,
        comm: Comm,
        G: nn.Module,
        D: nn.Module,
        device: torch.device,
        num_classes: int = 0,
        timer: NoTimer | None = None,
    ):
        self.cfg, self.comm, self.device = cfg, comm, device
        t = cfg.train
        self.objective = objectives.build(t)  # an unknown train.loss stops here, before a step
        self.timer = timer or NoTimer()  # hpcgan.bench passes a StepTimer
        self.num_classes = num_classes
        self.dtype = _DTYPES.get(t.precision, torch.float32)
        self._memory = memory_format(D) if t.channels_last else torch.contiguous_format
        self.G = G.to(device=device, dtype=self.dtype, memory_format=self._memory)
        self.D = D.to(device=device, dtype=self.dtype, memory_format=self._memory)
        comm.broadcast_module(self.G)  # all ranks start from rank 0's parameters
        comm.broadcast_module(self.D)
        self.G_ema = None  # copied before the engine attaches gradient buffers and hooks to G
        if t.ema_halflife_images > 0:
            self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        # Both optimizers are created while every parameter requires grad (Horovod hooks).
        self.opt_G = comm.wrap_optimizer(make_optimizer(t, self.G, t.lr_g), self.G, "G")
        self.opt_D = comm.wrap_optimizer(make_optimizer(t, self.D, t.lr_d), self.D, "D")
        # fp16: one loss scaler per network. Engines that fold 1/N into the loss
        # (backward_scale) start their scale N times higher, so that every rank's fp16
        # gradients have the magnitudes they would have under Horovod.
        fp16 = t.precision == "fp16"
        self._summed = round(1.0 / comm.backward_scale)  # N for the flat engines, else 1
        self.scaler_G, self.scaler_D = (
            torch.amp.GradScaler(device.type, init_scale=2.0**16 * self._summed) if fp16 else None
            for _ in range(2)
        )
        self.G_run = torch.compile(self.G) if t.compile else self.G
        self.D_run = torch.compile(self.D) if t.compile else self.D
        self._autocast_dtype = _AUTOCAST.get(t.precision)
        self._stats = torch.zeros(len(STAT_NAMES), dtype=torch.float64, device=device)
        self._stat_steps = 0
        # Skipped steps, counted on the device: the current run of consecutive ones, and the
        # longest since bad_run() last read it.
        self._streak = torch.zeros((), device=device)
        self._worst = torch.zeros((), device=device)
        self.lr_scale = 1.0  # lowered by the divergence guard
        self.images_seen = 0  # global real images shown to D (d_steps batches per step)
        self._standing_at = -1  # images_seen when the sampler's statistics were recomputed

    # -- random numbers -------------------------------------------------------------------

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
        if not self.num_classes:
            return None
        shape = (self.cfg.train.batch_size,)
        u = draw(self.cfg.train.seed, key, STREAM_LABEL, shape, "uniform", self.device)
        return self._local((u * self.num_classes).long().clamp_max(self.num_classes - 1))

    @property
    def z_dim(self) -> int:
        return self.cfg.model.z_dim

    # -- one step -------------------------------------------------------------------------

    def _autocast(self):
        if self._autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self._autocast_dtype)

    def _update(
        self,
        loss: torch.Tensor,
        opt: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler | None,
        module: nn.Module,
    ) -> torch.Tensor:
        """Backward, average gradients across ranks, clip, then step without communicating.

        Returns a 0-dim flag on the device, 1 when the step was skipped because the averaged
        gradients are not finite. The average is bitwise the same on every rank, so every rank
        skips the same steps without exchanging a flag (and an fp16 overflow on one rank is an
        overflow on all). With Adam the skip is decided on the device (no host sync), except
        under Horovod in fp16: its rebuilt optimizer is not fused, so GradScaler reads its flag.
        """
        self.comm.zero_grad(opt)
        with self.timer.section("backward"):
            scaled = scaler.scale(loss) if scaler else loss
            if self.comm.backward_scale != 1.0:  # engines that sum: the sum is the average
                scaled = scaled * self.comm.backward_scale
            scaled.backward()
        with self.timer.section("grad_average"):
            self.comm.synchronize(opt)  # sync point: gradients are the global-batch average now
        with self.timer.section("optimizer"):
            if scaler is not None:
                scaler.unscale_(opt)
            params = list(module.parameters())
            skipped = nonfinite_flag(params)
            if self.cfg.train.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, self.cfg.train.grad_clip)
            if scaler is not None:  # it passes its own overflow flag (the same) to the step
                self.comm.step(opt, lambda: scaler.step(opt))
                scaler.update()  # on overflow: the loss scale is lowered here
            elif all(group.get("fused") for group in opt.param_groups):
                opt.found_inf = skipped  # fused Adam leaves everything as it was if set
                self.comm.step(opt, opt.step)
            elif not skipped.item():  # SGD: decided on the host
                self.comm.step(opt, opt.step)
        return skipped

    def d_phase(
        self,
        key: int,
        real: torch.Tensor,
        y_real: torch.Tensor | None,
        fake: torch.Tensor,
        y_fake: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One discriminator update on batch ``key``: real [n, C, *S] vs detached fakes.
        Returns the loss, the skip flag and the mean real and fake logits [2]."""
        t = self.cfg.train
        input_grad = self.objective.input_grad(key)  # lazy R1 on this batch
        if input_grad:
            real = real.detach().requires_grad_(True)
        # Penalties differentiate D's input gradients (double backward), which a compiled D
        # (AOTAutograd) does not support: they go through the eager module.
        D_real = self.D if input_grad else self.D_run
        with self.timer.section("forward"), self._autocast():
            logits_real, aux_real = D_real(real, y_real)
            logits_fake, aux_fake = self.D_run(fake, y_fake)
            batch = objectives.DBatch(
                key,
                real,
                y_real,
                fake,
                y_fake,
                logits_real,
                logits_fake,
                aux_real,
                aux_fake,
                module=self.D,
                critic=lambda x: self.D(x, y_real)[0],
                uniform=lambda: self._local(
                    draw(t.seed, key, STREAM_GP, (t.batch_size,), "uniform", self.device)
                ),
            )
            loss = self.objective.d_loss(batch)
        with self.timer.section("forward"):  # penalties: their double backward counts here
            loss = self.objective.d_penalties(loss, batch)
        skipped = self._update(loss, self.opt_D, self.scaler_D, self.D)
        logits = torch.stack([x.detach().float().mean() for x in (logits_real, logits_fake)])
        return loss.detach(), skipped, logits

    def g_phase(
        self, fake: torch.Tensor, y_fake: torch.Tensor | None, real: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One generator update on the last D update's fakes [n, C, *S] (with their graph)."""
        self.D.requires_grad_(False)  # D's gradients must not be computed (nor reduced) here
        try:
            with self.timer.section("forward"), self._autocast():
                logits, aux = self.D_run(fake, y_fake)
                batch = objectives.GBatch(fake, y_fake, real, logits, aux, self.G)
                loss = self.objective.g_loss(batch)
            loss = self.objective.g_penalties(loss, batch)
            skipped = self._update(loss, self.opt_G, self.scaler_G, self.G)
        finally:
            self.D.requires_grad_(True)
        return loss.detach(), skipped

    def _set_learning_rates(self, step: int) -> None:
        t = self.cfg.train
        warm = min(1.0, (step + 1) / t.warmup_steps) if t.warmup_steps else 1.0
        factor = batch_lr_factor(t) * warm * self.lr_scale
        for opt, lr in ((self.opt_G, t.lr_g), (self.opt_D, t.lr_d)):
            for group in opt.param_groups:
                group["lr"] = lr * factor

    def step(self, step: int, batches: list[tuple[torch.Tensor, torch.Tensor | None]]) -> None:
        """Generator step ``step``: ``train.d_steps`` D updates, one on each of this rank's
        slices ``(real [n, C, *S], labels [n] or None)`` of the next global batches, then one
        G update on the last D update's fakes."""
        t = self.cfg.train
        self._set_learning_rates(step)
        skipped = torch.zeros((), device=self.device)
        logits = torch.zeros(2, device=self.device)  # sums over the D updates
        for j, (real, y_real) in enumerate(batches):
            key = step * t.d_steps + j  # global batch index: latents, labels, GP draws
            real = real.to(self.device, self.dtype, non_blocking=True)
            real = real.contiguous(memory_format=self._memory)
            y_real = (
                None
                if y_real is None or not self.num_classes
                else y_real.to(self.device, non_blocking=True)
            )
            y_fake = self.fake_labels(key)
            last = j == len(batches) - 1
            with self.timer.section("forward"), self._autocast(), torch.set_grad_enabled(last):
                fake = self.G_run(self.latents(key), y_fake)  # [n, C, *S]; last one kept for G
            loss_d, d_skipped, d_logits = self.d_phase(key, real, y_real, fake.detach(), y_fake)
            skipped = torch.maximum(skipped, d_skipped)
            logits += d_logits
            self.images_seen += t.batch_size
        loss_g, g_skipped = self.g_phase(fake, y_fake, real)
        self._update_ema(1.0 - g_skipped)
        skipped = torch.maximum(skipped, g_skipped)
        self._streak.add_(1).mul_(skipped)  # consecutive skipped steps, reset by a good one
        torch.maximum(self._worst, self._streak, out=self._worst)
        # A skipped step's losses are inf/nan: keep them out of the means.
        zero = torch.zeros((), device=self.device)
        self._stats[0] += torch.where(skipped > 0, zero, loss_d.float())
        self._stats[1] += torch.where(skipped > 0, zero, loss_g.float())
        self._stats[2:4] += torch.where(skipped > 0, zero, logits / t.d_steps)
        self._stats[4] += skipped
        self._stat_steps += 1

    def bad_run(self) -> int:
        """The longest run of consecutive skipped steps that reached into the steps since the
        last call (one host read: the loop asks at log and checkpoint steps, not every step)."""
        worst = int(self._worst.item())
        self._worst.copy_(self._streak)
        return worst

    @torch.no_grad()
    def _update_ema(self, apply: torch.Tensor) -> None:
        """G_ema <- beta G_ema + (1 - beta) G, beta from a half-life in images (not steps),
        so it means the same at any batch size or world size; ramped up early on. Images count
        one global batch per G step, whatever train.d_steps is. ``apply`` (0-dim, 0 or 1 on the
        device) is 0 after a skipped G step: then G_ema stays."""
        if self.G_ema is None:
            return
        t = self.cfg.train
        halflife = t.ema_halflife_images
        if t.ema_rampup > 0:
            halflife = min(halflife, self.images_seen / t.d_steps * t.ema_rampup)
        beta = 0.5 ** (t.batch_size / max(halflife, 1e-8))
        weight = (apply * (1 - beta)).to(self.dtype)
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.lerp_(p, weight)
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
            b_ema.copy_(b)

    def pop_stats(self) -> dict[str, float]:
        """Means since the last call, averaged over ranks (one small reduction per interval)."""
        local = np.append(self._stats.cpu().numpy(), self._stat_steps)
        total = self.comm.allreduce_sum(local)
        self._stats.zero_()
        self._stat_steps = 0
        count = max(total[-1], 1.0)
        good = max(count - total[4], 1.0)
        # Means over the steps that were not skipped (a skipped step's numbers are inf/nan).
        stats = {k: float(v / good) for k, v in zip(STAT_NAMES[:4], total[:4])}
        stats["steps/skipped_nonfinite"] = int(total[4] / self.comm.size)
        return stats

    def sampler(self) -> nn.Module:
        """The generator for samples, evaluation and checkpoints: G_ema (else G) with
        batch-norm statistics of its own weights, the same on every rank."""
        G = self.G if self.G_ema is None else self.G_ema
        if self._standing_at != self.images_seen:
            self._standing_stats(G)
            self._standing_at = self.images_seen
        return G

    @torch.no_grad()
    def _standing_stats(self, G: nn.Module) -> None:
        """Recompute G's batch-norm statistics from fixed latents ("standing statistics", as
        BigGAN samples). G_ema's running statistics, copied from G, follow G's current weights,
        not their average, and the mismatch shows as a wrong amplitude of its samples; G's own
        come from each rank's local batches and differ between ranks. The same global batches
        on every rank, so the replicas stay identical (training itself uses batch statistics)."""
        norms = [m for m in G.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms:
            return
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches below
        n = self.cfg.train.batch_size
        y = torch.arange(n, device=self.device) % self.num_classes if self.num_classes else None
        was_training = G.training
        G.train()
        try:
            for i in range(STANDING_BATCHES):
                z = draw(
                    self.cfg.train.seed, i, STREAM_STANDING, (n, self.z_dim), device=self.device
                )
                with self._autocast():
                    G(z.to(self.dtype), y)
        finally:
            G.train(was_training)
            for m, momentum in zip(norms, momenta):
                m.momentum = momentum

    @torch.no_grad()
    def samples(self, n: int) -> torch.Tensor:
        """G_ema's (else G's) output [n, C, *S] for fixed latents (and classes 0, 1, 2, ...)."""
        G = self.sampler()
        z = draw(self.cfg.train.seed, 0, STREAM_FIXED, (n, self.z_dim), device=self.device)
        z = z.to(self.dtype)
        y = torch.arange(n, device=self.device) % self.num_classes if self.num_classes else None
        was_training = G.training
        G.eval()
        try:
            return G(z, y).float()
        finally:
            G.train(was_training)

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
        }
        if self.G_ema is not None:
            state["G_ema"] = self.G_ema.state_dict()
        if self.scaler_G is not None:
            for key, scaler in (("scaler_G", self.scaler_G), ("scaler_D", self.scaler_D)):
                saved = scaler.state_dict()
                saved["scale"] /= self._summed  # as one rank (or Horovod) would have it
                state[key] = saved
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load a checkpoint; learning rates then follow the config (see _set_learning_rates)."""
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        for opt, key in ((self.opt_G, "opt_G"), (self.opt_D, "opt_D")):
            fused = [group.get("fused") for group in opt.param_groups]
            opt.load_state_dict(state[key])
            for group, flag in zip(opt.param_groups, fused):  # how this build steps
                group["fused"] = flag
        if self.G_ema is not None:
            # A run that turns EMA on later starts its average from the current G.
            self.G_ema.load_state_dict(state.get("G_ema", state["G"]))
        if self.scaler_G is not None and "scaler_G" in state:
            for key, scaler in (("scaler_G", self.scaler_G), ("scaler_D", self.scaler_D)):
                saved = dict(state[key])
                saved["scale"] *= self._summed  # at this world size
                scaler.load_state_dict(saved)
        self.images_seen = int(state.get("images_seen", 0))
        # A saved G_ema holds the statistics of its weights (state_dict); without one, recompute.
        self._standing_at = self.images_seen if "G_ema" in state else -1
        self._streak.zero_()
        self._worst.zero_()
