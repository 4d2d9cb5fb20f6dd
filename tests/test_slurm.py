"""jobs/slurm.sbatch under a real one-node Slurm (tools/slurm/): signal, checkpoint, requeue,
finish.

The cluster (munged, slurmctld, slurmd on localhost, state in a temporary folder) is started
once for this module. It needs root and Debian's slurm-wlm and munge, which `make test`
installs when it runs as root with apt-get (tools/slurm/install.sh); where it could not (not
root, or no apt-get) these tests skip and say why (pytest -rs shows it), elsewhere a Slurm
that is missing or does not come up fails them (tests/prereqs.py). Every wait is bounded, so
a broken job fails a test instead of hanging it.

Slurm holds a requeued job back for AuthInfo's cred_expire seconds (Reason=BeginTime; 120 s by
default, and releasing it sooner fails with "Job credential revoked"); the test cluster sets
10 s, so a requeue cycle takes about that long.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import clean_slurm_env
from prereqs import missing

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "jobs" / "slurm.sbatch"
TOOLS = ROOT / "tools" / "slurm"
VENV_BIN = Path(sys.executable).parent

# Stands in for `python -m hpcgan.train ... run.dir=DIR ...` to test the Slurm mechanics alone:
# waits for SIGUSR1, then rank 0 "checkpoints" (a file) and every rank exits 75; a run that
# finds the file "resumes" and exits 0.
STUB_TRAINER = r"""#!/usr/bin/env bash
# Under mpirun inside Slurm every rank inherits SLURM_PROCID=0: ask the MPI first.
rank=${OMPI_COMM_WORLD_RANK:-${PMIX_RANK:-${SLURM_PROCID:-0}}}
for a in "$@"; do case $a in run.dir=*) dir=${a#run.dir=} ;; esac; done
mkdir -p "$dir"
if [ -f "$dir/checkpoint" ]; then echo "stub rank $rank: resuming"; exit 0; fi
on_usr1() {
  touch "$dir/got-usr1.$rank"
  if [ "$rank" = 0 ]; then touch "$dir/checkpoint"; fi
  # As the trainer's barrier: no rank exits before rank 0's checkpoint is there (Open MPI 5's
  # mpirun ends every rank as soon as one exits non-zero).
  for _ in $(seq 200); do [ -f "$dir/checkpoint" ] && break; sleep 0.05; done
  echo "stub rank $rank: got USR1"
  exit 75
}
trap on_usr1 USR1
touch "$dir/started.$rank"
for _ in $(seq 1200); do sleep 0.05; done
echo "stub rank $rank: no signal came"
exit 1
"""


@dataclass
class Cluster:
    """A running test cluster and the environment that reaches it."""

    dir: Path
    env: dict[str, str]
    pmix: bool

    def run(self, *cmd: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            cmd, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def sbatch(self, cwd: Path, *args: str, **env: str) -> str:
        """Submit the template from ``cwd``; the job id."""
        proc = subprocess.run(
            ["sbatch", "--parsable", *args],
            cwd=cwd,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        """A few fields of `scontrol show job`."""
        out = self.run("scontrol", "show", "job", "-o", job_id).stdout
        return dict(re.findall(r"\b(JobState|Reason|Restarts|ExitCode)=(\S+)", out))

    def wait(
        self,
        job_id: str,
        done: Callable[[dict[str, str]], bool],
        timeout: float,
        what: str,
        output: Path,
    ) -> dict[str, str]:
        """Poll the job until ``done``; on failure show its ``output`` and the daemons' logs."""
        deadline = time.monotonic() + timeout
        info: dict[str, str] = {}
        while time.monotonic() < deadline:
            info = self.job(job_id)
            if done(info):
                return info
            time.sleep(0.3)
        text = output.read_text() if output.exists() else "(no output file)"
        pytest.fail(
            f"job {job_id}: {what} not within {timeout:.0f} s; last {info}\n"
            f"--- {output.name}\n{text}\n{self.logs()}"
        )

    def wait_files(
        self, job_id: str, paths: list[Path], timeout: float, what: str, output: Path
    ) -> None:
        """Wait until all ``paths`` exist; fail at once if the job ends first."""
        self.wait(
            job_id,
            lambda info: all(p.exists() for p in paths) or _finished(info),
            timeout,
            what,
            output,
        )
        if not all(p.exists() for p in paths):
            text = output.read_text() if output.exists() else "(no output file)"
            pytest.fail(f"job {job_id} ended before {what}; {output.name}:\n{text}")

    def logs(self) -> str:
        text = []
        for name in ("slurmctld.log", "slurmd.log"):
            path = self.dir / "log" / name
            if path.exists():
                text.append(f"--- {name}\n" + "\n".join(path.read_text().splitlines()[-15:]))
        return "\n".join(text)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if os.geteuid() != 0:
        missing("a test Slurm needs root (slurmd, SlurmUser=root); run make test as root")
    # `make test` installs Slurm (as root with apt-get); the tests only look for it.
    check = subprocess.run(
        [str(TOOLS / "install.sh"), "--check"], capture_output=True, text=True, timeout=60
    )
    if check.returncode != 0:
        missing(f"Slurm not available: {(check.stdout + check.stderr).strip()}")
    # A short absolute path: slurmd's per-step UNIX sockets live under it.
    state = Path(tempfile.mkdtemp(prefix="hpcgan-slurm-", dir="/tmp"))
    try:
        start = subprocess.run(
            [str(TOOLS / "start.sh"), str(state)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if start.returncode != 0:
            missing(f"the test Slurm did not come up: {start.stderr.strip()[-2000:]}")
        conf = re.search(r"SLURM_CONF=(\S+)", start.stdout)
        assert conf, start.stdout
        env = clean_slurm_env()
        env.update(
            SLURM_CONF=conf.group(1),
            PATH=f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}",
            PYTHONPATH=str(ROOT),  # the trainer of this checkout
            OMPI_ALLOW_RUN_AS_ROOT="1",
            OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
            OMPI_MCA_mpi_yield_when_idle="1",
            HPCGAN_MPIRUN=str(VENV_BIN / "mpirun"),
        )
        probe = subprocess.run(
            ["srun", "-n", "1", "--mpi=pmix", "true"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if probe.returncode != 0:
            print(f"srun --mpi=pmix does not work here, testing with mpirun: {probe.stderr}")
        yield Cluster(state, env, pmix=probe.returncode == 0)
    finally:
        subprocess.run(
            [str(TOOLS / "stop.sh"), str(state)], capture_output=True, timeout=120, check=False
        )
        shutil.rmtree(state, ignore_errors=True)


def _launcher(cluster: Cluster) -> str:
    return "srun" if cluster.pmix else "mpirun"


def _finished(info: dict[str, str]) -> bool:
    return info.get("JobState") in {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"}


def _checkpoint_step(run: Path) -> int:
    latest = (run / "checkpoints" / "latest").read_text().strip()
    return int(re.fullmatch(r"step-(\d+)\.pt", latest).group(1))


@pytest.mark.parametrize("launcher", ["srun", "mpirun"])
def test_template_requeues_itself(cluster: Cluster, tmp_path: Path, launcher: str) -> None:
    """Stub trainer: the batch shell's USR1 reaches both ranks, 75 requeues, the rerun ends 0."""
    if launcher == "srun" and not cluster.pmix:
        missing("srun --mpi=pmix does not work on this machine (see the fixture's output)")
    stub = tmp_path / "python"
    stub.write_text(STUB_TRAINER)
    stub.chmod(0o755)
    run = tmp_path / "run"
    job = cluster.sbatch(
        tmp_path,
        "--ntasks=2",
        str(TEMPLATE),
        "train.steps=5",
        HPCGAN_PYTHON=str(stub),
        HPCGAN_RUN_DIR=str(run),
        HPCGAN_LAUNCHER=launcher,
    )
    out_file = tmp_path / f"hpcgan-{job}.out"
    cluster.wait_files(job, [run / "started.0", run / "started.1"], 60, "both ranks ran", out_file)
    # What Slurm does at --signal=B:USR1@120, but now.
    assert cluster.run("scancel", "--signal=USR1", "--batch", job).returncode == 0
    info = cluster.wait(job, _finished, 90, "requeue and rerun", out_file)
    out = out_file.read_text()
    assert info == {"JobState": "COMPLETED", "Reason": "None", "Restarts": "1", "ExitCode": "0:0"}
    assert "caught SIGUSR1" in out
    assert (run / "got-usr1.0").exists() and (run / "got-usr1.1").exists(), out
    assert "got USR1" in out
    assert "trainer exited with status 75" in out
    assert f"requeueing job {job}" in out
    assert "run 2 on" in out  # --open-mode=append kept the first run's lines
    assert "stub rank 0: resuming" in out and "trainer exited with status 0" in out


def _train_args(data: Path) -> list[str]:
    """A fast run: a narrow model on the session's digits file."""
    return [
        f"data.path={data}",
        "model.width=8",
        "model.z_dim=16",
        "train.batch_size=32",
        "run.log_every=10",
        "run.sample_every=1000",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["srun", "mpirun"])
def test_trainer_checkpoints_requeues_and_finishes(
    cluster: Cluster, tmp_path: Path, digits_h5: Path, launcher: str
) -> None:
    """The real trainer on 2 ranks: USR1 -> checkpoint, exit 75 -> requeue -> resume -> done."""
    if launcher == "srun" and not cluster.pmix:
        missing("srun --mpi=pmix does not work on this machine (see the fixture's output)")
    run = tmp_path / "run"
    args = [*_train_args(digits_h5), "train.steps=120", "run.checkpoint_every=10"]
    job = cluster.sbatch(
        tmp_path,
        str(TEMPLATE),
        *args,
        HPCGAN_PYTHON=sys.executable,
        HPCGAN_RUN_DIR=str(run),
        HPCGAN_LAUNCHER=launcher,
    )
    out_file = tmp_path / f"hpcgan-{job}.out"
    cluster.wait_files(job, [run / "checkpoints" / "latest"], 120, "a checkpoint", out_file)
    assert cluster.run("scancel", "--signal=USR1", "--batch", job).returncode == 0
    info = cluster.wait(job, _finished, 240, "checkpoint, requeue and the finished rerun", out_file)
    out = out_file.read_text()
    log = (run / "log.txt").read_text()
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", (info, out)
    assert info["Restarts"] == "1", out
    assert "caught SIGUSR1" in out and "trainer exited with status 75" in out
    assert "SIGUSR1" in log
    assert re.search(r"resuming from \S+step-\d+\.pt at step [1-9]\d*", log), log
    assert _checkpoint_step(run) == 120


@pytest.mark.slow
def test_walltime_signal_from_slurm(cluster: Cluster, tmp_path: Path, digits_h5: Path) -> None:
    """Slurm's own --signal=B:USR1 before --time ends: checkpoint, requeue, resume, done.

    --time=2 with the warning 75 s before the end: Slurm checks every 30 s, so the signal
    comes 15 to 45 s into the job. The run is long (train.steps in a config file) until the
    job has requeued itself; then the file is cut to a few steps past the checkpoint, as a
    user extending or shortening a run would, so the second run ends quickly.
    """
    run = tmp_path / "run"
    config = tmp_path / "run.yaml"
    config.write_text("train:\n  steps: 1000000\nrun:\n  checkpoint_every: 50\n")
    job = cluster.sbatch(
        tmp_path,
        "--time=2",
        "--signal=B:USR1@75",
        str(TEMPLATE),
        *_train_args(digits_h5),
        HPCGAN_PYTHON=sys.executable,
        HPCGAN_CONFIG=str(config),
        HPCGAN_RUN_DIR=str(run),
        HPCGAN_LAUNCHER=_launcher(cluster),
    )
    out_file = tmp_path / f"hpcgan-{job}.out"
    requeued = cluster.wait(
        job,
        lambda i: i.get("Restarts") == "1" or _finished(i),
        150,
        "the walltime signal and the requeue",
        out_file,
    )
    out = out_file.read_text()
    assert requeued.get("Restarts") == "1", (requeued, out)
    # A slow restart on a loaded machine must not meet a second warning: give the rerun time.
    cluster.run("scontrol", "update", f"jobid={job}", "TimeLimit=10")
    stopped_at = _checkpoint_step(run)
    config.write_text(f"train:\n  steps: {stopped_at + 20}\nrun:\n  checkpoint_every: 50\n")
    info = cluster.wait(job, _finished, 150, "the resumed run", out_file)
    out = out_file.read_text()
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", (info, out)
    assert "caught SIGUSR1" in out and "requeueing" in out
    assert "DUE TO TIME LIMIT" not in out
    assert f"resuming from {run / 'checkpoints'}" in (run / "log.txt").read_text()
    assert _checkpoint_step(run) == stopped_at + 20
