"""Multi-node behaviour on a simulated 2-node cluster, 2 ranks per node (tools/cluster,
docs/cluster.md): the cluster itself, per-node local ranks, and training with each engine
compared with the same run on one node. Root only; skipped with the reason where `make test`
could not provide the tools (not root, or no apt-get: tests/prereqs.py), failed otherwise."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import torch
from conftest import launch, tiny
from prereqs import missing
from simcluster import ROOT, SimCluster, unavailable

from hpcgan.config import ModelConfig
from hpcgan.models import build_models

pytestmark = pytest.mark.mpi

ENGINES = ("mpi", "torch", "horovod")
STEPS = 4
TIMEOUT = 300  # seconds per launch: ~15 s on 2 idle cores; a hang fails the test


def _links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    return {line.split(":")[1].strip().split("@")[0] for line in out.stdout.splitlines()}


def test_up_down_idempotent_and_leave_nothing(tmp_path):
    """A second cluster of its own (another name: bridge, veths, state): up twice, jobs and
    files on the nodes, down twice; then no namespace, link, mount, process or file remains."""
    reason = unavailable()
    if reason:
        missing(reason)
    name = f"t{os.getpid()}"[:8]
    cluster = SimCluster(shared=tmp_path, name=name)
    links_before = _links()
    marker = f"marker-{uuid.uuid4().hex}"
    spaces: dict[str, str] = {}
    stray = None
    try:
        cluster.up()
        again = cluster.tool("up", "--nodes", "2", "--share", str(tmp_path))
        assert again.returncode == 0 and "already running" in again.stderr, again.stderr
        status = cluster.tool("status")
        assert status.returncode == 0 and status.stdout.count(" up ") == 2, status.stdout
        assert {f"{name}0", f"{name}-n1", f"{name}-n2"} <= _links()
        spaces = {node: cluster.namespace(node) for node in cluster.nodes}
        assert len(set(spaces.values())) == 2

        made = cluster.run_on(
            "node2",
            ["sh", "-c", f"hostname; touch /tmp/{marker} /dev/shm/{marker} {tmp_path}/{marker}"],
        )
        assert made.stdout.split() == ["node2"], made.stderr
        # Node-local /tmp and /dev/shm; the shared folder (under the host's /tmp) is shared.
        assert (tmp_path / marker).exists()
        assert not Path(f"/tmp/{marker}").exists() and not Path(f"/dev/shm/{marker}").exists()
        assert cluster.node_path("node2", f"/tmp/{marker}").exists()
        assert not cluster.node_path("node1", f"/tmp/{marker}").exists()

        script = "import socket; print(socket.gethostname())"
        hosts = cluster.mpirun(["-c", script], module=None, timeout=60)
        assert hosts.returncode == 0, hosts.stderr
        assert sorted(hosts.stdout.split()) == ["node1", "node1", "node2", "node2"]
        stray = cluster.popen([str(ROOT / "tools/cluster/cluster"), "exec", "node2", "--",
                               "sleep", "600"])  # fmt: skip
        for _ in range(50):
            if cluster.pids_on("node2", "^sleep 600$"):
                break
            stray.poll()
            assert stray.returncode is None, stray.stdout.read()
            time.sleep(0.1)
        assert cluster.pids_on("node2", "^sleep 600$") == [stray.pid]  # nsenter execs
    finally:
        cluster.down()
    assert cluster.tool("down").returncode == 0  # idempotent
    assert stray is not None and stray.wait(timeout=10) == -9  # down killed what ran on the node
    assert not cluster.state.exists()
    assert _links() == links_before
    with open("/proc/mounts") as f:
        mounts = f.read()
    assert str(cluster.state) not in mounts
    left = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.readlink(entry / "ns" / "net") in spaces.values():
                left.append(entry.name)
        except OSError:
            pass
    assert not left, f"processes left in the nodes: {left}"
    assert not Path(f"/tmp/{marker}").exists() and not Path(f"/dev/shm/{marker}").exists()


RANKS = """
import json, os, socket, sys
from hpcgan.comm import make_comm
from hpcgan.config import DistConfig
out = {"host": socket.gethostname(), "ompi_local": os.environ["OMPI_COMM_WORLD_LOCAL_RANK"]}
for backend in sys.argv[1:]:
    comm = make_comm(DistConfig(backend=backend))
    out[backend] = [comm.rank, comm.size, comm.local_rank, comm.local_size]
    if backend == "horovod":
        hvd = comm.hvd
        out["hvd"] = [hvd.rank(), hvd.local_rank(), hvd.local_size(), hvd.cross_size()]
print(json.dumps(out), flush=True)
"""


def test_local_rank_and_size_per_node(sim_cluster):
    """Every engine sees 4 ranks, local rank 0/1 and local size 2 on each node."""
    done = sim_cluster.mpirun(["-c", RANKS, *ENGINES], module=None, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = sorted((json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")),
                  key=lambda r: r["mpi"][0])  # fmt: skip
    assert [r["host"] for r in rows] == ["node1", "node1", "node2", "node2"]
    for rank, r in enumerate(rows):
        local = rank % 2
        assert r["ompi_local"] == str(local)
        for engine in ENGINES:
            assert r[engine] == [rank, 4, local, 2], (engine, r)
        assert r["hvd"] == [rank, local, 2, 2], r  # Horovod's own view: 2 nodes of 2


def _params(checkpoint: Path) -> dict[str, torch.Tensor]:
    state = torch.load(checkpoint, weights_only=True)
    return {f"{net}.{k}": v for net in ("G", "D") for k, v in state[net].items()}


@pytest.mark.parametrize("engine", ENGINES)
def test_training_across_nodes_equals_one_node(sim_cluster, digits_h5, tmp_path, engine):
    """2 nodes x 2 ranks train like 4 ranks on one node: identical replicas, the same fp64
    parameters (bitwise), and rank 0 alone writes the run directory. The mpi engine's run
    directory lies in node1's private /tmp, so a write from node2 would fail or land in node2's
    /tmp; the others use the shared folder, as real runs do."""
    extra = ["model.norm=none", f"train.steps={STEPS}", f"run.checkpoint_every={STEPS}",
             "train.precision=fp64", f"dist.backend={engine}"]  # fmt: skip
    if engine == "mpi":
        run = Path(f"/tmp/hpcgan-test-run-{uuid.uuid4().hex}")
        seen = sim_cluster.node_path("node1", run)  # where the host reads node1's files
    else:
        run = seen = sim_cluster.tmpdir(f"run-{engine}")
    env = {"MASTER_ADDR": None, "MASTER_PORT": None}  # torch: rank 0 shares its address itself
    try:
        done = sim_cluster.mpirun(tiny(run, digits_h5, *extra), env=env, timeout=TIMEOUT)
        assert done.returncode == 0, done.stderr[-3000:]
        log = (seen / "log.txt").read_text()
        assert f"4 rank(s), engine {engine}" in log
        assert "replicas: parameters identical on all 4 rank(s)" in log
        # Rank 0 alone writes: each line once, exactly the files of a run, events from node1.
        assert log.count("training steps") == 1 and log.count("done:") == 1, log
        files = sorted(str(p.relative_to(seen)) for p in seen.rglob("*") if p.is_file())
        name = f"step-{STEPS:08d}"
        assert files[:6] == ["checkpoints/latest", f"checkpoints/{name}.pt", "config.yaml",
                             "log.txt", "metrics.jsonl", f"samples/{name}.png"], files  # fmt: skip
        assert len(files) == 7 and files[6].startswith("tensorboard/events.out.tfevents.")
        assert ".node1." in files[6]  # the writer's host name is part of the file name
        if engine == "mpi":
            assert not sim_cluster.node_path("node2", run).exists()
        cluster = _params(seen / "checkpoints" / f"{name}.pt")
    finally:
        if engine == "mpi":
            shutil.rmtree(seen, ignore_errors=True)

    one = tmp_path / "one-node"
    ref = launch(tiny(one, digits_h5, *extra), np=4, timeout=TIMEOUT)
    assert ref.returncode == 0, ref.stderr[-3000:]
    single = _params(one / "checkpoints" / f"{name}.pt")
    assert cluster.keys() == single.keys()
    assert all(v.dtype == torch.float64 for v in single.values())
    differ = [k for k in single if not torch.equal(cluster[k], single[k])]
    assert not differ, f"{engine}: cluster and one-node parameters differ in {differ}"
    # ... and training moved them away from their (seeded) start: not a vacuous comparison.
    torch.manual_seed(0)
    G, D = build_models(ModelConfig(width=8, z_dim=16, norm="none"), (1, 32, 32))
    init = {f"{n}.{k}": v for n, m in (("G", G), ("D", D)) for k, v in m.state_dict().items()}
    moved = [k for k in init if not torch.allclose(init[k].double(), single[k], atol=1e-6)]
    assert len(moved) > len(init) // 2, moved
