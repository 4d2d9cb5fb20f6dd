"""Engines that average each network's gradients through one flat buffer (the StyleGAN3 way),
in buckets launched from gradient hooks while backward still runs (the DDP way).

Each network's gradients live permanently in one contiguous buffer: every ``param.grad`` is a
view into it (laid out in reverse parameter order, the order in which backward produces them),
so there is nothing to pack or unpack. The buffer is cut into buckets of ``dist.bucket_mb``;
when the last gradient of a bucket has been accumulated, its allreduce starts, and
``synchronize`` starts what is left and waits for all. Buckets always start in the same order
on every rank, whatever order the hooks fire in. The engines sum; the 1/N of the average is
folded into the loss before backward (``backward_scale``), a multiply of one number instead of
a pass over the gradients.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from hpcgan.comm.base import Comm
from hpcgan.comm.mpi import MPIControl


class FlatGrads:
    """One network's gradient buffer, its buckets and the allreduces in flight for an update.

    ``start(bucket)`` begins an in-place sum over ranks of a 1-D slice and returns a handle;
    ``wait(handles)`` completes them. With ``overlap`` False buckets start only in ``finish``.
    """

    def __init__(
        self,
        params: list[nn.Parameter],
        bucket_bytes: int,
        start: Callable[[torch.Tensor], Any],
        wait: Callable[[list[Any]], None],
        overlap: bool,
    ) -> None:
        params = params[::-1]  # backward produces the last layers' gradients first
        dtypes = {p.dtype for p in params}
        if len(dtypes) != 1:
            raise ValueError(f"one flat gradient buffer needs one dtype, got {dtypes}")
        self.params, self._start, self._wait = params, start, wait
        total = sum(p.numel() for p in params)
        self.flat = torch.zeros(total, dtype=params[0].dtype, device=params[0].device)
        self.views: list[torch.Tensor] = []
        bounds: list[tuple[int, int]] = []  # closed buckets [begin, end) of flat
        bucket_of: list[int] = []
        begin = offset = 0
        for p in params:
            n = p.numel()
            if (
                bucket_bytes > 0
                and offset > begin
                and (offset + n - begin) * p.element_size() > bucket_bytes
            ):
                bounds.append((begin, offset))
                begin = offset
            bucket_of.append(len(bounds))
            # Same strides as the parameter (channels_last too): accumulation stays in place.
            self.views.append(self.flat.as_strided(p.shape, p.stride(), offset))
            offset += n
        bounds.append((begin, offset))
        self.buckets = [self.flat[b:e] for b, e in bounds]
        self.sizes = [bucket_of.count(i) for i in range(len(bounds))]  # parameters per bucket
        if overlap:
            for p, bucket in zip(params, bucket_of):
                p.register_post_accumulate_grad_hook(self._hook(bucket))
        self.attach()
        self._reset()

    def attach(self) -> None:
        """Point every .grad at its view (after anything replaced or dropped one)."""
        for p, view in zip(self.params, self.views):
            if p.grad is None:
                view.zero_()
            elif p.grad.data_ptr() != view.data_ptr():
                view.copy_(p.grad)
            p.grad = view

    def zero_(self) -> None:
        for p, view in zip(self.params, self.views):
            p.grad = view
        self.flat.zero_()
        self._reset()

    def _reset(self) -> None:
        self.missing = list(self.sizes)  # gradients not yet accumulated, per bucket
        self.started = 0  # buckets [0, started) have their allreduce in flight
        self.handles: list[Any] = []

    def _hook(self, bucket: int) -> Callable[[torch.Tensor], None]:
        def ready(param: torch.Tensor) -> None:
            if bucket < self.started:
                raise RuntimeError(
                    "a gradient was accumulated after its bucket's allreduce started: "
                    "one backward pass per optimizer step with dist.bucket_mb > 0"
                )
            self.missing[bucket] -= 1
            while self.started < len(self.buckets) and self.missing[self.started] <= 0:
                self.handles.append(self._start(self.buckets[self.started]))
                self.started += 1

        return ready

    def finish(self) -> None:
        """Start the buckets that are left (unused parameters keep zeros), wait for all."""
        self.attach()
        for bucket in self.buckets[self.started :]:
            self.handles.append(self._start(bucket))
        self._wait(self.handles)
        self._reset()


class FlatAllreduce(MPIControl):
    """Subclasses provide ``_start(flat) -> handle`` (an in-place sum over ranks, begun) and
    ``_wait(handles)``, and say whether gradients may start during backward (``overlap``)."""

    overlap = True

    def __init__(self, bucket_mb: float = 0.0) -> None:
        super().__init__()
        self.bucket_bytes = int(bucket_mb * 2**20)
        self.backward_scale = 1.0 / self.size
        self._nets: dict[int, FlatGrads] = {}

    def _start(self, flat: torch.Tensor) -> Any:
        raise NotImplementedError

    def _wait(self, handles: list[Any]) -> None:
        raise NotImplementedError

    def broadcast_module(self, module: nn.Module) -> None:
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

    def wrap_optimizer(
        self, opt: torch.optim.Optimizer, module: nn.Module, prefix: str
    ) -> torch.optim.Optimizer:
        if self.size > 1:
            params = [p for g in opt.param_groups for p in g["params"] if p.requires_grad]
            overlap = self.overlap and self.bucket_bytes > 0
            self._nets[id(opt)] = FlatGrads(
                params, self.bucket_bytes, self._start, self._wait, overlap
            )
        return opt

    def zero_grad(self, opt: torch.optim.Optimizer) -> None:
        net = self._nets.get(id(opt))
        if net is None:
            opt.zero_grad()
        else:
            net.zero_()

    def synchronize(self, opt: torch.optim.Optimizer) -> None:
        net = self._nets.get(id(opt))
        if net is None:  # one rank: the average is its gradient (None for unused parameters)
            for g in opt.param_groups:
                for p in g["params"]:
                    if p.requires_grad and p.grad is None:
                        p.grad = torch.zeros_like(p)
            return
        net.finish()


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
