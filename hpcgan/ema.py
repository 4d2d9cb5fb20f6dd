"""G's moving average and the generator that samples: G_ema (else G) with batch-norm
statistics of its own weights ("standing statistics"), the same on every rank."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from hpcgan.condition import Condition
from hpcgan.config import TrainConfig
from hpcgan.rng import STREAM_FIXED, STREAM_STANDING, draw

# Batches of latents from which the sampler's batch-norm statistics are recomputed before use.
STANDING_BATCHES = 8


class EMA:
    """G_ema <- beta G_ema + (1 - beta) G after each G update, and the sampler made from it.

    Samples are made at fixed conditions: classes 0, 1, 2, ... and, for continuous conditions,
    rank 0's first real batch's values repeated (:meth:`set_values`, kept in checkpoints so a
    resumed run samples at the same ones)."""

    def __init__(
        self,
        G: nn.Module,
        t: TrainConfig,
        dtype: torch.dtype,
        autocast: Callable[[], contextlib.AbstractContextManager],
    ) -> None:
        self.G, self.t, self.dtype, self._autocast = G, t, dtype, autocast
        self.spec = G.spec
        self.device = next(G.parameters()).device
        self.G_ema = None  # copied before the engine attaches gradient buffers and hooks to G
        if t.ema_halflife_images > 0:
            self.G_ema = copy.deepcopy(G).eval().requires_grad_(False)
        self.values: torch.Tensor | None = None  # [m, K] continuous conditions of samples
        self._standing_at = -1  # images_seen when the sampler's statistics were recomputed

    @torch.no_grad()
    def update(self, apply: torch.Tensor, images_seen: int) -> None:
        """G_ema <- beta G_ema + (1 - beta) G, beta from a half-life in images (not steps),
        so it means the same at any batch size or world size; ramped up early on. Images count
        one global batch per G step, whatever train.d_steps is. ``apply`` (0-dim, 0 or 1 on the
        device) is 0 after a skipped G step: then G_ema stays."""
        if self.G_ema is None:
            return
        t = self.t
        halflife = t.ema_halflife_images
        if t.ema_rampup > 0:
            halflife = min(halflife, images_seen / t.d_steps * t.ema_rampup)
        beta = 0.5 ** (t.batch_size / max(halflife, 1e-8))
        weight = (apply * (1 - beta)).to(self.dtype)
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.lerp_(p, weight)
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
            b_ema.copy_(b)

    def set_values(self, values: torch.Tensor) -> None:
        """The continuous conditions [m, K] that samples are made at (the same on all ranks)."""
        self.values = values.to(self.device, self.dtype)
        self._standing_at = -1

    def conditions(self, n: int) -> Condition:
        """Conditions of samples 0 .. n-1: class i % classes, the values of row i % m."""
        rows = torch.arange(n, device=self.device)
        labels = rows % self.spec.num_classes if self.spec.num_classes else None
        values = None if self.values is None else self.values[rows % len(self.values)]
        return Condition(labels, values)

    def sampler(self, images_seen: int) -> nn.Module:
        """The generator for samples, evaluation and checkpoints: G_ema (else G) with
        batch-norm statistics of its own weights, the same on every rank."""
        G = self.G if self.G_ema is None else self.G_ema
        if self._standing_at != images_seen:
            self._standing_stats(G)
            self._standing_at = images_seen
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
        n, z_dim = self.t.batch_size, G.z_dim
        cond = self.conditions(n)
        was_training = G.training
        G.train()
        try:
            for i in range(STANDING_BATCHES):
                z = draw(self.t.seed, i, STREAM_STANDING, (n, z_dim), device=self.device)
                with self._autocast():
                    G(z.to(self.dtype), cond)
        finally:
            G.train(was_training)
            for m, momentum in zip(norms, momenta):
                m.momentum = momentum

    @torch.no_grad()
    def samples(self, n: int, images_seen: int) -> torch.Tensor:
        """The sampler's output [n, C, *S] for fixed latents and conditions."""
        G = self.sampler(images_seen)
        z = draw(self.t.seed, 0, STREAM_FIXED, (n, G.z_dim), device=self.device)
        was_training = G.training
        G.eval()
        try:
            return G(z.to(self.dtype), self.conditions(n)).float()
        finally:
            G.train(was_training)

    def state_dict(self) -> dict[str, Any]:
        """G_ema (with its standing statistics: call :meth:`sampler` first) and the samples'
        continuous conditions, where there are."""
        state: dict[str, Any] = {}
        if self.G_ema is not None:
            state["G_ema"] = self.G_ema.state_dict()
        if self.values is not None:
            state["sample_values"] = self.values
        return state

    def load_state_dict(self, state: dict[str, Any], images_seen: int) -> None:
        """From a trainer checkpoint (see :meth:`state_dict`)."""
        if self.G_ema is not None:
            # A run that turns EMA on later starts its average from the current G.
            self.G_ema.load_state_dict(state.get("G_ema", state["G"]))
        if "sample_values" in state:
            self.values = state["sample_values"].to(self.device, self.dtype)
        # A saved G_ema holds the statistics of its weights (state_dict); without one, recompute.
        self._standing_at = images_seen if "G_ema" in state else -1
