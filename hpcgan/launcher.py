"""Whether this process was started by an MPI launcher (no MPI or torch import needed).

Variables that mpirun/mpiexec (Open MPI, MPICH, Intel MPI) and srun --mpi=pmi* set in every
rank. Without any of them we are one plain process and never initialise MPI.
"""

from __future__ import annotations

import os

LAUNCHER_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "PMI_RANK", "MPI_LOCALNRANKS")

# The rank, as mpirun/mpiexec (Open MPI, MPICH, Intel MPI) and srun --mpi=pmi* set it.
RANK_VARS = ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK")


def under_mpi_launcher() -> bool:
    return any(v in os.environ for v in LAUNCHER_VARS)


def launcher_rank() -> int:
    """This process's rank as the launcher set it (0 without one), without initialising MPI."""
    for var in RANK_VARS:
        if var in os.environ:
            return int(os.environ[var])
    return 0
