"""One network's update: its optimizer and fp16 loss scaler, and the backward, gradient
average, clip and step that apply a loss to it (with a skip flag decided on the device)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from hpcgan.comm.base import Comm
from hpcgan.config import TrainConfig
from hpcgan.profile import NoTimer


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


class NetUpdate:
    """The optimizer (wrapped by the engine) and loss scaler of ``module``, and its update."""

    def __init__(
        self, t: TrainConfig, comm: Comm, module: nn.Module, lr: float, name: str, timer: NoTimer
    ) -> None:
        self.t, self.comm, self.module, self.timer = t, comm, module, timer
        self.opt = comm.wrap_optimizer(make_optimizer(t, module, lr), module, name)
        # fp16: one loss scaler per network. Engines that fold 1/N into the loss
        # (backward_scale) start their scale N times higher, so that every rank's fp16
        # gradients have the magnitudes they would have under Horovod.
        self._summed = round(1.0 / comm.backward_scale)  # N for the flat engines, else 1
        self.scaler = None
        if t.precision == "fp16":
            device = next(module.parameters()).device.type
            self.scaler = torch.amp.GradScaler(device, init_scale=2.0**16 * self._summed)

    def set_lr(self, lr: float) -> None:
        for group in self.opt.param_groups:
            group["lr"] = lr

    def __call__(self, loss: torch.Tensor) -> torch.Tensor:
        """Backward, average gradients across ranks, clip, then step without communicating.

        Returns a 0-dim flag on the device, 1 when the step was skipped because the averaged
        gradients are not finite. The average is bitwise the same on every rank, so every rank
        skips the same steps without exchanging a flag (and an fp16 overflow on one rank is an
        overflow on all). With Adam the skip is decided on the device (no host sync), except
        under Horovod in fp16: its rebuilt optimizer is not fused, so GradScaler reads its flag.
        """
        opt, scaler = self.opt, self.scaler
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
            params = list(self.module.parameters())
            skipped = nonfinite_flag(params)
            if self.t.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, self.t.grad_clip)
            if scaler is not None:  # it passes its own overflow flag (the same) to the step
                self.comm.step(opt, lambda: scaler.step(opt))
                scaler.update()  # on overflow: the loss scale is lowered here
            elif all(group.get("fused") for group in opt.param_groups):
                opt.found_inf = skipped  # fused Adam leaves everything as it was if set
                self.comm.step(opt, opt.step)
            elif not skipped.item():  # SGD: decided on the host
                self.comm.step(opt, opt.step)
        return skipped

    def scaler_state(self) -> dict[str, Any]:
        """The loss scaler's state as one rank (or Horovod) would have it."""
        saved = self.scaler.state_dict()
        saved["scale"] /= self._summed
        return saved

    def load_optimizer(self, state: dict[str, Any]) -> None:
        """A saved optimizer state, stepped the way this build steps (fused or not)."""
        fused = [group.get("fused") for group in self.opt.param_groups]
        self.opt.load_state_dict(state)
        for group, flag in zip(self.opt.param_groups, fused):
            group["fused"] = flag

    def load_scaler(self, state: dict[str, Any]) -> None:
        """A saved loss scaler's state, at this world size."""
        saved = dict(state)
        saved["scale"] *= self._summed
        self.scaler.load_state_dict(saved)
