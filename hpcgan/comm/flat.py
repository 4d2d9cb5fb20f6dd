"""Engines that average each network's gradients as one flat buffer (the StyleGAN3 way).

After the backward pass, ``synchronize`` packs every gradient of the optimizer's parameters
into one contiguous vector (the same buffer every step), makes one allreduce call, and unpacks
the average: one message per network per step instead of one per tensor. The allreduce does not
overlap backward (README, Performance: where that would pay and why it is not done here).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from hpcgan.comm.base import Comm
from hpcgan.comm.mpi import MPIControl


class FlatAllreduce(MPIControl):
    """Subclasses provide ``_allreduce_sum_(flat)``: an in-place sum over ranks."""

    def __init__(self) -> None:
        super().__init__()
        # One flat buffer per optimizer, reused every step: no 2x model-size allocation (and
        # page faults) per step, and the allreduce always sees the same warm memory.
        self._flat: dict[int, torch.Tensor] = {}

    def _allreduce_sum_(self, flat: torch.Tensor) -> None:
        raise NotImplementedError

    def broadcast_module(self, module: torch.nn.Module) -> None:
        tensors = list(module.state_dict().values())
        flat = torch.cat([t.detach().reshape(-1).double() for t in tensors])
        flat_np = flat.cpu().numpy()
        self.control.Bcast(flat_np, root=0)
        offset = 0
        with torch.no_grad():
            for t in tensors:
                n = t.numel()
                t.copy_(torch.from_numpy(flat_np[offset : offset + n]).view_as(t))
                offset += n

    def _buffer(self, opt: torch.optim.Optimizer, like: torch.Tensor, numel: int) -> torch.Tensor:
        flat = self._flat.get(id(opt))
        if flat is None or flat.numel() != numel or flat.dtype != like.dtype:
            flat = self._flat[id(opt)] = like.new_empty(numel)
        return flat

    def synchronize(self, opt: torch.optim.Optimizer) -> None:
        params = [p for g in opt.param_groups for p in g["params"] if p.requires_grad]
        for p in params:
            if p.grad is None:  # unused in this phase: contributes zeros, like Horovod
                p.grad = torch.zeros_like(p)
        if self.size == 1:  # the average over one rank is its gradient
            return
        grads = [p.grad for p in params]
        flat = self._buffer(opt, grads[0], sum(g.numel() for g in grads))  # [total parameters]
        torch.cat([g.reshape(-1) for g in grads], out=flat)
        self._allreduce_sum_(flat)
        offset = 0
        for g in grads:  # unpack and divide in one pass
            n = g.numel()
            torch.div(flat[offset : offset + n].view_as(g), self.size, out=g)
            offset += n


def raw_allreduce(comm: Comm, message_bytes: list[int]) -> Callable[[], None] | None:
    """One round of plain MPI_Allreduce calls (sum, in place) of float32 buffers of these sizes
    on a communicator of its own: the yardstick for an engine's gradient averaging.

    Returns the round as a function (buffers allocated once); None in one plain process without
    MPI.
    """
    if not isinstance(comm, MPIControl):
        return None
    MPI = comm._MPI
    wire = comm.world.Dup()
    buffers = [np.ones(max(n // 4, 1), dtype=np.float32) for n in message_bytes]

    def round_() -> None:
        for buf in buffers:
            wire.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)

    return round_
