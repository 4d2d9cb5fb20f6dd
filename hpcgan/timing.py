"""Timing hpcgan's step where it spends its time: sections of the step, the background read,
and one step's gradient averaging through the engine next to a raw MPI_Allreduce of the same
messages (for hpcgan.bench)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from hpcgan.comm.base import Comm
from hpcgan.comm.flat import raw_allreduce
from hpcgan.config import Config
from hpcgan.data.reader import Prefetcher
from hpcgan.profile import SECTIONS, StepTimer
from hpcgan.session import Pieces


def evict(path: str) -> None:
    """Drop the file's pages from this node's page cache: the next reads come from the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # dirty pages cannot be dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


class ReadClock:
    """Wraps a reader's ``read`` to add up the time the background thread spends reading: the
    headroom against the step that hides it."""

    def __init__(self, read: Callable) -> None:
        self._read, self.seconds = read, 0.0

    def __call__(self, global_batch: int):
        t = time.perf_counter()
        try:
            return self._read(global_batch)
        finally:
            self.seconds += time.perf_counter() - t


class TimedSteps:
    """hpcgan's steps, timed: ``timer`` is the StepTimer the trainer was built with (its
    sections), the data wait is timed around the prefetcher itself, the reads inside it."""

    def __init__(self, cfg: Config, pieces: Pieces, timer: StepTimer) -> None:
        self.trainer, self.device = pieces.trainer, pieces.device
        self.d_steps = cfg.train.d_steps
        self.timer = timer
        self.reads = ReadClock(pieces.reader.read)
        self.feed = Prefetcher(pieces.reader, first_batch=0, read=self.reads)  # its thread calls it
        self.step_s: list[float] = []
        self._next = 0

    def steps(self, n: int) -> None:
        for _ in range(n):
            t = time.perf_counter()
            with self.timer.section("data"):  # what the background read did not hide
                batches = [self.feed.next() for _ in range(self.d_steps)]
            self.trainer.step(self._next, batches)
            if self.device.type == "cuda":
                torch.cuda.synchronize()  # the step's last kernels (EMA) count to this step
            self.step_s.append(time.perf_counter() - t)
            self._next += 1

    def reset(self) -> None:
        self.timer.reset()
        self.reads.seconds = 0.0
        self.step_s.clear()

    def record(self) -> dict:
        """This rank's means per step, in seconds."""
        n = len(self.step_s)
        sections = {k: self.timer.seconds.get(k, 0.0) / n for k in SECTIONS}
        step = sum(self.step_s) / n
        sections["other"] = max(step - sum(sections.values()), 0.0)
        return {
            "step_s": step,
            "median_step_s": float(np.median(self.step_s)),
            "read_s": self.reads.seconds / n,  # on the background thread, mostly hidden
            **sections,
        }

    def close(self) -> None:
        self.feed.close()


def grad_messages(pieces: Pieces, d_steps: int, fp16_wire: bool = False) -> list[int]:
    """Bytes of each gradient allreduce in one step: D's flat buffer per D update, then G's.
    ``fp16_wire``: Horovod's fp16 compression sends 2 bytes per gradient element."""

    def nbytes(m: nn.Module) -> int:
        params = [p for p in m.parameters() if p.requires_grad]
        return sum(p.numel() * (2 if fp16_wire else p.element_size()) for p in params)

    trainer = pieces.trainer
    return [nbytes(trainer.D)] * d_steps + [nbytes(trainer.G)]


def stats(values: list[float]) -> dict[str, float]:
    """Mean, max and min over ranks."""
    return {"mean": float(np.mean(values)), "max": max(values), "min": min(values)}


def compare_allreduce(
    comm: Comm, pieces: Pieces, messages: list[int], repeats: int
) -> dict[str, float] | None:
    """Medians over ``repeats`` of one step's gradient averaging through the engine alone
    (``synchronize`` of D's optimizer per D update, then G's) and of raw MPI_Allreduce calls of
    the same sizes, alternating, each after a barrier: costs without waiting for slow ranks.
    None for one rank, where there is nothing to average."""
    raw = raw_allreduce(comm, messages) if comm.size > 1 else None
    if raw is None:
        return None
    trainer, cuda = pieces.trainer, pieces.device.type == "cuda"
    opts = [trainer.opt_D] * (len(messages) - 1) + [trainer.opt_G]

    def engine() -> None:
        for opt in opts:
            comm.synchronize(opt)  # averages the last step's gradients once more
        if cuda:
            torch.cuda.synchronize()

    seconds: dict[str, list[float]] = {"raw_s": [], "engine_s": []}
    for i in range(repeats + 1):  # the first round warms up
        for name, fn in (("raw_s", raw), ("engine_s", engine)):
            comm.barrier()
            t = time.perf_counter()
            fn()
            if i:
                seconds[name].append(time.perf_counter() - t)
    return {k: float(np.median(v)) for k, v in seconds.items()}


def overlaps(cfg: Config, comm: Comm) -> bool:
    """Whether gradients are reduced during backward (then the in-step grad average is only
    the wait left after backward): Horovod always, the flat engines with buckets."""
    return comm.name == "horovod" or (
        comm.size > 1 and cfg.dist.bucket_mb > 0 and getattr(comm, "overlap", False)
    )
