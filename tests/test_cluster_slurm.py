"""jobs/slurm.sbatch with --nodes=2 on a real Slurm across two simulated nodes.

tools/cluster/slurm runs slurmctld and munged in node1 and one slurmd per node of the
``sim_cluster`` fixture (tests/simcluster.py); it needs root and Debian's slurm-wlm, munge and
libpmix-dev (tools/slurm/install.sh, which `make test` runs as root). Where it could not (not
root, or no apt-get) these tests skip and say why; as root with apt-get they fail
(tests/prereqs.py).

The template runs once through ``srun --mpi=pmix`` and once through ``mpirun``, 2 ranks per
node, both jobs at the same time (each node offers 4 CPUs). Slurm itself sends the walltime
warning (--signal=B:USR1@150): the ranks on both nodes stop at a step boundary, rank 0 writes a
checkpoint, the job requeues itself, and the rerun resumes and finishes. The time limit is cut
only once the trainer runs (a fixed --time would have to guess how long 8 ranks on a loaded
machine take to start; a warning before the trainer's signal handlers exist kills the ranks),
so that the warning comes at Slurm's next check, and raised again for the rerun. A wrapper
around the trainer records, from each rank's hpcgan Comm, its host, rank and local rank, so the
test sees 2 ranks on each node with local ranks 0 and 1 in both runs.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import clean_slurm_env
from prereqs import missing

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "jobs" / "slurm.sbatch"
SLURM_TOOL = ROOT / "tools" / "cluster" / "slurm"
VENV_BIN = Path(sys.executable).parent
LAUNCHERS = ("srun", "mpirun")
FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}

# Run as `python train_where.py ARGS` in place of `python -m hpcgan.train ARGS`: the trainer,
# but each rank first records what its Comm says into RUN_DIR.where/ (beside the run dir, which
# rank 0 alone writes), tagged "first" or "resume" by whether a checkpoint was there.
PROBE = r"""
import json, os, socket, sys
from pathlib import Path

from hpcgan import train

run_dir = Path([a for a in sys.argv[1:] if a.startswith("run.dir=")][-1][len("run.dir="):])
phase = "resume" if (run_dir / "checkpoints" / "latest").exists() else "first"
make_comm = train.make_comm


def recording(*args, **kwargs):
    comm = make_comm(*args, **kwargs)
    where = Path(f"{run_dir}.where")
    where.mkdir(parents=True, exist_ok=True)
    record = dict(host=socket.gethostname(), rank=comm.rank, size=comm.size,
                  local_rank=comm.local_rank, local_size=comm.local_size)
    (where / f"{phase}-{comm.rank}.json").write_text(json.dumps(record))
    return comm


train.make_comm = recording
sys.exit(train.main(sys.argv[1:]))
"""


@dataclass
class Slurm:
    """The cluster's Slurm and the environment that reaches it from the host."""

    env: dict[str, str]
    state: Path

    def run(self, *cmd: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            cmd, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def job(self, job_id: str) -> dict[str, str]:
        """A few fields of `scontrol show job`; none while slurmctld is too busy to answer
        (a loaded machine: the caller polls again, within its own time limit)."""
        try:
            out = self.run("scontrol", "show", "job", "-o", job_id).stdout
        except subprocess.TimeoutExpired:
            return {}
        fields = "JobState|Reason|Restarts|ExitCode|NodeList|RunTime|TimeLimit"
        return dict(re.findall(rf"\b({fields})=(\S+)", out))

    def logs(self) -> str:
        text = []
        for path in sorted((self.state / "log").glob("*.log")):
            text.append(f"--- {path.name}\n" + "\n".join(path.read_text().splitlines()[-15:]))
        return "\n".join(text)


@pytest.fixture(scope="module")
def slurm(sim_cluster) -> Iterator[Slurm]:
    check = subprocess.run(
        [str(ROOT / "tools" / "slurm" / "install.sh"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check.returncode != 0:
        missing(f"Slurm not available: {(check.stdout + check.stderr).strip()}")
    env = clean_slurm_env()
    # 4 CPUs per node: the srun and the mpirun job (2 ranks per node each) run side by side.
    tool_env = sim_cluster.env({"HPCGAN_SLURM_CPUS": "4"})
    try:
        up = subprocess.run(
            [str(SLURM_TOOL), "up"], env=tool_env, capture_output=True, text=True, timeout=150
        )
        assert up.returncode == 0, f"tools/cluster/slurm up failed:\n{up.stderr[-3000:]}"
        conf = re.search(r"SLURM_CONF=(\S+)", up.stdout)
        assert conf, up.stdout
        env.update(
            SLURM_CONF=conf.group(1),
            PATH=f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}",
            PYTHONPATH=str(ROOT),  # the trainer of this checkout
            OMPI_ALLOW_RUN_AS_ROOT="1",
            OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
            OMPI_MCA_mpi_yield_when_idle="1",
            HPCGAN_MPIRUN=str(VENV_BIN / "mpirun"),
        )
        yield Slurm(env, Path(conf.group(1)).parent)
    finally:
        down = subprocess.run(
            [str(SLURM_TOOL), "down"], env=tool_env, capture_output=True, text=True, timeout=150
        )
        assert down.returncode == 0, down.stderr


def _checkpoint_step(run: Path) -> int:
    latest = (run / "checkpoints" / "latest").read_text().strip()
    return int(re.fullmatch(r"step-(\d+)\.pt", latest).group(1))


@dataclass
class Job:
    launcher: str
    dir: Path
    id: str = ""
    shortened: bool = False
    stopped_at: int | None = None

    @property
    def run(self) -> Path:
        return self.dir / "run"

    @property
    def out(self) -> Path:
        return self.dir / f"hpcgan-{self.id}.out"

    def output(self) -> str:
        return self.out.read_text() if self.out.exists() else "(no output file)"


def _submit(slurm: Slurm, job: Job, data: Path) -> None:
    """sbatch the template from the job's folder: 2 nodes x 2 ranks, 10 minutes (cut by
    _wait), the walltime warning 150 s before the limit."""
    probe = job.dir / "train_where.py"
    probe.write_text(PROBE)
    python = job.dir / "python"  # called as `python -m hpcgan.train ARGS`
    python.write_text(f'#!/usr/bin/env bash\nshift 2\nexec {sys.executable} {probe} "$@"\n')
    python.chmod(0o755)
    # Long until the job has requeued itself; then cut to a few steps past the checkpoint.
    (job.dir / "run.yaml").write_text("train:\n  steps: 1000000\nrun:\n  checkpoint_every: 50\n")
    proc = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--nodes=2",
            "--ntasks-per-node=2",
            "--time=10",
            "--signal=B:USR1@150",
            str(TEMPLATE),
            f"data.path={data}",
            "model.width=8",
            "model.z_dim=16",
            "train.batch_size=32",
            "run.log_every=10",
            "run.sample_every=1000",
        ],
        cwd=job.dir,
        env={
            **slurm.env,
            "HPCGAN_PYTHON": str(python),
            "HPCGAN_CONFIG": str(job.dir / "run.yaml"),
            "HPCGAN_RUN_DIR": str(job.run),
            "HPCGAN_LAUNCHER": job.launcher,
        },
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    job.id = proc.stdout.strip().split(";")[0]


def _seconds(runtime: str) -> int:
    """Slurm's [D-]HH:MM:SS in seconds."""
    days, _, hms = runtime.rpartition("-")
    h, m, sec = (int(x) for x in hms.split(":"))
    return int(days or 0) * 86400 + h * 3600 + m * 60 + sec


def _step(slurm: Slurm, job: Job, state: dict[str, str]) -> None:
    """Move the job along: once every rank trains, cut the time limit so that Slurm's next
    check (every 30 s; it warns when the end is within --signal's 150 s plus 30 s) sends the
    warning, with at least 90 s left to checkpoint and exit (a minute on a loaded machine);
    once it has requeued itself (held back for cred_expire seconds), give the rerun 10
    minutes and 10 steps past the checkpoint."""
    log = job.run / "log.txt"
    if (
        not job.shortened
        and state.get("JobState") == "RUNNING"
        and state.get("Restarts") == "0"
        and log.exists()
        and "training steps" in log.read_text()  # after every rank's signal handlers
    ):
        minutes = math.ceil((_seconds(state["RunTime"]) + 120) / 60)  # 120..179 s left
        limit = f"TimeLimit={minutes}"
        done = slurm.run("scontrol", "update", f"jobid={job.id}", limit, timeout=90)
        assert done.returncode == 0, done.stderr
        job.shortened = True
    if job.stopped_at is None and state.get("Restarts") == "1":
        job.stopped_at = _checkpoint_step(job.run)
        (job.dir / "run.yaml").write_text(
            f"train:\n  steps: {job.stopped_at + 10}\nrun:\n  checkpoint_every: 50\n"
        )
        done = slurm.run("scontrol", "update", f"jobid={job.id}", "TimeLimit=10", timeout=90)
        assert done.returncode == 0, done.stderr


def _wait(slurm: Slurm, jobs: list[Job], timeout: float) -> dict[str, dict[str, str]]:
    """Poll until every job has finished, moving each along (_step)."""
    deadline = time.monotonic() + timeout
    info: dict[str, dict[str, str]] = {}
    while time.monotonic() < deadline:
        for job in jobs:
            info[job.launcher] = slurm.job(job.id) or info.get(job.launcher, {})
            _step(slurm, job, info[job.launcher])
        if all(i.get("JobState") in FINISHED for i in info.values()):
            return info
        time.sleep(0.5)
    outputs = "\n".join(f"--- {j.launcher} job {j.id}:\n{j.output()}" for j in jobs)
    pytest.fail(f"jobs not finished within {timeout:.0f} s: {info}\n{outputs}\n{slurm.logs()}")


def _where(job: Job, phase: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(f"{job.run}.where").glob(f"{phase}-*"))]


@pytest.mark.slow
def test_template_on_two_nodes_walltime_requeue(slurm: Slurm, sim_cluster, digits_h5: Path):
    """srun --mpi=pmix and mpirun, 2 nodes x 2 ranks: train, walltime signal, checkpoint,
    requeue, resume, finish; each rank on the node and with the local rank it should have."""
    jobs = [Job(launcher, sim_cluster.tmpdir(f"slurm-{launcher}")) for launcher in LAUNCHERS]
    for job in jobs:
        _submit(slurm, job, digits_h5)  # pytest's temp folder is shared with the nodes
    info = _wait(slurm, jobs, timeout=420)
    for job in jobs:
        _check(job, info[job.launcher])


def _check(job: Job, state: dict[str, str]) -> None:
    out = job.output()
    log_file = job.run / "log.txt"
    log = log_file.read_text() if log_file.exists() else "(no log.txt)"
    why = f"{job.launcher} job {job.id}: {state}\n--- output\n{out}\n--- log.txt\n{log}"
    assert job.shortened, f"the trainer never logged 'training steps'; {why}"
    assert state["JobState"] == "COMPLETED" and state["ExitCode"] == "0:0", why
    assert state["Restarts"] == "1" and state["NodeList"] == "node[1-2]", why
    assert "caught SIGUSR1" in out and "trainer exited with status 75" in out, why
    assert f"requeueing job {job.id}" in out and "run 2 on node[1-2]" in out, why
    assert "DUE TO TIME LIMIT" not in out, why
    assert "SIGUSR1" in log and f"resuming from {job.run / 'checkpoints'}" in log, why
    assert _checkpoint_step(job.run) == job.stopped_at + 10, why
    for phase in ("first", "resume"):
        ranks = _where(job, phase)
        where = f"{job.launcher} job {job.id}, {phase} run: {ranks}"
        assert sorted(r["rank"] for r in ranks) == [0, 1, 2, 3], where
        assert {r["size"] for r in ranks} == {4}, where
        assert Counter(r["host"] for r in ranks) == {"node1": 2, "node2": 2}, where
        for node in ("node1", "node2"):
            assert sorted(r["local_rank"] for r in ranks if r["host"] == node) == [0, 1], where
        assert {r["local_size"] for r in ranks} == {2}, where
