"""``dist.backend=mpi``: gradients summed with mpi4py ``Iallreduce`` calls on flat buckets."""

from __future__ import annotations

from typing import Any

import torch

from hpcgan.comm.flat import FlatAllreduce


class MPIAllreduceComm(FlatAllreduce):
    name = "mpi"

    def __init__(self, bucket_mb: float = 0.0, cuda: bool = False) -> None:
        super().__init__(bucket_mb)
        self.world_grads = self.world.Dup()  # gradient traffic apart from control messages
        # GPU gradients go through host memory; doing that per bucket inside backward would
        # stall the device once per bucket, so they are summed in one piece after backward.
        self.overlap = not cuda

    def _start(self, flat: torch.Tensor) -> Any:
        MPI = self._MPI
        if flat.device.type == "cpu":
            if self.overlap and self.bucket_bytes > 0:  # buckets started during backward
                return self.world_grads.Iallreduce(MPI.IN_PLACE, flat.numpy(), op=MPI.SUM)
            # After backward the blocking call is the faster one: Open MPI's non-blocking
            # collectives (libnbc) took twice as long for the same bytes on shared memory.
            self.world_grads.Allreduce(MPI.IN_PLACE, flat.numpy(), op=MPI.SUM)
            return None
        host = flat.cpu()
        self.world_grads.Allreduce(MPI.IN_PLACE, host.numpy(), op=MPI.SUM)
        flat.copy_(host)
        return None

    def _wait(self, handles: list[Any]) -> None:
        requests = [h for h in handles if h is not None]
        if requests:
            self._MPI.Request.Waitall(requests)
