"""The training reader checks what it reads against the file's CRC-32s (hpcgan/data/integrity.py):
a chunk damaged on disk is a SchemaError naming the file and the chunk, never trained on."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import rot, rot_chunk

from hpcgan.data.chunks import ChunkTable, chunk_crc32s
from hpcgan.data.format import CHECKSUMS, SchemaError, read_info
from hpcgan.data.reader import ShardReader
from hpcgan.data.sharding import ShardPlan, indices
from hpcgan.data.transforms import make_transform
from hpcgan.data.write import write_dataset

N, CHUNK, BATCH = 64, 8, 16


def rot_contiguous(path: Path, dataset: str) -> None:
    """The lowest bit of one value in the middle of an unchunked dataset (/labels, /conditions;
    a label stays a valid class, so only the checksum can tell)."""
    with h5py.File(path, "r") as f:
        d = f[dataset]
        middle = d.id.get_offset() + d.dtype.itemsize * (d.size // 2)
    rot(path, middle, nbytes=1, mask=0x01)


def write_fields(path: Path, compression: str | None = None, conditions: bool = False) -> Path:
    rng = np.random.default_rng(0)
    images = rng.lognormal(size=(N, 1, 16, 16)).astype(np.float32)
    extra = {}
    if conditions:
        extra = dict(conditions=rng.uniform(1, 100, size=(N, 2)), condition_names=("e", "t"))
    labels = rng.integers(0, 10, size=N)
    write_dataset(
        path, images, labels, kind="field", source="integrity test", chunk_samples=CHUNK,
        compression=compression, **extra,
    )  # fmt: skip
    return path


def reader(path: Path, seed: int = 0) -> ShardReader:
    info = read_info(path)
    plan = ShardPlan(info.n, BATCH, segment=4, seed=seed)
    return ShardReader(info, plan, 0, 1, make_transform(info, "linear"))


def chunks_of(plan: ShardPlan, batch: int) -> set[int]:
    return {int(i) // CHUNK for i in indices(plan.runs(batch, 0, 1))}


@pytest.fixture
def fields(tmp_path) -> Path:
    return write_fields(tmp_path / "fields.h5")


def test_a_clean_file_reads_the_same_values_and_checks_every_chunk_once(fields):
    r = reader(fields)
    with h5py.File(fields, "r") as f:
        stored = f["images"][()]
    transform = make_transform(r.info, "linear")
    for b in range(r.plan.batches_per_epoch):
        images, _, _ = r.read(b)
        rows = indices(r.plan.runs(b, 0, 1))
        np.testing.assert_array_equal(images, transform.encode(stored[rows]))
    assert r._check.checked.all()  # one epoch touched every chunk, each is now checked
    r.close()


def test_a_damaged_chunk_is_named_with_its_file_and_samples(fields):
    r = reader(fields)
    k = min(chunks_of(r.plan, 2) - chunks_of(r.plan, 0) - chunks_of(r.plan, 1))
    rot_chunk(fields, k)
    r.read(0), r.read(1)  # batches that do not touch chunk k read as before
    with pytest.raises(SchemaError) as caught:
        r.read(2)
    text = str(caught.value)
    assert text.startswith(f"{fields}: /images chunk {k} (samples {k * CHUNK}..{k * CHUNK + 7})")
    assert "fails its CRC-32 checksum" in text and "data_prep verify" in text
    assert "\n" not in text
    r.close()


def test_a_checked_chunk_is_not_read_twice_but_a_new_reader_checks_again(fields):
    r = reader(fields)
    first = chunks_of(r.plan, 0)
    r.read(0)
    k = min(first)
    rot_chunk(fields, k)  # damaged after this process checked it: trusted until the next run
    r.read(0)  # the same chunks again: plain reads, no error in this process
    assert r._check.checked[k]
    fresh = reader(fields)
    batch = next(b for b in range(fresh.plan.batches_per_epoch) if k in chunks_of(fresh.plan, b))
    with pytest.raises(SchemaError, match=f"/images chunk {k} "):
        for b in range(batch + 1):
            fresh.read(b)
    r.close(), fresh.close()


@pytest.mark.parametrize("dataset", ["labels", "conditions"])
def test_damaged_labels_or_conditions_are_named_at_the_first_read(tmp_path, dataset):
    path = write_fields(tmp_path / "cond.h5", conditions=True)
    rot_contiguous(path, dataset)
    with pytest.raises(SchemaError, match=f"^{path}: /{dataset} fails its CRC-32 checksum"):
        reader(path).read(0)


def test_a_damaged_compressed_chunk_is_one_line_naming_the_file(tmp_path):
    path = write_fields(tmp_path / "gzip.h5", compression="gzip")
    rot_chunk(path, 0)
    r = reader(path)
    batch = next(b for b in range(r.plan.batches_per_epoch) if 0 in chunks_of(r.plan, b))
    with pytest.raises(SchemaError, match=f"^{path}: (cannot read /images|/images chunk 0 )"):
        for b in range(batch + 1):
            r.read(b)


def test_a_file_without_checksums_is_read_unchecked(fields):
    with h5py.File(fields, "r+") as f:
        del f[CHECKSUMS]
        f["images"][3] = f["images"][3] * 2  # a change nothing can see without checksums
    r = reader(fields)
    for b in range(r.plan.batches_per_epoch):
        r.read(b)
    assert r._check.stored is None


def test_one_chunk_checksum_for_writer_and_reader(fields):
    with h5py.File(fields, "r") as f:
        values, stored = f["images"][()], f[CHECKSUMS][()]
    np.testing.assert_array_equal(chunk_crc32s(values, CHUNK), stored)
    np.testing.assert_array_equal(ChunkTable.of(values, CHUNK).crc32, stored)
