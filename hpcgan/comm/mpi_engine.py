"""``dist.backend=mpi``: gradients averaged with one mpi4py ``Allreduce`` per network."""

from __future__ import annotations

import torch

from hpcgan.comm.flat import FlatAllreduce


class MPIAllreduceComm(FlatAllreduce):
    name = "mpi"

    def __init__(self) -> None:
        super().__init__()
        self.world_grads = self.world.Dup()  # gradient traffic apart from control messages

    def _allreduce_sum_(self, flat: torch.Tensor) -> None:
        host = flat.detach().cpu()  # a no-op view on CPU; a copy from a GPU
        buf = host.numpy()
        self.world_grads.Allreduce(self._MPI.IN_PLACE, buf, op=self._MPI.SUM)
        if host.data_ptr() != flat.data_ptr():
            flat.copy_(host)
