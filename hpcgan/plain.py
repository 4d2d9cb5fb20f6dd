"""The plainest PyTorch GAN loop: the reference hpcgan.bench and bench/step_speed.py measure
hpcgan's training step against (same models, same batch, no engine, no data loading)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from hpcgan.comm.base import Comm
from hpcgan.condition import Condition
from hpcgan.config import Config
from hpcgan.models import build_models
from hpcgan.models.base import NO_CONDITION
from hpcgan.session import Pieces, model_options

_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def plain_loop(
    G: nn.Module, D: nn.Module, z_dim: int, precision: str = "fp32", d_steps: int = 1
) -> Callable[[torch.Tensor, torch.Tensor | None], None]:
    """pytorch/examples' DCGAN step (Adam 2e-4, non-saturating loss), with ``d_steps`` D
    updates per G update as hpcgan makes: no engine, no checks, no statistics, no EMA. G and D
    are already on their device and dtype."""
    opt_g = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))
    dtype = next(G.parameters()).dtype

    def cast() -> contextlib.AbstractContextManager:
        if precision not in _AUTOCAST:
            return contextlib.nullcontext()
        return torch.autocast(next(G.parameters()).device.type, dtype=_AUTOCAST[precision])

    def step(real: torch.Tensor, cond: Condition = NO_CONDITION) -> None:
        for i in range(d_steps):
            z = torch.randn(real.shape[0], z_dim, device=real.device, dtype=dtype)
            with cast():
                with torch.set_grad_enabled(i == d_steps - 1):  # G's update uses the last
                    fake = G(z, cond)
                real_loss = F.softplus(-D(real, cond)[0]).mean()
                loss_d = real_loss + F.softplus(D(fake.detach(), cond)[0]).mean()
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
        with cast():
            loss_g = F.softplus(-D(fake, cond)[0]).mean()
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()

    return step


def timed(step: Callable[[], None], n: int, device: torch.device) -> float:
    """Seconds for ``n`` calls of ``step``, waiting for the GPU at both ends."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def make_plain(cfg: Config, pieces: Pieces, comm: Comm) -> Callable[[], None]:
    """The plain loop of freshly built models like the trainer's, on a fixed per-rank batch."""
    t, info, device = cfg.train, pieces.info, pieces.device
    trainer = pieces.trainer
    torch.manual_seed(t.seed)
    G, D = build_models(cfg.model, info.shape, **model_options(cfg, info))
    G, D = (m.to(device=device, dtype=trainer.dtype) for m in (G, D))
    n = t.batch_size // comm.size
    real = torch.rand(n, *info.shape, device=device, dtype=trainer.dtype) * 2 - 1  # [n, C, *S]
    spec = trainer.spec
    labels = torch.randint(spec.num_classes, (n,), device=device) if spec.num_classes else None
    values = torch.randn(n, spec.dim, device=device, dtype=trainer.dtype) if spec.dim else None
    step = plain_loop(G, D, cfg.model.z_dim, t.precision, t.d_steps)
    return lambda: step(real, Condition(labels, values))
