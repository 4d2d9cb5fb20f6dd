"""The streaming writer behind data_prep convert (hpcgan.data.write): per-chunk statistics that
do not depend on who wrote which block, several writers filling one file, part-file copies."""

from __future__ import annotations

import zlib

import h5py
import numpy as np
import pytest

from hpcgan.data import block_writers
from hpcgan.data.block_writers import RawChunkWriter
from hpcgan.data.chunks import ChunkTable
from hpcgan.data.format import CHECKSUMS, SchemaError, read_info
from hpcgan.data.verify import scan
from hpcgan.data.write import DatasetWriter, write_dataset

RNG = np.random.default_rng(0)
FIELDS = (RNG.normal(1000.0, 3.0, size=(45, 2, 5, 3))).astype(np.float32)  # mean >> std


def _contents(path) -> tuple:
    with h5py.File(path, "r") as f:
        attrs = {k: np.asarray(v).tolist() for k, v in f.attrs.items()}
        labels = f["labels"][()].tolist() if "labels" in f else None
        return f["images"][()].tobytes(), labels, f[CHECKSUMS][()].tolist(), attrs


def test_chunk_statistics_do_not_depend_on_blocks():
    whole = ChunkTable.of(FIELDS, 4)
    pieces = ChunkTable.join(
        [ChunkTable.of(FIELDS[a:b], 4) for a, b in [(0, 8), (8, 12), (12, 45)]]
    )
    for a, b in zip(whole.fields(), pieces.fields()):
        np.testing.assert_array_equal(a, b)
    assert whole.stats()[0] == pieces.stats()[0]
    values = FIELDS.astype(np.float64)
    scalar, channels = whole.stats()
    assert scalar["std"] == pytest.approx(values.std(), rel=1e-9)
    np.testing.assert_allclose(channels["channel_std"], values.std(axis=(0, 2, 3)), rtol=1e-9)
    np.testing.assert_array_equal(channels["channel_max"], values.max(axis=(0, 2, 3)))
    assert len(whole) == 12 and whole.crc32[-1] == zlib.crc32(FIELDS[44:])


def test_two_writers_fill_one_preallocated_file(tmp_path, monkeypatch):
    monkeypatch.setattr(block_writers, "_FLUSH_BYTES", 1)  # every block starts a background flush
    labels = np.arange(45) % 3
    expected = tmp_path / "expected.h5"
    write_dataset(expected, FIELDS, labels, kind="field", source="s", chunk_samples=4)
    out = tmp_path / "two.h5"
    with DatasetWriter(out, 45, FIELDS.shape[1:], "float32", labels=True, chunk_samples=4) as owner:
        assert owner.layout is not None
        with RawChunkWriter(owner.layout, first=24, count=21) as other:  # "rank 1"
            other.write(24, FIELDS[24:40], labels[24:40])
            other.write(40, FIELDS[40:], labels[40:])
        owner.write(0, FIELDS[:24], labels[:24])  # "rank 0"
        owner.adopt(24, 21, other.table())
        info = owner.commit(kind="field", source="s")
    assert info == read_info(out)
    assert _contents(out) == _contents(expected)
    assert scan(out)["checksums"] == 12


def test_compressed_parts_are_copied_chunk_by_chunk(tmp_path):
    expected = tmp_path / "expected.h5"
    write_dataset(
        expected, FIELDS, None, kind="field", source="s", chunk_samples=4, compression="gzip"
    )
    part = tmp_path / "part.h5"
    with DatasetWriter(
        part, 5, FIELDS.shape[1:], "float32", labels=False, chunk_samples=4, compression="gzip"
    ) as w:
        w.write(0, FIELDS[40:])  # the last, partial chunk: fewer samples than one chunk
        w.commit(kind="field", source="part", durable=False)
        table = w.table()
    out = tmp_path / "out.h5"
    with DatasetWriter(
        out, 45, FIELDS.shape[1:], "float32", labels=False, chunk_samples=4, compression="gzip"
    ) as owner:
        assert owner.layout is None
        owner.write(0, FIELDS[:40])
        owner.copy_chunks(part, 40, table)
        owner.commit(kind="field", source="s")
    assert _contents(out) == _contents(expected)


def test_writer_refuses_gaps_misaligned_blocks_and_bad_blocks(tmp_path):
    out = tmp_path / "x.h5"
    with DatasetWriter(out, 45, FIELDS.shape[1:], "float32", labels=False, chunk_samples=4) as w:
        with pytest.raises(ValueError, match="not aligned to chunks"):
            w.write(0, FIELDS[:6])
        with pytest.raises(SchemaError, match="expected float32"):
            w.write(0, FIELDS[:4].astype(np.float64))
        w.write(0, FIELDS[:8])
        with pytest.raises(ValueError, match="out of order"):
            w.write(12, FIELDS[12:16])
        with pytest.raises(SchemaError, match="only 8 of 45 samples written"):
            w.commit(kind="field", source="s")
    assert list(tmp_path.iterdir()) == []
