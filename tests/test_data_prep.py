"""data_prep: the command line (synth, convert, verify)."""

from __future__ import annotations

import subprocess
import sys

import h5py
import pytest

from data_prep.__main__ import main
from hpcgan.data.format import read_info


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "data_prep", *args], capture_output=True, text=True, timeout=60
    )


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
