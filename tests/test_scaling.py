"""The ring-allreduce scaling model: its limits, a case computed by hand, and its inputs."""

from __future__ import annotations

import json

import pytest

from hpcgan import scaling
from hpcgan.config import ModelConfig
from hpcgan.models import build_models
from hpcgan.scaling import Workload, efficiency, ring_allreduce_s

W = Workload("w", compute_s=1.0, backward_s=0.5, messages=(1e9,))


def test_one_rank_is_fully_efficient():
    assert ring_allreduce_s(1e9, 1, 1e9, 1e-3) == 0
    assert efficiency(W, 1, 1e9, 1e-3, 0.0) == 1.0


def test_free_network_is_fully_efficient():
    assert efficiency(W, 512, 1e30, 0.0, 0.0) == pytest.approx(1.0)


def test_hand_computed_case():
    # N=4, 1 GB at 1 GB/s, 1 ms per hop: 2*3/4 * 1 s + 2*3 * 1 ms = 1.506 s
    assert ring_allreduce_s(1e9, 4, 1e9, 1e-3) == pytest.approx(1.506)
    assert efficiency(W, 4, 1e9, 1e-3, 0.0) == pytest.approx(1 / 2.506)
    # overlap 1 hides the whole 0.5 s of backward: 1.006 s stay exposed
    assert efficiency(W, 4, 1e9, 1e-3, 1.0) == pytest.approx(1 / 2.006)
    # two messages of half the size pay the latency twice
    two = Workload("w2", 1.0, 0.5, (5e8, 5e8))
    assert efficiency(two, 4, 1e9, 1e-3, 0.0) == pytest.approx(1 / 2.512)


def test_buckets_pay_the_latency_each():
    assert scaling.in_buckets((10, 4), 4) == [4, 4, 2, 4]
    assert scaling.in_buckets((10, 4), 0) == [10, 4]
    # latency only: 1 GB in 100 MB buckets is 10 rings of 2*3 hops at 1 ms
    latency_only = efficiency(W, 4, 1e30, 1e-3, 0.0, bucket_bytes=10**8)
    assert latency_only == pytest.approx(1 / (1 + 10 * 6e-3))


def test_overlap_never_makes_communication_negative():
    small = Workload("s", 1.0, 1.0, (1e3,))
    assert efficiency(small, 64, 1e9, 0.0, 1.0) == 1.0


def test_builtin_dcgan_bytes_are_its_parameters():
    (d32,) = [w for w in scaling.builtin_workloads() if w.name == "dcgan-32 cpu"]
    G, D = build_models(ModelConfig(), (1, 32, 32))
    assert d32.messages == tuple(4 * sum(p.numel() for p in m.parameters()) for m in (D, G))


def test_bench_json_is_a_workload(tmp_path):
    record = {
        "engine": "mpi",
        "ranks": 2,
        "step_s": {"mean": 0.5},
        "sections_s": {"grad_average": {"mean": 0.1}, "backward": {"mean": 0.2}},
        "grad_messages_bytes": [100, 200],
    }
    path = tmp_path / "b.json"
    path.write_text(json.dumps(record))
    w = scaling.from_bench(str(path))
    assert w.compute_s == pytest.approx(0.4) and w.backward_s == 0.2 and w.messages == (100, 200)


def test_cli(tmp_path, capsys):
    assert scaling.main(["--ranks", "8", "512", "--overlap", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "stylegan2-f" in out and "N=512" in out and "resnet-101" in out and "90%" in out
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert scaling.main(["--bench", str(bad)]) == 2
    assert scaling.main(["--overlap", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("hpcgan: error:") == 2
