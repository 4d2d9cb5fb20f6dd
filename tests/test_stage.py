"""Node-local staging, data.stage (docs/data.md "Node-local staging"): one verified copy per
node, a stale or partial copy replaced, concurrent copiers taking turns, bad input one line.

The unit tests call hpcgan.data.stage in this process; the launches train on one host
(np=2: one rank copies, the other waits, both read the copy), then on two simulated nodes
(the sim_cluster fixture, root only) whose /tmp is private: each node stages and verifies its
own copy, and a built-in dataset prepared in a node-local data.root works.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch
from conftest import ROOT, launch, tiny

from hpcgan.data import stage
from hpcgan.data.stage import stage_dir, stage_file, staged_path, stamp_path
from hpcgan.data.write import write_dataset
from hpcgan.errors import UserError


def _write(path: Path, seed: int = 0, n: int = 200) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 1, 16, 16), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n)
    write_dataset(path, images, labels, kind="image", source=f"stage test {seed}", chunk_samples=16)
    return path


@pytest.fixture
def source(tmp_path) -> Path:
    return _write(tmp_path / "shared" / "data.h5")


def _same_bytes(a: Path, b: Path) -> bool:
    return a.read_bytes() == b.read_bytes()


def test_copies_once_then_keeps_the_fresh_copy(tmp_path, source):
    local = tmp_path / "local"
    first = stage_file(source, local)
    assert first.copied and first.path == staged_path(source, local)
    assert first.path.parent == local and first.path.name.startswith("data-")
    assert _same_bytes(source, first.path)
    inode = first.path.stat().st_ino
    second = stage_file(source, local)
    assert not second.copied and second.path.stat().st_ino == inode
    # Two datasets of one name in different folders get different copies.
    other = _write(tmp_path / "elsewhere" / "data.h5", seed=1)
    assert staged_path(other, local) != first.path
    # Nothing but the copy, its stamp and its lock file.
    names = sorted(p.name for p in local.iterdir())
    assert names == sorted(
        [first.path.name, stamp_path(first.path).name, f".{first.path.name}.lock"]
    )


def test_changed_source_is_copied_again(tmp_path, source):
    local = tmp_path / "local"
    copy = stage_file(source, local).path
    before = source.stat()
    _write(source, seed=1)  # other contents, the same size
    assert source.stat().st_size == before.st_size
    # Even with the old modification time, the checksum table tells the files apart.
    os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))
    again = stage_file(source, local)
    assert again.copied and _same_bytes(source, copy)


@pytest.mark.parametrize("damage", ["truncate", "stamp", "replace"])
def test_partial_or_damaged_copy_is_replaced(tmp_path, source, damage):
    local = tmp_path / "local"
    copy = stage_file(source, local).path
    if damage == "truncate":  # e.g. a copy made by hand that was killed
        os.truncate(copy, copy.stat().st_size // 2)
    elif damage == "stamp":  # killed between the rename and the stamp
        stamp_path(copy).unlink()
    else:  # someone put another file there
        copy.write_bytes(b"not the dataset")
    assert stage_file(source, local).copied
    assert _same_bytes(source, copy)


def test_leftover_temporary_copy_is_removed(tmp_path, source):
    local = tmp_path / "local"
    local.mkdir()
    copy = staged_path(source, local)
    orphan = local / f".{copy.name}.tmp-{socket.gethostname()}-1"  # a copier killed mid-copy
    orphan.write_bytes(b"half a copy")
    assert stage_file(source, local).copied
    assert not orphan.exists() and _same_bytes(source, copy)


def test_crc_mismatch_is_one_line_and_leaves_nothing(tmp_path, source):
    with h5py.File(source, "r+") as f:  # damage one chunk without updating its checksum
        f["images"][20] = 255 - f["images"][20]
    local = tmp_path / "local"
    with pytest.raises(
        UserError, match=r"fails its CRC-32 check \(1 chunk\(s\), first samples 16\.\.31\)"
    ):
        stage_file(source, local)
    assert not staged_path(source, local).exists()
    assert not list(local.glob("*.tmp-*")) and not stamp_path(staged_path(source, local)).exists()


def test_no_space_is_refused_before_copying(tmp_path, source, monkeypatch):
    full = SimpleNamespace(total=1, used=1, free=0)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: full)
    with pytest.raises(UserError, match="no space for the dataset"):
        stage_file(source, tmp_path / "local")


def test_bad_directory_settings(tmp_path, source, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(UserError, match="is not usable"):
        stage_file(source, blocker / "stage")
    with pytest.raises(UserError, match="relative path"):
        stage_dir("stage")
    monkeypatch.delenv("HPCGAN_NO_SUCH_VAR", raising=False)
    with pytest.raises(UserError, match="not set"):
        stage_dir("/tmp/$HPCGAN_NO_SUCH_VAR/x")
    monkeypatch.setenv("HPCGAN_STAGE_TEST", str(tmp_path))
    assert stage_dir("$HPCGAN_STAGE_TEST/x") == tmp_path / "x"


_COPIER = """
import json, sys
from pathlib import Path
from hpcgan.data import stage
from hpcgan.data.stage import stage_file
s = stage_file(sys.argv[1], Path(sys.argv[2]))
print(json.dumps({"copied": s.copied, "path": str(s.path)}))
"""


def test_concurrent_jobs_on_one_node_take_turns(tmp_path, source):
    local = tmp_path / "local"
    local.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-c", _COPIER, str(source), str(local)]
    with open(stage.lock_path(staged_path(source, local)), "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another job is copying: every copier must wait
        procs = [
            subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
            )
            for _ in range(3)
        ]
        time.sleep(3)
        assert all(p.poll() is None for p in procs)
    results = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sum(r["copied"] for r in results) == 1  # one copied, the others found it fresh
    assert len({r["path"] for r in results}) == 1
    assert _same_bytes(source, Path(results[0]["path"]))
    assert not list(local.glob("*.tmp-*"))


# -- training under mpirun on one host ------------------------------------------------------


@pytest.fixture(scope="module")
def digits16(tmp_path_factory) -> Path:
    from hpcgan.data import synth

    path = tmp_path_factory.mktemp("stage-data") / "digits16.h5"
    images, labels = synth.digits(size=16)
    write_dataset(path, images, labels, kind="image", source="test digits 16x16")
    return path


FAST = ("model.norm=none", "train.steps=4", "run.checkpoint_every=4", "run.sample_every=100000")


def _params(run: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run / "checkpoints" / "step-00000004.pt", weights_only=True)
    return {f"{net}.{k}": v for net in ("G", "D") for k, v in state[net].items()}


@pytest.mark.mpi
@pytest.mark.slow
def test_two_ranks_train_on_the_staged_copy_as_in_place(tmp_path, digits16):
    local = tmp_path / "node-local"
    runs = {}
    for name, extra in (("in-place", []), ("staged", [f"data.stage={local}"])):
        runs[name] = tmp_path / name
        proc = launch(tiny(runs[name], digits16, *FAST, *extra), np=2, timeout=240)
        assert proc.returncode == 0, proc.stderr[-3000:]
    log = (runs["staged"] / "log.txt").read_text()
    copy = staged_path(digits16, local)
    assert f"data {copy}:" in log  # every rank read the copy
    assert f"data staged to {copy} on 1 node(s)" in log and "copied to 1," in log
    assert _same_bytes(digits16, copy)
    a, b = _params(runs["in-place"]), _params(runs["staged"])
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same data: bitwise the same run


@pytest.mark.mpi
def test_unusable_stage_dir_is_one_line_exit_2_on_every_rank(tmp_path, digits16):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    args = tiny(tmp_path / "run", digits16, f"data.stage={blocker}/stage")
    proc = launch(args, np=2, timeout=240)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if "error" in ln]
    assert len(errors) == 1 and errors[0].startswith("hpcgan: error: data.stage="), proc.stderr
    assert "is not usable" in errors[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


# -- two simulated nodes, each with its own /tmp ----------------------------------------------

_CHECK_COPY = """
import json, sys
from pathlib import Path
from hpcgan.data.stage import check_copy, stamp_path
source, copy = Path(sys.argv[1]), Path(sys.argv[2])
stamp = json.loads(stamp_path(copy).read_text())
print(json.dumps({"bad": check_copy(source, copy, True), "inode": copy.stat().st_ino,
                  "stamp": stamp["copy"]["inode"]}))
"""


@pytest.fixture
def node_tmp(sim_cluster):
    """A fresh name under every node's private /tmp, removed from each node afterwards."""
    path = Path(f"/tmp/hpcgan-stage-test-{os.getpid()}-{time.monotonic_ns()}")
    yield path
    for node in sim_cluster.nodes:
        sim_cluster.run_on(node, ["rm", "-rf", str(path)])


@pytest.mark.mpi
@pytest.mark.slow
def test_each_node_stages_and_verifies_its_own_copy(sim_cluster, node_tmp):
    from hpcgan.data import synth

    source = sim_cluster.tmpdir("stage-data") / "digits16.h5"  # on the shared file system
    images, labels = synth.digits(size=16)
    write_dataset(source, images, labels, kind="image", source="test digits 16x16")
    run = sim_cluster.tmpdir("stage-run") / "run"
    done = sim_cluster.mpirun(tiny(run, source, *FAST, f"data.stage={node_tmp}"), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    log = (run / "log.txt").read_text()
    copy = staged_path(source, node_tmp)
    # Neither node saw the other's copy: both copied, into their own /tmp.
    assert f"data staged to {copy} on 2 node(s)" in log and "copied to 2, a fresh" in log, log
    assert "replicas: parameters identical on all 4 rank(s)" in log
    for node in sim_cluster.nodes:
        check = sim_cluster.run_on(
            node, [sys.executable, "-c", _CHECK_COPY, str(source), str(copy)]
        )
        assert check.returncode == 0, check.stderr
        found = json.loads(check.stdout.strip().splitlines()[-1])
        assert found["bad"] is None and found["inode"] == found["stamp"], (node, found)


@pytest.mark.mpi
@pytest.mark.slow
def test_builtin_dataset_with_a_node_local_root(sim_cluster, node_tmp):
    """data.root in each node's /tmp: the first rank of every node prepares its own file
    instead of waiting for rank 0's, which the other node cannot see."""
    run = sim_cluster.tmpdir("stage-run") / "run"
    args = [
        "data.builtin=digits",
        f"data.root={node_tmp}",
        f"run.dir={run}",
        "model.width=8",
        "model.z_dim=16",
        "train.batch_size=32",
        *FAST,
    ]
    done = sim_cluster.mpirun(args, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "replicas: parameters identical on all 4 rank(s)" in (run / "log.txt").read_text()
    for node in sim_cluster.nodes:
        made = sim_cluster.run_on(node, [sys.executable, "-m", "data_prep", "verify",
                                         str(node_tmp / "digits-32.h5")])  # fmt: skip
        assert made.returncode == 0, (node, made.stdout, made.stderr)
