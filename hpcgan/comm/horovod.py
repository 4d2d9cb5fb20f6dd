"""Horovod engine: ring-allreduce of gradients inside DistributedOptimizer's backward hooks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from hpcgan.comm.mpi import MPIControl


class HorovodComm(MPIControl):
    """Gradient averaging by Horovod; control messages by mpi4py on the same MPI job.

    With two optimizers (G and D) each network's parameters get their own name prefix, and the
    training loop switches off ``requires_grad`` of the network not being trained, so D's
    gradients are never reduced in G's phase (docs/design.md section 7).
    """

    name = "horovod"

    def __init__(self, compression: str = "none") -> None:
        super().__init__()  # initialises MPI (thread level multiple) before Horovod uses it
        import horovod.torch as hvd

        self.hvd = hvd
        hvd.init(comm=self.world)
        self.compression = {"none": hvd.Compression.none, "fp16": hvd.Compression.fp16}[compression]

    def broadcast_module(self, module: nn.Module) -> None:
        self.hvd.broadcast_parameters(module.state_dict(), root_rank=0)

    def wrap_optimizer(
        self, opt: torch.optim.Optimizer, module: nn.Module, prefix: str
    ) -> torch.optim.Optimizer:
        named = [(f"{prefix}.{n}", p) for n, p in module.named_parameters()]
        return self.hvd.DistributedOptimizer(
            opt, named_parameters=named, op=self.hvd.Average, compression=self.compression
        )

    def synchronize(self, opt: torch.optim.Optimizer) -> None:
        opt.synchronize()

    def step(self, opt: torch.optim.Optimizer, apply: Callable[[], Any]) -> None:
        with opt.skip_synchronize():
            apply()

    def close(self) -> None:
        super().close()
        self.hvd.shutdown()
