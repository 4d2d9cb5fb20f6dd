"""Stop cleanly before the scheduler kills us: SIGUSR1/SIGTERM or ``train.max_minutes``.

A signal only sets a flag. At each step boundary the ranks add up their flags (one tiny
allreduce), so all of them stop after the same step even if only one was signalled; rank 0 then
writes a checkpoint and every rank exits 75. The handlers stay until the process exits, so a late
second signal (a forwarded copy after the agreed stop) cannot kill a rank that is shutting down.
The same allreduce carries rank 0's failed write to the run directory (hpcgan.loop), which
outranks a signal: every rank then exits 2.
"""

from __future__ import annotations

import signal
import time

import numpy as np

from hpcgan.comm.base import Comm

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)
WRITE_FAILED = "a write to the run directory failed"  # the reason that outranks the others


class StopRequest:
    def __init__(self, max_minutes: float) -> None:
        self.signal_name: str | None = None
        self.deadline = time.monotonic() + max_minutes * 60 if max_minutes > 0 else None
        for s in STOP_SIGNALS:
            signal.signal(s, self._on_signal)

    def _on_signal(self, signum: int, _frame) -> None:
        self.signal_name = signal.Signals(signum).name

    def seconds_left(self) -> float | None:
        """Time until train.max_minutes stops the run (None: no limit)."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def agreed(self, comm: Comm, write_failed: bool = False) -> str | None:
        """Collective: why every rank must stop now, or None to go on. ``write_failed``: this
        rank could not write the run directory (hpcgan.loop), shared in the same allreduce."""
        timed_out = self.deadline is not None and time.monotonic() >= self.deadline
        flags = [self.signal_name is not None, timed_out, write_failed]
        signalled, out_of_time, failed = comm.allreduce_sum(np.array(flags, dtype=np.float64))
        if failed:
            return WRITE_FAILED
        if signalled:
            return self.signal_name or "a signal to another rank"
        if out_of_time:
            return "train.max_minutes"
        return None
