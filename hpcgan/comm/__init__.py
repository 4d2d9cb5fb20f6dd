"""Communication engines behind one interface (:class:`hpcgan.comm.base.Comm`).

Only this package imports mpi4py or horovod; models, losses and data see a ``Comm`` object.
"""

from __future__ import annotations

import os

from hpcgan.comm.base import Comm, SingleProcess
from hpcgan.errors import UserError
from hpcgan.launcher import under_mpi_launcher


def _horovod_available() -> bool:
    try:
        import horovod.torch  # noqa: F401
    except ImportError:
        return False
    return True


def make_comm(backend: str, timeout_s: float = 900.0, compression: str = "none") -> Comm:
    """The engine named by ``dist.backend``; ``auto`` is Horovod under an MPI launcher (the
    torch engine where Horovod is not installed), else one plain process. ``compression``
    (dist.compression) is Horovod's."""
    if backend == "auto":
        if not under_mpi_launcher():
            backend = "none"
        else:
            backend = "horovod" if _horovod_available() else "torch"
    if compression != "none" and backend not in ("horovod", "none"):
        raise UserError(
            f"dist.compression={compression} needs dist.backend=horovod (got {backend})"
        )
    if backend == "none":
        comm: Comm = SingleProcess()
        if under_mpi_launcher():
            from hpcgan.comm.mpi import MPIControl

            comm = MPIControl()
            if comm.size > 1:
                raise UserError(f"dist.backend=none cannot train with {comm.size} ranks")
    elif backend == "horovod":
        from hpcgan.comm.horovod import HorovodComm

        comm = HorovodComm(compression)
    elif backend == "torch":
        from hpcgan.comm.torch_engine import TorchDistComm

        comm = TorchDistComm(timeout_s)
    else:
        from hpcgan.comm.mpi_engine import MPIAllreduceComm

        comm = MPIAllreduceComm()
    _check_srun_saw_mpi(comm)
    return comm


def _check_srun_saw_mpi(comm: Comm) -> None:
    """srun without a PMI plugin starts N independent one-rank jobs: refuse to train that way."""
    tasks = int(os.environ.get("SLURM_STEP_NUM_TASKS", "1") or 1)
    if "SLURM_STEP_ID" in os.environ and tasks > 1 and comm.size == 1:
        raise UserError(
            f"srun started {tasks} tasks but MPI sees 1 rank; launch with "
            "srun --mpi=pmix (or pmi2) or with mpirun inside the allocation"
        )
