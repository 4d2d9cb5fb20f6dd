"""Predicted data-parallel efficiency at 8, 64 and 512 ranks, from one rank's compute time and
the gradient bytes each step averages (ring allreduce model), next to Horovod's published figures.

    python -m hpcgan.scaling                                  # built-in models + StyleGAN2 size
    python -m hpcgan.scaling --bench bench.json               # a model measured by hpcgan.bench
    python -m hpcgan.scaling --bandwidth-GBps 12.5 --latency-us 5 --ranks 16 128 1024
    python -m hpcgan.scaling --bucket-mb 4                    # torch/mpi with dist.bucket_mb=4

Weak scaling: each rank keeps its batch, so its compute time T_c stays fixed as ranks are added.
For a step that averages messages of b_1, b_2, ... bytes (one per network per update, or one
per bucket with --bucket-mb: each bucket is an allreduce of its own and pays the latency):
    T_ring(b, N) = 2 (N-1)/N * b / B  +  2 (N-1) * alpha     one ring allreduce of b bytes
    T_comm(N)    = sum_i T_ring(b_i, N)
    T_exposed    = max(0, T_comm - overlap * T_backward)      overlap: share of backward time
                                                              that hides communication
    efficiency   = T_c / (T_c + T_exposed)
B is each rank's network bandwidth (bytes/s), alpha the latency of one ring step (one hop).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from hpcgan.errors import EXIT_OK, EXIT_USAGE, UserError

# Horovod's README: 128 servers x 4 Pascal GPUs, RoCE 25 Gbit/s; efficiency at 512 GPUs.
HOROVOD_PUBLISHED_512 = {"inception-v3": 0.90, "resnet-101": 0.90, "vgg-16": 0.68}
HOROVOD_NETWORK_GBPS = 25 / 8  # 25 Gbit/s


@dataclass(frozen=True)
class Workload:
    """One rank's step: compute time, the part of it that is backward, and the allreduces."""

    name: str
    compute_s: float
    backward_s: float
    messages: tuple[int, ...]  # bytes of each allreduce in one step
    source: str = ""


def ring_allreduce_s(nbytes: float, ranks: int, bandwidth: float, latency: float) -> float:
    """Time of one ring allreduce: 2(N-1) steps, each moving nbytes/N and paying one latency."""
    if ranks <= 1:
        return 0.0
    return 2 * (ranks - 1) / ranks * nbytes / bandwidth + 2 * (ranks - 1) * latency


def in_buckets(messages: tuple[int, ...], bucket_bytes: int) -> list[int]:
    """Each message cut into allreduces of at most ``bucket_bytes`` (0: left whole)."""
    if bucket_bytes <= 0:
        return list(messages)
    cut = []
    for b in messages:
        whole, rest = divmod(int(b), bucket_bytes)
        cut += [bucket_bytes] * whole + ([rest] if rest else [])
    return cut


def efficiency(
    w: Workload,
    ranks: int,
    bandwidth: float,
    latency: float,
    overlap: float,
    bucket_bytes: int = 0,
) -> float:
    messages = in_buckets(w.messages, bucket_bytes)
    comm = sum(ring_allreduce_s(b, ranks, bandwidth, latency) for b in messages)
    exposed = max(0.0, comm - overlap * w.backward_s)
    return w.compute_s / (w.compute_s + exposed)


def _params(n: float) -> int:
    return int(n * 4)  # fp32 gradient bytes


def _dcgan(
    name: str, shape: tuple[int, int, int], compute_s: float, backward: float, source: str
) -> Workload:
    """hpcgan's default dcgan for ``shape``: its exact gradient bytes, a measured step time."""
    from hpcgan.config import ModelConfig
    from hpcgan.models import build_models

    G, D = build_models(ModelConfig(), shape)
    nbytes = [sum(p.numel() * 4 for p in m.parameters()) for m in (D, G)]
    return Workload(name, compute_s, compute_s * backward, tuple(nbytes), source)


def builtin_workloads() -> list[Workload]:
    """hpcgan's dcgan at 32x32 and 64x64, measured (batch 64 per rank, fp32), and a StyleGAN2
    config-f sized GAN. Step times and backward shares: docs/performance.md."""
    cpu = "hpcgan.bench, 1 CPU thread (2-core VM)"
    gpu = "bench/step_speed.py, one H200, fp32"
    return [
        _dcgan("dcgan-32 cpu", (1, 32, 32), 0.29, 0.61, cpu),
        _dcgan("dcgan-64 cpu", (1, 64, 64), 1.65, 0.64, cpu),
        _dcgan("dcgan-32 gpu", (1, 32, 32), 0.0078, 0.27, gpu),
        _dcgan("dcgan-64 gpu", (1, 64, 64), 0.0093, 0.33, gpu),
        # G 30.0M + D 29.0M parameters. 1.08 s per step of 4 images per V100: the official
        # config-f 1024x1024 run took 9d18h for 25M images on 8 V100s (3.7 images/s per GPU);
        # backward taken as 2/3 of the step.
        Workload(
            "stylegan2-f v100",
            1.08,
            0.72,
            (_params(29.0e6), _params(30.0e6)),
            "StyleGAN2 README training times, 4 images per GPU",
        ),
    ]


def horovod_workloads() -> list[Workload]:
    """Horovod's benchmark models, one allreduce of all gradients per step, batch 64 per P100.

    Compute per step: ResNet-101 from Horovod's 16-GPU example (1656.82 images/s = 103.6 per
    GPU); Inception V3 from TensorFlow's P100 benchmark (142 images/s); VGG-16 scaled from
    ResNet-101 by forward FLOPs (15.5 vs 7.8 GFLOP/image), an assumption.
    """
    resnet = 64 / 103.6
    return [
        Workload("inception-v3", 64 / 142, 64 / 142 * 2 / 3, (_params(23.8e6),), "TF benchmarks"),
        Workload("resnet-101", resnet, resnet * 2 / 3, (_params(44.5e6),), "Horovod docs"),
        Workload("vgg-16", resnet * 15.5 / 7.8, resnet * 15.5 / 7.8 * 2 / 3, (_params(138.4e6),)),
    ]


def from_bench(path: str) -> Workload:
    """A workload measured by ``python -m hpcgan.bench --json``: compute = step - grad average."""
    try:
        r = json.loads(Path(path).read_text())
        step, sec = r["step_s"]["mean"], r["sections_s"]
        compute = step - sec["grad_average"]["mean"]
        name = f"{Path(path).stem} ({r['engine']}, {r['ranks']} rank(s))"
        messages = tuple(int(b) for b in r["grad_messages_bytes"])
        return Workload(name, compute, sec["backward"]["mean"], messages, path)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"--bench {path}: not an hpcgan.bench JSON file ({e})") from None


def table(
    workloads: list[Workload],
    ranks: list[int],
    bandwidth: float,
    latency: float,
    overlaps: list[float],
    published: dict[str, float] | None = None,
    bucket_bytes: int = 0,
) -> str:
    head = f"{'workload':<18}{'step ms':>9}{'MB/step':>9}{'overlap':>8}"
    head += "".join(f"{f'N={n}':>8}" for n in ranks)
    head += f"{'published@512':>15}" if published else ""
    lines = [head]
    for w in workloads:
        for ov in overlaps:
            effs = [efficiency(w, n, bandwidth, latency, ov, bucket_bytes) for n in ranks]
            line = f"{w.name:<18}{w.compute_s * 1e3:9.1f}{sum(w.messages) / 1e6:9.1f}{ov:8.2f}"
            line += "".join(f"{e:8.1%}" for e in effs)
            if published:
                line += f"{published.get(w.name, float('nan')):15.0%}"
            lines.append(line)
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> None:
            raise UserError(message)

    p = Parser(
        prog="python -m hpcgan.scaling",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--bench", nargs="*", default=[], help="hpcgan.bench JSON files to model")
    p.add_argument("--ranks", type=int, nargs="+", default=[8, 64, 512])
    p.add_argument(
        "--bandwidth-GBps",
        type=float,
        default=25.0,
        help="network bandwidth per rank in GB/s (default 25: 200 Gbit/s InfiniBand HDR)",
    )
    p.add_argument(
        "--latency-us", type=float, default=2.0, help="latency per ring step in us (default 2)"
    )
    p.add_argument(
        "--bucket-mb",
        type=float,
        default=0.0,
        help="gradients averaged in buckets of this many MiB, one allreduce each (dist.bucket_mb; "
        "default 0: one per network)",
    )
    p.add_argument(
        "--overlap",
        type=float,
        nargs="+",
        default=[0.0, 1.0],
        help="share of backward time that hides communication (default: 0 and 1, the bounds)",
    )
    args = p.parse_args(argv)
    if args.bandwidth_GBps <= 0 or args.latency_us < 0 or min(args.ranks) < 1:
        raise UserError("--bandwidth-GBps must be positive, --latency-us >= 0, --ranks >= 1")
    if args.bucket_mb < 0:
        raise UserError("--bucket-mb must be >= 0")
    if not all(0 <= o <= 1 for o in args.overlap):
        raise UserError("--overlap values must lie in [0, 1]")
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        workloads = [from_bench(p) for p in args.bench] or builtin_workloads()
    except UserError as e:
        print(f"hpcgan: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    bw, lat = args.bandwidth_GBps * 1e9, args.latency_us * 1e-6
    bucket = int(args.bucket_mb * 2**20)
    print(
        f"ring allreduce model: {args.bandwidth_GBps:g} GB/s per rank, {args.latency_us:g} us"
        + (f", buckets of {args.bucket_mb:g} MiB" if bucket else "")
    )
    print(table(workloads, args.ranks, bw, lat, args.overlap, bucket_bytes=bucket))
    print(
        f"\nthe same model on Horovod's benchmark ({HOROVOD_NETWORK_GBPS:.3g} GB/s = "
        f"25 Gbit/s RoCE, {args.latency_us:g} us), next to its published efficiency:"
    )
    print(
        table(
            horovod_workloads(),
            args.ranks,
            HOROVOD_NETWORK_GBPS * 1e9,
            lat,
            args.overlap,
            HOROVOD_PUBLISHED_512,
        )
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
