"""Engines that average each network's gradients as one flat buffer (the StyleGAN3 way).

After the backward pass, ``synchronize`` packs every gradient of the optimizer's parameters
into one contiguous vector, makes one allreduce call, and unpacks the average: one message per
network per step instead of one per tensor.
"""

from __future__ import annotations

import torch

from hpcgan.comm.mpi import MPIControl


class FlatAllreduce(MPIControl):
    """Subclasses provide ``_allreduce_sum_(flat)``: an in-place sum over ranks."""

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

    def synchronize(self, opt: torch.optim.Optimizer) -> None:
        params = [p for g in opt.param_groups for p in g["params"] if p.requires_grad]
        for p in params:
            if p.grad is None:  # unused in this phase: contributes zeros, like Horovod
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params])  # [total parameters]
        self._allreduce_sum_(flat)
        flat /= self.size
        offset = 0
        for p in params:
            n = p.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
            offset += n
