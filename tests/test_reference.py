"""Which file is which (docs/evaluation.md): G's samples are decoded with the training data's
transforms, saved in the checkpoint; --data is the run's own training file where it has moved;
--reference is another set, used whole; data.stage is honoured by sample and evaluate."""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import json
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import launch

from hpcgan import run_state
from hpcgan.data import synth
from hpcgan.data.format import read_info
from hpcgan.data.transforms import Decoding, make_condition_transform, make_transform
from hpcgan.data.write import write_dataset
from hpcgan.metrics import two_sample
from hpcgan.run_state import Checkpoint
from hpcgan.symmetry import Symmetry

TINY = ["model.width=4", "model.z_dim=8", "train.batch_size=32", "run.tensorboard=false"]
SCALE = 1.4  # the other set: the same maps, every value x1.4 (a maximum 40% higher)
V1 = Path(__file__).parent / "fixtures" / "v1" / "step-00000004.pt"


def grf16(path: Path, scale: float = 1.0) -> Path:
    """The fields of the v1 fixture's training data (tests/fixtures/v1/README.md), x scale."""
    fields = synth.grf(256, size=16, seed=0)
    source = "test grf16" if scale == 1.0 else f"test grf16 x{scale}"
    write_dataset(path, (fields * np.float32(scale)).astype(np.float32), None, kind="field",
                  source=source)  # fmt: skip
    return path


@pytest.fixture(scope="module")
def maps(tmp_path_factory) -> dict[str, Path]:
    """A run trained (4 steps) on maps with data.stage set, its training file, and the same
    maps x1.4 as another set."""
    root = tmp_path_factory.mktemp("reference")
    data, other = grf16(root / "maps.h5"), grf16(root / "other.h5", SCALE)
    run, staged = root / "run", root / "stage"
    args = [*TINY, f"data.path={data}", f"run.dir={run}", f"data.stage={staged}"]
    proc = launch([*args, "train.steps=4", "run.checkpoint_every=4", "run.eval_every=0"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"root": root, "data": data, "other": other, "run": run, "stage": staged}


@pytest.fixture(scope="module", autouse=True)
def quick_c2st():
    """The commands run in this process: one epoch of C2ST training keeps each evaluation
    fast (its AUC is not what these tests check)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(two_sample, "auc", functools.partial(two_sample.auc, epochs=1))
        yield


@pytest.fixture(scope="module")
def own(maps) -> dict:
    """The run evaluated against its own training file, read in place."""
    return _evaluate(maps["run"], "--stage", "")


def _run(module: str, *args: object) -> subprocess.CompletedProcess:
    """``python -m module args``, in this process (the commands' main; a fresh process per
    call would spend most of the test importing torch): exit code, stdout and stderr."""
    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = importlib.import_module(module).main(argv)
    return subprocess.CompletedProcess([module, *argv], code, out.getvalue(), err.getvalue())


def _evaluate(*args: object) -> dict:
    proc = _run("hpcgan.evaluate", "--n", 256, *args)  # a later --n wins
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("hpcgan: error: "), proc.stderr
    return lines[0]


def test_checkpoint_keeps_the_training_data_and_its_decoding(maps):
    state = run_state.load(run_state.list_checkpoints(maps["run"] / "checkpoints")[-1])
    ckpt = Checkpoint.from_state(state, "ckpt")
    info = read_info(maps["data"])
    assert state["format"] == run_state.FORMAT == 2
    assert Decoding.from_state(ckpt.decoding) == Decoding(make_transform(info, "auto"))
    assert ckpt.data_info == info.description()


def test_reference_of_another_scale_is_decoded_with_the_training_transform(maps, own):
    """The bug of issue 25: --data another file decoded G with that file's statistics. With
    --reference the generated values are those of the run's own evaluation, bit for bit, and
    the reference's are the other file's (x1.4)."""
    other = _evaluate(maps["run"], "--stage", "", "--reference", maps["other"])
    assert other["values"]["generated"] == own["values"]["generated"]
    mean, std = (own["values"]["reference"][k] for k in ("mean", "std"))
    assert other["values"]["reference"]["mean"] == pytest.approx(SCALE * mean, rel=1e-5)
    assert other["values"]["reference"]["std"] == pytest.approx(SCALE * std, rel=1e-5)
    assert own["reference"] == "training data (halves)" and own["n_real"] == 256
    assert other["reference"] == "--reference (whole file, halves)" and other["n_real"] == 256
    assert other["reference_file"] == str(maps["other"]) and other["data"] == str(maps["data"])
    # the reference is the other file: the distances to it are not the run's own
    assert other["metrics"]["eval/mean_rel_err"] != own["metrics"]["eval/mean_rel_err"]


def test_data_must_be_the_training_file(maps, own, tmp_path):
    """--data is the same training file where it has moved (same data: accepted, same numbers);
    another file is refused in one line that names --reference."""
    moved = shutil.copy(maps["data"], tmp_path / "moved.h5")
    assert _evaluate(maps["run"], "--stage", "", "--data", moved)["values"] == own["values"]
    line = _one_error_line(_run("hpcgan.evaluate", maps["run"], "--data", maps["other"]))
    assert "other.h5 holds other data than" in line and f"--reference {maps['other']}" in line
    out = tmp_path / "x.h5"
    line = _one_error_line(
        _run("hpcgan.sample", maps["run"], "--data", maps["other"], "--out", out)
    )
    assert "holds other data" in line and not out.exists()


def test_reference_must_hold_samples_like_the_run(maps, tmp_path):
    small = tmp_path / "small.h5"
    write_dataset(small, synth.grf(8, size=8, seed=1), None, kind="field", source="t")
    line = _one_error_line(_run("hpcgan.evaluate", maps["run"], "--reference", small))
    assert "--reference" in line and "shape (1, 8, 8) float32, the run's are (1, 16, 16)" in line
    line = _one_error_line(_run("hpcgan.evaluate", maps["run"], "--reference", tmp_path / "no"))
    assert "--reference" in line and "no such file" in line


def test_reference_with_conditions_must_name_the_runs(tmp_path):
    """A conditioned run: the reference must hold the run's conditions (names, units)."""
    from hpcgan.trained import _reference_data, load_run

    fields = synth.grf(64, size=16, seed=0)
    energy = np.geomspace(1.0, 100.0, 64)[:, None].astype(np.float32)
    data = tmp_path / "cond.h5"
    write_dataset(data, fields, None, kind="field", source="t", conditions=energy,
                  condition_names=["energy"], condition_units=["GeV"])  # fmt: skip
    run = tmp_path / "run"
    args = [*TINY, f"data.path={data}", f"run.dir={run}", "train.steps=1", "run.eval_every=0"]
    assert launch(args).returncode == 0
    loaded = load_run(str(run))
    assert loaded.conditions == make_condition_transform(read_info(data))
    for names, units, expected in (
        (["theta"], ["rad"], "holds conditions theta; the run takes energy"),
        (["energy"], ["MeV"], "energy is in MeV, the run's data in GeV"),
        (None, None, "holds conditions none; the run takes energy"),
    ):
        other = tmp_path / f"{names}{units}.h5"
        columns = {} if names is None else dict(conditions=energy, condition_names=names,
                                                condition_units=units)  # fmt: skip
        write_dataset(other, fields, None, kind="field", source="t", **columns)
        with pytest.raises(Exception, match=expected):
            _reference_data(loaded, str(other))


def test_training_file_gone_decodes_from_the_checkpoint(maps, tmp_path):
    """A run's saved decoding and data description: with its training file gone, sample
    writes the same physical values, and evaluate --reference runs; evaluating against the
    training data says in one line which option to use."""
    run = tmp_path / "run"
    shutil.copytree(maps["run"], run)
    here = tmp_path / "train.h5"
    shutil.copy(maps["data"], here)
    _point_config_at(run, here)
    with_file, without = tmp_path / "a.h5", tmp_path / "b.h5"
    assert _run("hpcgan.sample", run, "--n", 8, "--out", with_file).returncode == 0
    here.unlink()
    proc = _run("hpcgan.sample", run, "--n", 8, "--out", without)
    assert proc.returncode == 0, proc.stderr
    with h5py.File(with_file, "r") as a, h5py.File(without, "r") as b:
        assert np.array_equal(a["images"][()], b["images"][()])
    line = _one_error_line(_run("hpcgan.evaluate", run, "--stage", ""))
    assert f"{here}, is gone" in line and "--data FILE.h5" in line and "--reference" in line
    assert _evaluate(run, "--stage", "", "--reference", maps["other"], "--n", 2)["n_real"] == 128


def _point_config_at(run: Path, data: Path) -> None:
    """Rewrite the checkpoints' data.path (as if the run had trained on ``data``)."""
    for path in run_state.list_checkpoints(run / "checkpoints"):
        state = run_state.load(path)
        state["config"]["data"]["path"] = str(data)
        torch.save(state, path)


def test_format_1_run_recomputes_its_decoding_from_the_training_file(tmp_path):
    """The v1 fixture keeps no decoding: it is recomputed from the training file (--data, or
    the config's path), and a gone file is one line naming --data."""
    state = run_state.load(V1)
    ckpt = Checkpoint.from_state(state, V1)
    assert state["format"] == 1 and (ckpt.data_info, ckpt.decoding) == (None, None)
    assert Checkpoint.from_state(ckpt.to_state(), V1) == ckpt
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(V1, run / "checkpoints" / V1.name)
    out = tmp_path / "s.h5"
    line = _one_error_line(_run("hpcgan.sample", run, "--n", 4, "--out", out))
    assert "/tmp/hpcgan-v1/data/grf16.h5, is gone" in line and "format 1 or older" in line
    assert "pass the training file with --data FILE.h5" in line and not out.exists()
    data = grf16(tmp_path / "grf16.h5")
    from hpcgan.trained import load_run

    loaded = load_run(str(run), str(data))
    assert loaded.transform == make_transform(read_info(data), "auto") and loaded.present
    assert _run("hpcgan.sample", run, "--n", 4, "--out", out, "--data", data).returncode == 0
    assert _evaluate(run, "--data", data, "--reference", grf16(tmp_path / "x.h5", SCALE), "--n", 2)


def test_evaluate_reads_the_staged_copy_of_data_stage(maps, own):
    """The run's data.stage: evaluate copies the training file there (verified) and reads it;
    the numbers equal an evaluation in place (--stage '')."""
    shutil.rmtree(maps["stage"])  # training's copy: evaluate must make its own
    staged = _evaluate(maps["run"])
    copies = list(maps["stage"].glob("maps-*.h5"))
    assert len(copies) == 1 and staged["data"] == str(copies[0])
    assert "data staged to" in staged["staged"]
    assert own["data"] == str(maps["data"]) and "staged" not in own  # --stage '': in place
    assert staged["metrics"] == own["metrics"]
    other = _evaluate(maps["run"], "--reference", maps["other"], "--n", 2)  # the file read
    assert other["reference_file"] == str(next(maps["stage"].glob("other-*.h5")))


def test_description_and_decoding_round_trip(tmp_path):
    data = tmp_path / "d.h5"
    energy = np.linspace(1.0, 2.0, 16)[:, None].astype(np.float32)
    write_dataset(data, synth.grf(16, size=8, seed=0), np.arange(16) % 3, kind="field",
                  source="t", conditions=energy, condition_names=["e"], condition_units=["GeV"],
                  symmetry=Symmetry.periodic_box((8, 8)))  # fmt: skip
    info = read_info(data)
    assert type(info).described(info.description(), info.path) == info
    decoding = Decoding(make_transform(info, "auto"), make_condition_transform(info))
    saved = torch.load(_saved(tmp_path, decoding.to_state()), weights_only=True)
    assert Decoding.from_state(saved) == decoding


def _saved(tmp_path: Path, obj: object) -> Path:
    path = tmp_path / "x.pt"
    torch.save(obj, path)
    return path
