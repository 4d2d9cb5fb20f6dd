"""A stop signal during start-up (a scheduler's early warning): exit 75, nothing new saved.

Start-up is paused at a named point by the test-only hook of hpcgan.stop_signals
(HPCGAN_TEST_PAUSE_AT), so each signal lands where its test says, however slow the machine.
"""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import MPIRUN, ROOT, checkpoint, launch, mpi_env, tiny
from simcluster import kill_tree

from hpcgan.stop_signals import PAUSE_AT_VAR, PAUSE_DIR_VAR

COMMANDS = ("train", "sample", "evaluate", "report", "bench")  # hpcgan.scaling: docs/batch-jobs.md


class Paused:
    """``python -m hpcgan.MODULE ARGS`` (under mpirun -np N when np > 1), paused at ``point``."""

    def __init__(self, tmp: Path, point: str, args: list[str], np_: int = 1, module="train"):
        self.dir = tmp / "pause"
        self.dir.mkdir()
        self.point, self.np = point, np_
        env = {**mpi_env(), PAUSE_AT_VAR: point, PAUSE_DIR_VAR: str(self.dir)}
        cmd = [sys.executable, "-m", f"hpcgan.{module}", *args]
        if np_ > 1:
            cmd = [str(MPIRUN), "--oversubscribe", "--bind-to", "none", "-np", str(np_), *cmd]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def pids(self, limit: float = 180) -> list[int]:
        """Once every rank waits at the point: their process ids, rank 0 first."""
        deadline = time.monotonic() + limit
        marks = [self.dir / f"{self.point}.{r}" for r in range(self.np)]
        while not all(m.is_file() and m.read_text() for m in marks):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                out, err = self.finish(1)
                pytest.fail(f"never paused at {self.point}: rc {self.proc.returncode}\n{err}")
            time.sleep(0.02)
        return [int(m.read_text()) for m in marks]

    def release(self) -> None:
        """Let ranks that got no signal go on."""
        (self.dir / "go").touch()

    def finish(self, timeout: float = 120) -> tuple[str, str]:
        try:
            return self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_tree(self.proc.pid)  # the ranks too
            self.proc.communicate()
            raise


def _stop(paused: Paused) -> None:
    """What a scheduler does: SIGUSR1 to mpirun (which forwards it; Open MPI 5's mpirun ends
    the job at once on SIGTERM), SIGTERM to a plain process."""
    paused.proc.send_signal(signal.SIGUSR1 if paused.np > 1 else signal.SIGTERM)


def _checkpoints(run: Path) -> dict[str, bytes]:
    folder = run / "checkpoints"
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.is_dir() else {}


@pytest.mark.slow
@pytest.mark.parametrize(
    "np_, point",
    [
        (1, "entry"),  # handlers in place, nothing heavy imported yet
        (1, "before_first_step"),  # data opened, models built, run directory made
        pytest.param(2, "entry", marks=pytest.mark.mpi),
        # released at once, then signalled: lands while torch & co. load
        pytest.param(2, "imports", marks=pytest.mark.mpi),
        pytest.param(2, "before_mpi", marks=pytest.mark.mpi),
        pytest.param(2, "before_first_step", marks=pytest.mark.mpi),
    ],
)
def test_stop_during_startup_exits_75_and_saves_nothing(tmp_path, digits_h5, np_, point):
    run = tmp_path / "run"
    paused = Paused(tmp_path, "entry" if point == "imports" else point, tiny(run, digits_h5), np_)
    paused.pids()
    if point == "imports":
        paused.release()
    _stop(paused)
    out, err = paused.finish()
    assert paused.proc.returncode == 75, err[-3000:]
    name = "SIGUSR1" if np_ > 1 else "SIGTERM"
    assert f"stopping before the first step ({name}): nothing new saved" in out, out + err
    assert _checkpoints(run) == {}
    assert "Traceback" not in err
    if point == "before_first_step":  # the run directory exists; its log says why it stopped
        assert f"stopping before the first step ({name})" in (run / "log.txt").read_text()


@pytest.mark.slow
@pytest.mark.mpi
def test_signal_to_one_rank_before_a_resumes_first_step_stops_all_and_changes_nothing(
    tmp_path, digits_h5
):
    """A requeued job whose rank 1 alone gets SIGTERM while it starts again (as a scheduler
    might): rank 0 learns it at the agreement, both exit 75; checkpoints, latest and
    config.yaml keep their bytes, so the next start resumes from the same step to the end."""
    common = ("run.checkpoint_every=4", "run.log_every=1", "run.keep=5")
    run = tmp_path / "run"
    first = launch(tiny(run, digits_h5, "train.steps=4", *common), np=2)
    assert first.returncode == 0, first.stderr[-2000:]
    before = _checkpoints(run)
    config = (run / "config.yaml").read_bytes()
    again = tiny(run, digits_h5, "train.steps=8", *common)
    paused = Paused(tmp_path, "before_first_step", again, 2)
    os.kill(paused.pids()[1], signal.SIGTERM)
    paused.release()  # rank 0 got nothing: it goes on to the agreement
    out, err = paused.finish()
    assert paused.proc.returncode == 75, err[-3000:]
    assert "at step 4" in out
    assert "stopping before the first step (a signal to another rank)" in out
    assert _checkpoints(run) == before  # the same files with the same bytes, latest too
    assert (run / "config.yaml").read_bytes() == config
    done = launch(again, np=2)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "at step 4" in done.stdout
    assert checkpoint(run, 8)["step"] == 8


@pytest.mark.parametrize("module", ["sample", "evaluate", "report", "bench"])
def test_other_commands_stop_with_75_before_any_work(tmp_path, module):
    """Signalled before its imports, a command with nothing to save stops with exit 75 and
    one line as soon as it runs; it reads no argument and writes nothing."""
    out = tmp_path / "out"
    args = {
        "sample": [str(tmp_path / "run"), "--out", str(out)],
        "evaluate": [str(tmp_path / "run")],
        "report": [str(tmp_path / "run"), "--out", str(out)],
        "bench": ["--json", str(out)],
    }[module]
    paused = Paused(tmp_path, "entry", args, module=module)
    paused.pids()
    _stop(paused)
    _, err = paused.finish()
    assert paused.proc.returncode == 75, err
    assert err.strip() == "hpcgan: stopped by SIGTERM before finishing; run it again"
    assert not out.exists()


_MID_WORK = """
import os, signal, sys
from hpcgan import stop_signals
from hpcgan.errors import run_command
from hpcgan.files import atomic_write
stop_signals.catch(interrupting=True)

def write(tmp):
    tmp.write_text("half")
    os.kill(os.getpid(), signal.SIGUSR1)  # lands while the temporary file is open
    os.kill(os.getpid(), signal.SIGTERM)  # a second copy changes nothing
    tmp.write_text("all")

sys.exit(run_command("hpcgan", lambda command: atomic_write(sys.argv[1], write)))
"""


def test_signal_mid_work_unwinds_and_leaves_no_file(tmp_path):
    out = tmp_path / "out.txt"
    proc = subprocess.run(
        [sys.executable, "-c", _MID_WORK, str(out)],
        cwd=ROOT,
        env=mpi_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 75, proc.stderr
    assert proc.stderr.strip() == "hpcgan: stopped by SIGUSR1 before finishing; run it again"
    assert list(tmp_path.iterdir()) == []  # neither out.txt nor its temporary file


@pytest.mark.parametrize("module", COMMANDS)
def test_every_command_catches_stop_signals_before_its_imports(module):
    """The first statements of each command: import hpcgan.stop_signals, then, when run as
    the program, catch; only then the imports of torch, h5py, mpi4py and the rest."""
    tree = ast.parse((ROOT / "hpcgan" / f"{module}.py").read_text())
    body = [n for n in tree.body if not isinstance(n, ast.Expr)]  # the docstring
    future, first, guard = body[:3]
    assert isinstance(future, ast.ImportFrom) and future.module == "__future__"
    assert ast.unparse(first) == "from hpcgan import stop_signals"
    assert isinstance(guard, ast.If) and ast.unparse(guard.test) == "__name__ == '__main__'"
    assert ast.unparse(guard.body[0]).startswith("stop_signals.catch(")
    assert any(isinstance(n, ast.Import | ast.ImportFrom) for n in body[3:])  # guarded ones
