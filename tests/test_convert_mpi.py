"""data_prep convert under mpirun: the same file whatever the number of ranks, and errors on
one rank stopping every rank cleanly. Each launch has a time limit."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import launch
from PIL import Image

pytestmark = pytest.mark.mpi


def _contents(path: Path) -> dict:
    """Everything a reader can see: datasets (as bytes) and attributes."""
    with h5py.File(path, "r") as f:
        found = {name: f[name][()].tobytes() for name in ("images", "labels", "images_crc32")}
        found.update({f"attr {k}": np.asarray(v).tolist() for k, v in f.attrs.items()})
        found["chunks"] = f["images"].chunks
    return found


def _convert(inputs: list[Path], out: Path, np_: int | None, *options: str):
    args = ["convert", "--input", *map(str, inputs), "--out", str(out), *options]
    return launch(args, np=np_, timeout=120, module="data_prep")


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> list[Path]:
    """Two class-folder trees of small PNGs (grey and colour, so channels are converted)."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(1)
    for tree in ("a", "b"):
        for i in range(23):
            shape = (10, 10, 3) if i % 3 else (10, 10)
            folder = root / tree / f"class{i % 4}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"{i}.png")
    return [root / "a", root / "b"]


@pytest.mark.parametrize(
    ("np_", "options"),
    [
        (2, ["--shuffle", "--chunk-samples", "5"]),  # uncompressed: ranks pwrite their chunks
        (3, ["--compression", "gzip", "--chunk-samples", "4", "--size", "8"]),  # part files
    ],
)
def test_output_is_identical_for_1_and_n_ranks(tmp_path, folders, np_, options):
    one, many = tmp_path / "one.h5", tmp_path / "many.h5"
    done = _convert(folders, one, None, *options)
    assert done.returncode == 0, done.stderr
    done = _convert(folders, many, np_, *options)
    assert done.returncode == 0, done.stderr
    assert f"{np_} rank(s)" in done.stdout and done.stdout.count("wrote ") == 1
    assert _contents(many) == _contents(one)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["many.h5", "one.h5"]  # no parts left


def test_bad_sample_on_one_rank_stops_every_rank(tmp_path):
    fields = np.ones((40, 4, 4), np.float32)
    fields[33, 2, 2] = np.inf  # in the second rank's share
    np.save(tmp_path / "f.npy", fields)
    for compression in ("none", "gzip"):
        out = tmp_path / f"{compression}.h5"
        done = _convert(
            [tmp_path / "f.npy"], out, 2, "--chunk-samples", "5", "--compression", compression
        )
        assert done.returncode == 2
        errors = [line for line in done.stderr.splitlines() if "error" in line]
        assert errors == [
            f"data_prep: error: {tmp_path / 'f.npy'} sample 33 holds NaN or Inf values"
        ]
        assert "Traceback" not in done.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == ["f.npy"]
