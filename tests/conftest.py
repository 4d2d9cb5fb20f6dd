"""Shared fixtures: a small dataset made once per session, and a launcher for trainer runs."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from simcluster import kill_tree

from hpcgan.data.write import write_dataset

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MPIRUN = BIN / "mpirun"


def mpi_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OMPI_ALLOW_RUN_AS_ROOT="1",
        OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
        OMPI_MCA_mpi_yield_when_idle="1",  # oversubscribed ranks must not busy-poll
        OMPI_MCA_rmaps_base_oversubscribe="1",
        HDF5_USE_FILE_LOCKING="FALSE",
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=str(ROOT),
    )
    return env


def launch(
    args: list[str],
    np: int | None = None,
    timeout: float = 240,
    module: str | None = "hpcgan.train",
) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` (or ``python args`` when module is None) as one process
    (np=None) or under mpirun -np N.

    The time limit turns a hang into a test failure instead of a frozen suite.
    """
    cmd = [sys.executable, *(["-m", module] if module else []), *args]
    if np is not None:
        cmd = [str(MPIRUN), "--oversubscribe", "--bind-to", "none", "-np", str(np), *cmd]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=mpi_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)  # the ranks too: killing mpirun alone orphans them, still polling
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.fixture(scope="session")
def digits_h5(tmp_path_factory) -> Path:
    """The built-in digits dataset, written once for the whole session."""
    from hpcgan.data import synth

    path = tmp_path_factory.mktemp("data") / "digits.h5"
    images, labels = synth.digits(size=32)
    write_dataset(path, images, labels, kind="image", source="test digits")
    return path


@pytest.fixture(scope="session")
def indexed_h5(tmp_path_factory) -> Path:
    """1000 16x16 images whose label is their own index (to trace who read what)."""
    path = tmp_path_factory.mktemp("data") / "indexed.h5"
    n = 1000
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 1, 16, 16), dtype=np.uint8)
    write_dataset(path, images, np.arange(n), kind="image", source="test index", chunk_samples=64)
    return path


def tiny(run_dir: Path, data: Path, *extra: str) -> list[str]:
    """Overrides for a fast run: a narrow model, frequent logs."""
    return [
        f"data.path={data}",
        f"run.dir={run_dir}",
        "model.width=8",
        "model.z_dim=16",
        "train.batch_size=32",
        "run.log_every=5",
        *extra,
    ]


def small_trainer(*overrides: str, spec=None):
    """A one-process Trainer of 16x16 maps with a narrow model; ``spec``: what the models are
    offered to condition on (hpcgan.condition.ConditionSpec; default none)."""
    from hpcgan.comm.base import SingleProcess
    from hpcgan.condition import ConditionSpec
    from hpcgan.config import load_config
    from hpcgan.models import build_models
    from hpcgan.trainer import Trainer

    base = ["model.width=4", "model.z_dim=8", "train.batch_size=8"]
    cfg = load_config(None, [*base, "train.ema_halflife_images=100", *overrides])
    torch.manual_seed(0)
    regression = cfg.train.cond_regression > 0
    G, D = build_models(cfg.model, (1, 16, 16), spec or ConditionSpec(), regression=regression)
    return Trainer(cfg, SingleProcess(), G, D, torch.device("cpu"))


def rot(path: Path, offset: int, nbytes: int = 64, mask: int = 0xFF) -> None:
    """Flip the ``mask`` bits of ``nbytes`` bytes of the file at ``offset`` as bit rot does: in
    place, the file's size and modification time left as they were."""
    stat = path.stat()
    with open(path, "r+b") as f:
        f.seek(offset)
        data = bytearray(f.read(nbytes))
        f.seek(offset)
        f.write(bytes(b ^ mask for b in data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def rot_chunk(path: Path, k: int, dataset: str = "images") -> None:
    """64 bytes in the middle of chunk ``k`` of ``dataset``, found where HDF5 stores it."""
    import h5py

    with h5py.File(path, "r") as f:
        where = f[dataset].id.get_chunk_info(k)
    rot(path, where.byte_offset + where.size // 2)


def checkpoint(run: Path, step: int) -> dict:
    """The checkpoint of ``step`` in run directory ``run``, as training saved it."""
    return torch.load(run / "checkpoints" / f"step-{step:08d}.pt", weights_only=True)


# What a checkpoint must hold for a resume to be tested bitwise (docs/design.md, section 5);
# G_ema, scaler_G and scaler_D are compared too where the run has them.
RESUME_STATE = ("G", "D", "opt_G", "opt_D", "rng", "data", "images_seen")


def assert_bitwise_equal(a: dict, b: dict, expect: tuple[str, ...] = RESUME_STATE) -> None:
    """Two checkpoints (or Trainer.state_dicts) hold the same run state, bit for bit: every
    entry but ``config`` (run.dir and train.steps may differ) -- G, D, G_ema, both optimizers,
    both GradScalers, every rank's RNG state, the data position, the guard and best value.
    ``expect``: entries that must be there, so that the comparison is never vacuous."""
    assert set(expect) <= set(a), f"missing: {sorted(set(expect) - set(a))}"
    assert set(a) == set(b), f"entries differ: {sorted(set(a) ^ set(b))}"
    for key in sorted(set(a) - {"config"}):
        _assert_same(a[key], b[key], key)


def _assert_same(x: object, y: object, where: str) -> None:
    """``x`` and ``y`` are the same nested containers of the same bits (``where``: the path)."""
    if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
        x, y = torch.as_tensor(x), torch.as_tensor(y)
        assert x.dtype == y.dtype and x.shape == y.shape, f"{where}: {x.dtype} vs {y.dtype}"
        # Bits, not values: NaN equals NaN, -0.0 differs from 0.0.
        bits = [t.detach().cpu().contiguous().reshape(-1).view(torch.uint8) for t in (x, y)]
        assert torch.equal(*bits), f"{where} differs"
    elif isinstance(x, dict):
        assert isinstance(y, dict) and set(x) == set(y), f"{where}: keys differ"
        for k in x:
            _assert_same(x[k], y[k], f"{where}.{k}")
    elif isinstance(x, (list, tuple)):
        assert type(x) is type(y) and len(x) == len(y), f"{where}: lengths differ"
        for i, (u, v) in enumerate(zip(x, y)):
            _assert_same(u, v, f"{where}[{i}]")
    elif isinstance(x, float):
        assert isinstance(y, float) and struct.pack("<d", x) == struct.pack("<d", y), where
    else:
        assert x == y, f"{where}: {x!r} vs {y!r}"


def run_files(run: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under run directory ``run``: its bytes and modification time (ns), by
    relative path; equal before and after a refused resume when nothing was written."""
    return {
        str(p.relative_to(run)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(run.rglob("*"))
        if p.is_file()
    }


def assert_refused_resume_wrote_nothing(before: dict[str, tuple[bytes, int]], run: Path) -> None:
    """``run`` is as ``before`` (run_files) was: the run's record and its checkpoints."""
    record = {"config.yaml", "log.txt", "metrics.jsonl", "checkpoints/latest"}
    assert record <= set(before), sorted(before)  # not vacuous: the run's own files
    after = run_files(run)
    assert sorted(after) == sorted(before), "files appeared or went"
    changed = [name for name in before if after[name] != before[name]]
    assert not changed, f"rewritten: {changed}"


def clean_slurm_env() -> dict[str, str]:
    """This process's environment without any outer Slurm job's variables."""
    prefixes = ("SLURM_", "SBATCH_", "SRUN_", "SALLOC_", "HPCGAN_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


def convert(*args: object) -> int:
    """``python -m data_prep convert ARGS`` in this process; its exit code."""
    from data_prep.__main__ import main

    return main(["convert", *map(str, args)])


def stored(path: Path) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """A dataset file's images, labels (or None) and root attributes, read back whole."""
    import h5py

    with h5py.File(path, "r") as f:
        labels = f["labels"][()] if "labels" in f else None
        return f["images"][()], labels, dict(f.attrs)


@pytest.fixture(scope="session")
def sim_cluster(tmp_path_factory):
    """A simulated 2-node cluster (tools/cluster/cluster, docs/cluster.md) for the session:
    skipped with the reason only where `make test` could not provide it (tests/prereqs.py:
    not root, or no apt-get); a missing tool or a failing bring-up as root is a failure.
    pytest's base temp folder is shared with the nodes, so tmp_path and session fixtures such
    as digits_h5 are visible on every node; each node's other /tmp is its own."""
    from prereqs import missing
    from simcluster import SimCluster, unavailable

    reason = unavailable()
    if reason:
        missing(reason)
    cluster = SimCluster(
        shared=tmp_path_factory.mktemp("cluster"), share=[tmp_path_factory.getbasetemp()]
    )
    cluster.up()
    try:
        yield cluster
    finally:
        cluster.release()


class Replay(torch.nn.Module):
    """A 'generator' that returns given samples in order (z is ignored)."""

    def __init__(self, samples: torch.Tensor) -> None:
        super().__init__()
        self.samples, self.next = samples, 0
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.samples[self.next : self.next + len(z)]
        self.next += len(z)
        return out
