"""Calorimeter-like files as a user has them, trained as they are: CaloChallenge layouts
(flat showers + incident energies) converted without --shape, conditioned on the energy,
with the physics terms, at two ranks; a resumed run ends bitwise where the straight one ends."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from conftest import (
    RESUME_STATE,
    assert_bitwise_equal,
    assert_refused_resume_wrote_nothing,
    checkpoint,
    launch,
    run_files,
    tiny,
)

from hpcgan.data.format import read_info
from hpcgan.metrics import sources
from hpcgan.trained import load_run


def _calochallenge_file(path, voxels: int, n: int = 64, seed: int = 0):
    """``showers`` (n, voxels) in MeV, sparse and positive, whose sum is 0.9 of the incident
    energy; ``incident_energies`` (n, 1) log-uniform over 1-1000 GeV."""
    rng = np.random.default_rng(seed)
    energy = 10 ** rng.uniform(3, 6, size=(n, 1))
    cells = rng.gamma(2.0, 1.0, size=(n, voxels)) * (rng.random((n, voxels)) < 0.4)
    showers = cells / cells.sum(axis=1, keepdims=True) * 0.9 * energy
    with h5py.File(path, "w") as f:
        f["showers"] = showers.astype(np.float32)
        f["incident_energies"] = energy.astype(np.float32)
    return path


@pytest.mark.mpi
@pytest.mark.parametrize(
    "voxels,spatial", [(368, (368,)), (6480, (45, 16, 9))], ids=["ds1-368", "ds2-45x16x9"]
)
def test_calochallenge_files_train_conditioned_and_resume_bitwise(tmp_path, voxels, spatial):
    raw = _calochallenge_file(tmp_path / "raw.hdf5", voxels)
    data = tmp_path / "showers.h5"
    proc = launch(["convert", "--input", str(raw), "--out", str(data)], module="data_prep")
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = read_info(data)
    assert info.spatial == spatial and info.condition_names == ("incident_energy",)
    assert info.condition_units == ("MeV",)
    assert info.symmetry.periodic == ((False, True, False) if len(spatial) == 3 else (False,))

    common = (
        "model.width=4",
        "model.z_dim=8",
        "train.batch_size=8",
        "train.steps=8",
        "run.checkpoint_every=4",
        "run.eval_every=0",
        "train.ema_halflife_images=50",
        "train.cond_regression=0.1",
        "train.total_weight=1",
        "model.padding=circular",
    )
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    proc = launch(tiny(straight, data, *common), np=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = launch(tiny(resumed, data, *common[:3], "train.steps=4", *common[4:]), np=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = launch(tiny(resumed, data, *common), np=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "at step 4" in proc.stdout
    a, b = checkpoint(straight, 8), checkpoint(resumed, 8)
    assert_bitwise_equal(a, b, expect=(*RESUME_STATE, "G_ema"))
    # G and D took the energy: the condition layers exist and were trained.
    assert any(k.startswith("values.") for k in a["G"]), sorted(a["G"])
    assert any("values" in k for k in a["D"]), sorted(a["D"])
    # Another encoding of the conditions would feed G inputs it never saw: refused, exit 2.
    before = [(p, p.stat().st_mtime_ns) for p in resumed.rglob("*") if p.is_file()]
    files = run_files(resumed)
    proc = launch(tiny(resumed, data, *common, "train.steps=9", "data.condition_transform=linear"))
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = proc.stderr.strip().splitlines()
    assert "data.condition_transform=auto" in line and "linear" in line
    assert all(p.stat().st_mtime_ns == t for p, t in before)  # nothing rewritten
    assert_refused_resume_wrote_nothing(files, resumed)  # nor added (TensorBoard events)
    # Samples are made at the first global batch's conditions, the same rows at any world size.
    one = tmp_path / "one"
    proc = launch(tiny(one, data, *common[:3], "train.steps=4", *common[4:]))
    assert proc.returncode == 0, proc.stderr[-3000:]
    values = checkpoint(one, 4)["sample_values"]
    assert values.shape == (8, 1) and torch.equal(values, b["sample_values"])
    # G makes samples of the file's shape, at given (encoded) energies, with no resizing.
    G = load_run(str(straight)).G
    x = sources.generate(G, 8, seed=0, block=0, size=3, values=torch.zeros(3, 1))
    assert x.shape == (3, 1, *spatial)
