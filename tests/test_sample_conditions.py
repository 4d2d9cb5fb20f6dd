"""hpcgan.sample on a run trained on continuous conditions (docs/evaluation.md, "Sampling"):
--condition NAME=VALUE, --conditions FILE, the data's own conditions by default, and the bad
inputs, each refused in one line with exit 2 and no output file."""

from __future__ import annotations

import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import launch, tiny

from hpcgan.data.format import read_info
from hpcgan.data.holdout import make_split
from hpcgan.data.write import write_dataset

N, HELD = 256, 32


@pytest.fixture(scope="module")
def energies_h5(tmp_path_factory) -> Path:
    """256 1x8x8 fields whose values scale with their incident_energy (MeV, log-uniform
    1e3..1e6); /conditions holds it and an angle theta (rad, uniform 0.5..1.5)."""
    rng = np.random.default_rng(0)
    energy = np.exp(rng.uniform(np.log(1e3), np.log(1e6), N))
    theta = rng.uniform(0.5, 1.5, N)
    fields = rng.random((N, 1, 8, 8)) * (energy[:, None, None, None] / 1e3) + 0.01
    path = tmp_path_factory.mktemp("data") / "energies.h5"
    write_dataset(
        path,
        fields.astype(np.float32),
        None,
        kind="field",
        source="test energies",
        conditions=np.stack([energy, theta], axis=1),
        condition_names=["incident_energy", "theta"],
        condition_units=["MeV", "rad"],
    )
    return path


def _train(run: Path, data: Path, *extra: str) -> Path:
    proc = launch(tiny(run, data, "train.steps=4", f"data.holdout={HELD}", *extra))
    assert proc.returncode == 0, proc.stderr
    return run


@pytest.fixture(scope="module")
def energies_run(tmp_path_factory, energies_h5) -> Path:
    return _train(tmp_path_factory.mktemp("runs") / "cond", energies_h5)


def sample(run: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    return launch([str(run), "--out", str(out), *args], module="hpcgan.sample")


def read(path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """Samples, /conditions and its attributes of a written file."""
    with h5py.File(path, "r") as f:
        c = f["conditions"]
        return f["images"][()], c[()], {k: list(c.attrs[k]) for k in ("names", "units")}


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


E50 = ["--condition", "incident_energy=50000", "--condition", "theta=1"]


def test_condition_option_writes_that_point_and_the_condition_matters(energies_run, tmp_path):
    low, high = tmp_path / "low.h5", tmp_path / "high.h5"
    said = ok(sample(energies_run, low, "--n", "6", *E50))
    assert "at incident_energy=50000 theta=1" in said
    ok(
        sample(
            energies_run,
            high,
            "--n",
            "6",
            "--condition",
            "theta=1",
            "--condition",
            "incident_energy=1e6",
        )
    )
    x_low, c_low, attrs = read(low)
    x_high, c_high, _ = read(high)
    assert c_low.shape == (6, 2) and np.all(c_low == [50000, 1]) and np.all(c_high == [1e6, 1])
    assert attrs == {"names": ["incident_energy", "theta"], "units": ["MeV", "rad"]}
    assert x_low.shape == (6, 1, 8, 8) and not np.allclose(x_low, x_high)  # same latents
    verify = launch(["verify", str(low)], module="data_prep")
    assert verify.returncode == 0 and "incident_energy" in verify.stdout, verify.stderr
    assert read_info(low).condition_names == ("incident_energy", "theta")


def test_conditions_file_round_trip(energies_run, tmp_path):
    """Sample i is made at row i of the file, whichever layout holds it: rows at the point of
    --condition equal its samples (same seed), the others differ, and a written .h5 given
    back as --conditions makes the same samples again."""
    energy = np.array([1e3, 5e4, 1e6, 5e4], np.float32)
    theta = np.array([1.0, 1.0, 0.5, 1.0], np.float32)
    np.savez(tmp_path / "want.npz", theta=theta, incident_energy=energy)
    with h5py.File(tmp_path / "want.h5", "w") as f:
        f["incident_energy"] = energy[:, None]  # one (n,) or (n, 1) array per name
        f["theta"] = theta
    for name in ("want.npz", "want.h5"):
        out = tmp_path / f"{name}.out.h5"
        assert "at the conditions of" in ok(
            sample(energies_run, out, "--conditions", str(tmp_path / name), "--seed", "3")
        )
        x, c, _ = read(out)
        assert len(x) == 4 and np.array_equal(c, np.stack([energy, theta], axis=1))
    point = tmp_path / "point.h5"
    ok(sample(energies_run, point, "--n", "4", *E50, "--seed", "3"))
    x_point, _, _ = read(point)
    np.testing.assert_allclose(x[[1, 3]], x_point[[1, 3]], rtol=1e-4, atol=1e-4)
    assert not np.allclose(x[0], x_point[0]) and not np.allclose(x[2], x_point[2])
    again = tmp_path / "again.h5"
    ok(sample(energies_run, again, "--conditions", str(point), "--seed", "3", "--n", "4"))
    x_again, c_again, _ = read(again)
    assert np.array_equal(x_again, x_point) and np.all(c_again == [5e4, 1])


def test_default_conditions_are_the_held_out_samples_cyclically(
    energies_run, energies_h5, tmp_path
):
    out = tmp_path / "default.h5"
    said = ok(sample(energies_run, out, "--n", str(HELD + 8)))
    assert "held-out samples 0..39 (cyclically)" in said
    with h5py.File(energies_h5, "r") as f:
        data = f["conditions"][()]
    held = make_split(str(HELD), N).held_indices
    _, c, _ = read(out)
    assert np.array_equal(c, data[held[np.arange(HELD + 8) % HELD]])
    grid = tmp_path / "default.png"
    ok(sample(energies_run, grid, "--n", "9"))
    assert grid.stat().st_size > 0


def _refused(proc: subprocess.CompletedProcess, out: Path, words: str) -> None:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("hpcgan: error: "), proc.stderr
    assert words in lines[0], lines[0]
    assert not out.exists() and not list(out.parent.glob(f".{out.name}*"))


def _bad_files(folder: Path, data: Path) -> None:
    theta = np.array([1.0, 1.0])
    np.savez(folder / "other.npz", energy=np.array([1e3, 1e4]), theta=theta)
    np.savez(folder / "nan.npz", incident_energy=np.array([1e3, np.nan]), theta=theta)
    np.savez(folder / "two.npz", incident_energy=np.array([1e3, 2e3]), theta=theta)
    np.savez(folder / "wide.npz", incident_energy=np.ones((2, 2)), theta=theta)
    np.savez(folder / "short.npz", incident_energy=np.ones(3), theta=theta)
    np.savez(folder / "zero.npz", incident_energy=np.array([1e3, 0.0]), theta=theta)
    (folder / "text.h5").write_text("incident_energy,theta\n5,1\n")
    with h5py.File(data, "r") as f:
        images = f["images"][:2]
    write_dataset(
        folder / "gev.h5",
        images,
        None,
        kind="field",
        source="test",
        conditions=np.array([[1.0, 1.0], [2.0, 1.0]]),
        condition_names=["incident_energy", "theta"],
        condition_units=["GeV", "rad"],
    )


BAD = {
    "unknown name": (["--condition", "energy=5", "--condition", "theta=1"], "unknown energy"),
    "missing name": (["--condition", "incident_energy=5"], "missing theta"),
    "repeated name": ([*E50, "--condition", "theta=2"], "--condition theta is given twice"),
    "not a number": (["--condition", "incident_energy=5GeV"], "is not a number"),
    "no value": (["--condition", "incident_energy"], "expected NAME=VALUE"),
    "nan": (["--condition", "incident_energy=nan"], "not a finite number"),
    "log of zero": (["--condition", "incident_energy=0", "--condition", "theta=1"], "> 0"),
    "negative": (["--condition", "incident_energy=-5", "--condition", "theta=1"], "> 0"),
    "both options": ([*E50, "--conditions", "{dir}/two.npz"], "not both"),
    "file names": (["--conditions", "{dir}/other.npz"], "holds conditions energy, theta"),
    "file nan": (["--conditions", "{dir}/nan.npz"], "NaN or Inf in row 1"),
    "file shape": (["--conditions", "{dir}/wide.npz"], "must be n numbers"),
    "file lengths": (["--conditions", "{dir}/short.npz"], "different lengths"),
    "file zero": (["--conditions", "{dir}/zero.npz"], "incident_energy=0 (row 1)"),
    "file units": (["--conditions", "{dir}/gev.h5"], "is in GeV, the run's data in MeV"),
    "file --n": (["--conditions", "{dir}/two.npz", "--n", "5"], "--n 5, but"),
    "file missing": (["--conditions", "{dir}/gone.h5"], "no such file"),
    "file not hdf5": (["--conditions", "{dir}/text.h5"], "not a readable HDF5"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_condition_input_is_one_line_and_no_file(case, energies_run, energies_h5, tmp_path):
    _bad_files(tmp_path, energies_h5)
    args, words = BAD[case]
    out = tmp_path / "out.h5"
    _refused(sample(energies_run, out, *[a.format(dir=tmp_path) for a in args]), out, words)


def test_conditions_refused_for_a_run_without_them(tmp_path, energies_h5):
    run = _train(tmp_path / "plain", energies_h5, "model.condition=none")
    out = tmp_path / "out.h5"
    _refused(sample(run, out, *E50), out, "was not trained on conditions")
    np.savez(tmp_path / "c.npz", incident_energy=np.array([1e3]), theta=np.array([1.0]))
    _refused(sample(run, out, "--conditions", str(tmp_path / "c.npz")), out, "not trained on")
    ok(sample(run, out, "--n", "3"))  # unconditioned: no /conditions in the output
    with h5py.File(out, "r") as f:
        assert "conditions" not in f and len(f["images"]) == 3
