"""Waiting ranks yield their core instead of busy-polling, when the node's cores are all taken.

Open MPI polls while a rank waits for a message, at full speed unless ``mpi_yield_when_idle``
is on, and turns that on by itself only when a node holds more ranks than it has slots. When
this node's ranks are at least as many as the cores a rank may use, every core is already busy
with training threads (hpcgan's default threads fill the node) and the polling of waiting
ranks, or of Horovod's background thread that shares its rank's cores, takes CPU time from
ranks that still compute: Horovod at 2 ranks on 2 cores ran at 1.2x one rank's images/s
polling and 1.9x yielding (docs/performance.md, "Waiting ranks yield (Open MPI)").

So hpcgan sets ``OMPI_MCA_mpi_yield_when_idle=1`` in its own environment before MPI starts
(Open MPI reads its parameters from the environment in MPI_Init, and mpi4py initialises MPI at
``from mpi4py import MPI``), unless the user chose: the variable is already set (to anything;
``mpirun --mca mpi_yield_when_idle 0`` arrives as that variable too) or the per-user parameter
file names the parameter. Other MPIs ignore the variable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

VAR = "OMPI_MCA_mpi_yield_when_idle"
PARAM = "mpi_yield_when_idle"

# Ranks on this node, as the launchers say it: Open MPI's mpirun, MPICH/Intel MPI (Hydra),
# PMIx (srun --mpi=pmix, prterun).
LOCAL_SIZE_VARS = ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "PMIX_LOCAL_SIZE")


def slurm_tasks_here(tasks_per_node: str, node_id: int) -> int | None:
    """This node's task count from srun's ``SLURM_STEP_TASKS_PER_NODE`` ("2(x3),1": two
    tasks on each of three nodes, then one), or None when it does not parse."""
    counts: list[int] = []
    for part in tasks_per_node.split(","):
        m = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if not m:
            return None
        counts += [int(m.group(1))] * int(m.group(2) or 1)
    if not counts:
        return None
    return counts[node_id] if 0 <= node_id < len(counts) else max(counts)


def ranks_on_node(env: Mapping[str, str]) -> int | None:
    """How many ranks of this job run on this node, from the launcher's variables (None when
    no launcher says)."""
    for var in LOCAL_SIZE_VARS:
        if env.get(var, "").strip().isdigit():
            return int(env[var])
    if "SLURM_STEP_TASKS_PER_NODE" in env:
        node = env.get("SLURM_NODEID", "0")
        return slurm_tasks_here(
            env["SLURM_STEP_TASKS_PER_NODE"], int(node) if node.isdigit() else 0
        )
    return None


def user_chose(env: Mapping[str, str], param_file: Path | None = None) -> bool:
    """The user set the parameter: in the environment (any value, even empty) or in Open MPI's
    per-user parameter file (which the environment variable would override)."""
    if VAR in env:
        return True
    if param_file is None:
        param_file = Path(env.get("HOME", "~")).expanduser() / ".openmpi" / "mca-params.conf"
    try:
        lines = param_file.read_text(errors="replace").splitlines()
    except OSError:
        return False
    return any(line.split("=")[0].strip() == PARAM for line in lines)


def should_yield(env: Mapping[str, str], usable_cores: int) -> bool:
    """Whether waiting ranks should yield: this node runs at least as many ranks as the cores
    this process may use (``os.sched_getaffinity``; under a core binding that is its own
    core(s)), and the user has not chosen."""
    ranks = ranks_on_node(env)
    return ranks is not None and ranks >= usable_cores and not user_chose(env)


def yield_when_idle() -> bool:
    """Apply :func:`should_yield` to this process before MPI starts; True when it set the
    variable. Called by every path that initialises MPI (hpcgan.comm.mpi, Horovod's import)."""
    if should_yield(os.environ, len(os.sched_getaffinity(0))):
        os.environ[VAR] = "1"
        return True
    return False
