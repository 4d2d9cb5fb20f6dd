"""data_prep convert with continuous conditions and symmetries: CaloChallenge and 3DGAN files
recognised (grid, conditions, units, symmetry), --conditions from npz, bad conditions refused
with nothing left behind, the ambiguous-layout refusal, --shape L for 1D, and the symmetry
attribute written by synth and convert and overridden by --symmetry/--periodic/--flips."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from conftest import convert, launch, stored

from data_prep.__main__ import main
from hpcgan.data.format import read_info
from hpcgan.data.verify import scan
from hpcgan.symmetry import Symmetry

RNG = np.random.default_rng(11)


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("data_prep: error: "), err
    return err


def _nothing_left(folder, out) -> None:
    assert not out.exists()
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]


def _calo(path, n, voxels, energies=None):
    """A CaloChallenge-like file; each shower's first voxel is its index."""
    showers = RNG.exponential(size=(n, voxels)).astype(np.float32)
    showers[:, 0] = np.arange(n)
    energies = 10 ** RNG.uniform(3, 6, (n, 1)) if energies is None else energies
    with h5py.File(path, "w") as f:
        f["showers"] = showers
        f["incident_energies"] = energies
    return showers, energies


@pytest.mark.parametrize(
    ("voxels", "grid", "periodic"),
    [(6480, (45, 16, 9), (False, True, False)), (368, (368,), (False,))],
)
def test_calochallenge_grid_energies_and_angle_symmetry(tmp_path, capsys, voxels, grid, periodic):
    showers, energies = _calo(tmp_path / "calo.h5", 64, voxels)
    out = tmp_path / "o.h5"
    assert convert("--input", tmp_path / "calo.h5", "--out", out) == 0
    line = capsys.readouterr().out
    low, high = energies.min(), energies.max()
    assert f"conditions incident_energy {low:.4g}..{high:.4g} MeV" in line
    info = read_info(out)
    assert info.spatial == grid and info.kind == "field"
    assert info.condition_names == ("incident_energy",) and info.condition_units == ("MeV",)
    assert info.symmetry.periodic == periodic and not any(info.symmetry.flips)
    images, _, attrs = stored(out)
    np.testing.assert_array_equal(images, showers.reshape(64, 1, *grid))
    assert "CaloChallenge file" in attrs["source"]
    with h5py.File(out) as f:  # MeV kept, never rescaled
        np.testing.assert_array_equal(f["conditions"][()], energies.astype(np.float32))
    assert scan(out)["conditions"]["max"] == [pytest.approx(float(np.float32(high)))]


def test_conditions_follow_their_samples_through_shuffle_and_max_samples(tmp_path):
    showers, energies = _calo(tmp_path / "calo.h5", 40, 368)
    out = tmp_path / "o.h5"
    assert convert(
        "--input", tmp_path / "calo.h5", "--out", out, "--shuffle", "--seed", "3",
        "--max-samples", "30", "--chunk-samples", "4",
    ) == 0  # fmt: skip
    images = stored(out)[0]
    index = images[:, 0, 0].astype(int)
    assert sorted(index) != list(index) and len(index) == 30
    with h5py.File(out) as f:
        np.testing.assert_array_equal(f["conditions"][:, 0], energies[index, 0].astype(np.float32))


def test_3dgan_ecal_is_volumes_with_energy_and_theta(tmp_path):
    ecal = RNG.exponential(size=(16, 51, 51, 25)).astype(np.float32)
    energy = RNG.uniform(10, 500, (16,))
    theta = RNG.uniform(1.0, 2.1, (16, 1))
    with h5py.File(tmp_path / "g.h5", "w") as f:
        f["ECAL"], f["energy"], f["theta"] = ecal, energy, theta
    out = tmp_path / "o.h5"
    assert convert("--input", tmp_path / "g.h5", "--out", out) == 0
    info = read_info(out)
    assert info.shape == (1, 51, 51, 25)
    assert info.condition_names == ("energy", "theta")
    assert info.condition_units == ("GeV", "rad")
    assert info.symmetry == Symmetry.none(3)
    np.testing.assert_array_equal(stored(out)[0], ecal[:, None])
    with h5py.File(out) as f:
        want = np.stack([energy, theta[:, 0]], axis=1).astype(np.float32)
        np.testing.assert_array_equal(f["conditions"][()], want)


def test_conditions_option_reads_npz_columns_and_shape_l_makes_1d(tmp_path):
    x = RNG.normal(size=(20, 50)).astype(np.float32)
    omega, params = RNG.uniform(0.1, 0.5, 20), RNG.uniform(size=(20, 2))
    np.savez(tmp_path / "d.npz", x=x, omega_m=omega, p=params)
    out = tmp_path / "o.h5"
    args = ("--input", tmp_path / "d.npz", "--key", "x", "--out", out, "--shape", "50")
    assert convert(*args, "--conditions", "omega_m,p") == 0
    info = read_info(out)
    assert info.shape == (1, 50) and info.condition_names == ("omega_m", "p_0", "p_1")
    assert info.condition_units == ("", "", "")
    with h5py.File(out) as f:
        np.testing.assert_array_equal(f["conditions"][()], np.c_[omega, params].astype(np.float32))


@pytest.mark.parametrize(
    ("conditions", "message"),
    [
        (np.r_[np.ones(10), np.nan, np.ones(9)], "conditions hold NaN or Inf (first in sample 10)"),
        (np.ones(19), "conditions 'c' must be 20 numbers or rows of numbers"),
        (np.ones((20, 2, 2)), "got float64 (20, 2, 2)"),
    ],
)
def test_bad_conditions_exit_2_with_one_line_and_no_file(tmp_path, capsys, conditions, message):
    np.savez(tmp_path / "d.npz", x=np.ones((20, 4, 4), np.float32), c=conditions)
    out = tmp_path / "o.h5"
    assert (
        convert("--input", tmp_path / "d.npz", "--key", "x", "--out", out, "--conditions", "c") == 2
    )
    assert message in _error(capsys)
    _nothing_left(tmp_path, out)


def test_nan_incident_energy_and_missing_key_are_refused(tmp_path, capsys):
    _calo(tmp_path / "calo.h5", 8, 368, energies=np.r_[np.ones(7), np.inf][:, None])
    out = tmp_path / "o.h5"
    assert convert("--input", tmp_path / "calo.h5", "--out", out) == 2
    assert "conditions hold NaN or Inf (first in sample 7)" in _error(capsys)
    _nothing_left(tmp_path, out)
    np.save(tmp_path / "x.npy", np.ones((4, 3, 3)))
    assert convert("--input", tmp_path / "x.npy", "--out", out, "--conditions", "e") == 2
    assert "--conditions needs an npz or HDF5 input" in _error(capsys)
    _nothing_left(tmp_path, out)


def test_ambiguous_4d_arrays_are_refused_naming_layout(tmp_path, capsys):
    cube = RNG.normal(size=(12, 8, 8, 8)).astype(np.float32)
    np.save(tmp_path / "c.npy", cube)
    out = tmp_path / "o.h5"
    assert convert("--input", tmp_path / "c.npy", "--out", out) == 2
    err = _error(capsys)
    assert "12 images of 8 channels or 12 volumes of 8x8x8" in err and "--layout" in err
    _nothing_left(tmp_path, out)
    assert convert("--input", tmp_path / "c.npy", "--out", out, "--layout", "ndhw") == 0
    assert read_info(out).shape == (1, 8, 8, 8)
    np.save(tmp_path / "v.npy", np.zeros((2, 6, 5, 5, 6), np.float32))
    assert convert("--input", tmp_path / "v.npy", "--out", tmp_path / "v.h5") == 2
    assert "pass --layout ncdhw or ndhwc" in _error(capsys)


def test_symmetry_defaults_and_overrides(tmp_path, capsys):
    x = RNG.normal(size=(6, 1, 8, 8)).astype(np.float32)
    np.save(tmp_path / "m.npy", x)
    out = tmp_path / "o.h5"
    base = ("--input", tmp_path / "m.npy", "--out", out, "--overwrite")
    assert convert(*base) == 0
    assert read_info(out).symmetry == Symmetry.none(2)
    assert convert(*base, "--symmetry", "box") == 0
    assert read_info(out).symmetry == Symmetry.periodic_box((8, 8))
    assert convert(*base, "--symmetry", "box", "--rotations", "none", "--flips", "1") == 0
    assert read_info(out).symmetry == Symmetry((True, True), (False, True), ())
    _calo(tmp_path / "calo.h5", 8, 6480)
    calo = ("--input", tmp_path / "calo.h5", "--out", out, "--overwrite")
    assert convert(*calo, "--periodic", "none", "--flips", "1") == 0
    assert read_info(out).symmetry == Symmetry((False,) * 3, (False, True, False), ())
    capsys.readouterr()
    assert convert(*calo, "--rotations", "0:1") == 2
    assert "joins axes of sides 45 and 16" in _error(capsys)
    assert convert(*calo, "--periodic", "3") == 2
    assert "--periodic '3': give spatial axes 0..2" in _error(capsys)
    # Resampled, the grid no longer wraps: the recognised periodic angle axis is not kept.
    assert convert(*calo, "--size", "8") == 0
    assert read_info(out).symmetry == Symmetry.none(3)
    assert convert(*calo) == 0
    assert read_info(out).symmetry.periodic == (False, True, False)


def test_synth_writes_the_kinds_symmetry(tmp_path):
    assert (
        main(["synth", "--kind", "grf", "--out", str(tmp_path / "g.h5"), "--n", "4", "--size", "8"])
        == 0
    )
    with h5py.File(tmp_path / "g.h5") as f:
        assert Symmetry.from_json(f.attrs["symmetry"], (8, 8)) == Symmetry.periodic_box((8, 8))
    assert main(["synth", "--kind", "digits", "--out", str(tmp_path / "d.h5"), "--n", "4"]) == 0
    with h5py.File(tmp_path / "d.h5") as f:
        assert Symmetry.from_json(f.attrs["symmetry"], (32, 32)) == Symmetry.none(2)


def test_verify_prints_conditions_and_symmetry(tmp_path, capsys):
    _calo(tmp_path / "calo.h5", 16, 6480)
    assert convert("--input", tmp_path / "calo.h5", "--out", tmp_path / "o.h5") == 0
    capsys.readouterr()
    assert main(["verify", str(tmp_path / "o.h5")]) == 0
    out = capsys.readouterr().out
    assert "  conditions incident_energy " in out and "MeV, all finite, checksum matches" in out
    assert "conditions conditions" not in out
    assert '"periodic": [false, true, false]' in out


@pytest.mark.mpi
def test_conditions_2_ranks_byte_identical_to_1(tmp_path):
    _calo(tmp_path / "calo.h5", 50, 368)
    args = ["convert", "--input", str(tmp_path / "calo.h5"), "--chunk-samples", "4", "--shuffle"]
    one = launch([*args, "--out", str(tmp_path / "one.h5")], module="data_prep")
    two = launch([*args, "--out", str(tmp_path / "two.h5")], np=2, module="data_prep")
    assert one.returncode == 0 and two.returncode == 0, two.stderr
    with h5py.File(tmp_path / "one.h5") as a, h5py.File(tmp_path / "two.h5") as b:
        np.testing.assert_array_equal(a["conditions"][()], b["conditions"][()])
        np.testing.assert_array_equal(a["images"][()], b["images"][()])
        assert a.attrs["conditions_crc32"] == b.attrs["conditions_crc32"]


def test_1d_vectors_resize_by_area_average_and_verify(tmp_path):
    x = RNG.exponential(size=(5, 8)).astype(np.float32)
    np.save(tmp_path / "v.npy", x)
    out = tmp_path / "o.h5"
    assert convert("--input", tmp_path / "v.npy", "--out", out, "--shape", "8", "--size", "4") == 0
    images = stored(out)[0]
    assert images.shape == (5, 1, 4)
    np.testing.assert_allclose(images[:, 0], x.reshape(5, 4, 2).mean(axis=2), rtol=1e-6)
    assert scan(out)["shape"] == (1, 4)
