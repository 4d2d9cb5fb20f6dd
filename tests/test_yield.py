"""Waiting ranks yield their core when the node's cores are all taken (hpcgan.comm.polling):
the decision in one process, and Open MPI's own reading of the parameter under mpirun."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import MPIRUN, ROOT, mpi_env

from hpcgan.comm import polling
from hpcgan.comm.polling import VAR, ranks_on_node, should_yield, slurm_tasks_here, user_chose


@pytest.fixture(autouse=True)
def no_user_file(tmp_path, monkeypatch):
    """The decision must not depend on the tester's own ~/.openmpi/mca-params.conf."""
    monkeypatch.setenv("HOME", str(tmp_path))


def test_slurm_task_counts_per_node():
    assert slurm_tasks_here("2(x3),1", 0) == 2
    assert slurm_tasks_here("2(x3),1", 2) == 2
    assert slurm_tasks_here("2(x3),1", 3) == 1
    assert slurm_tasks_here("4", 0) == 4
    assert slurm_tasks_here("3,1", 7) == 3  # node id out of range: the largest count
    assert slurm_tasks_here("two", 0) is None


def test_ranks_on_node_from_each_launcher():
    assert ranks_on_node({}) is None
    assert ranks_on_node({"OMPI_COMM_WORLD_LOCAL_SIZE": "2", "PMIX_LOCAL_SIZE": "4"}) == 2
    assert ranks_on_node({"MPI_LOCALNRANKS": "3"}) == 3  # MPICH / Intel MPI (Hydra)
    assert ranks_on_node({"PMIX_LOCAL_SIZE": "4"}) == 4  # srun --mpi=pmix
    slurm = {"SLURM_STEP_TASKS_PER_NODE": "2(x2),1", "SLURM_NODEID": "2"}
    assert ranks_on_node(slurm) == 1


def test_yield_when_the_nodes_ranks_fill_the_usable_cores():
    two = {"OMPI_COMM_WORLD_LOCAL_SIZE": "2"}
    assert should_yield(two, 1)  # --bind-to core: the rank's threads share its one core
    assert should_yield(two, 2)  # --bind-to none on 2 cores: every core has a rank
    assert not should_yield(two, 8)  # free cores absorb the polling
    assert not should_yield({}, 1)  # no launcher: one plain process, no MPI


def test_the_users_choice_wins(tmp_path):
    two = {"OMPI_COMM_WORLD_LOCAL_SIZE": "2"}
    for value in ("0", "1", ""):
        assert not should_yield({**two, VAR: value}, 1)
    conf = tmp_path / ".openmpi" / "mca-params.conf"
    conf.parent.mkdir()
    conf.write_text("# tuning\nbtl_tcp_if_include = eth0\n")
    assert not user_chose(two, conf)
    conf.write_text("mpi_yield_when_idle = 0\n")
    assert user_chose(two, conf)
    assert not should_yield({**two, "HOME": str(tmp_path)}, 1)


def test_yield_when_idle_sets_the_variable_once(monkeypatch):
    monkeypatch.delenv(VAR, raising=False)
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "64")
    assert polling.yield_when_idle()
    assert polling.os.environ[VAR] == "1"
    assert not polling.yield_when_idle()  # now the variable is set: nothing to decide
    monkeypatch.setenv(VAR, "0")
    assert not polling.yield_when_idle()
    assert polling.os.environ[VAR] == "0"


# Run under mpirun with Open MPI's default binding (each rank on its own core): decides as
# hpcgan does, starts MPI through hpcgan's entry point, then reads the flag that Open MPI's
# progress loop consults (set once in MPI_Init from mpi_yield_when_idle). A variable set after
# MPI_Init, or not at all, reads False. (The MPI_T control variable is no proof: MPI_T_init
# reads the environment again, so it shows even a variable set too late.)
PROBE = """
import ctypes, json, os, sys
from hpcgan.comm import control, make_comm, polling
from hpcgan.config import DistConfig
expected = polling.should_yield(os.environ, len(os.sched_getaffinity(0)))
comm = control() if sys.argv[1] == "control" else make_comm(DistConfig(backend=sys.argv[1]))
maps = open("/proc/self/maps").read().split()
pal = next((word for word in maps if "/libopen-pal.so" in word), None)  # None: not Open MPI
try:
    flag = ctypes.c_bool.in_dll(ctypes.CDLL(pal), "opal_progress_yield_when_idle").value
except (TypeError, ValueError):
    flag = None
print(json.dumps({"rank": comm.rank, "expected": expected, "inside_mpi": flag}))
comm.close()
"""


def probe(entry: str, env_extra: dict[str, str]) -> list[dict]:
    env = mpi_env()
    env.pop(VAR)  # the Makefile and mpi_env set it for the suite: test the default
    env.update(env_extra)
    cmd = [str(MPIRUN), "-np", "2", sys.executable, "-c", PROBE, entry]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    assert sorted(x["rank"] for x in lines) == [0, 1], r.stdout
    if any(x["inside_mpi"] is None for x in lines):
        pytest.skip("not an Open MPI that exports opal_progress_yield_when_idle")
    return lines


@pytest.mark.parametrize("entry", ["control", "horovod"])
def test_open_mpi_takes_the_setting_when_unset(entry):
    if entry == "horovod":
        pytest.importorskip("horovod.torch")
    for rank in probe(entry, {}):
        assert rank["expected"] is True, rank  # 2 ranks, each bound to one core
        assert rank["inside_mpi"] is True, rank


def test_an_explicit_zero_is_respected():
    for rank in probe("control", {VAR: "0"}):
        assert rank == {**rank, "expected": False, "inside_mpi": False}
