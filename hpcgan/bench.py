"""Where a training step's time goes, per rank, next to a raw MPI_Allreduce and the plainest loop.

    python -m hpcgan.bench                                        # one process, the defaults
    mpirun -np 2 python -m hpcgan.bench dist.backend=mpi --json bench.json
    mpirun -np 8 python -m hpcgan.bench --config my.yaml data.path=/scratch/maps.h5 --cold

Builds exactly what ``python -m hpcgan.train`` builds (same keys, same engine), runs --warmup
steps, then --steps measured steps, and reports per rank (mean and max over ranks):
  - the step split into data wait (around the prefetcher's next(), i.e. what the background read
    did not hide), forward, backward, gradient averaging, optimizer and the rest (EMA, ...);
  - images/s and the gradient bytes averaged per step;
  - one step's averaging through the engine alone (its synchronize calls, after a barrier) next
    to raw mpi4py Allreduce calls of float32 buffers of the same sizes (one per network per
    update, as the flat engines send), alternating: their times, the raw call's algorithmic
    bandwidth (bytes / time) and bus bandwidth (2(N-1)/N bytes / time, as nccl-tests define
    it), and engine / raw. Inside the step, grad_average also holds the wait for the slowest
    rank;
  - on rank 0, while the others wait, the plainest one-process PyTorch loop of the same models
    on the per-rank batch with the same threads (no engine, no data loading), in rounds that
    alternate with hpcgan's so that machine noise hits both alike.
With Horovod, and the flat engines with dist.bucket_mb > 0, the allreduce runs inside backward
hooks, so "grad_average" is only the exposed wait after backward; otherwise it is the whole
averaging.
Nothing is written besides the --json file (and a built-in dataset on first use, as in
training). --cold evicts the dataset from the page cache after the warm-up.
Exit codes: 0 done, 2 bad input (one line "hpcgan: error: ..."), 75 stopped by SIGUSR1 or
SIGTERM (nothing to save: run it again), 1 anything else.
"""

from __future__ import annotations

from hpcgan import stop_signals

if __name__ == "__main__":  # before the heavy imports below: an early signal gives exit 75
    stop_signals.catch(interrupting=True)
    stop_signals.pause_for_test("entry")

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

from hpcgan.comm import agree, make_comm
from hpcgan.comm.base import Comm
from hpcgan.config import Config, command_line, load_config, to_dict, validate
from hpcgan.errors import Command, UserError, run_command
from hpcgan.plain import make_plain, timed
from hpcgan.profile import SECTIONS, StepTimer
from hpcgan.session import Pieces, build, uses_cuda
from hpcgan.timing import TimedSteps, compare_allreduce, evict, grad_messages, overlaps, stats

# -- the benchmark --------------------------------------------------------------------------------


def measure(cfg: Config, comm: Comm, args: argparse.Namespace) -> dict:
    """Warm-up, then measured rounds of hpcgan steps alternating with the plain loop (rank 0),
    then the engine's averaging next to a raw allreduce."""
    timer = StepTimer(torch.device("cuda" if uses_cuda(cfg) else "cpu"))
    pieces = build(cfg, comm, timer=timer)  # the trainer times its sections with it
    run = TimedSteps(cfg, pieces, timer)
    plain = make_plain(cfg, pieces, comm) if args.plain and comm.rank == 0 else None
    plain_s = 0.0
    try:
        run.steps(args.warmup)
        if plain is not None:
            timed(plain, max(args.warmup, 1), pieces.device)
        if args.cold and comm.local_rank == 0:
            evict(pieces.info.path)
        comm.barrier()
        run.reset()
        for chunk in np.array_split(np.arange(args.steps), args.rounds):
            run.steps(len(chunk))
            comm.barrier()  # the plain loop runs alone on the node
            if plain is not None:
                plain_s += timed(plain, len(chunk), pieces.device)
            comm.barrier()
    finally:
        run.close()
    fp16_wire = comm.name == "horovod" and cfg.dist.compression == "fp16"
    messages = grad_messages(pieces, cfg.train.d_steps, fp16_wire)
    averaging = compare_allreduce(comm, pieces, messages, args.allreduce_repeats)
    ranks = comm.allgather_object({**run.record(), "averaging": averaging})
    return summarise(cfg, comm, args, pieces, ranks, messages, plain_s)


def summarise(
    cfg: Config,
    comm: Comm,
    args: argparse.Namespace,
    pieces: Pieces,
    ranks: list[dict],
    messages: list[int],
    plain_s: float,
) -> dict:
    n = comm.size
    step = stats([r["step_s"] for r in ranks])
    sections = {k: stats([r[k] for r in ranks]) for k in (*SECTIONS, "other")}
    read = stats([r["read_s"] for r in ranks])
    total = sum(messages)
    per_rank_batch = cfg.train.batch_size // n
    result = {
        "hpcgan_bench": 1,
        "ranks": n,
        "engine": comm.name,
        "threads": torch.get_num_threads(),
        "device": str(pieces.device),
        "shape": list(pieces.info.shape),
        "data": pieces.info.path,
        "cold": args.cold,
        "steps": args.steps,
        "warmup": args.warmup,
        "batch": {"global": cfg.train.batch_size, "per_rank": per_rank_batch},
        "step_s": step,
        "sections_s": sections,
        "background_read_s": read,
        # Horovod reduces inside backward hooks: its grad_average is the wait left after backward.
        "grad_average_is_exposed_only": overlaps(cfg, comm),
        "images_per_s": {
            "global": cfg.train.batch_size / step["max"],
            "per_rank": per_rank_batch / step["mean"],
        },
        "grad_bytes_per_step": total,
        "grad_messages_bytes": messages,
        "params": {
            "G": sum(p.numel() for p in pieces.trainer.G.parameters()),
            "D": sum(p.numel() for p in pieces.trainer.D.parameters()),
        },
        "allreduce": None,
        "plain": None,
        "per_rank": ranks,
        "config": to_dict(cfg),
    }
    if ranks[0]["averaging"] is not None:
        # A collective ends when its slowest rank does: the max over ranks of their medians.
        raw_s = max(r["averaging"]["raw_s"] for r in ranks)
        engine_s = max(r["averaging"]["engine_s"] for r in ranks)
        in_step = sections["grad_average"]
        result["allreduce"] = {
            "repeats": args.allreduce_repeats,
            "raw_s": raw_s,
            "raw_algbw_GBps": total / raw_s / 1e9,
            "raw_busbw_GBps": 2 * (n - 1) / n * total / raw_s / 1e9,
            "engine_s": engine_s,
            "engine_algbw_GBps": total / engine_s / 1e9,
            "ratio": engine_s / raw_s,
            # Inside the step grad_average also holds the wait for the slowest rank (the rank
            # that arrives last waits least) and, with Horovod, only what backward did not hide.
            "in_step_s": in_step["mean"],
            "in_step_min_rank_s": in_step["min"],
            "in_step_ratio": in_step["mean"] / raw_s,
        }
    if plain_s:
        plain_step = plain_s / args.steps
        result["plain"] = {
            "step_s": plain_step,
            "images_per_s": per_rank_batch / plain_step,
            "time_ratio": step["mean"] / plain_step,  # hpcgan's step / the plain step
        }
    return result


# -- output ---------------------------------------------------------------------------------------


def _ms(s: float) -> str:
    return f"{s * 1e3:9.2f}"


def table(r: dict) -> str:
    """The human-readable report of :func:`summarise`'s result."""
    b, step = r["batch"], r["step_s"]
    lines = [
        f"hpcgan.bench: {r['ranks']} rank(s), engine {r['engine']}, {r['threads']} thread(s) "
        f"per rank, {r['device']}, images {'x'.join(map(str, r['shape']))}, batch "
        f"{b['per_rank']}/rank ({b['global']} global), {r['steps']} steps after {r['warmup']}"
        + (" (data read cold)" if r["cold"] else ""),
        f"{'per step':<16}{'mean ms':>9}{'max ms':>9}{'share':>8}",
    ]
    names = {"data": "data wait", "grad_average": "grad average"}
    for k, v in r["sections_s"].items():
        share = v["mean"] / step["mean"]
        lines.append(f"{names.get(k, k):<16}{_ms(v['mean'])}{_ms(v['max'])}{share:8.1%}")
    lines.append(f"{'step':<16}{_ms(step['mean'])}{_ms(step['max'])}")
    read = r["background_read_s"]
    lines.append(
        f"  (the prefetch thread read for {read['mean'] * 1e3:.2f} ms per step, "
        f"{read['mean'] / step['mean']:.1%} of the step; data wait is what it did not hide)"
    )
    if r["grad_average_is_exposed_only"]:
        lines.append("  (allreduce overlaps backward; grad average is the exposed wait)")
    img = r["images_per_s"]
    lines.append(f"images/s: {img['global']:.1f} global, {img['per_rank']:.1f} per rank")
    mb = [f"{m / 1e6:.2f}" for m in r["grad_messages_bytes"]]
    lines.append(
        f"gradients averaged per step: {r['grad_bytes_per_step'] / 1e6:.2f} MB in "
        f"{len(mb)} message(s) ({' + '.join(mb)} MB)"
    )
    a = r["allreduce"]
    if a is not None:
        lines.append(
            f"one step's averaging, alone after a barrier (median of {a['repeats']}): engine "
            f"{a['engine_s'] * 1e3:.2f} ms ({a['engine_algbw_GBps']:.2f} GB/s), raw "
            f"MPI_Allreduce {a['raw_s'] * 1e3:.2f} ms (algbw {a['raw_algbw_GBps']:.2f} GB/s, "
            f"busbw {a['raw_busbw_GBps']:.2f} GB/s): engine / raw = {a['ratio']:.2f}"
        )
        lines.append(
            f"grad average inside the step / raw = {a['in_step_ratio']:.2f} (mean over ranks; "
            f"includes waiting for the slowest rank)"
        )
    p = r["plain"]
    if p is not None:
        lines.append(
            f"plain PyTorch loop (rank 0 alone, same models, batch {b['per_rank']}): "
            f"{p['step_s'] * 1e3:.2f} ms/step, {p['images_per_s']:.1f} images/s; "
            f"hpcgan step / plain step = {p['time_ratio']:.3f}"
        )
    return "\n".join(lines)


# -- entry point ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = command_line("python -m hpcgan.bench", __doc__, "as for python -m hpcgan.train")
    p.add_argument("--steps", type=int, default=30, help="measured steps (default 30)")
    p.add_argument("--warmup", type=int, default=5, help="unmeasured steps first (default 5)")
    p.add_argument(
        "--rounds", type=int, default=3, help="rounds alternating with the plain loop (default 3)"
    )
    p.add_argument(
        "--allreduce-repeats", type=int, default=20, help="raw allreduce repetitions (default 20)"
    )
    p.add_argument("--no-plain", dest="plain", action="store_false", help="skip the plain loop")
    p.add_argument(
        "--cold",
        action="store_true",
        help="evict the dataset from the page cache (posix_fadvise DONTNEED) after the warm-up",
    )
    p.add_argument("--json", help="write the results here (rank 0)")
    return p.parse_intermixed_args(argv)  # key=value before or after the options


def check_args(args: argparse.Namespace) -> None:
    for name, low in (("steps", 1), ("warmup", 0), ("rounds", 1), ("allreduce_repeats", 1)):
        if getattr(args, name) < low:
            flag = "--" + name.replace("_", "-")
            raise UserError(f"{flag} must be at least {low}, got {getattr(args, name)}")
    if args.rounds > args.steps:
        raise UserError(f"--rounds={args.rounds} is more than --steps={args.steps}")
    if args.json:
        parent = Path(args.json).resolve().parent
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise UserError(f"--json {args.json}: folder {parent} does not exist or is read-only")


def main(argv: list[str] | None = None) -> int:
    def body(command: Command) -> None:
        args = parse_args(argv)
        check_args(args)
        cfg = load_config(args.config, args.overrides)
        comm = command.comm = make_comm(cfg.dist, uses_cuda(cfg))
        agree(comm, lambda: validate(cfg, comm.size))
        result = measure(cfg, comm, args)
        if comm.rank == 0:
            print(table(result), flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps(result, indent=1) + "\n")

    return run_command("hpcgan", body)


if __name__ == "__main__":
    sys.exit(main())
