"""data_prep convert in one process: every input format, the options, bad input, crash safety,
and verify catching a damaged file. Inputs are tiny files made per test."""

from __future__ import annotations

import gzip
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import ROOT, convert, mpi_env, stored
from PIL import Image

from data_prep.__main__ import main
from hpcgan.data.format import SchemaError, read_info
from hpcgan.data.verify import scan

RNG = np.random.default_rng(0)


def image_folder(root: Path, classes: dict[str, int], size=(12, 10), mode="RGB") -> dict:
    """Class folders of PNGs with random pixels; returns {path: HWC or HW array}."""
    written = {}
    for name, count in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            shape = (*size, 3) if mode == "RGB" else size
            array = RNG.integers(0, 256, shape, dtype=np.uint8)
            path = root / name / f"{i:03d}.png"
            Image.fromarray(array).save(path)
            written[path] = array
    return written


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --- formats -------------------------------------------------------------------------------


def test_class_folders_become_labels_and_every_image_format_is_read(tmp_path, capsys):
    root = tmp_path / "imgs"
    pngs = image_folder(root, {"cat": 3, "dog": 2})
    grey = RNG.integers(0, 256, (12, 10), dtype=np.uint8)
    (root / "emu").mkdir()
    Image.fromarray(grey).save(root / "emu" / "a.bmp")
    Image.fromarray(grey).save(root / "emu" / "b.tif")
    Image.fromarray(grey).save(root / "emu" / "c.JPG", quality=95)
    (root / "emu" / "notes.txt").write_text("not an image, skipped")
    (root / "dog" / "._000.png").write_bytes(b"macOS metadata, hidden: skipped")

    out = tmp_path / "out.h5"
    assert convert("--input", root, "--out", out) == 0
    assert f"wrote {out}: 8 x 3x12x10 uint8 image, 3 classes" in capsys.readouterr().out
    images, labels, attrs = stored(out)
    assert list(attrs["class_names"]) == ["cat", "dog", "emu"]
    np.testing.assert_array_equal(labels, [0, 0, 0, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(images[0], pngs[root / "cat" / "000.png"].transpose(2, 0, 1))
    np.testing.assert_array_equal(images[5], np.stack([grey] * 3))  # grey replicated to RGB
    np.testing.assert_array_equal(images[6], np.stack([grey] * 3))
    assert np.abs(images[7].astype(int) - grey).mean() < 4  # JPEG: close, not exact
    assert attrs["kind"] == "image" and attrs["source"] == f"data_prep convert {root}"
    assert list(attrs["channel_min"]) == [images[:, c].min() for c in range(3)]
    assert attrs["mean"] == pytest.approx(images.astype(np.float64).mean(), rel=1e-12)
    assert scan(out)["checksums"] == 1


def test_loose_image_files_and_numeric_tiffs(tmp_path):
    field = RNG.random((6, 6)).astype(np.float32) * 1000
    Image.fromarray(field).save(tmp_path / "a.tif")
    Image.fromarray(np.full((6, 6), 7, np.uint8)).save(tmp_path / "b.png")
    assert (
        convert("--input", tmp_path / "a.tif", tmp_path / "b.png", "--out", tmp_path / "o.h5") == 0
    )
    images, labels, attrs = stored(tmp_path / "o.h5")
    assert images.dtype == np.float32 and attrs["kind"] == "field" and labels is None
    np.testing.assert_array_equal(images[0, 0], field)  # physical values kept
    np.testing.assert_array_equal(images[1, 0], 7)


@pytest.mark.parametrize(
    ("shape", "to_nchw"),
    [
        ((7, 5, 4), lambda a: a[:, None]),
        ((7, 5, 4, 3), lambda a: a.transpose(0, 3, 1, 2)),
        ((7, 2, 5, 4), lambda a: a),
    ],
)
def test_npy_layouts(tmp_path, shape, to_nchw):
    array = RNG.normal(size=shape)  # float64: stored as float32
    np.save(tmp_path / "a.npy", array)
    assert convert("--input", tmp_path / "a.npy", "--out", tmp_path / "o.h5") == 0
    images, _, attrs = stored(tmp_path / "o.h5")
    np.testing.assert_array_equal(images, to_nchw(array).astype(np.float32))
    assert attrs["kind"] == "field" and attrs["count"] == 7


def test_layout_option_overrides_the_guess(tmp_path):
    array = RNG.integers(0, 256, (4, 3, 3, 3), dtype=np.uint8)
    np.save(tmp_path / "a.npy", array)
    assert (
        convert("--input", tmp_path / "a.npy", "--out", tmp_path / "o.h5", "--layout", "nhwc") == 0
    )
    np.testing.assert_array_equal(stored(tmp_path / "o.h5")[0], array.transpose(0, 3, 1, 2))


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_with_labels(tmp_path, save):
    x = RNG.integers(0, 256, (9, 8, 8), dtype=np.uint8)
    y = np.arange(9) % 4
    save(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:2])
    out = tmp_path / "o.h5"
    assert (
        convert(
            "--input",
            tmp_path / "d.npz",
            "--out",
            out,
            "--key",
            "x_train",
            "--labels-key",
            "y_train",
        )
        == 0
    )
    images, labels, attrs = stored(out)
    np.testing.assert_array_equal(images[:, 0], x)
    np.testing.assert_array_equal(labels, y)
    assert attrs["source"] == f"data_prep convert {tmp_path / 'd.npz'}"
    save(tmp_path / "e.npz", images=x, labels=y)  # the only image array; "labels" by name
    assert convert("--input", tmp_path / "e.npz", "--out", out, "--overwrite") == 0
    np.testing.assert_array_equal(stored(out)[1], y)
    assert convert("--input", tmp_path / "e.npz", "--out", out, "--overwrite", "--no-labels") == 0
    assert stored(out)[1] is None


@pytest.mark.parametrize("gz", ["", ".gz"])
def test_idx_images_with_their_label_file(tmp_path, gz):
    x = RNG.integers(0, 256, (6, 5, 5), dtype=np.uint8)
    y = np.array([3, 1, 4, 1, 5, 9])
    write_idx(tmp_path / f"train-images-idx3-ubyte{gz}", x)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{gz}", y)
    out = tmp_path / "o.h5"
    # The label file is found next to the images file, or given explicitly.
    for inputs in (
        ["train-images-idx3-ubyte"],
        ["train-labels-idx1-ubyte", "train-images-idx3-ubyte"],
    ):
        paths = [tmp_path / (name + gz) for name in inputs]
        assert convert("--input", *paths, "--out", out, "--overwrite") == 0
        images, labels, _ = stored(out)
        np.testing.assert_array_equal(images[:, 0], x)
        np.testing.assert_array_equal(labels, y)


def test_hdf5_input_with_key_and_labels_key(tmp_path):
    x = RNG.random((10, 2, 4, 4)).astype(np.float32)
    with h5py.File(tmp_path / "sim.h5", "w") as f:
        f["runs/density"] = x
        f["runs/mass"] = x[:, 0]
        f["runs/cls"] = np.arange(10) % 2
    out = tmp_path / "o.h5"
    args = ["--input", tmp_path / "sim.h5", "--out", out, "--key", "runs/density"]
    assert convert(*args, "--labels-key", "/runs/cls") == 0
    images, labels, _ = stored(out)
    np.testing.assert_array_equal(images, x)
    np.testing.assert_array_equal(labels, np.arange(10) % 2)


def test_several_inputs_in_order_and_max_samples(tmp_path):
    a, b = RNG.random((5, 4, 4)), RNG.random((6, 4, 4))
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    out = tmp_path / "o.h5"
    assert convert("--input", tmp_path / "b.npy", tmp_path / "a.npy", "--out", out) == 0
    np.testing.assert_array_equal(stored(out)[0][:, 0], np.concatenate([b, a]).astype(np.float32))
    assert (
        convert(
            "--input",
            tmp_path / "b.npy",
            tmp_path / "a.npy",
            "--out",
            out,
            "--overwrite",
            "--max-samples",
            "8",
        )
        == 0
    )
    np.testing.assert_array_equal(
        stored(out)[0][:, 0], np.concatenate([b, a])[:8].astype(np.float32)
    )


# --- options -------------------------------------------------------------------------------


def test_resize_crop_channels_and_dtype(tmp_path):
    wide = RNG.integers(0, 256, (8, 16, 3), dtype=np.uint8)
    Image.fromarray(wide).save(tmp_path / "w.png")
    out = tmp_path / "o.h5"
    base = ["--input", tmp_path / "w.png", "--out", out, "--overwrite"]

    assert convert(*base, "--size", "4") == 0  # squeezed: Lanczos on 8-bit RGB
    expected = np.asarray(Image.fromarray(wide).resize((4, 4), Image.Resampling.LANCZOS))
    np.testing.assert_array_equal(stored(out)[0][0], expected.transpose(2, 0, 1))

    assert convert(*base, "--size", "4", "--crop") == 0  # centre square, then resized
    square = Image.fromarray(np.ascontiguousarray(wide[:, 4:12]))
    expected = np.asarray(square.resize((4, 4), Image.Resampling.LANCZOS))
    np.testing.assert_array_equal(stored(out)[0][0], expected.transpose(2, 0, 1))

    assert convert(*base, "--channels", "1") == 0  # ITU-R 601 luma
    luma = wide.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    np.testing.assert_array_equal(stored(out)[0][0, 0], np.rint(luma).astype(np.uint8))

    assert convert(*base, "--dtype", "float32") == 0
    images, _, attrs = stored(out)
    assert images.dtype == np.float32 and attrs["kind"] == "field"
    np.testing.assert_array_equal(images[0], wide.transpose(2, 0, 1))


def test_fields_shrink_by_area_average(tmp_path):
    field = RNG.lognormal(size=(3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "f.npy", field)
    assert convert("--input", tmp_path / "f.npy", "--out", tmp_path / "o.h5", "--size", "4") == 0
    images = stored(tmp_path / "o.h5")[0][:, 0]
    blocks = field.reshape(3, 4, 2, 4, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(images, blocks, rtol=1e-5)  # positive, means kept


def test_uint8_from_floats_needs_the_byte_range(tmp_path, capsys):
    np.save(tmp_path / "ok.npy", np.array([[[0.0, 254.6]]]))
    np.save(tmp_path / "bad.npy", np.array([[[0.0, 300.0]]]))
    assert (
        convert("--input", tmp_path / "ok.npy", "--out", tmp_path / "o.h5", "--dtype", "uint8") == 0
    )
    np.testing.assert_array_equal(stored(tmp_path / "o.h5")[0].ravel(), [0, 255])
    assert (
        convert("--input", tmp_path / "bad.npy", "--out", tmp_path / "b.h5", "--dtype", "uint8")
        == 2
    )
    assert "do not fit uint8" in capsys.readouterr().err


def test_chunks_compression_shuffle(tmp_path):
    x = RNG.integers(0, 256, (50, 1, 4, 4), dtype=np.uint8)
    y = np.arange(50)
    np.savez(tmp_path / "d.npz", images=x, labels=y)
    out = tmp_path / "o.h5"
    base = ["--input", tmp_path / "d.npz", "--out", out, "--overwrite"]
    assert convert(*base, "--chunk-samples", "8", "--compression", "lzf") == 0
    info = read_info(out)
    assert (info.chunk_samples, info.compression) == (8, "lzf")
    assert scan(out)["checksums"] == 7

    assert convert(*base, "--shuffle", "--compression", "gzip") == 0
    images, labels, attrs = stored(out)
    assert sorted(labels) == list(range(50)) and list(labels) != list(range(50))
    np.testing.assert_array_equal(images, x[labels])  # labels travel with their images
    assert attrs["source"].endswith("; shuffled with seed 0")
    assert convert(*base, "--shuffle") == 0
    np.testing.assert_array_equal(stored(out)[1], labels)  # seeded: the same order
    assert convert(*base, "--shuffle", "--seed", "1") == 0
    assert list(stored(out)[1]) != list(labels)


# --- bad input -----------------------------------------------------------------------------


def _bad_inputs(tmp: Path) -> dict[str, tuple[list, str]]:
    """name -> (convert arguments, part of the error message); files made on demand."""
    (tmp / "in").mkdir()
    folder = tmp / "in"
    image_folder(folder / "imgs", {"a": 2})
    good_png = (folder / "imgs" / "a" / "000.png").read_bytes()
    (folder / "truncated.png").write_bytes(good_png[: len(good_png) // 2])
    (folder / "text.png").write_text("not an image")
    image_folder(folder / "mixed", {"a": 1}, size=(8, 8))
    image_folder(folder / "mixed", {"b": 1}, size=(8, 9))
    (folder / "empty").mkdir()
    np.save(folder / "rank2.npy", np.zeros((4, 4)))
    np.save(folder / "rank6.npy", np.zeros((2, 2, 2, 2, 2, 2)))  # (rank 5: volumes)
    np.save(folder / "none.npy", np.zeros((0, 4, 4)))
    nan = np.ones((6, 4, 4), np.float32)
    nan[4, 1, 1] = np.nan
    np.save(folder / "nan.npy", nan)
    np.save(folder / "inf.npy", np.where(nan == 1, 1, np.inf).astype(np.float32))
    np.savez(folder / "two.npz", a=np.zeros((2, 4, 4)), b=np.zeros((2, 4, 4)))
    with h5py.File(folder / "two.h5", "w") as f:
        f["x"], f["y"] = np.zeros((2, 4, 4)), np.zeros((3, 4, 4))
    (folder / "fake.h5").write_text("not HDF5")
    out = tmp / "out" / "o.h5"
    out.parent.mkdir()
    return {
        "corrupt image": ([folder / "truncated.png"], "truncated.png: cannot decode image"),
        "not an image": ([folder / "text.png"], "text.png: not a readable image"),
        "mixed sizes": ([folder / "mixed"], f"differ in size: {folder}/mixed/a/000.png has 8x8"),
        "rank 2": ([folder / "rank2.npy"], "shape (4, 4) has rank 2; expected (N, H, W)"),
        "rank 6": ([folder / "rank6.npy"], "has rank 6"),
        "NaN": ([folder / "nan.npy"], "nan.npy sample 4 holds NaN or Inf values"),
        "Inf": ([folder / "inf.npy"], "inf.npy sample 4 holds NaN or Inf values"),
        "empty folder": ([folder / "empty"], "empty: no image files"),
        "empty array": ([folder / "none.npy"], "none.npy: holds no samples"),
        "no --key": (
            [folder / "two.npz"],
            "pass --key to name the images array (candidates: a, b)",
        ),
        "wrong --key": ([folder / "two.npz", "--key", "c"], "no array 'c' (--key); arrays: a, b"),
        "h5 --key": (
            [folder / "two.h5", "--key", "z"],
            "no dataset 'z' (--key); datasets: x (2, 4, 4)",
        ),
        "fake HDF5": ([folder / "fake.h5"], "fake.h5: not an HDF5 file"),
        "forced HDF5": ([folder / "nan.npy", "--format", "hdf5"], "nan.npy: not an HDF5 file"),
        "missing": ([folder / "nothing"], "nothing: no such file or directory"),
    }


BAD = [
    "corrupt image", "not an image", "mixed sizes", "rank 2", "rank 6", "NaN", "Inf",
    "empty folder", "empty array", "no --key", "wrong --key", "h5 --key", "fake HDF5",
    "forced HDF5", "missing",
]  # fmt: skip


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_exit_2_and_no_file(tmp_path, capsys, case):
    args, message = _bad_inputs(tmp_path)[case]
    out = tmp_path / "out" / "o.h5"
    assert convert("--input", *args, "--out", out) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("data_prep: error: "), captured.err
    assert message in lines[0]
    assert captured.out == "" and list(out.parent.iterdir()) == []


def test_output_that_exists_or_cannot_be_written(tmp_path, capsys):
    np.save(tmp_path / "a.npy", np.ones((2, 4, 4)))
    out = tmp_path / "o.h5"
    out.write_text("precious")
    assert convert("--input", tmp_path / "a.npy", "--out", out) == 2
    assert "o.h5 exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert out.read_text() == "precious"

    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    # root ignores permission bits; /sys refuses even root
    target = Path("/sys") if os.geteuid() == 0 else locked
    assert convert("--input", tmp_path / "a.npy", "--out", target / "o.h5") == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and f"cannot write in {target} (Permission denied)" in err[0]


# --- crash safety and verify ---------------------------------------------------------------


def test_killed_conversion_leaves_no_file_under_the_final_name(tmp_path):
    # gzip over random floats is slow (about 20 MB/s): time to kill it midway.
    np.save(tmp_path / "noise.npy", RNG.random((1 << 19, 1, 4, 4), dtype=np.float32))
    out = tmp_path / "o.h5"
    cmd = [sys.executable, "-m", "data_prep", "convert", "--input", str(tmp_path / "noise.npy")]
    proc = subprocess.Popen(
        [*cmd, "--out", str(out), "--compression", "gzip"], cwd=ROOT, env=mpi_env()
    )
    deadline = time.monotonic() + 60
    while not leftovers(tmp_path) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # well into writing
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL, "finished before it could be killed"
    assert not out.exists()
    (temp,) = leftovers(tmp_path)  # hidden, and not a dataset
    assert temp.startswith(".o.h5.tmp-")
    with pytest.raises(SchemaError):
        read_info(tmp_path / temp)


def test_sigterm_removes_the_temporary_file(tmp_path):
    np.save(tmp_path / "noise.npy", RNG.random((1 << 19, 1, 4, 4), dtype=np.float32))
    cmd = [sys.executable, "-m", "data_prep", "convert", "--input", str(tmp_path / "noise.npy")]
    proc = subprocess.Popen(
        [*cmd, "--out", str(tmp_path / "o.h5"), "--compression", "gzip"],
        cwd=ROOT,
        env=mpi_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    while not leftovers(tmp_path) and proc.poll() is None:
        time.sleep(0.01)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 130
    assert proc.stderr.read().strip() == "data_prep: interrupted"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noise.npy"]


def test_verify_summarises_and_catches_a_flipped_byte(tmp_path, capsys):
    root = tmp_path / "imgs"
    image_folder(root, {"a": 20, "b": 20})
    out = tmp_path / "o.h5"
    assert convert("--input", root, "--out", out, "--chunk-samples", "8") == 0
    capsys.readouterr()
    assert main(["verify", str(out)]) == 0
    text = capsys.readouterr().out
    assert "channel 2 min" in text and "checksums 5 chunk CRC-32s match" in text
    with h5py.File(out, "r") as f:
        offset = f["images"].id.get_chunk_info(3).byte_offset  # samples 24..31
    with open(out, "r+b") as f:
        f.seek(offset + 100)
        byte = f.read(1)
        f.seek(offset + 100)
        f.write(bytes([byte[0] ^ 1]))  # one bit: statistics barely move
    assert main(["verify", str(out)]) == 2
    (err,) = capsys.readouterr().err.splitlines()
    assert "1 chunk(s) fail their CRC-32 checksum, first samples 24..31" in err
