"""One training step (explicit D and G phases) and the loop around it."""

from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hpcgan import checkpoint, images, losses
from hpcgan.comm.base import Comm
from hpcgan.config import Config, TrainConfig, to_dict
from hpcgan.data.reader import Prefetcher
from hpcgan.errors import Preempted
from hpcgan.monitor import RunLog, format_eta
from hpcgan.preempt import StopRequest

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
        self._stats = torch.zeros(4, dtype=torch.float64, device=device)
        self._stat_steps = 0

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
    ) -> None:
        """Backward, average gradients across ranks, then step without communicating again."""
        opt.zero_grad()  # frees the gradients (set_to_none)
        (scaler.scale(loss) if scaler else loss).backward()
        self.comm.synchronize(opt)  # sync point: gradients are the global-batch average now
        if scaler is not None:
            scaler.unscale_(opt)  # after the average, so every rank sees the same inf/nan
            self.comm.step(opt, lambda: scaler.step(opt))
            scaler.update()
        else:
            self.comm.step(opt, opt.step)

    def d_phase(self, step: int, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
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
        self._update(loss, self.opt_D, self.scaler_D)
        self._stats[2] += logits_real.detach().float().mean()
        self._stats[3] += logits_fake.detach().float().mean()
        return loss.detach()

    def g_phase(self, fake: torch.Tensor) -> torch.Tensor:
        self.D.requires_grad_(False)  # D's gradients must not be computed (nor reduced) here
        try:
            with self._autocast():
                loss = losses.g_loss(self.cfg.train.loss, self.D(fake))
            self._update(loss, self.opt_G, self.scaler_G)
        finally:
            self.D.requires_grad_(True)
        return loss.detach()

    def step(self, step: int, real: torch.Tensor) -> None:
        """One generator step on this rank's slice ``real`` [n_local, C, H, W] of batch ``step``."""
        real = real.to(self.device, self.dtype, non_blocking=True)
        with self._autocast():
            fake = self.G(self.latents(step))  # [n_local, C, H, W], kept for G's phase
        loss_d = self.d_phase(step, real, fake.detach())
        loss_g = self.g_phase(fake)
        self._stats[0] += loss_d.float()
        self._stats[1] += loss_g.float()
        self._stat_steps += 1

    def pop_stats(self) -> dict[str, float]:
        """Means since the last call, averaged over ranks (one small reduction per interval)."""
        local = np.append(self._stats.cpu().numpy(), self._stat_steps)
        total = self.comm.allreduce_sum(local)
        self._stats.zero_()
        self._stat_steps = 0
        count = max(total[-1], 1.0)
        names = ("loss/D", "loss/G", "D/real_logit", "D/fake_logit")
        return {k: float(v / count) for k, v in zip(names, total[:-1])}

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
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        if self.scaler_G is not None and "scaler_G" in state:
            self.scaler_G.load_state_dict(state["scaler_G"])
            self.scaler_D.load_state_dict(state["scaler_D"])


@dataclass
class Loop:
    """Steps from ``start`` to ``cfg.train.steps`` with logging, samples and checkpoints."""

    cfg: Config
    comm: Comm
    trainer: Trainer
    batches: Prefetcher
    log: RunLog
    run_dir: Path
    start: int
    stop: StopRequest

    def run(self) -> None:
        cfg, r = self.cfg, self.cfg.run
        steps = cfg.train.steps
        self.log.info(
            f"training steps {self.start}..{steps} | {self.comm.size} rank(s), engine "
            f"{self.comm.name} | global batch {cfg.train.batch_size}"
        )
        t_last, s_last = time.perf_counter(), self.start
        for step in range(self.start, steps):
            real, _labels = self.batches.next()
            self.trainer.step(step, real)
            done = step + 1
            last = done == steps
            if done % r.log_every == 0 or last:
                now = time.perf_counter()
                self._log_interval(done, now - t_last, done - s_last)
                t_last, s_last = now, done
            if self.comm.rank == 0 and (done % r.sample_every == 0 or last):
                path = self.run_dir / "samples" / f"step-{done:08d}.png"
                images.save_grid(self.trainer.samples(r.sample_n), path)
            saved = done % r.checkpoint_every == 0 or last
            if saved:
                self.save(done)
            reason = self.stop.agreed(self.comm)  # sync point: all ranks stop at the same step
            if reason and not last:
                if not saved:
                    self.save(done)
                self.log.info(f"stopping after step {done} ({reason}); resubmit to continue")
                raise Preempted(reason)

    def _log_interval(self, done: int, seconds: float, steps: int) -> None:
        stats = self.trainer.pop_stats()  # collective: every rank calls it at the same step
        if self.comm.rank != 0:
            return
        rate = steps / max(seconds, 1e-9)
        img_s = rate * self.cfg.train.batch_size
        record = {"step": done, **stats, "time/step_s": 1 / rate, "throughput/img_s": img_s}
        self.log.metrics(record)
        self.log.info(
            f"step {done}/{self.cfg.train.steps} | loss D {stats['loss/D']:.3f} "
            f"G {stats['loss/G']:.3f} | {img_s:.0f} img/s | "
            f"eta {format_eta((self.cfg.train.steps - done) / rate)}"
        )

    def check_replicas(self) -> None:
        """Collective: fail loudly if any rank's parameters drifted from rank 0's."""
        prints = self.comm.allgather_object(self.trainer.fingerprint())
        bad = [r for r, f in enumerate(prints) if f != prints[0]]
        if bad:
            raise RuntimeError(f"parameters of rank(s) {bad} differ from rank 0's")
        self.log.info(f"replicas: parameters identical on all {len(prints)} rank(s)")

    def save(self, step: int) -> None:
        self.check_replicas()
        if self.comm.rank != 0:
            return
        state = {
            "step": step,
            "config": to_dict(self.cfg),
            "data": {"batches": step},
            **self.trainer.state_dict(),
        }
        path = checkpoint.save(self.run_dir / "checkpoints", state, self.cfg.run.keep)
        self.log.info(f"checkpoint {path}")
