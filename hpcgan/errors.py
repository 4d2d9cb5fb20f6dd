"""Exceptions that map to the exit codes of design.md section 6."""

from __future__ import annotations

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
