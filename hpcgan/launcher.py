"""Whether this process was started by an MPI launcher (no MPI or torch import needed).

Variables that mpirun/mpiexec (Open MPI, MPICH, Intel MPI) and srun --mpi=pmi* set in every
rank. Without any of them we are one plain process and never initialise MPI.
"""

from __future__ import annotations

import os

LAUNCHER_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "PMI_RANK", "MPI_LOCALNRANKS")


def under_mpi_launcher() -> bool:
    return any(v in os.environ for v in LAUNCHER_VARS)
