"""A run directory that cannot be written: a full file system, a read-only mount, a quota.

The contract (docs/design.md, section 6): one line `hpcgan: error: cannot write PATH: CAUSE`,
exit 2 on every rank (agreed, no abort), the previous checkpoint and `latest` kept, no temporary
file left, and once the directory can be written again the run resumes bitwise. The faults are
real: a small tmpfs filled by a ballast file, and read-only bind mounts (both need root, as CI
has; elsewhere those tests skip and say why).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from conftest import assert_bitwise_equal, checkpoint, launch, tiny

from hpcgan import run_state, stop_signals
from hpcgan.comm.base import SingleProcess
from hpcgan.data.format import read_info
from hpcgan.data.transforms import make_transform
from hpcgan.files import WriteFailed, WriteGuard, writing
from hpcgan.metrics import classifier
from hpcgan.monitor import LineFile
from hpcgan.preempt import WRITE_FAILED, StopRequest

STEPS = 6
RUN = (
    f"train.steps={STEPS}",
    "run.checkpoint_every=2",
    "run.log_every=2",
    "run.tensorboard=false",  # its background writer would make the moment of failure random
)
AFTER = "training stopped: once the run directory can be written, resubmit to resume from"
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="mounting a tmpfs or a read-only bind mount needs root"
)


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MiB tmpfs, unmounted afterwards."""
    where = tmp_path / "disk"
    where.mkdir()
    _mount("-t", "tmpfs", "-o", "size=8m", "tmpfs", str(where))
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """A ballast file that leaves ``leave`` bytes free on ``disk``."""
    st = os.statvfs(disk)
    ballast = disk / "ballast"
    with open(ballast, "wb") as f:
        os.posix_fallocate(f.fileno(), 0, st.f_bavail * st.f_frsize - leave)
    return ballast


@contextmanager
def read_only(path: Path):
    """``path`` mounted read-only over itself (a bind mount) while inside."""
    _mount("--bind", str(path), str(path))
    try:
        _mount("-o", "remount,bind,ro", str(path))
        yield
    finally:
        subprocess.run(["umount", str(path)], check=True)


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("hpcgan:")]


def leftovers(run: Path) -> list[Path]:
    """Temporary files of atomic writes and of the writability probe."""
    return [p for p in run.rglob("*") if ".tmp-" in p.name or ".write-test" in p.name]


def assert_stopped_at_step_4(proc: subprocess.CompletedProcess, run: Path, cause: str) -> None:
    """Exit 2 with one line naming the checkpoint of step 4 and the cause; no rank aborted
    (an error on one rank alone would: MPI_ABORT); step 2 and ``latest`` kept, no temp file."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    target = run / "checkpoints" / "step-00000004.pt"
    kept = "checkpoints/step-00000002.pt"
    assert error_lines(proc) == [f"hpcgan: error: cannot write {target}: {cause}; {AFTER} {kept}"]
    assert "Traceback" not in proc.stderr and "MPI_ABORT" not in proc.stderr
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step-00000002.pt"]
    assert (run / "checkpoints" / "latest").read_text() == "step-00000002.pt\n"
    assert checkpoint(run, 2)["step"] == 2  # loads
    assert leftovers(run) == []
    for name in ("log.txt", "metrics.jsonl"):  # whole lines only
        assert (run / name).read_text().endswith("\n")


def assert_resumes_bitwise(run: Path, data: Path, reference: Path) -> None:
    proc = launch(tiny(run, data, *RUN), np=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resuming from {run}/checkpoints/step-00000002.pt at step 2" in proc.stdout
    final, straight = checkpoint(run, STEPS), checkpoint(reference, STEPS)
    assert_bitwise_equal(final, straight)
    for mine, theirs in zip(final["rng"]["torch"], straight["rng"]["torch"], strict=True):
        assert torch.equal(mine, theirs)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, digits_h5) -> Path:
    """The uninterrupted run at np=2 (checkpoints at steps 2, 4 and 6)."""
    run = tmp_path_factory.mktemp("reference") / "run"
    proc = launch(tiny(run, digits_h5, *RUN), np=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


# -- one process, no mount --------------------------------------------------------------------


@pytest.mark.parametrize(
    "code, cause",
    [
        (errno.ENOSPC, "No space left on device (ENOSPC)"),
        (errno.EDQUOT, "Disk quota exceeded (EDQUOT)"),
        (errno.EROFS, "Read-only file system (EROFS)"),
    ],
)
def test_a_fixable_os_error_names_the_file_and_the_cause(tmp_path, code, cause):
    target = tmp_path / "a.pt"
    with pytest.raises(WriteFailed) as caught, writing(target):
        raise OSError(code, os.strerror(code))
    assert str(caught.value) == f"cannot write {target}: {cause}"
    with pytest.raises(WriteFailed, match="No space left"), writing(target):
        try:  # torch.save's zip writer raises its own error while handling the disk's
            raise OSError(errno.ENOSPC, "No space left on device")
        finally:
            raise RuntimeError("[enforce fail at inline_container.cc:672] unexpected pos")
    with pytest.raises(OSError) as other, writing(target):
        raise OSError(errno.EIO, "Input/output error")  # not the user's to fix: exit 1
    assert not isinstance(other.value, WriteFailed)


def test_guard_keeps_the_first_failure_and_skips_later_writes(tmp_path):
    guard, done = WriteGuard(), []

    def fails(path):
        with writing(path):
            raise OSError(errno.EDQUOT, "Disk quota exceeded")

    assert guard.attempt(done.append, 1) is None and done == [1]
    guard.attempt(fails, tmp_path / "first")
    guard.attempt(fails, tmp_path / "second")
    guard.attempt(done.append, 2)
    assert done == [1] and "first" in str(guard.failed)


def test_a_failed_write_outranks_a_signal_in_the_stop_agreement(monkeypatch):
    stop = StopRequest(0)
    monkeypatch.setattr(stop_signals, "_received", "SIGUSR1")  # as its handler records it
    assert stop.agreed(SingleProcess(), write_failed=True) == WRITE_FAILED
    assert stop.agreed(SingleProcess()) == "SIGUSR1"


def test_checkpoint_without_latest_is_removed_again(tmp_path, monkeypatch):
    run_state.save(tmp_path, {"step": 1, "config": {}, "G": {}}, keep=3)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def full(path, text):
        with writing(path):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(run_state, "atomic_write_text", full)
    with pytest.raises(WriteFailed, match="latest"):
        run_state.save(tmp_path, {"step": 2, "config": {}, "G": {}}, keep=3)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


# -- real faults: a small tmpfs, read-only mounts ------------------------------------------


@needs_root
def test_a_line_that_does_not_fit_is_cut_off_again(tmp_path):
    where = tmp_path / "tiny"
    where.mkdir()
    _mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where))
    try:
        log = LineFile(where / "log.txt")
        log.append("x" * 4000)  # one page of the tmpfs; the next line needs a second one
        fill(where, 0)
        with pytest.raises(WriteFailed, match=f"cannot write {where}/log.txt: No space left"):
            log.append("y" * 300)
        log.close()
        assert (where / "log.txt").read_text() == "x" * 4000 + "\n"
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@needs_root
@pytest.mark.slow
@pytest.mark.mpi
def test_disk_full_at_the_second_checkpoint_stops_all_ranks_and_resumes_bitwise(
    small_disk, digits_h5, reference
):
    run = small_disk / "run"
    size = (reference / "checkpoints" / "step-00000002.pt").stat().st_size
    ballast = fill(small_disk, size * 3 // 2)  # room for one checkpoint, not two
    proc = launch(tiny(run, digits_h5, *RUN), np=2, timeout=180)
    assert_stopped_at_step_4(proc, run, "No space left on device (ENOSPC)")
    ballast.unlink()
    assert_resumes_bitwise(run, digits_h5, reference)


@needs_root
@pytest.mark.slow
@pytest.mark.mpi
def test_read_only_run_directory_stops_all_ranks_and_resumes_bitwise(
    tmp_path, digits_h5, reference
):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for name in ("config.yaml", "checkpoints/step-00000002.pt"):  # the run stopped at step 2
        shutil.copy(reference / name, run / name)
    (run / "checkpoints" / "latest").write_text("step-00000002.pt\n")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}

    with read_only(run):  # all of it: refused before any step, nothing changed
        proc = launch(tiny(run, digits_h5, *RUN), np=2, timeout=180)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert error_lines(proc) == [
        f"hpcgan: error: run.dir {run} is not writable: Read-only file system"
    ]
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before

    with read_only(run / "checkpoints"):  # goes read-only under a running job
        proc = launch(tiny(run, digits_h5, *RUN), np=2, timeout=180)
    assert_stopped_at_step_4(proc, run, "Read-only file system (EROFS)")
    assert_resumes_bitwise(run, digits_h5, reference)


@needs_root
@pytest.mark.slow
def test_sample_to_a_full_disk_is_one_line_and_leaves_nothing(small_disk, reference):
    fill(small_disk, 16 * 1024)  # the file starts, then runs out of room
    out = small_disk / "samples.h5"
    proc = launch([str(reference), "--n", "256", "--out", str(out)], module="hpcgan.sample")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert error_lines(proc) == [
        f"hpcgan: error: cannot write {out}: No space left on device (ENOSPC)"
    ]
    assert sorted(p.name for p in small_disk.iterdir()) == ["ballast"]


@needs_root
@pytest.mark.slow
@pytest.mark.mpi
def test_evaluation_cache_on_a_full_disk_stops_both_ranks(small_disk, digits_h5, reference):
    run = small_disk / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(reference / "checkpoints" / "step-00000006.pt", run / "checkpoints")
    info = read_info(digits_h5)
    with pytest.MonkeyPatch.context() as mp:  # its classifier, trained briefly, is cached
        mp.setattr(classifier, "STEPS", 60)
        transform, cpu = make_transform(info, "auto"), torch.device("cpu")
        classifier.load_or_train(info, transform, SingleProcess(), cpu, run / "eval")
    fill(small_disk, 0)
    proc = launch([str(run), "--n", "64"], np=2, module="hpcgan.evaluate", timeout=180)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = error_lines(proc)
    pattern = rf"hpcgan: error: cannot write {run}/eval/reference-\w+\.npz: No space left"
    assert len(lines) == 1 and re.fullmatch(pattern + r" on device \(ENOSPC\)", lines[0])
    assert "Traceback" not in proc.stderr and "MPI_ABORT" not in proc.stderr
    assert leftovers(run) == []
    assert all(p.name.startswith("classifier-") for p in (run / "eval").iterdir())
