"""Multi-rank behaviour under a real mpirun (each launch has a time limit)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import launch, tiny

from hpcgan.config import ModelConfig
from hpcgan.models import build_models
from hpcgan.objectives import LOSSES

pytestmark = pytest.mark.mpi

SCRIPTS = Path(__file__).parent / "mpi_scripts"


def _epoch_reads(path: Path, np_: int) -> dict:
    proc = launch([str(SCRIPTS / "read_epoch.py"), str(path), "40", "8"], np=np_, module=None)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def one_rank_epoch(indexed_h5):
    return _epoch_reads(indexed_h5, 1)


@pytest.mark.parametrize("np_", [2, 4])
def test_ranks_read_the_epoch_exactly_once(indexed_h5, one_rank_epoch, np_):
    out = _epoch_reads(indexed_h5, np_)
    ranks = out["ranks"]
    assert len(ranks) == np_
    union = [i for rank in ranks for batch in rank for i in batch]
    assert len(union) == out["batches"] * 40  # every rank read only its slices
    assert len(set(union)) == len(union)  # no sample twice within the epoch
    assert all(len(b) == 40 // np_ for rank in ranks for b in rank)
    # The same global batches as one rank reads, whatever the world size.
    for b in range(out["batches"]):
        together = sorted(i for rank in ranks for i in rank[b])
        assert together == sorted(one_rank_epoch["ranks"][0][b])


@pytest.mark.parametrize("np_", [2, 4])
def test_replicas_stay_identical(tmp_path, digits_h5, np_):
    run = tmp_path / "run"
    proc = launch(tiny(run, digits_h5, "train.steps=12", "run.checkpoint_every=6"), np=np_)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (run / "log.txt").read_text()
    assert f"{np_} rank(s), engine mpi" in log  # dist.backend=auto on CPUs
    # The trainer compares SHA-1 fingerprints of every rank's parameters before each checkpoint
    # and fails the run if any differs; both checkpoints passed that check.
    assert log.count(f"replicas: parameters identical on all {np_} rank(s)") == 2


def _final_params(run: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run / "checkpoints" / "step-00000010.pt", weights_only=True)
    return {f"{net}.{k}": v.double() for net in ("G", "D") for k, v in state[net].items()}


def _relative(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """||a - b|| / ||a|| over all parameters together."""
    diff = sum(((a[k] - b[k]) ** 2).sum() for k in a)
    return float((diff / sum((a[k] ** 2).sum() for k in a)).sqrt())


# fp32 + SGD: only the summation order differs, so the runs agree to ~1e-6.
# fp64 + Adam (the default recipe): agree to ~1e-15. Adam in fp32 is not a fair test of the
# engine: its per-element normalisation m/sqrt(v) turns rounding noise in near-zero gradients
# into updates of size lr (measured: 1e-7 after one step, 1e-3 after ten).
@pytest.mark.parametrize(
    "precision,extra,bound",
    [
        ("fp32", ["train.optimizer=sgd", "train.lr_g=0.02", "train.lr_d=0.02"], 1e-4),
        ("fp64", [], 1e-10),
    ],
)
def test_n_ranks_compute_what_one_rank_computes(tmp_path, digits_h5, precision, extra, bound):
    """With model.norm=none, 2 and 4 ranks reach 1 rank's parameters (same global batch)."""
    results = {}
    for np_ in (1, 2, 4):
        run = tmp_path / f"np{np_}"
        args = tiny(
            run,
            digits_h5,
            "model.norm=none",
            "train.steps=10",
            "run.checkpoint_every=10",
            f"train.precision={precision}",
            *extra,
        )
        proc = launch(args, np=np_)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[np_] = _final_params(run)
    for np_ in (2, 4):
        rel = _relative(results[1], results[np_])
        assert rel < bound, f"np={np_}: relative difference {rel:.2e}"
    # ... and training moved the parameters away from their (seeded) start: not vacuous.
    torch.manual_seed(0)
    G, D = build_models(ModelConfig(width=8, z_dim=16, norm="none"), (1, 32, 32))
    init = {
        f"{n}.{k}": v.double() for n, m in (("G", G), ("D", D)) for k, v in m.state_dict().items()
    }
    assert _relative(init, results[1]) > 1e-3


def test_every_arch_loss_precision_at_two_ranks():
    """Every architecture x registered loss x precision (36 with the first three losses)
    through the real Trainer + Horovod at np=2, in one mpirun."""
    proc = launch([str(SCRIPTS / "combos.py")], np=2, module=None, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    combos = [r for r in records if r["check"] == "combo"]
    assert len(combos) == 3 * len(LOSSES) * 4 and len(LOSSES) >= 3
    assert {r["loss"] for r in combos} == set(LOSSES)
    for r in combos:
        assert r["identical"], f"replicas differ: {r}"
        assert r["moved"], f"parameters did not change: {r}"
    (phases,) = [r for r in records if r["check"] == "phases"]
    # Horovod reduced only D's gradients in D's phase and only G's in G's phase.
    assert phases["D"] == ["D"] and phases["G"] == ["G"]
    (overflow,) = [r for r in records if r["check"] == "fp16_overflow"]
    # Rank 1 alone overflowed; every rank skipped that D update and lowered its loss scale.
    assert overflow["identical"]
    assert all(unchanged and lowered for unchanged, lowered, _ in overflow["per_rank"])
    assert len({streak for *_, streak in overflow["per_rank"]}) == 1
    # Without the poison the same second step updates D on every rank with the scale kept:
    # the skip above is the overflow's, shared by all, not the loss scale still settling.
    (control,) = [r for r in records if r["check"] == "fp16_overflow_control"]
    assert control["identical"] and len(control["per_rank"]) == 2
    assert control["step"] == overflow["step"] >= 1  # the same step, after a warm-up
    assert all(r == [False, False, 0] for r in control["per_rank"]), control
    assert all(streak >= 1 for *_, streak in overflow["per_rank"])


@pytest.mark.parametrize(
    ("engine", "precision"), [("torch", "fp32"), ("mpi", "fp32"), ("mpi", "fp16")]
)
def test_engines_reach_horovods_parameters(tmp_path, digits_h5, engine, precision):
    """The flat-buffer engines compute what Horovod computes (batch norm on), in one buffer
    per network and in 16 KiB buckets started from backward hooks. In fp16 too: they fold 1/N
    into the loss, so their loss scale starts N times higher to give the same fp16 gradients."""
    results = {}
    for name, backend, bucket_mb in (
        ("horovod", "horovod", 0),
        ("flat", engine, 0),
        ("buckets", engine, 1 / 64),
    ):
        run = tmp_path / name
        args = tiny(
            run,
            digits_h5,
            "train.steps=10",
            "run.checkpoint_every=10",
            f"dist.backend={backend}",
            f"dist.bucket_mb={bucket_mb}",
            f"train.precision={precision}",
        )
        proc = launch(args, np=2)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert f"engine {backend}" in (run / "log.txt").read_text()
        results[name] = _final_params(run)
    for name in ("flat", "buckets"):
        rel = _relative(results["horovod"], results[name])
        assert rel < 1e-5, f"{engine} ({name}) vs horovod: relative difference {rel:.2e}"
