"""SIGUSR1 and SIGTERM, caught from the first lines of each command (docs/batch-jobs.md,
"Stopping, resuming, failures").

A scheduler may warn a job (Slurm's ``--signal``) in its first seconds, while the ranks still
import torch, h5py and mpi4py. Left to the default action the signal kills the rank (exit 138
or 143), and a job script that requeues on exit 75 drops the job. So every command calls
:func:`catch` before its heavy imports, and this module uses the standard library only.

Until the command is running (:func:`deliver`), a signal is only recorded. Then:
- training (``catch()``): it stays a flag; hpcgan.preempt turns it into a stop that every rank
  agrees on, before the first step (nothing new saved) or after a step (a checkpoint), exit 75;
- sample, evaluate, report, bench (``catch(interrupting=True)``): it raises :class:`StopSignal`,
  which unwinds (temporary files removed) to exit 75: these have nothing to save.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from hpcgan.launcher import launcher_rank

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)

# Test-only (tests/test_startup_signal.py): pause start-up at a named point so a test can
# signal it there without racing it. Points: "entry" (handlers installed, nothing heavy
# imported), "before_mpi" (heavy imports done), "before_first_step" (data opened, models built,
# a checkpoint restored).
PAUSE_AT_VAR = "HPCGAN_TEST_PAUSE_AT"
PAUSE_DIR_VAR = "HPCGAN_TEST_PAUSE_DIR"
PAUSE_LIMIT_S = 300

_received: str | None = None  # the name of the first stop signal this process got
_interrupting = False  # catch(interrupting=True): a delivered signal raises StopSignal
_delivering = False  # deliver() was called: from now on an interrupting signal raises


class StopSignal(BaseException):
    """A stop signal ended a command that has nothing to save (exit 75: run it again).

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` on the way (a
    fallback to an older checkpoint, say) mistakes it for a failure of the work."""


def _on_signal(signum: int, _frame: object) -> None:
    global _received
    if _received is not None:
        return  # a second copy (mpirun's forwarded one, say) changes nothing
    _received = signal.Signals(signum).name
    if _interrupting and _delivering:
        raise StopSignal(_received)


def catch(interrupting: bool = False) -> None:
    """From now on SIGUSR1 and SIGTERM are recorded, not fatal (idempotent). The handlers stay
    until the process exits, so a late forwarded copy cannot kill a rank that is stopping."""
    global _interrupting
    _interrupting = _interrupting or interrupting
    for s in STOP_SIGNALS:
        signal.signal(s, _on_signal)


def received() -> str | None:
    """The first stop signal's name (``SIGUSR1``), or None."""
    return _received


def deliver() -> None:
    """The command now runs: for an interrupting command, a signal recorded during start-up
    raises StopSignal here, and any later one where it lands. Nothing for training."""
    global _delivering
    _delivering = True
    if _interrupting and _received is not None:
        raise StopSignal(_received)


def pause_for_test(point: str) -> None:
    """Test-only: with HPCGAN_TEST_PAUSE_AT=``point``, write this process's id to
    HPCGAN_TEST_PAUSE_DIR/point.RANK and wait until this process got a stop signal or the
    folder holds ``go`` (at most PAUSE_LIMIT_S). Does nothing otherwise."""
    if os.environ.get(PAUSE_AT_VAR) != point:
        return
    folder = Path(os.environ[PAUSE_DIR_VAR])
    (folder / f"{point}.{launcher_rank()}").write_text(str(os.getpid()))
    deadline = time.monotonic() + PAUSE_LIMIT_S
    while _received is None and not (folder / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
