"""Communication engines behind one interface (:class:`hpcgan.comm.base.Comm`).

Only this package imports mpi4py or horovod; models, losses and data see a ``Comm`` object.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

from hpcgan.comm.base import Comm, SingleProcess
from hpcgan.comm.polling import yield_when_idle
from hpcgan.config import DistConfig
from hpcgan.errors import UserError, one_line
from hpcgan.launcher import under_mpi_launcher

T = TypeVar("T")

HOROVOD_INIT_LIMIT_S = 120.0  # the longest hvd.init may take before the job ends with why


def agree(comm: Comm, fn: Callable[[], T]) -> T:
    """Run ``fn`` on every rank; a UserError on any rank is raised on all (the lowest failing
    rank's message, marked ``agreed``), so every rank exits 2 together and rank 0 says why."""
    try:
        result, error = fn(), None
    except UserError as e:
        result, error = None, one_line(e)
    errors = [e for e in comm.allgather_object(error) if e]
    if errors:
        shared = UserError(errors[0])
        shared.agreed = True
        raise shared
    return result


def control() -> Comm:
    """The control plane alone (ranks, objects, small sums; no gradient engine): for the
    commands that do not train (sample, evaluate, report, data preparation). MPI is initialised only
    under an MPI launcher."""
    if not under_mpi_launcher():
        return SingleProcess()
    from hpcgan.comm.mpi import MPIControl

    return MPIControl()


def _horovod_available(cuda: bool) -> bool:
    """Horovod is installed and, for GPU training, built with GPU operations (a CPU-only
    build fails at its first collective on a CUDA tensor)."""
    yield_when_idle()  # importing Horovod does not start MPI (0.28); set it first all the same
    try:
        import horovod.torch as hvd
    except ImportError:
        return False
    return not cuda or bool(hvd.nccl_built() or hvd.cuda_built() or hvd.rocm_built())


def make_comm(dist: DistConfig, cuda: bool = False) -> Comm:
    """The engine named by ``dist.backend``. ``auto``, under an MPI launcher: on GPUs Horovod
    (the torch engine where Horovod is not installed), on CPUs the mpi engine (the fastest
    measured there, docs/performance.md); without a launcher one plain process. ``cuda``:
    training will run on GPUs. A Horovod built without GPU operations counts as absent there."""
    backend = dist.backend
    if backend == "auto":
        if not under_mpi_launcher():
            backend = "none"
        elif not cuda:
            backend = "mpi"
        else:
            backend = "horovod" if _horovod_available(cuda) else "torch"
    if dist.compression != "none" and backend not in ("horovod", "none"):
        raise UserError(
            f"dist.compression={dist.compression} needs dist.backend=horovod (got {backend})"
        )
    if backend == "none":
        comm = control()
        if comm.size > 1:
            raise UserError(f"dist.backend=none cannot train with {comm.size} ranks")
    elif backend == "horovod":
        if not _horovod_available(cuda):
            gpu = " with GPU operations (HOROVOD_GPU_OPERATIONS=NCCL)" if cuda else ""
            raise UserError(
                f"dist.backend=horovod: Horovod is not installed{gpu}; use dist.backend=torch"
            )
        from hpcgan.comm.horovod import HorovodComm

        # hvd.init takes seconds once MPI is up: bound it well below dist.timeout_s.
        limit = min(dist.timeout_s, HOROVOD_INIT_LIMIT_S)
        comm = HorovodComm(dist.compression, init_timeout_s=limit)
    elif backend == "torch":
        from hpcgan.comm.torch_engine import TorchDistComm

        comm = TorchDistComm(dist.timeout_s, dist.bucket_mb, cuda)
    else:
        from hpcgan.comm.mpi_engine import MPIAllreduceComm

        comm = MPIAllreduceComm(dist.bucket_mb, cuda)
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
