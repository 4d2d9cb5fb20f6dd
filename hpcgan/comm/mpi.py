"""MPI control plane through mpi4py, shared by the engines that run under an MPI launcher."""

from __future__ import annotations

from typing import Any

import numpy as np

from hpcgan.comm.base import Comm
from hpcgan.comm.polling import yield_when_idle


class MPIControl(Comm):
    """Ranks, barrier, object broadcast and small reductions on a private communicator."""

    name = "mpi-control"

    def __init__(self) -> None:
        yield_when_idle()  # before MPI starts: it reads its parameters in MPI_Init
        from mpi4py import MPI

        self._MPI = MPI
        self.world = MPI.COMM_WORLD
        # A duplicate keeps our control messages apart from any library's traffic.
        self.control = self.world.Dup()
        self.rank = self.world.Get_rank()
        self.size = self.world.Get_size()
        node = self.world.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
        node.Free()

    def barrier(self) -> None:
        self.control.Barrier()

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        return self.control.bcast(obj, root=root)

    def allgather_object(self, obj: Any) -> list[Any]:
        return self.control.allgather(obj)

    def gather_object(self, obj: Any, root: int = 0) -> list[Any] | None:
        return self.control.gather(obj, root=root)

    def allreduce_sum(self, values: np.ndarray) -> np.ndarray:
        send = np.ascontiguousarray(values, dtype=np.float64)
        recv = np.empty_like(send)
        self.control.Allreduce(send, recv, op=self._MPI.SUM)
        return recv

    def abort(self, code: int) -> None:
        self.world.Abort(code)

    def close(self) -> None:
        self.barrier()
