"""G and D replicas, their optimizers, and one training step in explicit D and G phases."""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any

import numpy as np
import torch
from torch import nn

from hpcgan import losses
from hpcgan.comm.base import Comm
from hpcgan.config import Config, TrainConfig

# Parameter dtype per train.precision; bf16 and fp16 keep fp32 weights and autocast the math.
_DTYPES = {"fp64": torch.float64}
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}

# Streams of random numbers, each a pure function of (seed, step, stream): resuming at step s
# draws exactly what the uninterrupted run drew, with no generator state to save.
_STREAM_LATENT, _STREAM_GP, _STREAM_FIXED = 1, 2, 3


def draw(seed: int, step: int, stream: int, shape: tuple[int, ...], kind: str = "normal"):
    """The same numbers on every rank and at any world size, for a global batch."""
    key = int(np.random.SeedSequence([seed, step, stream]).generate_state(1)[0])
    gen = torch.Generator().manual_seed(key)
    if kind == "uniform":
        return torch.rand(shape, generator=gen)
    return torch.randn(shape, generator=gen)


def make_optimizer(t: TrainConfig, module: nn.Module, lr: float) -> torch.optim.Optimizer:
    if t.optimizer == "sgd":
        return torch.optim.SGD(module.parameters(), lr=lr, momentum=t.momentum)
    return torch.optim.Adam(module.parameters(), lr=lr, betas=(t.beta1, t.beta2))


STAT_NAMES = ("loss/D", "loss/G", "D/real_logit", "D/fake_logit", "steps/skipped_nonfinite")


def _grads_finite(opt: torch.optim.Optimizer) -> bool:
    """One host sync: the sum of |grad| is finite iff every gradient element is."""
    grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
    return bool(torch.stack([g.abs().sum(dtype=torch.float64) for g in grads]).sum().isfinite())


class Trainer:
    """G and D replicas, their optimizers, and the D-then-G update of one step."""

    def __init__(self, cfg: Config, comm: Comm, G: nn.Module, D: nn.Module, device: torch.device):
        self.cfg, self.comm, self.device = cfg, comm, device
        t = cfg.train
        self.dtype = _DTYPES.get(t.precision, torch.float32)
        self.G = G.to(device=device, dtype=self.dtype)
        self.D = D.to(device=device, dtype=self.dtype)
        comm.broadcast_module(self.G)  # all ranks start from rank 0's parameters
        comm.broadcast_module(self.D)
        # Both optimizers are created while every parameter requires grad (Horovod hooks).
        self.opt_G = comm.wrap_optimizer(make_optimizer(t, self.G, t.lr_g), self.G, "G")
        self.opt_D = comm.wrap_optimizer(make_optimizer(t, self.D, t.lr_d), self.D, "D")
        fp16 = t.precision == "fp16"
        self.scaler_G = torch.amp.GradScaler(device.type) if fp16 else None
        self.scaler_D = torch.amp.GradScaler(device.type) if fp16 else None
        self._autocast_dtype = _AUTOCAST.get(t.precision)
        self._stats = torch.zeros(len(STAT_NAMES), dtype=torch.float64, device=device)
        self._stat_steps = 0
        self.bad_streak = 0  # consecutive steps with a non-finite averaged gradient

    # -- random numbers -------------------------------------------------------------------

    def _local(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's slice of a global-batch tensor."""
        n = x.shape[0] // self.comm.size
        r = self.comm.rank
        return x[r * n : (r + 1) * n].to(self.device, self.dtype)

    def latents(self, step: int) -> torch.Tensor:
        z = draw(self.cfg.train.seed, step, _STREAM_LATENT, (self.cfg.train.batch_size, self.z_dim))
        return self._local(z)  # [n_local, z_dim]

    @property
    def z_dim(self) -> int:
        return self.cfg.model.z_dim

    # -- one step -------------------------------------------------------------------------

    def _autocast(self):
        if self._autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self._autocast_dtype)

    def _update(
        self, loss: torch.Tensor, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None
    ) -> bool:
        """Backward, average gradients across ranks, then step without communicating again.

        Returns False when the step was skipped because the averaged gradients are not finite.
        The average is bitwise the same on every rank, so every rank skips the same steps
        without exchanging a flag.
        """
        opt.zero_grad()  # frees the gradients (set_to_none)
        (scaler.scale(loss) if scaler else loss).backward()
        self.comm.synchronize(opt)  # sync point: gradients are the global-batch average now
        if scaler is not None:
            scaler.unscale_(opt)
        finite = _grads_finite(opt)
        if finite:
            self.comm.step(opt, (lambda: scaler.step(opt)) if scaler else opt.step)
        if scaler is not None:
            scaler.update()  # on overflow: skipped above, and the loss scale is lowered here
        return finite

    def d_phase(
        self, step: int, real: torch.Tensor, fake: torch.Tensor
    ) -> tuple[torch.Tensor, bool]:
        with self._autocast():
            logits_real = self.D(real)
            logits_fake = self.D(fake)
            loss = losses.d_loss(self.cfg.train.loss, logits_real, logits_fake)
        if self.cfg.train.loss == "wgan-gp":
            eps = self._local(
                draw(self.cfg.train.seed, step, _STREAM_GP, (self.cfg.train.batch_size,), "uniform")
            )
            loss = loss + self.cfg.train.gp_weight * losses.gradient_penalty(
                self.D, real, fake, eps
            )
        ok = self._update(loss, self.opt_D, self.scaler_D)
        self._stats[2] += logits_real.detach().float().mean()
        self._stats[3] += logits_fake.detach().float().mean()
        return loss.detach(), ok

    def g_phase(self, fake: torch.Tensor) -> tuple[torch.Tensor, bool]:
        self.D.requires_grad_(False)  # D's gradients must not be computed (nor reduced) here
        try:
            with self._autocast():
                loss = losses.g_loss(self.cfg.train.loss, self.D(fake))
            ok = self._update(loss, self.opt_G, self.scaler_G)
        finally:
            self.D.requires_grad_(True)
        return loss.detach(), ok

    def step(self, step: int, real: torch.Tensor) -> None:
        """One generator step on this rank's slice ``real`` [n_local, C, H, W] of batch ``step``."""
        real = real.to(self.device, self.dtype, non_blocking=True)
        with self._autocast():
            fake = self.G(self.latents(step))  # [n_local, C, H, W], kept for G's phase
        loss_d, d_ok = self.d_phase(step, real, fake.detach())
        loss_g, g_ok = self.g_phase(fake)
        ok = d_ok and g_ok
        self.bad_streak = 0 if ok else self.bad_streak + 1
        if ok:  # a skipped step's losses are inf/nan: keep them out of the means
            self._stats[0] += loss_d.float()
            self._stats[1] += loss_g.float()
        self._stats[4] += not ok
        self._stat_steps += 1

    def pop_stats(self) -> dict[str, float]:
        """Means since the last call, averaged over ranks (one small reduction per interval)."""
        local = np.append(self._stats.cpu().numpy(), self._stat_steps)
        total = self.comm.allreduce_sum(local)
        self._stats.zero_()
        self._stat_steps = 0
        count = max(total[-1], 1.0)
        good = max(count - total[4], 1.0)
        stats = {k: float(v / good) for k, v in zip(STAT_NAMES[:2], total[:2])}
        stats.update({k: float(v / count) for k, v in zip(STAT_NAMES[2:4], total[2:4])})
        stats["steps/skipped_nonfinite"] = int(total[4] / self.comm.size)
        return stats

    @torch.no_grad()
    def samples(self, n: int) -> torch.Tensor:
        """G's output [n, C, H, W] for fixed latents: the same images at every checkpoint."""
        z = draw(self.cfg.train.seed, 0, _STREAM_FIXED, (n, self.z_dim)).to(self.device, self.dtype)
        self.G.eval()
        try:
            return self.G(z).float()
        finally:
            self.G.train()

    def fingerprint(self) -> str:
        """SHA-1 of G's and D's parameters: equal on all ranks iff the replicas are identical."""
        digest = hashlib.sha1()
        for module in (self.G, self.D):
            for p in module.parameters():
                digest.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    # -- state ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        state = {
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "opt_G": self.opt_G.state_dict(),
            "opt_D": self.opt_D.state_dict(),
        }
        if self.scaler_G is not None:
            state["scaler_G"] = self.scaler_G.state_dict()
            state["scaler_D"] = self.scaler_D.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load a checkpoint; the learning rates then come from the config (times lr_scale)."""
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        if self.scaler_G is not None and "scaler_G" in state:
            self.scaler_G.load_state_dict(state["scaler_G"])
            self.scaler_D.load_state_dict(state["scaler_D"])
        self.bad_streak = 0

    def scale_learning_rates(self, scale: float) -> None:
        """Set both optimizers' learning rates to the configured ones times ``scale``."""
        for opt, lr in ((self.opt_G, self.cfg.train.lr_g), (self.opt_D, self.cfg.train.lr_d)):
            for group in opt.param_groups:
                group["lr"] = lr * scale
