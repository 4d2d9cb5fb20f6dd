"""``dist.backend=torch``: torch.distributed (gloo on CPU, NCCL on GPU) under mpirun or srun,
flat buckets reduced with asynchronous ``all_reduce`` calls (NCCL runs them on its own stream).

Ranks come from MPI; rank 0 picks a free TCP port and shares its address through mpi4py, so no
MASTER_ADDR/MASTER_PORT set-up is needed in job scripts.
"""

from __future__ import annotations

import socket
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from hpcgan.comm.flat import FlatAllreduce


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class TorchDistComm(FlatAllreduce):
    name = "torch"

    def __init__(self, timeout_s: float = 900.0, bucket_mb: float = 0.0) -> None:
        super().__init__(bucket_mb)
        address = None
        if self.rank == 0:
            address = (socket.gethostbyname(socket.gethostname()), _free_port())
        host, port = self.broadcast_object(address)
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        self.name = f"torch/{backend}"
        dist.init_process_group(
            backend,
            init_method=f"tcp://{host}:{port}",
            rank=self.rank,
            world_size=self.size,
            timeout=timedelta(seconds=timeout_s or 900),
        )

    def _start(self, flat: torch.Tensor) -> Any:
        return dist.all_reduce(flat, op=dist.ReduceOp.SUM, async_op=True)

    def _wait(self, handles: list[Any]) -> None:
        for work in handles:
            work.wait()

    def close(self) -> None:
        super().close()
        dist.destroy_process_group()
