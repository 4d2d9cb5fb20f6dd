"""The interface every engine implements, and the one-process engine."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is imported by those who train, not by every command
    import torch
    from torch import nn


class Comm:
    """What training needs from a communication engine.

    Control plane (small, rare): barrier, broadcast/allgather of objects, allreduce_sum of a
    few numbers.
    Data plane (every step): broadcast_module once, then per optimizer ``wrap_optimizer`` /
    ``synchronize`` (gradients averaged across ranks when it returns) / ``step`` (apply the
    update without communicating again), so gradients can be unscaled or clipped in between.
    """

    name = "none"
    # The trainer multiplies each loss by this before backward: engines that sum gradients
    # set 1/N, so the sum is the average (one multiply instead of a pass over the gradients).
    backward_scale = 1.0
    rank = 0
    size = 1
    local_rank = 0
    local_size = 1

    def barrier(self) -> None:
        """Wait for every rank."""

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        return obj

    def allgather_object(self, obj: Any) -> list[Any]:
        return [obj]

    def gather_object(self, obj: Any, root: int = 0) -> list[Any] | None:
        """Every rank's ``obj`` in rank order on ``root``, None elsewhere."""
        return [obj]

    def allreduce_sum(self, values: np.ndarray) -> np.ndarray:
        """Element-wise sum over ranks of a small float64 vector (metrics, flags)."""
        return values

    def broadcast_module(self, module: nn.Module) -> None:
        """Make every rank's parameters and buffers equal to rank 0's."""

    def wrap_optimizer(
        self, opt: torch.optim.Optimizer, module: nn.Module, prefix: str
    ) -> torch.optim.Optimizer:
        return opt

    def zero_grad(self, opt: torch.optim.Optimizer) -> None:
        """Clear the gradients of ``opt``'s parameters before a backward pass."""
        opt.zero_grad()

    def synchronize(self, opt: torch.optim.Optimizer) -> None:
        """Return when the gradients of ``opt``'s parameters are averaged across ranks."""

    def step(self, opt: torch.optim.Optimizer, apply: Callable[[], Any]) -> None:
        """Run ``apply`` (``opt.step`` or ``scaler.step(opt)``) without communicating."""
        apply()

    def abort(self, code: int) -> None:
        """End every rank now (after an error on this one): nobody waits on a dead peer."""
        os._exit(code)

    def close(self) -> None:
        """Orderly shutdown after a successful run."""


class SingleProcess(Comm):
    """One plain process: no launcher, no communication."""
