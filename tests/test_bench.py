"""python -m hpcgan.bench: the JSON it writes at 1 and 2 ranks, and its bad-input exit."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from conftest import launch

from hpcgan.config import ModelConfig
from hpcgan.models import build_models
from hpcgan.plain import plain_loop
from hpcgan.timing import grad_messages

TINY = ["model.width=8", "model.z_dim=16", "train.batch_size=16"]
FAST = ["--steps", "4", "--warmup", "1", "--rounds", "2", "--allreduce-repeats", "3"]


def _bench(tmp_path, data, *extra: str, np: int | None = None) -> tuple[dict, str]:
    out = tmp_path / "bench.json"
    args = [f"data.path={data}", *TINY, *FAST, "--json", str(out), *extra]
    proc = launch(args, np=np, module="hpcgan.bench", timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def _check_times(r: dict) -> None:
    step = r["step_s"]["mean"]
    assert step > 0
    assert all(
        v["min"] >= 0 and v["min"] <= v["mean"] <= v["max"] for v in r["sections_s"].values()
    )
    measured = sum(v["mean"] for k, v in r["sections_s"].items() if k != "other")
    assert measured <= step * 1.0001  # the sections lie inside the step
    assert r["sections_s"]["forward"]["mean"] > 0 and r["sections_s"]["backward"]["mean"] > 0
    ratio = r["images_per_s"]["global"] * r["step_s"]["max"] / r["batch"]["global"]
    assert ratio == pytest.approx(1.0)


@pytest.mark.parametrize("np_,engine", [(None, "none"), (1, "mpi")])
def test_one_rank(tmp_path, digits_h5, np_, engine):
    r, out = _bench(tmp_path, digits_h5, f"dist.backend={engine}", np=np_)
    assert r["ranks"] == 1 and r["engine"] == engine and r["steps"] == 4
    _check_times(r)
    params = r["params"]["G"] + r["params"]["D"]
    assert r["grad_bytes_per_step"] == 4 * params  # fp32 gradients of G and of D, once each
    assert r["allreduce"] is None  # one rank: nothing to average, no allreduce to compare
    assert r["plain"]["step_s"] > 0 and r["plain"]["time_ratio"] > 0
    assert "data wait" in out and "hpcgan step / plain step" in out


@pytest.mark.mpi
@pytest.mark.parametrize("engine, buckets", [("mpi", 0), ("mpi", 1 / 64), ("horovod", 0)])
def test_two_ranks(tmp_path, digits_h5, engine, buckets):
    r, out = _bench(
        tmp_path,
        digits_h5,
        f"dist.backend={engine}",
        f"dist.bucket_mb={buckets}",
        "train.d_steps=2",
        np=2,
    )
    assert r["ranks"] == 2 and r["engine"] == engine and len(r["per_rank"]) == 2
    assert r["batch"] == {"global": 16, "per_rank": 8}
    _check_times(r)
    g, d = (4 * r["params"][k] for k in ("G", "D"))
    assert r["grad_messages_bytes"] == [d, d, g]  # D's buffer per D update, then G's
    assert r["grad_bytes_per_step"] == 2 * d + g
    a = r["allreduce"]
    assert a["repeats"] == 3 and a["raw_s"] > 0 and a["engine_s"] > 0
    assert a["raw_busbw_GBps"] == pytest.approx(a["raw_algbw_GBps"])  # 2(N-1)/N = 1 at N=2
    assert a["ratio"] == pytest.approx(a["engine_s"] / a["raw_s"])
    assert a["in_step_s"] == r["sections_s"]["grad_average"]["mean"]
    # Horovod, and buckets, reduce inside backward hooks: the in-step figure is the exposed wait.
    overlapped = engine == "horovod" or buckets > 0
    assert r["grad_average_is_exposed_only"] == overlapped
    assert "raw MPI_Allreduce" in out and ("exposed wait" in out) == overlapped


@pytest.mark.parametrize(
    "args,message",
    [
        (["--steps", "0"], "--steps must be at least 1"),
        (["--steps", "x"], "invalid int value"),
        (["model.nope=1"], "unknown config key 'model.nope'"),
        (["--json", "/nonexistent/dir/b.json"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message):
    proc = launch(args, module="hpcgan.bench", timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith("hpcgan: error:") and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_plain_loop_makes_as_many_d_updates_as_hpcgan(monkeypatch):
    """The reference loop does train.d_steps D updates per G update, as the trainer does."""
    steps = []  # parameters updated by each Adam step
    adam_step = torch.optim.Adam.step

    def counted(self, *args):
        steps.append(len(self.param_groups[0]["params"]))
        return adam_step(self, *args)

    monkeypatch.setattr(torch.optim.Adam, "step", counted)
    G, D = build_models(ModelConfig(width=4, z_dim=8), (1, 16, 16))
    plain_loop(G, D, 8, d_steps=3)(torch.zeros(4, 1, 16, 16))
    d_params, g_params = len(list(D.parameters())), len(list(G.parameters()))
    assert steps == [d_params] * 3 + [g_params]


def test_grad_messages_count_the_bytes_on_the_wire():
    G, D = build_models(ModelConfig(width=4, z_dim=8), (1, 16, 16))
    pieces = SimpleNamespace(trainer=SimpleNamespace(G=G, D=D))
    n_g, n_d = (sum(p.numel() for p in m.parameters()) for m in (G, D))
    assert grad_messages(pieces, 2) == [4 * n_d, 4 * n_d, 4 * n_g]
    assert grad_messages(pieces, 1, fp16_wire=True) == [2 * n_d, 2 * n_g]  # Horovod fp16
