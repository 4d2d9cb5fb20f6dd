"""One error hierarchy for every entry point, and the exit codes it maps to (docs/design.md,
section 6): 0 done, 2 bad input or configuration, 75 stopped by a signal (training: after a
checkpoint, or before the first step), 1 anything else, including another rank's death.

Each command (train, sample, evaluate, report, bench, and the data preparation tool) runs its
body through :func:`run_command`, so every one of them reports errors the same way.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

from hpcgan.stop_signals import StopSignal, deliver

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: resubmit to continue
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """Invalid input or configuration: reported as one line, exit code 2, nothing overwritten.

    Every kind of bad input (a config key, a dataset that breaks the schema, a checkpoint that
    does not fit) is a UserError or a subclass. ``agreed`` is set by :func:`hpcgan.comm.agree`
    when every rank raised it together; an error of one rank alone ends the others.
    """

    agreed = False


class Preempted(Exception):
    """Training stopped on a signal or time limit after a checkpoint was written, or on a
    signal before the first step with nothing new to save (exit 75)."""


class Diverged(Exception):
    """Non-finite gradients persisted after the one reload the divergence guard allows (exit 1)."""


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


class ArgumentParser(argparse.ArgumentParser):
    """Usage errors are UserErrors: one line and exit 2 like every other bad input."""

    def error(self, message: str) -> NoReturn:
        raise UserError(message)


class Command:
    """Runs one entry point's body and maps what it raises to an exit code.

    The body attaches its communicator (``command.comm = ...``) once it has one, so that an
    error is printed once (rank 0) and a failure on one rank ends the others: nobody waits on
    a peer that is gone.
    """

    def __init__(self, prog: str) -> None:
        self.prog = prog
        self.comm: Any = None

    @property
    def _rank(self) -> int:
        if self.comm is not None:
            return self.comm.rank
        from hpcgan.launcher import launcher_rank

        return launcher_rank()

    @property
    def _size(self) -> int:
        return 1 if self.comm is None else self.comm.size

    def run(self, body: Callable[[], int | None]) -> int:
        try:
            deliver()  # sample, evaluate, ...: a signal caught during start-up ends them here
            code = body() or EXIT_OK
            if self.comm is not None:
                self.comm.close()
            return code
        except Preempted:
            self.comm.close()
            return EXIT_PREEMPTED
        except StopSignal as e:  # only commands that have nothing to save raise it
            print(f"{self.prog}: stopped by {e} before finishing; run it again", file=sys.stderr)
            sys.stderr.flush()
            if self._size > 1:  # the others may be waiting for us in a collective
                self.comm.abort(EXIT_PREEMPTED)
            return EXIT_PREEMPTED
        except Diverged as e:  # decided alike on every rank (same averaged gradients)
            if self._rank == 0:
                print(f"{self.prog}: error: training diverged: {e}", file=sys.stderr, flush=True)
            return EXIT_FAILURE
        except UserError as e:
            return self._user_error(e)
        except KeyboardInterrupt:
            print(f"{self.prog}: interrupted", file=sys.stderr, flush=True)
            if self._size > 1:
                self.comm.abort(EXIT_INTERRUPTED)
            return EXIT_INTERRUPTED
        except Exception:
            return self._crash()

    def _user_error(self, error: UserError) -> int:
        if error.agreed or self._size == 1:
            if self._rank == 0:  # every rank has the same error: print it once
                print(f"{self.prog}: error: {one_line(error)}", file=sys.stderr, flush=True)
            if self._size > 1:  # mpirun ends the job when the first rank exits: let 0 print
                self.comm.barrier()
            return EXIT_USAGE
        print(f"{self.prog}: error: {one_line(error)}", file=sys.stderr, flush=True)
        self.comm.abort(EXIT_USAGE)  # the others may be waiting for us in a collective
        return EXIT_USAGE

    def _crash(self) -> int:
        """Print this rank's traceback, then take every other rank down; exit 1."""
        print(f"{self.prog}: rank {self._rank} failed:", file=sys.stderr)
        traceback.print_exc()
        sys.stderr.flush()
        if self._size > 1:
            self.comm.abort(EXIT_FAILURE)
        return EXIT_FAILURE


def run_command(prog: str, body: Callable[[Command], int | None]) -> int:
    """``body(command)`` under the exit-code mapping above."""
    command = Command(prog)
    return command.run(lambda: body(command))
