"""data_prep: built-in synthetic datasets and the command line."""

from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest

from data_prep import synth
from data_prep.__main__ import main
from hpcgan.data.schema import read_info


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "data_prep", *args], capture_output=True, text=True, timeout=60
    )


def _radial_power(fields: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Power spectrum of [N, size, size] fields averaged over angle and fields, k = 1..size/2."""
    size = fields.shape[-1]
    power = np.abs(np.fft.fft2(fields - fields.mean(axis=(1, 2), keepdims=True))) ** 2
    freqs = np.fft.fftfreq(size, d=1.0 / size)
    k_bin = np.rint(np.hypot(freqs[:, None], freqs[None, :])).astype(int)
    k = np.arange(1, size // 2)
    mean_power = np.array([power[:, k_bin == kk].mean() for kk in k])
    return k, mean_power


def test_digits_are_the_sklearn_set_upscaled():
    images, labels = synth.digits()
    assert images.shape == (1797, 1, 32, 32) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and set(labels.tolist()) == set(range(10))
    assert images.min() == 0 and images.max() == 255
    assert synth.digits(size=8)[0].shape == (1797, 1, 8, 8)


def test_grf_mean_is_one_and_seeded():
    fields = synth.grf(64, size=32, seed=5)
    assert fields.shape == (64, 1, 32, 32) and fields.dtype == np.float32
    assert fields.min() > 0
    assert fields.mean() == pytest.approx(1.0, abs=0.03)
    np.testing.assert_array_equal(fields, synth.grf(64, size=32, seed=5))
    np.testing.assert_array_equal(fields[:10], synth.grf(10, size=32, seed=5))
    assert not np.array_equal(fields, synth.grf(64, size=32, seed=6))


@pytest.mark.parametrize("slope", [-3.0, -2.0])
def test_grf_log_has_the_requested_power_spectrum(slope):
    fields = synth.grf(64, size=64, seed=1, slope=slope)
    k, power = _radial_power(np.log(fields[:, 0].astype(np.float64)))
    mid = (k >= 3) & (k <= 16)
    measured = np.polyfit(np.log(k[mid]), np.log(power[mid]), 1)[0]
    assert measured == pytest.approx(slope, abs=0.3)


def test_spectrum_model():
    np.testing.assert_allclose(synth.spectrum(np.array([0.0, 1.0, 2.0])), [0.0, 1.0, 1 / 8])


@pytest.mark.parametrize("size", [4, 48, 0])
def test_sizes_must_be_powers_of_two(size):
    with pytest.raises(ValueError, match="power of two >= 8"):
        synth.grf(2, size=size)


def test_cli_synth_verify_and_refusal_to_overwrite(tmp_path):
    out = tmp_path / "grf.h5"
    done = _run_cli("synth", "--kind", "grf", "--out", str(out), "--n", "20", "--size", "16")
    assert done.returncode == 0, done.stderr
    assert "20 x 1x16x16 float32 field" in done.stdout
    info = read_info(out)
    assert (info.n, info.kind, info.source) == (20, "field", "grf slope=-3 sigma=0.8 seed=0")

    done = _run_cli("verify", str(out))
    assert done.returncode == 0 and done.stdout.splitlines()[0] == f"{out}: ok"

    before = out.read_bytes()
    done = _run_cli("synth", "--kind", "grf", "--out", str(out), "--n", "5", "--size", "16")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"data_prep: error: {out} exists; pass --overwrite to replace it"
    ]
    assert out.read_bytes() == before


def test_synth_digits_with_overwrite(tmp_path, capsys):
    out = tmp_path / "digits.h5"
    out.write_text("old")
    assert main(["synth", "--kind", "digits", "--out", str(out), "--n", "100", "--overwrite"]) == 0
    info = read_info(out)
    assert (info.n, info.shape, info.dtype, info.kind) == (100, (1, 32, 32), "uint8", "image")
    assert info.has_labels and info.source == "sklearn-digits"
    assert "10 classes" in capsys.readouterr().out


def test_verify_reports_corruption(tmp_path, capsys):
    out = tmp_path / "g.h5"
    assert main(["synth", "--kind", "grf", "--out", str(out), "--n", "8", "--size", "8"]) == 0
    with h5py.File(out, "r+") as f:
        f["images"][3] = f["images"][3] * 2
    capsys.readouterr()
    assert main(["verify", str(out)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"data_prep: error: {out}: ")
    assert "CRC-32" in err[0] and "modified or damaged" in err[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["synth", "--kind", "grf", "--out", "{tmp}/x.h5", "--size", "48"], "power of two >= 8"),
        (["synth", "--kind", "grf", "--out", "{tmp}/x.h5", "--n", "0"], "--n must be >= 1"),
        (["synth", "--kind", "cats", "--out", "{tmp}/x.h5"], "invalid choice: 'cats'"),
        (["synth", "--kind", "grf", "--out", "{tmp}/no/x.h5"], "does not exist"),
        (["synth", "--kind", "grf", "--out", "{tmp}"], "is a directory"),
        (["verify", "{tmp}/missing.h5"], "missing.h5: no such file"),
        (["convert", "--input", "a.png", "--out", "{tmp}/x.h5"], "a.png: no such file"),
        ([], "required: COMMAND"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    assert main([arg.format(tmp=tmp_path) for arg in argv]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("data_prep: error: ") and message in lines[0]
    assert captured.out == "" and list(tmp_path.iterdir()) == []


def test_convert_help_lists_the_documented_options(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["convert", "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for option in ("--input", "--out", "--size", "--channels", "--chunk-samples", "--compression"):
        assert option in text
