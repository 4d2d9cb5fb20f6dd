"""Cluster resilience: exact resume, preemption at 2 ranks, rank failure, divergence."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import (
    MPIRUN,
    RESUME_STATE,
    ROOT,
    assert_bitwise_equal,
    checkpoint,
    launch,
    mpi_env,
    tiny,
)

pytestmark = [pytest.mark.slow, pytest.mark.mpi]

SCRIPTS = Path(__file__).parent / "mpi_scripts"


def _popen_mpirun(args: list[str], np_: int) -> subprocess.Popen:
    cmd = [
        str(MPIRUN),
        "--oversubscribe",
        "--bind-to",
        "none",
        "-np",
        str(np_),
        sys.executable,
        "-m",
        "hpcgan.train",
        *args,
    ]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=mpi_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _rank_pids(run: Path, launcher: subprocess.Popen) -> list[int]:
    """The ranks' process ids (the launcher's own excluded), oldest (rank 0) first."""
    found = subprocess.run(["pgrep", "-f", f"run.dir={run}"], capture_output=True, text=True)
    return sorted(int(x) for x in found.stdout.split() if int(x) != launcher.pid)


def _wait_for(proc: subprocess.Popen, text: str, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    for line in proc.stdout:
        if text in line:
            return
        if time.monotonic() > deadline:
            break
    proc.kill()
    pytest.fail(f"never saw {text!r}")


@pytest.mark.parametrize("np_,precision", [(1, "fp32"), (2, "fp32"), (2, "fp16")])
def test_killed_and_resumed_run_is_bitwise_the_uninterrupted_run(
    tmp_path, digits_h5, np_, precision
):
    """SIGUSR1 mid-run, then a resume: the final checkpoint is the uninterrupted run's, every
    entry of it (fp16: the loss scalers too)."""
    steps = 16
    common = ("train.steps=16", "run.checkpoint_every=8", "run.log_every=1", "run.keep=5",
              f"train.precision={precision}")  # fmt: skip
    straight = tmp_path / "straight"
    proc = launch(tiny(straight, digits_h5, *common), np=np_)
    assert proc.returncode == 0, proc.stderr[-2000:]

    interrupted = tmp_path / "interrupted"
    p = _popen_mpirun(tiny(interrupted, digits_h5, *common), np_)
    _wait_for(p, "step 5/")
    p.send_signal(signal.SIGUSR1)  # mpirun forwards it to every rank
    assert p.wait(timeout=60) == 75
    stopped_at = checkpoint(
        interrupted, int((interrupted / "checkpoints" / "latest").read_text().strip()[5:13])
    )["step"]
    assert 5 <= stopped_at < steps
    proc = launch(tiny(interrupted, digits_h5, *common), np=np_)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"at step {stopped_at}" in proc.stdout
    scalers = ("scaler_G", "scaler_D") if precision == "fp16" else ()
    expect = (*RESUME_STATE, "G_ema", *scalers)
    assert_bitwise_equal(checkpoint(straight, steps), checkpoint(interrupted, steps), expect)


def test_corrupt_newest_checkpoint_falls_back_to_previous(tmp_path, digits_h5):
    run = tmp_path / "run"
    args = tiny(run, digits_h5, "train.steps=8", "run.checkpoint_every=4")
    assert launch(args).returncode == 0
    newest = run / "checkpoints" / "step-00000008.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated, as by a crash mid-copy
    proc = launch(tiny(run, digits_h5, "train.steps=10", "run.checkpoint_every=4"))
    assert proc.returncode == 0, proc.stderr
    assert "step-00000008.pt is unreadable" in proc.stdout
    assert "at step 4" in proc.stdout


@pytest.mark.parametrize(
    "sig,rc,latest",
    [(signal.SIGTERM, 75, 3), (signal.SIGKILL, -signal.SIGKILL, 2)],
    ids=["SIGTERM", "SIGKILL"],
)
def test_sigterm_during_checkpoint_write_keeps_previous_loadable(
    tmp_path, digits_h5, sig, rc, latest
):
    """The signal lands while step 3's checkpoint is half-written (a writer that pauses there,
    tests/mpi_scripts/slow_checkpoint.py). Meanwhile ``latest`` names step 2, which loads.
    SIGTERM: the write completes, the run stops after it (exit 75) and ``latest`` names step
    3. SIGKILL (the scheduler's kill after its grace time; no handler runs): no step-3 file,
    ``latest`` still names step 2. Either way the previous checkpoint loads and the run
    resumes from the step ``latest`` names."""
    run = tmp_path / "run"
    ckpts = run / "checkpoints"
    args = tiny(run, digits_h5, "train.steps=100000", "run.checkpoint_every=1", "run.log_every=1")
    cmd = [sys.executable, str(SCRIPTS / "slow_checkpoint.py"), "3", "10", *args]
    p = subprocess.Popen(
        cmd, cwd=ROOT, env=mpi_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _wait_for(p, "HALF-WRITTEN step-00000003.pt")
    assert (ckpts / "latest").read_text().strip() == "step-00000002.pt"
    assert checkpoint(run, 2)["step"] == 2  # loadable while the next one is being written
    assert not (ckpts / "step-00000003.pt").exists()
    assert len(list(ckpts.glob(".step-00000003.pt.tmp-*"))) == 1  # the write under way
    p.send_signal(sig)
    assert p.wait(timeout=60) == rc, p.stderr.read()[-2000:]
    assert (ckpts / "latest").read_text().strip() == f"step-{latest:08d}.pt"
    assert checkpoint(run, 2)["step"] == 2
    assert checkpoint(run, latest)["step"] == latest
    if sig == signal.SIGTERM:
        assert "stopping after step 3 (SIGTERM)" in (run / "log.txt").read_text()
        assert not list(ckpts.glob(".*tmp*"))  # the write was finished, not abandoned
    else:
        assert not (ckpts / "step-00000003.pt").exists()  # only a hidden temporary file
    proc = launch(tiny(run, digits_h5, f"train.steps={latest + 1}", "run.checkpoint_every=1"))
    assert proc.returncode == 0, proc.stderr
    assert "resuming from" in proc.stdout
    assert f"step-{latest:08d}.pt at step {latest}" in proc.stdout


def test_killed_rank_ends_the_job_quickly(tmp_path, digits_h5):
    run = tmp_path / "run"
    p = _popen_mpirun(tiny(run, digits_h5, "train.steps=100000", "run.log_every=1"), 2)
    _wait_for(p, "step 3/")
    pids = _rank_pids(run, p)
    assert len(pids) == 2
    t0 = time.monotonic()
    os.kill(max(pids), signal.SIGKILL)  # the rank started last: rank 1
    rc = p.wait(timeout=60)
    assert rc != 0 and time.monotonic() - t0 < 60
    # A rank killed by a signal cannot choose its exit code: mpirun (Open MPI 5) ends the job
    # with 128 + the signal's number (docs/design.md, section 6).
    assert rc == 128 + signal.SIGKILL
    err = p.stderr.read()
    assert "rank 1" in err  # the launcher names the rank that died
    assert "exited on signal 9" in " ".join(err.split()), err[-2000:]  # and the signal


def test_exception_on_one_rank_aborts_all(tmp_path, digits_h5):
    args = tiny(tmp_path / "run", digits_h5, "train.steps=100000")
    t0 = time.monotonic()
    script = [str(SCRIPTS / "fail_rank.py"), "raise", "1", "3"]
    proc = launch([*script, *args], np=2, module=None, timeout=90)
    assert proc.returncode == 1
    assert time.monotonic() - t0 < 90
    assert "injected failure on rank 1" in proc.stderr
    assert "hpcgan: rank 1 failed" in proc.stderr


def test_a_drifted_replica_fails_the_next_checkpoint(tmp_path, digits_h5):
    """Rank 1's D moves by one ulp in one element after step 4 (no error anywhere): the
    replica check before the step-4 checkpoint stops the run, exit 1, and step 4 is not
    saved; the step-2 checkpoint, which passed the check, stays the newest."""
    run = tmp_path / "run"
    args = tiny(run, digits_h5, "train.steps=100000", "run.checkpoint_every=2")
    script = [str(SCRIPTS / "fail_rank.py"), "perturb", "1", "3"]  # Trainer.step(3): step 4
    proc = launch([*script, *args], np=2, module=None, timeout=120)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "parameters of rank(s) [1] differ from rank 0's" in proc.stderr
    log = (run / "log.txt").read_text()
    assert log.count("replicas: parameters identical on all 2 rank(s)") == 1  # step 2's
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-00000002.pt"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "latest",
        "step-00000002.pt",
    ]


def test_divergence_reloads_once_then_stops(tmp_path, digits_h5):
    run = tmp_path / "run"
    base = ("run.checkpoint_every=4", "train.max_bad_steps=3")
    assert launch(tiny(run, digits_h5, "train.steps=4", *base)).returncode == 0
    # The same run resumed with absurd learning rates: losses turn inf/nan within steps.
    proc = launch(
        tiny(run, digits_h5, "train.steps=40", "train.lr_g=1e30", "train.lr_d=1e30", *base)
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    log = (run / "log.txt").read_text()
    assert "reloading" in log and "step-00000004.pt" in log
    assert "diverged" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_frozen_rank_is_caught_by_the_watchdog(tmp_path, digits_h5):
    """A rank that is alive but stuck (SIGSTOP) would hang its peers in the next collective."""
    run = tmp_path / "run"
    args = tiny(run, digits_h5, "train.steps=100000", "run.log_every=1", "dist.timeout_s=8")
    p = _popen_mpirun(args, 2)
    _wait_for(p, "step 3/")
    pids = _rank_pids(run, p)
    t0 = time.monotonic()
    os.kill(max(pids), signal.SIGSTOP)
    try:
        rc = p.wait(timeout=60)
    finally:
        for pid in pids:  # never leave a stopped process behind
            subprocess.run(["kill", "-CONT", str(pid)], capture_output=True)
    assert rc == 1 and time.monotonic() - t0 < 60
    assert "made no progress" in p.stderr.read()


def test_sigterm_to_one_rank_stops_all_within_30s(tmp_path, digits_h5):
    """The default-size DCGAN at 2 ranks: SIGTERM to rank 1 only, as a scheduler might."""
    run = tmp_path / "run"
    args = [f"data.path={digits_h5}", f"run.dir={run}", "train.steps=100000", "run.log_every=1"]
    p = _popen_mpirun(args, 2)
    _wait_for(p, "step 2/")
    pids = _rank_pids(run, p)
    t0 = time.monotonic()
    os.kill(max(pids), signal.SIGTERM)
    assert p.wait(timeout=60) == 75
    assert time.monotonic() - t0 < 30
    assert "signal to another rank" in (run / "log.txt").read_text()
    assert (run / "checkpoints" / "latest").is_file()
