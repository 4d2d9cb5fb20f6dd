"""Turn a hang into an error: abort the job when this rank stops making progress.

Open MPI and Slurm end a job when a rank *dies*; a rank that is alive but stuck (a frozen node,
a peer stopped in a collective, a deadlocked file system) would hold the allocation until the
walltime. A daemon thread watches the time since the last heartbeat and, past the limit, prints
what it knows and aborts every rank through the engine.
"""

from __future__ import annotations

import sys
import threading
import time

from hpcgan.comm.base import Comm
from hpcgan.errors import EXIT_FAILURE


class Watchdog:
    def __init__(self, comm: Comm, timeout_s: float) -> None:
        self.comm, self.timeout_s = comm, timeout_s
        self.where = "starting"
        self._last = time.monotonic()
        self._done = threading.Event()
        if timeout_s > 0:
            threading.Thread(target=self._watch, name="hpcgan-watchdog", daemon=True).start()

    def beat(self, where: str) -> None:
        """Progress: ``where`` names what this rank does next (for the message)."""
        self.where = where
        self._last = time.monotonic()

    def _watch(self) -> None:
        while not self._done.wait(min(5.0, self.timeout_s / 4)):
            idle = time.monotonic() - self._last
            if idle > self.timeout_s:
                print(
                    f"hpcgan: error: rank {self.comm.rank} made no progress for {idle:.0f} s "
                    f"(dist.timeout_s={self.timeout_s:g}) while {self.where}; a peer has "
                    "probably died or hung. Aborting the job.",
                    file=sys.stderr,
                    flush=True,
                )
                self.comm.abort(EXIT_FAILURE)

    def stop(self) -> None:
        self._done.set()
