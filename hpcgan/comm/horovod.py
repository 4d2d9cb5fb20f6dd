"""Horovod engine: ring-allreduce of gradients inside DistributedOptimizer's backward hooks."""

from __future__ import annotations

import os
import sys
import threading
import time
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

    def __init__(self, compression: str = "none", init_timeout_s: float = 0.0) -> None:
        super().__init__()  # initialises MPI (thread level multiple) before Horovod uses it
        import horovod.torch as hvd

        self.hvd = hvd
        # Every rank is past MPI's start and the collectives above: hvd.init itself takes
        # seconds. A hang there ends the job with the reason instead of holding it.
        done = threading.Event()
        if init_timeout_s > 0:
            threading.Thread(
                target=self._init_watch, args=(done, init_timeout_s), daemon=True
            ).start()
        hvd.init(comm=self.world)
        done.set()
        self.compression = {"none": hvd.Compression.none, "fp16": hvd.Compression.fp16}[compression]

    def _init_watch(self, done: threading.Event, seconds: float) -> None:
        if done.wait(seconds):
            return
        if self.rank == 0:
            cores = ",".join(map(str, sorted(os.sched_getaffinity(0))))
            print(
                f"hpcgan: error: Horovod did not start within {seconds:g} s (hvd.init hangs); "
                f"the known cause is ranks bound to shared cores (rank 0 runs on core(s) {cores} "
                f"with {self.local_size} rank(s) on its node): launch with mpirun --bind-to none, "
                "or use dist.backend=mpi",
                file=sys.stderr,
                flush=True,
            )
        else:
            time.sleep(5)  # rank 0 says why first
        self.world.Abort(1)
        os._exit(1)

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
