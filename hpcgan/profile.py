"""Where a step's time goes: named sections timed only when someone asks (hpcgan.bench).

Training runs with :class:`NoTimer`, whose sections cost one attribute lookup and a null
context; the benchmark passes a :class:`StepTimer`, which waits for the GPU at each boundary
so that asynchronous kernels are charged to the section that launched them.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator

import torch

SECTIONS = ("data", "forward", "backward", "grad_average", "optimizer")


class NoTimer:
    def section(self, name: str) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()


class StepTimer(NoTimer):
    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[None]:
        if self.cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        try:
            yield
        finally:
            if self.cuda:
                torch.cuda.synchronize()
            self.seconds[name] += time.perf_counter() - t

    def reset(self) -> None:
        self.seconds.clear()
