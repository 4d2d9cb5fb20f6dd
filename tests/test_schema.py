"""HDF5 schema 1: writing, cheap validation (read_info) and the full check (scan)."""

from __future__ import annotations

import os
from collections.abc import Callable

import h5py
import numpy as np
import pytest

from hpcgan import files
from hpcgan.data import chunks
from hpcgan.data.format import (
    CHANNEL_KEYS,
    CHECKSUMS,
    SCHEMA_VERSION,
    SchemaError,
    chunk_samples_for,
    read_info,
)
from hpcgan.data.verify import scan
from hpcgan.data.write import write_dataset


def _images(n: int = 40, c: int = 1, size: int = 16, dtype: str = "uint8") -> np.ndarray:
    rng = np.random.default_rng(0)
    if dtype == "uint8":
        return rng.integers(0, 256, size=(n, c, size, size), dtype=np.uint8)
    return rng.lognormal(size=(n, c, size, size)).astype(dtype)


@pytest.fixture
def digits_file(tmp_path):
    """A small labelled uint8 dataset with several chunks."""
    path = tmp_path / "small.h5"
    labels = np.arange(40) % 7
    write_dataset(path, _images(), labels, kind="image", source="test", chunk_samples=8)
    return path


def test_round_trip_uint8_with_labels(tmp_path):
    images, labels = _images(), (np.arange(40) % 7).astype(np.int32)
    path = tmp_path / "d.h5"
    info = write_dataset(path, images, labels, kind="image", source="unit test")
    assert info == read_info(path)
    assert (info.path, info.n, info.shape, info.dtype) == (str(path), 40, (1, 16, 16), "uint8")
    assert (info.kind, info.source, info.has_labels, info.num_classes) == (
        "image",
        "unit test",
        True,
        7,
    )
    assert info.compression is None and info.chunk_samples == 40
    values = images.astype(np.float64)
    expected = {"min": 0.0, "max": 255.0, "mean": values.mean(), "std": values.std()}
    assert info.stats == pytest.approx(expected, rel=1e-12)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["images"][()], images)
        assert f["labels"].dtype == np.int64
        np.testing.assert_array_equal(f["labels"][()], labels)
        assert f.attrs["hpcgan_schema"] == SCHEMA_VERSION and f.attrs["count"] == 40


def test_round_trip_float_fields_compressed_without_labels(tmp_path):
    images = _images(dtype="float32")
    path = tmp_path / "f.h5"
    info = write_dataset(path, images, None, kind="field", source="grf", compression="gzip")
    assert (info.dtype, info.kind, info.has_labels, info.num_classes) == (
        "float32",
        "field",
        False,
        0,
    )
    assert info.compression == "gzip"
    assert info.stats["mean"] == pytest.approx(images.astype(np.float64).mean(), rel=1e-12)
    assert info.stats["max"] == float(images.max())


def test_chunk_samples_for_targets_half_a_mebibyte():
    assert chunk_samples_for(32 * 32) == 512
    assert chunk_samples_for(64 * 64 * 4) == 32
    assert chunk_samples_for(3 * 1024 * 1024) == 1
    with pytest.raises(ValueError):
        chunk_samples_for(0)


def test_written_chunks_are_about_half_a_mebibyte(tmp_path):
    info = write_dataset(tmp_path / "c.h5", _images(n=2000, size=32), None, kind="image", source="")
    chunk_bytes = info.chunk_samples * info.sample_nbytes
    assert 0.25 * 2**20 <= chunk_bytes <= 2**20
    with h5py.File(tmp_path / "c.h5", "r") as f:
        assert f["images"].chunks == (info.chunk_samples, 1, 32, 32)


@pytest.mark.parametrize(
    ("images", "labels", "kind", "match"),
    [
        (_images(dtype="float64"), None, "image", "uint8 or float32"),
        (_images()[:, 0, 0], None, "image", r"\[N, C, H, W\]"),  # rank 2 (rank 3 is 1D)
        (_images()[:0], None, "image", "empty"),
        (_images(), None, "video", "kind"),
        (_images(), np.arange(39), "image", "labels must have shape"),
        (_images(), np.arange(40) - 1, "image", "labels must be >= 0"),
        (_images(), np.zeros(40), "image", "labels must be integers"),
    ],
)
def test_write_rejects_bad_input(tmp_path, images, labels, kind, match):
    with pytest.raises(SchemaError, match=match):
        write_dataset(tmp_path / "x.h5", images, labels, kind=kind, source="")
    assert os.listdir(tmp_path) == []


def test_nan_mid_write_leaves_no_file(tmp_path):
    images = _images(dtype="float32")
    images[37, 0, 3, 3] = np.nan
    with pytest.raises(SchemaError, match="NaN or Inf.*sample 37"):
        write_dataset(tmp_path / "x.h5", images, None, kind="field", source="", chunk_samples=4)
    assert os.listdir(tmp_path) == []


def test_failed_write_keeps_old_file_and_removes_temp(tmp_path, monkeypatch):
    path = tmp_path / "x.h5"
    old = write_dataset(path, _images(), None, kind="image", source="old")

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_dataset(path, _images(n=10), None, kind="image", source="new")
    assert os.listdir(tmp_path) == ["x.h5"]
    assert read_info(path) == old


def test_interrupt_mid_write_removes_temp(tmp_path, monkeypatch):
    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(chunks.ChunkTable, "of", interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(tmp_path / "x.h5", _images(), None, kind="image", source="")
    assert os.listdir(tmp_path) == []


def _delete(name: str) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        del f[name]

    return edit


def _del_attr(name: str) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        del f.attrs[name]

    return edit


def _set_attr(name: str, value: object) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        f.attrs[name] = value

    return edit


def _replace(name: str, data: np.ndarray, **kwargs) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        del f[name]
        f.create_dataset(name, data=data, **kwargs)

    return edit


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (_delete("images"), "no /images dataset"),
        (
            _replace("images", np.zeros((40, 16), np.uint8), chunks=True),
            "expected rank 3 .N, C, L., rank 4",
        ),
        (_replace("images", np.zeros((40, 1, 4, 4), np.int16), chunks=(8, 1, 4, 4)), "dtype int16"),
        (
            _replace("images", np.zeros((0, 1, 4, 4), np.uint8), maxshape=(None, 1, 4, 4)),
            "zero samples",
        ),
        (_replace("images", np.zeros((40, 1, 4, 4), np.uint8)), "not chunked along axis 0"),
        (_del_attr("hpcgan_schema"), "no hpcgan_schema attribute"),
        (_set_attr("hpcgan_schema", 2), "reads schema 1"),
        (_set_attr("hpcgan_schema", "1"), "expected an integer"),
        (_set_attr("kind", "video"), "kind is 'video'"),
        (_del_attr("source"), "source is missing"),
        (_del_attr("mean"), "no mean attribute"),
        (_set_attr("std", np.nan), "std is nan"),
        (_set_attr("count", 41), "count is 41"),
        (_replace("labels", np.zeros(39, np.int64)), r"expected shape \(40,\)"),
        (_replace("labels", np.zeros((40, 2), np.int64)), r"expected shape \(40,\)"),
        (_replace("labels", np.full(40, -1, np.int64)), "negative"),
        (_replace("labels", np.zeros(40, np.float32)), "dtype float32"),
    ],
)
def test_read_info_rejects_schema_violations(digits_file, edit, match):
    with h5py.File(digits_file, "r+") as f:
        edit(f)
    with pytest.raises(SchemaError, match=match) as caught:
        read_info(digits_file)
    message = str(caught.value)
    assert message.startswith(f"{digits_file}: ") and "\n" not in message


def test_read_info_rejects_missing_non_hdf5_and_truncated_files(tmp_path, digits_file):
    with pytest.raises(SchemaError, match="no such file"):
        read_info(tmp_path / "missing.h5")
    with pytest.raises(SchemaError, match="not a regular file"):
        read_info(tmp_path)
    text = tmp_path / "text.h5"
    text.write_text("not hdf5\n")
    with pytest.raises(SchemaError, match="not an HDF5 file"):
        read_info(text)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(digits_file.read_bytes()[:2000])
    with pytest.raises(SchemaError, match="unreadable HDF5 file") as caught:
        read_info(truncated)
    assert "\n" not in str(caught.value)


def test_scan_recomputes_statistics(digits_file):
    info = read_info(digits_file)
    for block in (None, 3, 8, 1000):
        summary = scan(digits_file, block=block)
        assert summary["n"] == 40 and summary["shape"] == (1, 16, 16)
        assert summary["stats"] == pytest.approx(info.stats, rel=1e-12)


def test_scan_detects_modified_values(digits_file):
    with h5py.File(digits_file, "r+") as f:
        f["images"][5] = 255 - f["images"][5]
    read_info(digits_file)  # metadata alone cannot tell
    with pytest.raises(SchemaError, match="CRC-32 checksum, first samples 0..7; .* damaged"):
        scan(digits_file)


@pytest.mark.parametrize("key", ["mean", "channel_std"])
def test_scan_detects_statistics_that_do_not_match(digits_file, key):
    with h5py.File(digits_file, "r+") as f:
        f.attrs[key] = f.attrs[key] * 1.001
    with pytest.raises(SchemaError, match=f"stored {key}.* does not match the data"):
        scan(digits_file)


def test_scan_checks_files_written_without_checksums(digits_file):
    with h5py.File(digits_file, "r+") as f:
        del f[CHECKSUMS]
        for key in (*CHANNEL_KEYS, "labels_crc32"):
            del f.attrs[key]
    summary = scan(digits_file)
    assert summary["checksums"] is None and summary["channel_stats"]["channel_min"] == [0.0]


def test_scan_detects_nan_in_fields(tmp_path):
    path = tmp_path / "f.h5"
    write_dataset(path, _images(dtype="float32"), None, kind="field", source="", chunk_samples=8)
    with h5py.File(path, "r+") as f:
        f["images"][21, 0, 0, 0] = np.inf
    with pytest.raises(SchemaError, match="NaN or Inf.*sample 21"):
        scan(path)
