"""Horovod on the simulated 2-node cluster with Open MPI's core binding, which pins rank i of
both nodes to the same real core (tools/cluster, docs/cluster.md): training starts and ends
within a bounded time with nothing set by the user (hpcgan makes waiting ranks yield, and a
hang in hvd.init would end the job with the reason, hpcgan/comm/horovod.py). Root only;
skipped with the reason otherwise."""

from __future__ import annotations

import json

import pytest
from conftest import tiny

pytestmark = pytest.mark.mpi

# hpcgan.train in each rank, then what the rank ran on and what hpcgan set before MPI started.
TRAIN = """
import json, os, socket, sys
from hpcgan.train import main
code = main(sys.argv[1:])
print(json.dumps({"host": socket.gethostname(), "cores": sorted(os.sched_getaffinity(0)),
                  "yield": os.environ.get("OMPI_MCA_mpi_yield_when_idle")}), flush=True)
sys.exit(code)
"""


def test_horovod_trains_with_ranks_of_both_nodes_on_the_same_cores(sim_cluster, digits_h5):
    run = sim_cluster.tmpdir("run-horovod-bound")
    args = tiny(run, digits_h5, "train.steps=3", "dist.backend=horovod")
    done = sim_cluster.mpirun(
        ["-c", TRAIN, *args],
        module=None,
        env={"OMPI_MCA_mpi_yield_when_idle": None},  # the user set nothing
        mpirun_args=("--bind-to", "core"),
        timeout=300,  # ~140 s on 2 busy cores; a hang (or the 120 s hvd.init guard) fails here
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    ranks = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
    assert sorted(r["host"] for r in ranks) == ["node1", "node1", "node2", "node2"], done.stdout
    assert all(len(r["cores"]) == 1 and r["yield"] == "1" for r in ranks), ranks
    by_node = {
        h: sorted(r["cores"][0] for r in ranks if r["host"] == h) for h in ("node1", "node2")
    }
    assert by_node["node1"] == by_node["node2"], by_node  # each core holds a rank of each node
    log = (run / "log.txt").read_text()
    assert "4 rank(s), engine horovod" in log and "parameters identical on all 4 rank(s)" in log
