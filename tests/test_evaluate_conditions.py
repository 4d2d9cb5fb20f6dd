"""Evaluation of a generator conditioned on /conditions: samples made at the held-out samples'
conditions, metrics in bins of each condition (docs/evaluation.md, "By condition")."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import launch
from PIL import Image
from torch import nn

from hpcgan.comm.base import SingleProcess
from hpcgan.condition import ConditionSpec
from hpcgan.data.format import read_info
from hpcgan.data.holdout import make_split
from hpcgan.data.transforms import make_condition_transform, make_transform
from hpcgan.data.write import write_dataset
from hpcgan.metrics import sources
from hpcgan.metrics.by_condition import worst_bins
from hpcgan.metrics.evaluate import Evaluator

N, HELD = 1024, 512
TINY = ["model.width=8", "model.z_dim=16", "train.batch_size=32", "run.log_every=2"]


def write_energies(path: Path, n: int = N) -> Path:
    """1x8x8 fields whose total scales with an energy drawn log-uniform over 3 decades."""
    rng = np.random.default_rng(0)
    energy = 10.0 ** rng.uniform(3.0, 6.0, n)  # MeV
    shape = rng.exponential(1.0, (n, 1, 8, 8)) + 0.1
    fields = shape / shape.sum(axis=(1, 2, 3), keepdims=True) * energy[:, None, None, None]
    write_dataset(
        path, fields.astype(np.float32), None, kind="field", source="test",
        conditions=energy, condition_names=["incident_energy"], condition_units=["MeV"],
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def energies_h5(tmp_path_factory) -> Path:
    return write_energies(tmp_path_factory.mktemp("cond") / "energies.h5")


@pytest.fixture(scope="module")
def energy_run(tmp_path_factory, energies_h5) -> Path:
    run = tmp_path_factory.mktemp("cond") / "run"
    args = [*TINY, "train.steps=4", "run.checkpoint_every=4", "run.eval_every=4", "run.eval_n=512"]
    proc = launch([*args, f"data.path={energies_h5}", f"run.dir={run}", f"data.holdout={HELD}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


class EnergyG(nn.Module):
    """A stand-in generator conditioned on the energy: fields like the data's, whose total is
    the energy it is given (``right``) or always 10^4.5 MeV; it records the encoded
    conditions it was called with."""

    def __init__(self, info, right: bool = True) -> None:
        super().__init__()
        self.spec = ConditionSpec(0, ("incident_energy",), ("MeV",))
        self.w = nn.Parameter(torch.zeros(1))
        self.transform = make_transform(info, "auto")
        self.encoding = make_condition_transform(info, "auto")
        self.right, self.seen = right, []

    def forward(self, z, cond):
        self.seen.append(cond.values.clone())
        energy = self.encoding.decode(cond.values.numpy())[:, 0] if self.right else 10**4.5
        rng = np.random.default_rng(int(z[0, 0].abs() * 1e6))
        shape = rng.exponential(1.0, (len(z), 1, 8, 8)) + 0.1
        x = shape / shape.sum(axis=(1, 2, 3), keepdims=True) * np.reshape(energy, (-1, 1, 1, 1))
        return torch.from_numpy(self.transform.encode(x)) + self.w


def _evaluator(path: Path, holdout: str, n: int) -> Evaluator:
    info = read_info(path)
    return Evaluator(
        info, make_transform(info, "auto"), SingleProcess(), torch.device("cpu"), z_dim=4,
        n=n, c2st=0, split=make_split(holdout, info.n),
        conditions=make_condition_transform(info, "auto"),
    )  # fmt: skip


def test_reference_rows_cycle_over_the_real_samples():
    assert sources.reference_rows(0, 5, 300).tolist() == [0, 1, 2, 3, 4]
    rows = sources.reference_rows(2, sources.BLOCK, 300)  # samples 256 .. 383
    assert rows[0] == 256 and rows[44] == 0 and rows[-1] == 83


@pytest.mark.parametrize("holdout", ["256", "0"])
def test_sample_i_is_made_at_reference_sample_is_encoded_conditions(tmp_path, holdout):
    path = write_energies(tmp_path / "e.h5", 512)
    ev, n = _evaluator(path, holdout, 400), 400
    G = sources.for_inference(EnergyG(ev.info))
    for b in range(sources.num_fake_blocks(n)):
        ev.generate(G, b, sources.fake_block_size(n, b))
    values = torch.cat(G.seen).numpy()  # [n, 1] what G was called with, sample by sample
    # the reference's samples in their order: each one's total is its energy (the data)
    totals = np.concatenate(
        [raw.sum(axis=(1, 2, 3)) for _, raw, _ in ev.real.read(range(ev.real.num_blocks))]
    )
    assert len(totals) == ev.real.n == (256 if holdout == "256" else 512)
    expected = ev.conditions.encoding.encode(totals[np.arange(n) % ev.real.n, None])
    assert np.allclose(values, expected, atol=1e-5)  # float32 sums of the energy
    assert np.array_equal(values, ev.conditions.encoded[np.arange(n) % ev.real.n].numpy())


def test_bins_compare_samples_made_at_the_same_conditions(energies_h5):
    ev = _evaluator(energies_h5, str(HELD), HELD)
    right = ev.run(EnergyG(ev.info)).by_condition["incident_energy"]
    assert right["unit"] == "MeV" and right["binning"] == "decades"
    assert [b["count"] for b in right["bins"]] == pytest.approx([HELD / 3] * 3, rel=0.25)
    assert all(b["verdict"]["cond/total_mean_rel_err"] == "within noise" for b in right["bins"])
    wrong = ev.run(EnergyG(ev.info, right=False)).by_condition["incident_energy"]
    low, high = wrong["bins"][0], wrong["bins"][-1]  # 1-10 GeV and 100 GeV-1 TeV vs 31 GeV
    assert low["mean_fake"]["total"] > 2 * low["mean_real"]["total"]
    assert low["verdict"]["cond/total_ks"] == high["verdict"]["cond/total_ks"] == "distinguishable"
    summary = worst_bins({"incident_energy": wrong})
    assert summary["eval/cond/incident_energy/total_mean_rel_err_max"] > 1.0
    assert summary["eval/cond/incident_energy/distinguishable"] >= 2


def _evaluate(run: Path, np_: int | None) -> dict:
    for cached in (run / "eval").glob("reference-*"):
        cached.unlink()  # every launch computes the real statistics itself, across its ranks
    proc = launch([str(run), "--n", "512"], np=np_, module="hpcgan.evaluate")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_training_logs_the_worst_bins_and_evaluate_prints_them_all(energy_run):
    records = [json.loads(line) for line in (energy_run / "metrics.jsonl").open()]
    evals = [r for r in records if "eval/ks" in r]
    assert len(evals) == 1 and evals[0]["step"] == 4
    logged = {k for k in evals[0] if k.startswith("eval/cond/")}
    assert logged == {
        "eval/cond/incident_energy/total_mean_rel_err_max",
        "eval/cond/incident_energy/total_ks_max",
        "eval/cond/incident_energy/distinguishable",
    }
    out = _evaluate(energy_run, None)
    part = out["by_condition"]["incident_energy"]
    assert part["unit"] == "MeV" and part["binning"] == "decades"
    assert len(part["bins"]) == 3 and sum(b["count"] for b in part["bins"]) == 512
    for b in part["bins"]:
        assert set(b["metrics"]) == set(b["baseline"]) == set(b["verdict"])
        assert {"cond/total_mean_rel_err", "cond/total_ks", "cond/max_ks"} <= set(b["metrics"])
        assert b["lo"] <= b["centre"] <= b["hi"] and b["baseline"]["cond/total_ks"] > 0
    assert out["reference"] == "held-out" and out["n_real"] == HELD


@pytest.mark.mpi
def test_two_ranks_give_the_one_rank_evaluation_by_condition(energy_run):
    one, two = _evaluate(energy_run, None), _evaluate(energy_run, 2)
    assert two["ranks"] == 2
    for part in ("metrics", "baseline"):
        for name, value in one[part].items():
            assert two[part][name] == pytest.approx(value, rel=1e-6, abs=1e-9), name
    bins = [b for _, part in sorted(one["by_condition"].items()) for b in part["bins"]]
    bins2 = [b for _, part in sorted(two["by_condition"].items()) for b in part["bins"]]
    assert len(bins) == len(bins2) == 3
    for a, b in zip(bins, bins2):
        assert (a["lo"], a["hi"], a["count"]) == (b["lo"], b["hi"], b["count"])
        for key in ("metrics", "baseline"):
            assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-9)
        assert a["verdict"] == b["verdict"]


def test_report_draws_each_condition(energy_run, tmp_path):
    proc = launch([str(energy_run), "--n", "512", "--out", str(tmp_path)], module="hpcgan.report")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with Image.open(tmp_path / "by_condition-incident_energy.png") as image:
        assert image.format == "PNG" and image.size[0] > 300
    assert "by incident_energy" in (tmp_path / "summary.txt").read_text()
