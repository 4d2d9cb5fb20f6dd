"""Train a GAN on N MPI ranks (or one plain process).

    mpirun -np 4 python -m hpcgan.train --config my.yaml train.steps=5000
    srun --mpi=pmix python -m hpcgan.train data.path=/scratch/maps.h5 run.dir=runs/maps
    python -m hpcgan.train model.width=32 train.steps=200          # one process

A run directory that holds checkpoints is resumed from the newest one.
Exit codes: 0 done, 2 bad input or configuration, 75 stopped after a checkpoint (resubmit),
1 anything else.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from hpcgan import checkpoint
from hpcgan.board import Board
from hpcgan.comm import agree, make_comm
from hpcgan.comm.base import Comm
from hpcgan.config import Config, dump_yaml, help_text, load_config, validate
from hpcgan.data.builtin import builtin_path, prepare_builtin
from hpcgan.data.reader import ShardReader
from hpcgan.data.schema import DatasetInfo, read_info
from hpcgan.data.sharding import ShardPlan
from hpcgan.data.transforms import make_transform
from hpcgan.errors import Command, UserError, run_command
from hpcgan.loop import Loop
from hpcgan.metrics.evaluate import best_metric_name
from hpcgan.models import build_models
from hpcgan.monitor import RunLog
from hpcgan.preempt import StopRequest
from hpcgan.trainer import Trainer
from hpcgan.watchdog import Watchdog

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m hpcgan.train",
        description=__doc__,
        epilog="configuration keys (set in the YAML file or as key=value):\n" + help_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="YAML file of configuration keys")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override a key")
    return parser.parse_args(argv)


def set_threads(cfg: Config, comm: Comm) -> None:
    """train.threads, else OMP_NUM_THREADS, else this rank's share of the cores it may use."""
    n = cfg.train.threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if not n:
        usable = len(os.sched_getaffinity(0))
        bound = usable < (os.cpu_count() or usable)  # the launcher already gave us our share
        n = usable if bound else usable // comm.local_size
    torch.set_num_threads(max(1, n))


def uses_cuda(cfg: Config) -> bool:
    """Whether train.device puts this run on GPUs (auto: when CUDA is available)."""
    return cfg.train.device != "cpu" and torch.cuda.is_available()


def pick_device(cfg: Config, comm: Comm) -> torch.device:
    """train.device: each rank takes the GPU of its local rank (round robin)."""
    if cfg.train.device == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device=cuda but this node has no usable CUDA device")
    if uses_cuda(cfg):
        device = torch.device("cuda", comm.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def open_dataset(cfg: Config, comm: Comm) -> DatasetInfo:
    """The dataset's description; the built-in one is written by rank 0 while the others wait."""
    if cfg.data.path:
        return agree(comm, lambda: read_info(cfg.data.path))
    path = builtin_path(cfg.data.root, cfg.data.builtin)
    if comm.rank == 0:
        agree(comm, lambda: prepare_builtin(cfg.data.root, cfg.data.builtin))
    else:
        agree(comm, lambda: None)
    return agree(comm, lambda: read_info(str(path)))


def prepare_run_dir(cfg: Config, comm: Comm) -> Path:
    run_dir = Path(cfg.run.dir)

    def make() -> None:
        if comm.rank != 0:
            return
        try:
            for sub in ("checkpoints", "samples"):
                (run_dir / sub).mkdir(parents=True, exist_ok=True)
            probe = run_dir / f".write-test-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise UserError(f"run.dir {run_dir} is not writable: {e.strerror}") from None

    agree(comm, make)
    return run_dir


def find_checkpoint(
    cfg: Config, info: DatasetInfo, run_dir: Path, log: RunLog
) -> tuple[Path, dict] | None:
    """The newest loadable checkpoint in the run directory, checked against the config and
    the data."""
    found = checkpoint.load_newest(run_dir / "checkpoints", warn=log.info)
    if found is None:
        return None
    path, state = found
    saved_data = state.get("data", {}).get("identity")
    if saved_data is not None and saved_data != info.identity():
        raise UserError(
            f"{path} was trained on other data than {info.path} ({saved_data['n']} samples of "
            f"{tuple(saved_data['shape'])}, other statistics); use another run.dir"
        )
    saved_model = state["config"]["model"]
    current = vars(cfg.model)
    changed = [k for k in current if saved_model.get(k) != current[k]]
    if changed:
        key = changed[0]
        raise UserError(
            f"{path} was trained with model.{key}={saved_model.get(key)!r}, the config says "
            f"{current[key]!r}; use another run.dir or the same model keys"
        )
    return found


@dataclass
class Pieces:
    """What a training run is made of, built alike on every rank."""

    info: DatasetInfo
    device: torch.device
    trainer: Trainer
    reader: ShardReader


def build(cfg: Config, comm: Comm) -> Pieces:
    """Dataset, device, models and their trainer, and this rank's reader (shared with bench)."""
    set_threads(cfg, comm)
    device = agree(comm, lambda: pick_device(cfg, comm))
    info = open_dataset(cfg, comm)
    plan = agree(comm, lambda: _plan(cfg, info))
    transform = agree(comm, lambda: make_transform(info, cfg.data.transform))
    torch.manual_seed(cfg.train.seed)  # initial weights (rank 0's are broadcast to all)
    labelled = cfg.model.conditional or cfg.train.aux_classifier
    num_classes = info.num_classes if labelled else 0
    G, D = agree(
        comm, lambda: build_models(cfg.model, info.shape, num_classes, cfg.train.aux_classifier)
    )
    trainer = Trainer(cfg, comm, G, D, device, num_classes)
    reader = ShardReader(info, plan, comm.rank, comm.size, transform)
    return Pieces(info, device, trainer, reader)


def train(cfg: Config, comm: Comm) -> None:
    stop = StopRequest(cfg.train.max_minutes)  # first, so an early signal is not lost
    pieces = build(cfg, comm)
    info, device = pieces.info, pieces.device
    best_metric_name(cfg.run.best_metric, info)  # a name no evaluation reports: exit 2 now
    run_dir = prepare_run_dir(cfg, comm)
    log = RunLog(run_dir if comm.rank == 0 else None)
    watchdog = Watchdog(comm, cfg.dist.timeout_s)
    board = Board(run_dir) if comm.rank == 0 and cfg.run.tensorboard else None
    try:
        found = agree(comm, lambda: find_checkpoint(cfg, info, run_dir, log))
        loop = Loop(cfg, comm, pieces.trainer, pieces.reader, log, run_dir, stop, watchdog, board)
        start = 0
        if found is not None:  # every rank loads the same file: identical replicas
            start = agree(comm, lambda: loop.restore(*found))
            log.info(f"resuming from {found[0]} at step {start}")
        if comm.rank == 0:
            (run_dir / "config.yaml").write_text(dump_yaml(cfg))
        log.info(
            f"data {info.path}: {info.n} x {info.shape} {info.dtype} ({info.kind}); "
            f"device {device}, {torch.get_num_threads()} thread(s) per rank"
        )
        if cfg.train.loss == "wgan-gp" and any(
            isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in pieces.trainer.D.modules()
        ):
            log.info(
                "note: WGAN-GP penalises each sample's gradient, but batch norm in D mixes the "
                "samples of a batch; model.norm=none is the usual choice (Gulrajani et al. 2017)"
            )
        loop.run(start)
        log.info(f"done: samples in {run_dir}/samples, checkpoints in {run_dir}/checkpoints")
    finally:
        watchdog.stop()
        log.close()
        if board is not None:
            board.close()


def _plan(cfg: Config, info: DatasetInfo) -> ShardPlan:
    if info.n < cfg.train.batch_size:
        raise UserError(
            f"{info.path} has {info.n} samples, fewer than one global batch "
            f"(train.batch_size={cfg.train.batch_size})"
        )
    segment = cfg.data.segment or (info.chunk_samples if info.compression else 8)
    return ShardPlan(info.n, cfg.train.batch_size, segment, cfg.train.seed)


def main(argv: list[str] | None = None) -> int:
    def body(command: Command) -> None:
        args = parse_args(argv)
        cfg = load_config(args.config, args.overrides)
        comm = command.comm = make_comm(cfg.dist, uses_cuda(cfg))
        agree(comm, lambda: validate(cfg, comm.size))
        train(cfg, comm)

    return run_command("hpcgan", body)


if __name__ == "__main__":
    sys.exit(main())
