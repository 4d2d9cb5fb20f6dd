"""data_prep convert on volumes: every 3D input form (N, D, H, W), (N, C, D, H, W), channels-last
(N, D, H, W, C), flat (N, V) with --shape; resampling (area down, trilinear up) and --crop; bad
shapes; 1 and 2 ranks byte-identical. Inputs are tiny arrays made per test."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from conftest import convert, launch, stored

from hpcgan.data.format import read_info
from hpcgan.data.verify import scan

RNG = np.random.default_rng(3)


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("data_prep: error: "), err
    return err


def test_ndhw_needs_layout_and_is_one_channel(tmp_path, capsys):
    array = RNG.lognormal(size=(5, 4, 6, 3))  # float64: stored as float32, values kept
    np.save(tmp_path / "v.npy", array)
    out = tmp_path / "o.h5"
    assert convert("--input", tmp_path / "v.npy", "--out", out, "--layout", "ndhw") == 0
    assert f"wrote {out}: 5 x 1x4x6x3 float32 field" in capsys.readouterr().out
    images, labels, attrs = stored(out)
    np.testing.assert_array_equal(images, array[:, None].astype(np.float32))
    assert labels is None and attrs["kind"] == "field"
    assert read_info(out).spatial == (4, 6, 3) and scan(out)["checksums"] >= 1


def test_ncdhw_with_labels_keeps_uint8(tmp_path):
    x = RNG.integers(0, 256, (7, 2, 3, 5, 4), dtype=np.uint8)
    np.savez(tmp_path / "v.npz", volumes=x, labels=np.arange(7) % 3)
    out = tmp_path / "o.h5"
    assert convert("--input", tmp_path / "v.npz", "--out", out, "--chunk-samples", "3") == 0
    images, labels, attrs = stored(out)
    np.testing.assert_array_equal(images, x)
    np.testing.assert_array_equal(labels, np.arange(7) % 3)
    assert attrs["kind"] == "image" and read_info(out).num_classes == 3


@pytest.mark.parametrize("layout", [[], ["--layout", "ndhwc"]])
def test_channels_last_keras_layout_from_hdf5(tmp_path, layout):
    x = RNG.normal(size=(6, 5, 5, 4, 1)).astype(np.float32)  # 3DGAN: (N, 25, 25, 25, 1)
    with h5py.File(tmp_path / "g.h5", "w") as f:
        f["ECAL"] = x
        f["energy"] = RNG.uniform(size=(6,))
    out = tmp_path / "o.h5"
    assert convert("--input", tmp_path / "g.h5", "--out", out, *layout) == 0
    np.testing.assert_array_equal(stored(out)[0], x.transpose(0, 4, 1, 2, 3))


def test_flat_vectors_with_shape_like_calochallenge(tmp_path, capsys):
    showers = RNG.exponential(size=(9, 2 * 3 * 4)).astype(np.float32)
    with h5py.File(tmp_path / "calo.h5", "w") as f:
        f["showers"] = showers
        f["incident_energies"] = RNG.uniform(size=(9, 1))  # (N, 1): not the samples
    out = tmp_path / "o.h5"
    assert convert("--input", tmp_path / "calo.h5", "--out", out, "--shape", "2,3,4") == 0
    images, _, attrs = stored(out)
    np.testing.assert_array_equal(images, showers.reshape(9, 1, 2, 3, 4))
    assert "reshaped to 2x3x4" in attrs["source"]

    capsys.readouterr()
    args = ("--input", tmp_path / "calo.h5", "--out", out, "--overwrite", "--shape", "5,5,5")
    assert convert(*args) == 2
    assert "none of shape (N, 125) for --shape" in _error(capsys)
    args = ("--input", tmp_path / "calo.h5", "--key", "showers", "--out", out, "--overwrite")
    assert convert(*args, "--shape", "5,5,5") == 2
    assert "samples of 24 values cannot be reshaped to --shape 5x5x5 (125 values)" in _error(capsys)
    assert convert(*args, "--shape", "2,x,4") == 2
    assert "--shape must be D,H,W" in _error(capsys)
    assert convert(*args, "--shape", "6,4") == 0  # H,W: 2D maps
    np.testing.assert_array_equal(stored(out)[0], showers.reshape(9, 1, 6, 4))


def test_area_down_keeps_constants_and_means(tmp_path):
    constant = np.full((3, 1, 8, 8, 8), 0.1, np.float32)
    np.save(tmp_path / "c.npy", constant)
    assert convert("--input", tmp_path / "c.npy", "--out", tmp_path / "c.h5", "--size", "4") == 0
    images = stored(tmp_path / "c.h5")[0]
    assert images.shape == (3, 1, 4, 4, 4)
    np.testing.assert_array_equal(images, np.float32(0.1))  # exactly constant

    x = RNG.lognormal(size=(2, 1, 4, 4, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert convert("--input", tmp_path / "x.npy", "--out", tmp_path / "x.h5", "--size", "2") == 0
    blocks = x.astype(np.float64).reshape(2, 1, 2, 2, 2, 2, 2, 2).mean(axis=(3, 5, 7))
    np.testing.assert_allclose(stored(tmp_path / "x.h5")[0], blocks, rtol=1e-6)


def test_trilinear_up_and_mixed_axes(tmp_path):
    a, b = 1.0, 5.0
    x = np.empty((1, 1, 2, 2, 2), np.float32)
    x[..., 0], x[..., 1] = a, b  # varies along W only
    np.save(tmp_path / "x.npy", x)
    assert convert("--input", tmp_path / "x.npy", "--out", tmp_path / "x.h5", "--size", "4") == 0
    images = stored(tmp_path / "x.h5")[0]
    # align_corners=False: source positions -0.25, 0.25, 0.75, 1.25, clamped at the edges
    want = np.array([a, 0.75 * a + 0.25 * b, 0.25 * a + 0.75 * b, b], np.float32)
    np.testing.assert_allclose(images, np.broadcast_to(want, (1, 1, 4, 4, 4)), rtol=1e-6)

    mixed = np.full((2, 8, 4, 2, 1), 3.0, np.float32)  # ndhwc: 8x4x2 -> 4 (down, =, up)
    np.save(tmp_path / "m.npy", mixed)
    assert convert("--input", tmp_path / "m.npy", "--out", tmp_path / "m.h5", "--size", "4") == 0
    np.testing.assert_array_equal(stored(tmp_path / "m.h5")[0], np.full((2, 1, 4, 4, 4), 3.0))


def test_crop_to_a_cube_and_uint8_resize(tmp_path):
    x = RNG.integers(0, 256, (3, 1, 6, 4, 5), dtype=np.uint8)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "o.h5"
    assert convert("--input", tmp_path / "x.npy", "--out", out, "--crop") == 0
    np.testing.assert_array_equal(stored(out)[0], x[:, :, 1:5, :, 0:4])
    args = ("--input", tmp_path / "x.npy", "--out", out, "--overwrite", "--crop", "--size", "2")
    assert convert(*args) == 0
    images = stored(out)[0]
    want = x[:, :, 1:5, :, 0:4].astype(np.float64).reshape(3, 1, 2, 2, 2, 2, 2, 2)
    assert images.dtype == np.uint8
    np.testing.assert_array_equal(images, np.rint(want.mean(axis=(3, 5, 7))).astype(np.uint8))


def test_bad_volume_shapes_exit_2_with_one_line(tmp_path, capsys):
    np.save(tmp_path / "r4.npy", np.zeros((2, 3, 3, 3)))
    np.save(tmp_path / "r5.npy", np.zeros((2, 1, 3, 3, 3)))
    np.save(tmp_path / "r6.npy", np.zeros((2,) * 6))
    np.save(tmp_path / "img.npy", np.zeros((2, 3, 3)))
    out = tmp_path / "o.h5"
    cases = [
        (["r4.npy", "--layout", "ncdhw"], "--layout ncdhw is for arrays of rank 5"),
        (["r5.npy", "--layout", "ndhw"], "--layout ndhw is for arrays of rank 4"),
        (["r6.npy"], "has rank 6; expected (N, H, W)"),
        (["r5.npy", "--shape", "3,3,3"], "--shape applies to flat (N, V) arrays"),
        (["img.npy", "r5.npy"], "inputs differ in spatial rank"),
    ]
    for args, message in cases:
        inputs = [tmp_path / a if a.endswith(".npy") else a for a in args]
        assert convert("--input", *inputs, "--out", out) == 2
        assert message in _error(capsys)
        assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.mpi
def test_volumes_2_ranks_byte_identical_to_1(tmp_path):
    x = RNG.lognormal(size=(23, 6, 6, 5, 2)).astype(np.float32)  # channels-last
    np.save(tmp_path / "v.npy", x)
    contents = []
    for np_, name in ((None, "one.h5"), (2, "two.h5")):
        args = ["convert", "--input", str(tmp_path / "v.npy"), "--out", str(tmp_path / name)]
        options = ["--size", "4", "--chunk-samples", "3", "--shuffle"]
        done = launch([*args, *options], np=np_, timeout=120, module="data_prep")
        assert done.returncode == 0, done.stderr
        with h5py.File(tmp_path / name, "r") as f:
            found = {k: f[k][()].tobytes() for k in ("images", "images_crc32")}
            found.update({k: np.asarray(v).tolist() for k, v in f.attrs.items()})
        contents.append(found)
    assert contents[0] == contents[1]
    assert read_info(tmp_path / "two.h5").shape == (2, 4, 4, 4)
