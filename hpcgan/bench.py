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
Exit codes: 0 done, 2 bad input (one line "hpcgan: error: ..."), 1 anything else.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hpcgan.comm import agree, make_comm
from hpcgan.comm.base import Comm
from hpcgan.comm.flat import raw_allreduce
from hpcgan.config import Config, help_text, load_config, to_dict, validate
from hpcgan.data.reader import Prefetcher
from hpcgan.errors import Command, UserError, run_command
from hpcgan.models import build_models
from hpcgan.profile import SECTIONS, StepTimer
from hpcgan.train import Pieces, build, uses_cuda

_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


# -- the reference: the plainest loop -----------------------------------------------------------


def plain_loop(
    G: nn.Module, D: nn.Module, z_dim: int, precision: str = "fp32", d_steps: int = 1
) -> Callable[[torch.Tensor, torch.Tensor | None], None]:
    """pytorch/examples' DCGAN step (Adam 2e-4, non-saturating loss), with ``d_steps`` D
    updates per G update as hpcgan makes: no engine, no checks, no statistics, no EMA. G and D
    are already on their device and dtype."""
    opt_g = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))
    dtype = next(G.parameters()).dtype

    def cast() -> contextlib.AbstractContextManager:
        if precision not in _AUTOCAST:
            return contextlib.nullcontext()
        return torch.autocast(next(G.parameters()).device.type, dtype=_AUTOCAST[precision])

    def step(real: torch.Tensor, y: torch.Tensor | None = None) -> None:
        for i in range(d_steps):
            z = torch.randn(real.shape[0], z_dim, device=real.device, dtype=dtype)
            with cast():
                with torch.set_grad_enabled(i == d_steps - 1):  # G's update uses the last
                    fake = G(z, y)
                real_loss = F.softplus(-D(real, y)[0]).mean()
                loss_d = real_loss + F.softplus(D(fake.detach(), y)[0]).mean()
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
        with cast():
            loss_g = F.softplus(-D(fake, y)[0]).mean()
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()

    return step


def timed(step: Callable[[], None], n: int, device: torch.device) -> float:
    """Seconds for ``n`` calls of ``step``, waiting for the GPU at both ends."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def make_plain(cfg: Config, pieces: Pieces, comm: Comm) -> Callable[[], None]:
    """The plain loop of freshly built models like the trainer's, on a fixed per-rank batch."""
    t, info, device = cfg.train, pieces.info, pieces.device
    trainer = pieces.trainer
    torch.manual_seed(t.seed)
    G, D = build_models(cfg.model, info.shape, trainer.num_classes, t.aux_classifier)
    G, D = (m.to(device=device, dtype=trainer.dtype) for m in (G, D))
    n = t.batch_size // comm.size
    real = torch.rand(n, *info.shape, device=device, dtype=trainer.dtype) * 2 - 1  # [n, C, H, W]
    y = None
    if trainer.num_classes:
        y = torch.randint(trainer.num_classes, (n,), device=device)
    step = plain_loop(G, D, cfg.model.z_dim, t.precision, t.d_steps)
    return lambda: step(real, y)


# -- hpcgan's steps -----------------------------------------------------------------------------


def evict(path: str) -> None:
    """Drop the file's pages from this node's page cache: the next reads come from the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # dirty pages cannot be dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


class ReadClock:
    """Wraps a reader's ``read`` to add up the time the background thread spends reading: the
    headroom against the step that hides it."""

    def __init__(self, read: Callable) -> None:
        self._read, self.seconds = read, 0.0

    def __call__(self, global_batch: int):
        t = time.perf_counter()
        try:
            return self._read(global_batch)
        finally:
            self.seconds += time.perf_counter() - t


class Run:
    """hpcgan's steps with a StepTimer, the data wait timed around the prefetcher itself."""

    def __init__(self, cfg: Config, pieces: Pieces) -> None:
        self.trainer, self.device = pieces.trainer, pieces.device
        self.d_steps = cfg.train.d_steps
        self.timer = StepTimer(pieces.device)
        self.trainer.timer = self.timer
        self.reads = ReadClock(pieces.reader.read)
        pieces.reader.read = self.reads  # the prefetcher's thread calls it
        self.feed = Prefetcher(pieces.reader, first_batch=0)
        self.step_s: list[float] = []
        self._next = 0

    def steps(self, n: int) -> None:
        for _ in range(n):
            t = time.perf_counter()
            with self.timer.section("data"):  # what the background read did not hide
                batches = [self.feed.next() for _ in range(self.d_steps)]
            self.trainer.step(self._next, batches)
            if self.device.type == "cuda":
                torch.cuda.synchronize()  # the step's last kernels (EMA) count to this step
            self.step_s.append(time.perf_counter() - t)
            self._next += 1

    def reset(self) -> None:
        self.timer.reset()
        self.reads.seconds = 0.0
        self.step_s.clear()

    def record(self) -> dict:
        """This rank's means per step, in seconds."""
        n = len(self.step_s)
        sections = {k: self.timer.seconds.get(k, 0.0) / n for k in SECTIONS}
        step = sum(self.step_s) / n
        sections["other"] = max(step - sum(sections.values()), 0.0)
        return {
            "step_s": step,
            "median_step_s": float(np.median(self.step_s)),
            "read_s": self.reads.seconds / n,  # on the background thread, mostly hidden
            **sections,
        }

    def close(self) -> None:
        self.feed.close()


# -- the benchmark --------------------------------------------------------------------------------


def grad_messages(pieces: Pieces, d_steps: int, fp16_wire: bool = False) -> list[int]:
    """Bytes of each gradient allreduce in one step: D's flat buffer per D update, then G's.
    ``fp16_wire``: Horovod's fp16 compression sends 2 bytes per gradient element."""

    def nbytes(m: nn.Module) -> int:
        params = [p for p in m.parameters() if p.requires_grad]
        return sum(p.numel() * (2 if fp16_wire else p.element_size()) for p in params)

    trainer = pieces.trainer
    return [nbytes(trainer.D)] * d_steps + [nbytes(trainer.G)]


def _stats(values: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "max": max(values), "min": min(values)}


def compare_allreduce(
    comm: Comm, pieces: Pieces, messages: list[int], repeats: int
) -> dict[str, float] | None:
    """Medians over ``repeats`` of one step's gradient averaging through the engine alone
    (``synchronize`` of D's optimizer per D update, then G's) and of raw MPI_Allreduce calls of
    the same sizes, alternating, each after a barrier: costs without waiting for slow ranks.
    None for one rank, where there is nothing to average."""
    raw = raw_allreduce(comm, messages) if comm.size > 1 else None
    if raw is None:
        return None
    trainer, cuda = pieces.trainer, pieces.device.type == "cuda"
    opts = [trainer.opt_D] * (len(messages) - 1) + [trainer.opt_G]

    def engine() -> None:
        for opt in opts:
            comm.synchronize(opt)  # averages the last step's gradients once more
        if cuda:
            torch.cuda.synchronize()

    seconds: dict[str, list[float]] = {"raw_s": [], "engine_s": []}
    for i in range(repeats + 1):  # the first round warms up
        for name, fn in (("raw_s", raw), ("engine_s", engine)):
            comm.barrier()
            t = time.perf_counter()
            fn()
            if i:
                seconds[name].append(time.perf_counter() - t)
    return {k: float(np.median(v)) for k, v in seconds.items()}


def measure(cfg: Config, comm: Comm, args: argparse.Namespace) -> dict:
    """Warm-up, then measured rounds of hpcgan steps alternating with the plain loop (rank 0),
    then the engine's averaging next to a raw allreduce."""
    pieces = build(cfg, comm)
    run = Run(cfg, pieces)
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


def overlaps(cfg: Config, comm: Comm) -> bool:
    """Whether gradients are reduced during backward (then the in-step grad average is only
    the wait left after backward): Horovod always, the flat engines with buckets."""
    return comm.name == "horovod" or (
        comm.size > 1 and cfg.dist.bucket_mb > 0 and getattr(comm, "overlap", False)
    )


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
    step = _stats([r["step_s"] for r in ranks])
    sections = {k: _stats([r[k] for r in ranks]) for k in (*SECTIONS, "other")}
    read = _stats([r["read_s"] for r in ranks])
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


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and exit 2, like every hpcgan command
        raise UserError(message)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = _Parser(
        prog="python -m hpcgan.bench",
        description=__doc__,
        epilog="configuration keys (as for python -m hpcgan.train):\n" + help_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="YAML file of configuration keys")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="override a key")
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
