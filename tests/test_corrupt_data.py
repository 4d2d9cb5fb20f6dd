"""Bit rot met during training: 64 bytes of one /images chunk flipped on disk after the file was
written stop every rank with one line naming the file and the chunk, exit 2, and leave the
previous run's checkpoints as they were (hpcgan/data/integrity.py, docs/data.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import assert_bitwise_equal, checkpoint, launch, rot_chunk, tiny

from hpcgan.data.sharding import ShardPlan, indices
from hpcgan.data.stage import staged_path
from hpcgan.data.write import write_dataset

pytestmark = [pytest.mark.slow, pytest.mark.mpi]

N, CHUNK, BATCH = 256, 32, 32  # tiny() trains global batches of 32; 8 chunks, 8 steps an epoch
FIRST = ("train.steps=8", "run.checkpoint_every=8", "run.eval_every=0", "run.tensorboard=false")
RESUMED = ("train.steps=16", *FIRST[1:])


@pytest.fixture
def fields(tmp_path) -> Path:
    rng = np.random.default_rng(1)
    images = rng.lognormal(size=(N, 1, 16, 16)).astype(np.float32)
    path = tmp_path / "maps.h5"
    write_dataset(path, images, None, kind="field", source="rot test", chunk_samples=CHUNK)
    return path


def chunks_read(batch: int, rank: int, world: int) -> set[int]:
    """The chunks rank ``rank`` of ``world`` reads for global batch ``batch`` (train.seed=0,
    data.segment's default of 8 for an uncompressed file)."""
    plan = ShardPlan(N, BATCH, segment=8, seed=0)
    return {int(i) // CHUNK for i in indices(plan.runs(batch, rank, world))}


def files(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run / "checkpoints").iterdir())}


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("hpcgan: error:")]


def expected(path: Path, k: int) -> str:
    return (
        f"hpcgan: error: {path}: /images chunk {k} (samples {k * CHUNK}..{k * CHUNK + CHUNK - 1}) "
        "fails its CRC-32 checksum"
    )


@pytest.mark.parametrize("np_", [1, 2])
def test_rotten_chunk_stops_every_rank_with_exit_2_and_keeps_checkpoints(tmp_path, fields, np_):
    run = tmp_path / "run"
    first = launch(tiny(run, fields, *FIRST), np=np_, timeout=240)
    assert first.returncode == 0, first.stderr[-3000:]
    before = files(run)
    assert set(before) == {"step-00000008.pt", "latest"}
    if np_ == 1:  # read by the resumed run's first batch: stopped before its first step
        k = min(chunks_read(8, 0, 1))
    else:  # first read by rank 1 in a later step: stopped at that step's sync, by rank 0's line
        seen: set[int] = set()
        for b in range(8, 16):
            fresh = chunks_read(b, 1, 2) - seen - chunks_read(b, 0, 2)
            if b > 8 and fresh:
                k = min(fresh)
                break
            seen |= chunks_read(b, 0, 2) | chunks_read(b, 1, 2)
    rot_chunk(fields, k)

    resumed = launch(tiny(run, fields, *RESUMED), np=np_, timeout=240)
    assert resumed.returncode == 2, resumed.stderr[-3000:]
    lines = error_lines(resumed.stderr)
    assert len(lines) == 1 and lines[0].startswith(expected(fields, k)), resumed.stderr[-3000:]
    assert "Traceback" not in resumed.stderr
    assert files(run) == before  # no checkpoint written, none replaced, latest unchanged
    assert "training steps 8..16" in (run / "log.txt").read_text()

    if np_ == 2:  # the file repaired, the run resumes and ends as one that never stopped
        rot_chunk(fields, k)  # the same bytes flipped back
        repaired = launch(tiny(run, fields, *RESUMED), np=np_, timeout=240)
        assert repaired.returncode == 0, repaired.stderr[-3000:]
        straight = tmp_path / "straight"
        done = launch(tiny(straight, fields, *RESUMED), np=np_, timeout=240)
        assert done.returncode == 0, done.stderr[-3000:]
        assert_bitwise_equal(checkpoint(straight, 16), checkpoint(run, 16), ("G", "D", "G_ema"))


def test_rot_in_the_node_local_copy_is_caught_when_read(tmp_path, fields):
    """data.stage keeps a copy whose stamp still matches (bit rot leaves size and time alone);
    the reader's check names the copy and the chunk."""
    run, local = tmp_path / "run", tmp_path / "local"
    first = launch(tiny(run, fields, *FIRST, f"data.stage={local}"), timeout=240)
    assert first.returncode == 0, first.stderr[-3000:]
    before = files(run)
    copy = staged_path(fields, local)
    k = min(chunks_read(8, 0, 1))
    rot_chunk(copy, k)
    resumed = launch(tiny(run, fields, *RESUMED, f"data.stage={local}"), timeout=240)
    assert resumed.returncode == 2, resumed.stderr[-3000:]
    assert error_lines(resumed.stderr) == [
        expected(copy, k)
        + f": the file was modified or damaged after it was written (`python -m data_prep "
        f"verify {copy}` checks every chunk)"
    ], resumed.stderr[-3000:]
    assert files(run) == before
