"""Stop cleanly before the scheduler kills us: SIGUSR1/SIGTERM or ``train.max_minutes``.

A signal only sets a flag (hpcgan.stop_signals, caught from the command's first line). The
ranks add up their flags (one tiny allreduce) at each step boundary and twice during start-up,
so all of them stop at the same point even if only one was signalled. After a step, rank 0
writes a checkpoint; before the first step there is nothing new to save. Every rank exits 75.
The handlers stay until the process exits, so a late second signal (a forwarded copy after the
agreed stop) cannot kill a rank that is shutting down. The same allreduce carries rank 0's
failed write to the run directory and any rank's failed read of its next batch (hpcgan.loop),
which outrank a signal: every rank then exits 2.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from hpcgan import stop_signals
from hpcgan.comm.base import Comm
from hpcgan.errors import Preempted

READ_FAILED = "a rank could not read its next batch"
WRITE_FAILED = "a write to the run directory failed"  # the reason that outranks the others


class StopRequest:
    def __init__(self, max_minutes: float) -> None:
        self.deadline = time.monotonic() + max_minutes * 60 if max_minutes > 0 else None
        stop_signals.catch()  # already done by python -m hpcgan.train; not by a library call

    @property
    def signal_name(self) -> str | None:
        return stop_signals.received()

    def seconds_left(self) -> float | None:
        """Time until train.max_minutes stops the run (None: no limit)."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def agreed(
        self,
        comm: Comm,
        clock: bool = True,
        read_failed: bool = False,
        write_failed: bool = False,
    ) -> str | None:
        """Collective: why every rank must stop now, or None to go on (``clock``: whether
        train.max_minutes counts). ``write_failed``: this rank could not write the run
        directory; ``read_failed``: this rank could not read its next batch (a damaged chunk).
        Either failure on any rank comes first (WRITE_FAILED, then READ_FAILED); the caller
        then agrees on the error itself."""
        timed_out = clock and self.deadline is not None and time.monotonic() >= self.deadline
        flags = [self.signal_name is not None, timed_out, read_failed, write_failed]
        signalled, out_of_time, unread, unwritten = comm.allreduce_sum(np.array(flags, np.float64))
        if unwritten:
            return WRITE_FAILED
        if unread:
            return READ_FAILED
        if signalled:
            return self.signal_name or "a signal to another rank"
        if out_of_time:
            return "train.max_minutes"
        return None

    def before_start(self, comm: Comm, say: Callable[[str], None]) -> None:
        """Collective, during start-up: if any rank was asked to stop, every rank raises
        Preempted (exit 75) now, having saved nothing; rank 0 says why through ``say``. Only
        signals count: train.max_minutes stops after a step, so every requeue makes progress."""
        reason = self.agreed(comm, clock=False)
        if reason:
            if comm.rank == 0:
                say(f"stopping before the first step ({reason}): nothing new saved; resubmit")
            raise Preempted(reason)
