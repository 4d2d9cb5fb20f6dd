"""``dist.backend=torch``: torch.distributed (gloo on CPU, NCCL on GPU) under mpirun or srun,
flat buckets reduced with asynchronous ``all_reduce`` calls (NCCL runs them on its own stream).

Ranks come from MPI; rank 0 picks a free TCP port and shares its address through mpi4py, so no
MASTER_ADDR/MASTER_PORT set-up is needed in job scripts (MASTER_ADDR, where set, is used).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from hpcgan.comm.flat import FlatAllreduce
from hpcgan.errors import UserError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _own_addresses() -> list[str]:
    """IPv4 addresses this host's name resolves to, as the resolver lists them."""
    names = {socket.gethostname(), socket.getfqdn()}
    found: list[str] = []
    for name in names:
        try:
            infos = socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)
        except OSError:
            continue
        found += [info[4][0] for info in infos if info[4][0] not in found]
    return found


def rendezvous_host(candidates: list[str], hosts: list[str], master_addr: str | None) -> str:
    """The address the other ranks connect to rank 0 at: ``MASTER_ADDR`` where set, else the
    first of rank 0's ``candidates`` that ranks on other ``hosts`` can reach (a loopback
    address serves only when every rank runs on rank 0's host, as /etc/hosts often maps the
    host name to 127.0.0.1 or 127.0.1.1)."""
    if master_addr:
        return master_addr
    one_host = len(set(hosts)) == 1
    for address in candidates:
        if one_host or not ipaddress.ip_address(address).is_loopback:
            return address
    if one_host:
        return "127.0.0.1"
    raise UserError(
        f"dist.backend=torch: the ranks run on {len(set(hosts))} hosts but rank 0's host name "
        f"resolves only to {', '.join(candidates) or 'nothing'}; set MASTER_ADDR to an address "
        "of rank 0's node that the other nodes reach"
    )


class TorchDistComm(FlatAllreduce):
    name = "torch"

    def __init__(self, timeout_s: float = 900.0, bucket_mb: float = 0.0, cuda: bool = False):
        super().__init__(bucket_mb)
        hosts = self.allgather_object(socket.gethostname())
        address: tuple[str, int] | str | None = None
        if self.rank == 0:
            try:
                host = rendezvous_host(_own_addresses(), hosts, os.environ.get("MASTER_ADDR"))
                address = (host, _free_port())
            except UserError as e:
                address = str(e)
        address = self.broadcast_object(address)
        if isinstance(address, str):  # every rank stops with rank 0's reason
            raise UserError(address)
        host, port = address
        backend = "nccl" if cuda else "gloo"
        self.name = f"torch/{backend}"
        dist.init_process_group(
            backend,
            init_method=f"tcp://{host}:{port}",
            rank=self.rank,
            world_size=self.size,
            # 0 = never: the watchdog (dist.timeout_s) is off too.
            timeout=timedelta(seconds=timeout_s) if timeout_s > 0 else timedelta(days=365),
        )

    def _start(self, flat: torch.Tensor) -> Any:
        return dist.all_reduce(flat, op=dist.ReduceOp.SUM, async_op=True)

    def _wait(self, handles: list[Any]) -> None:
        for work in handles:
            work.wait()

    def close(self) -> None:
        super().close()
        dist.destroy_process_group()
