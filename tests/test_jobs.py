"""The SLURM and PBS job templates in jobs/, without any scheduler.

Static checks (bash syntax, directives, variables), then the templates' shell logic run for real
with the scheduler's commands (srun, mpirun, scontrol, qsub, qdel, qstat, mpiexec) replaced by
stub executables that record their calls: signal forwarding, requeue on exit 75, chaining.
The same template under a real one-node Slurm is tested in tests/test_slurm.py.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SLURM = ROOT / "jobs" / "slurm.sbatch"
PBS = ROOT / "jobs" / "pbs.pbs"
BASH = shutil.which("bash") or "/bin/bash"

# A launcher stand-in (srun, mpirun, mpiexec): records its arguments, then behaves as
# STUB_EXIT says: a number exits with it; "signal" waits for USR1 or TERM (as the trainer
# would), answers 75, and gives up with 1 after 30 s.
LAUNCHER_STUB = r"""#!/usr/bin/env bash
printf '%s %s\n' "$(basename "$0")" "$*" >> "$STUB_CALLS"
if [ "$STUB_EXIT" != signal ]; then exit "$STUB_EXIT"; fi
trap 'echo "$(basename "$0") got USR1" >> "$STUB_CALLS"; exit 75' USR1
trap 'echo "$(basename "$0") got TERM" >> "$STUB_CALLS"; exit 75' TERM
touch "$STUB_CALLS.ready"
for _ in $(seq 600); do sleep 0.05; done
exit 1
"""
# scontrol, qdel, qsub, qstat: record the call; qsub prints a job id, qstat a walltime.
RECORDER_STUB = r"""#!/usr/bin/env bash
printf '%s %s\n' "$(basename "$0")" "$*" >> "$STUB_CALLS"
case "$(basename "$0")" in
  qsub) echo 778.pbsserver ;;
  qstat) printf 'Job Id: %s\n    Resource_List.walltime = 01:00:00\n' "$2" ;;
esac
"""


# -- static checks --------------------------------------------------------------------------


@pytest.mark.parametrize("template", [SLURM, PBS], ids=["slurm", "pbs"])
def test_template_is_valid_bash(template: Path) -> None:
    """bash -n parses the whole template."""
    result = subprocess.run([BASH, "-n", str(template)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("template", [SLURM, PBS], ids=["slurm", "pbs"])
def test_template_sets_environment(template: Path) -> None:
    """Threads, HDF5 locking, the Python, the config and the run directory are all settable."""
    text = template.read_text()
    assert text.startswith("#!")
    assert "set -euo pipefail" in text
    assert re.search(r"^export OMP_NUM_THREADS=", text, re.M)
    assert re.search(r"^export HDF5_USE_FILE_LOCKING=FALSE$", text, re.M)
    for var in ("HPCGAN_PYTHON", "HPCGAN_CONFIG", "HPCGAN_RUN_DIR"):
        assert re.search(rf"^{var}=\$\{{{var}:-", text, re.M), var
    assert "-m hpcgan.train" in text
    assert "run.dir=$HPCGAN_RUN_DIR" in text


def _directives(template: Path, prefix: str) -> list[str]:
    """The scheduler directives the scheduler reads: the leading comment block's lines."""
    found = []
    for line in template.read_text().splitlines()[1:]:
        if line and not line.startswith("#"):
            break  # schedulers stop at the first command
        if line.startswith(prefix + " "):
            found.append(line[len(prefix) + 1 :].strip())
    return found


def test_slurm_directives() -> None:
    """Nodes, ranks per node, walltime, the B:USR1 warning, requeue and append mode."""
    d = _directives(SLURM, "#SBATCH")
    for option in ("--nodes=", "--ntasks-per-node=", "--cpus-per-task=", "--time=", "--output="):
        assert any(x.startswith(option) for x in d), option
    assert "--signal=B:USR1@120" in d
    assert "--requeue" in d
    assert "--open-mode=append" in d


def test_slurm_launch_lines() -> None:
    """srun with a selectable MPI plugin, mpirun as the alternative, requeue via scontrol."""
    text = SLURM.read_text()
    assert "HPCGAN_LAUNCHER=${HPCGAN_LAUNCHER:-srun}" in text
    assert "HPCGAN_SRUN_MPI=${HPCGAN_SRUN_MPI:-pmix}" in text
    assert 'srun --mpi="$HPCGAN_SRUN_MPI"' in text
    assert 'scontrol requeue "$SLURM_JOB_ID"' in text
    assert "trap 'on_signal USR1' USR1" in text


def test_pbs_directives() -> None:
    """select with mpiprocs, place=scatter, walltime, and chaining with afterany."""
    d = _directives(PBS, "#PBS")
    select = [x for x in d if x.startswith("-l select=")]
    assert select and "mpiprocs=" in select[0] and "ncpus=" in select[0]
    assert "-l place=scatter" in d
    assert any(x.startswith("-l walltime=") for x in d)
    text = PBS.read_text()
    assert "depend=afterany:" in text
    assert "mpiexec" in text
    assert "train.max_minutes=" in text


# -- the templates' logic with stub schedulers ------------------------------------------------


def _stubs(tmp_path: Path, launchers: tuple[str, ...], recorders: tuple[str, ...]) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in [(n, LAUNCHER_STUB) for n in launchers] + [
        (n, RECORDER_STUB) for n in recorders
    ]:
        path = bin_dir / name
        path.write_text(body)
        path.chmod(0o755)
    # Stands in for the Python; never run (the launcher stubs do not start their command), but
    # its folder is where the templates look for mpirun/mpiexec.
    (bin_dir / "python").write_text("#!/bin/sh\nexit 99\n")
    (bin_dir / "python").chmod(0o755)
    return bin_dir


def _env(tmp_path: Path, bin_dir: Path, stub_exit: str, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "PBS_", "HPCGAN_"))
    }
    env.update(
        PATH=f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}",
        STUB_CALLS=str(tmp_path / "calls.log"),
        STUB_EXIT=stub_exit,
        HPCGAN_PYTHON=str(bin_dir / "python"),
        HPCGAN_RUN_DIR=str(tmp_path / "run"),
    )
    env.update(extra)
    return env


def _slurm_env(tmp_path: Path, bin_dir: Path, stub_exit: str, **extra: str) -> dict[str, str]:
    return _env(
        tmp_path,
        bin_dir,
        stub_exit,
        SLURM_JOB_ID="4242",
        SLURM_JOB_NAME="hpcgan",
        SLURM_SUBMIT_DIR=str(tmp_path),
        SLURM_NTASKS="2",
        SLURM_CPUS_PER_TASK="1",
        SLURM_JOB_NODELIST="node1",
        **extra,
    )


def _calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def _run_and_signal(
    cmd: list[str], env: dict[str, str], tmp_path: Path, sig: signal.Signals | None
) -> subprocess.CompletedProcess[str]:
    """Run a template; once the launcher stub waits, send ``sig`` to the batch shell."""
    proc = subprocess.Popen(
        cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        if sig is not None:
            ready = tmp_path / "calls.log.ready"
            deadline = time.monotonic() + 20
            while not ready.exists():
                assert proc.poll() is None, proc.communicate()[0]
                assert time.monotonic() < deadline, "the launcher stub never started"
                time.sleep(0.02)
            proc.send_signal(sig)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


def test_slurm_usr1_is_forwarded_and_job_requeued(tmp_path: Path) -> None:
    """USR1 to the batch shell reaches srun; exit 75 then requeues the job."""
    bin_dir = _stubs(tmp_path, ("srun",), ("scontrol",))
    env = _slurm_env(tmp_path, bin_dir, "signal")
    cmd = [BASH, str(SLURM), "train.steps=7", "model.width=8"]
    result = _run_and_signal(cmd, env, tmp_path, signal.SIGUSR1)
    assert result.returncode == 0, result.stdout
    calls = _calls(tmp_path)
    launch = calls[0].split()
    assert launch[:2] == ["srun", "--mpi=pmix"], calls
    i = launch.index("-m")
    assert launch[i - 1 :] == [
        str(bin_dir / "python"),
        "-m",
        "hpcgan.train",
        f"run.dir={tmp_path / 'run'}",
        "train.steps=7",
        "model.width=8",
    ]
    assert calls[1:] == ["srun got USR1", "scontrol requeue 4242"]
    assert "caught SIGUSR1" in result.stdout
    assert "trainer exited with status 75" in result.stdout


def test_slurm_mpirun_launcher(tmp_path: Path) -> None:
    """HPCGAN_LAUNCHER=mpirun: the mpirun next to the Python, one rank per task, bound."""
    bin_dir = _stubs(tmp_path, ("mpirun",), ("scontrol",))
    env = _slurm_env(tmp_path, bin_dir, "signal", HPCGAN_LAUNCHER="mpirun")
    result = _run_and_signal([BASH, str(SLURM)], env, tmp_path, signal.SIGUSR1)
    assert result.returncode == 0, result.stdout
    calls = _calls(tmp_path)
    assert calls[0].startswith("mpirun -np 2 --map-by slot:PE=1 --bind-to core "), calls
    assert calls[1:] == ["mpirun got USR1", "scontrol requeue 4242"]


@pytest.mark.parametrize("code", [0, 1, 2])
def test_slurm_no_requeue_unless_75(tmp_path: Path, code: int) -> None:
    """A finished (0) or failed (1, 2) run ends the job with the trainer's status."""
    bin_dir = _stubs(tmp_path, ("srun",), ("scontrol",))
    env = _slurm_env(tmp_path, bin_dir, str(code))
    result = _run_and_signal([BASH, str(SLURM)], env, tmp_path, None)
    assert result.returncode == code, result.stdout
    assert [c for c in _calls(tmp_path) if c.startswith("scontrol")] == []


def test_slurm_term_is_forwarded_without_requeue(tmp_path: Path) -> None:
    """SIGTERM (scancel, preemption) reaches the trainer, but the job is not requeued."""
    bin_dir = _stubs(tmp_path, ("srun",), ("scontrol",))
    env = _slurm_env(tmp_path, bin_dir, "signal")
    result = _run_and_signal([BASH, str(SLURM)], env, tmp_path, signal.SIGTERM)
    assert result.returncode == 75, result.stdout
    assert _calls(tmp_path)[1:] == ["srun got TERM"]


def test_slurm_term_to_mpirun_becomes_usr1(tmp_path: Path) -> None:
    """Open MPI 5's mpirun kills its ranks on SIGTERM, so the template sends it SIGUSR1."""
    bin_dir = _stubs(tmp_path, ("mpirun",), ("scontrol",))
    env = _slurm_env(tmp_path, bin_dir, "signal", HPCGAN_LAUNCHER="mpirun")
    result = _run_and_signal([BASH, str(SLURM)], env, tmp_path, signal.SIGTERM)
    assert result.returncode == 75, result.stdout
    assert _calls(tmp_path)[1:] == ["mpirun got USR1"]
    assert "caught SIGTERM; forwarding SIGUSR1" in result.stdout


def test_slurm_requeue_limit(tmp_path: Path) -> None:
    """HPCGAN_MAX_RESTARTS stops the requeue loop."""
    bin_dir = _stubs(tmp_path, ("srun",), ("scontrol",))
    env = _slurm_env(tmp_path, bin_dir, "75", SLURM_RESTART_COUNT="3", HPCGAN_MAX_RESTARTS="3")
    result = _run_and_signal([BASH, str(SLURM)], env, tmp_path, None)
    assert result.returncode == 75, result.stdout
    assert "not requeueing" in result.stdout
    assert [c for c in _calls(tmp_path) if c.startswith("scontrol")] == []


def test_slurm_config_and_outside_slurm(tmp_path: Path) -> None:
    """HPCGAN_CONFIG becomes --config; outside a job the template refuses to run."""
    bin_dir = _stubs(tmp_path, ("srun",), ("scontrol",))
    env = _slurm_env(tmp_path, bin_dir, "0", HPCGAN_CONFIG="my.yaml")
    result = _run_and_signal([BASH, str(SLURM), "run.dir=elsewhere"], env, tmp_path, None)
    assert result.returncode == 0, result.stdout
    assert _calls(tmp_path)[0].endswith(
        f"-m hpcgan.train --config my.yaml run.dir={tmp_path / 'run'} run.dir=elsewhere"
    )
    del env["SLURM_JOB_ID"]
    result = _run_and_signal([BASH, str(SLURM)], env, tmp_path, None)
    assert result.returncode != 0
    assert "submit this file with sbatch" in result.stdout


def _pbs_env(tmp_path: Path, bin_dir: Path, stub_exit: str, **extra: str) -> dict[str, str]:
    nodefile = tmp_path / "nodefile"
    nodefile.write_text("n1\nn1\nn2\nn2\n")  # 2 nodes x mpiprocs=2
    return _env(
        tmp_path,
        bin_dir,
        stub_exit,
        PBS_JOBID="777.pbsserver",
        PBS_JOBNAME="hpcgan",
        PBS_NODEFILE=str(nodefile),
        PBS_O_WORKDIR=str(tmp_path),
        OMP_NUM_THREADS="4",
        HPCGAN_JOB_SCRIPT=str(PBS),
        HPCGAN_ARGS="train.steps=9 model.width=8",
        **extra,
    )


@pytest.mark.parametrize("code", [0, 1])
def test_pbs_chain_ends_when_done_or_failed(tmp_path: Path, code: int) -> None:
    """Successor queued with afterany at the start, deleted when the run ends or fails."""
    bin_dir = _stubs(tmp_path, ("mpiexec",), ("qsub", "qdel", "qstat"))
    env = _pbs_env(tmp_path, bin_dir, str(code))
    result = _run_and_signal([BASH, str(PBS)], env, tmp_path, None)
    assert result.returncode == code, result.stdout
    calls = _calls(tmp_path)
    qsub = next(c for c in calls if c.startswith("qsub "))
    assert "-W depend=afterany:777.pbsserver" in qsub
    assert f"HPCGAN_SEGMENT=2,HPCGAN_JOB_SCRIPT={PBS}" in qsub
    assert qsub.endswith(str(PBS))
    launch = next(c for c in calls if c.startswith("mpiexec "))
    assert launch.startswith(f"mpiexec -n 4 --hostfile {tmp_path / 'nodefile'} ")
    assert "--map-by ppr:2:node:PE=4 --bind-to core" in launch
    # walltime 60 min (from qstat) minus the default 5 min margin; HPCGAN_ARGS last
    assert launch.endswith(
        f"-m hpcgan.train run.dir={tmp_path / 'run'} train.max_minutes=55 "
        "train.steps=9 model.width=8"
    )
    assert calls[-1] == "qdel 778.pbsserver"


def test_pbs_chain_continues_after_75(tmp_path: Path) -> None:
    """Exit 75 (time budget used up) keeps the successor; SIGTERM reaches the trainer."""
    bin_dir = _stubs(tmp_path, ("mpiexec",), ("qsub", "qdel", "qstat"))
    env = _pbs_env(tmp_path, bin_dir, "signal", HPCGAN_WALLTIME_MINUTES="30")
    result = _run_and_signal([BASH, str(PBS)], env, tmp_path, signal.SIGTERM)
    assert result.returncode == 75, result.stdout
    calls = _calls(tmp_path)
    assert not any(c.startswith(("qdel", "qstat")) for c in calls), calls
    assert "train.max_minutes=25" in next(c for c in calls if c.startswith("mpiexec "))
    assert calls[-1] == "mpiexec got TERM"
    assert "778.pbsserver continues the run" in result.stdout


def test_pbs_last_segment_does_not_chain(tmp_path: Path) -> None:
    """HPCGAN_MAX_SEGMENTS bounds the chain; too short a walltime is an input error (2)."""
    bin_dir = _stubs(tmp_path, ("mpiexec",), ("qsub", "qdel", "qstat"))
    env = _pbs_env(tmp_path, bin_dir, "75", HPCGAN_SEGMENT="50")
    result = _run_and_signal([BASH, str(PBS)], env, tmp_path, None)
    assert result.returncode == 75, result.stdout
    assert not any(c.startswith("qsub") for c in _calls(tmp_path))
    env = _pbs_env(tmp_path, bin_dir, "0", HPCGAN_WALLTIME_MINUTES="4")
    result = _run_and_signal([BASH, str(PBS)], env, tmp_path, None)
    assert result.returncode == 2, result.stdout
    assert "HPCGAN_MARGIN_MINUTES" in result.stdout
