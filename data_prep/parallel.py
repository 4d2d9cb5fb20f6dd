"""Ranks for data_prep: mpi4py under an MPI launcher, one plain process otherwise.

Errors follow one rule: every collective phase runs through `World.agree`, which gathers each
rank's error; if any rank failed, every rank raises the same SharedError (the lowest failing
rank's message), so all exit 2 with one line, printed once, and no rank waits on a peer that
gave up. Anything else (a bug, an interrupt) on one rank of several aborts the whole job.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from hpcgan.launcher import under_mpi_launcher

T = TypeVar("T")

# The rank, as mpirun/mpiexec (Open MPI, MPICH, Intel MPI) and srun --mpi=pmi* set it.
_RANK_VARS = ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK")

# Bad input or environment: reported as one line, exit status 2 (SchemaError is a ValueError).
USER_ERRORS = (ValueError, OSError)


class SharedError(ValueError):
    """An error that every rank raises together, with the first failing rank's message.

    Rank 0 reports it; `settle` (a barrier) then keeps the others from exiting first, because
    mpirun kills the whole job, rank 0 included, as soon as one rank exits non-zero.
    """

    def __init__(self, message: str, settle: Callable[[], None]) -> None:
        super().__init__(message)
        self.settle = settle


def launcher_rank() -> int:
    """This process's rank as the launcher set it (0 without one), without initialising MPI."""
    for var in _RANK_VARS:
        if var in os.environ:
            return int(os.environ[var])
    return 0


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


class World:
    """One plain process: collectives are identities."""

    rank = 0
    size = 1

    def bcast(self, obj: T) -> T:
        return obj

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's `obj` in rank order on rank 0, None elsewhere."""
        return [obj]

    def allgather(self, obj: Any) -> list[Any]:
        return [obj]

    def barrier(self) -> None:
        """Wait for every rank."""

    def abort(self, code: int) -> None:
        os._exit(code)

    def agree(self, action: Callable[[], T]) -> T:
        """Run `action` on every rank; raise SharedError everywhere if it failed anywhere."""
        try:
            value, error = action(), None
        except USER_ERRORS as err:
            value, error = None, one_line(err)
        errors = [e for e in self.allgather(error) if e is not None]
        if errors:
            raise SharedError(errors[0], self.barrier)
        return value


class MPIWorld(World):
    """The ranks of an MPI launch, on a private duplicate of COMM_WORLD."""

    def __init__(self) -> None:
        from mpi4py import MPI

        self._world = MPI.COMM_WORLD
        self._comm = self._world.Dup()
        self.rank = self._comm.Get_rank()
        self.size = self._comm.Get_size()

    def bcast(self, obj: T) -> T:
        return self._comm.bcast(obj, root=0)

    def gather(self, obj: Any) -> list[Any] | None:
        return self._comm.gather(obj, root=0)

    def allgather(self, obj: Any) -> list[Any]:
        return self._comm.allgather(obj)

    def barrier(self) -> None:
        self._comm.Barrier()

    def abort(self, code: int) -> None:
        self._world.Abort(code)


def connect() -> World:
    """MPI only when a launcher started us: the plain command never initialises it."""
    return MPIWorld() if under_mpi_launcher() else World()


@contextmanager
def abort_on_failure(world: World) -> Iterator[None]:
    """Agreed errors pass through; anything else on one rank of several ends every rank.

    An interrupt exits 130 and another failure 1 (with its traceback), as mpirun's peers would
    otherwise wait forever in the next collective call.
    """
    try:
        yield
    except SharedError:
        raise
    except BaseException as err:
        if world.size == 1:
            raise
        if isinstance(err, KeyboardInterrupt):
            print(f"data_prep: rank {world.rank} interrupted", file=sys.stderr)
            code = 130
        else:
            traceback.print_exc()
            code = 1
        sys.stderr.flush()
        world.abort(code)
