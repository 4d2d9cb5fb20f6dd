"""Exceptions that map to the exit codes of design.md section 6."""

from __future__ import annotations

import sys
import traceback
from typing import Any

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: resubmit to continue


class UserError(Exception):
    """Invalid input or configuration: reported as one line, exit code 2, nothing overwritten."""


class Preempted(Exception):
    """Training stopped on a signal or time limit after a checkpoint was written (exit 75)."""


class Diverged(Exception):
    """Non-finite gradients persisted after the one reload the divergence guard allows (exit 1)."""


def report_usage_error(error: Exception, comm: Any) -> int:
    """One line on stderr from rank 0 (the error was raised on every rank alike); exit 2."""
    if comm is None or comm.rank == 0:
        print(f"hpcgan: error: {error}", file=sys.stderr, flush=True)
    return EXIT_USAGE


def report_crash(comm: Any) -> int:
    """Call from an ``except`` block: print this rank's traceback, then take every other rank
    down (nobody waits on us in a collective); exit 1."""
    print(f"hpcgan: rank {0 if comm is None else comm.rank} failed:", file=sys.stderr)
    traceback.print_exc()
    sys.stderr.flush()
    if comm is not None and comm.size > 1:
        comm.abort(EXIT_FAILURE)
    return EXIT_FAILURE
