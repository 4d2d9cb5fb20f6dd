"""Train a GAN on N MPI ranks (or one plain process).

    mpirun -np 4 python -m hpcgan.train --config my.yaml train.steps=5000
    srun --mpi=pmix python -m hpcgan.train data.path=/scratch/maps.h5 run.dir=runs/maps
    python -m hpcgan.train model.width=32 train.steps=200          # one process

A run directory that holds checkpoints is resumed from the newest one.
Exit codes: 0 done, 2 bad input or configuration, or a run directory that cannot be written
(full, over quota, read-only: resubmit once it can be), 75 stopped by SIGUSR1/SIGTERM or
train.max_minutes after a checkpoint (a signal before the first step: nothing new saved):
resubmit to continue; 1 anything else.
"""

from __future__ import annotations

from hpcgan import stop_signals

if __name__ == "__main__":  # before the heavy imports below: an early signal is kept, not fatal
    stop_signals.catch()
    stop_signals.pause_for_test("entry")

import argparse
import sys
from pathlib import Path

import torch

from hpcgan import run_state
from hpcgan.board import Board
from hpcgan.comm import agree, make_comm
from hpcgan.comm.base import Comm
from hpcgan.config import Config, command_line, dump_yaml, load_config, validate
from hpcgan.errors import Command, run_command
from hpcgan.files import atomic_write_text
from hpcgan.loop import Loop
from hpcgan.monitor import RunLog
from hpcgan.preempt import StopRequest
from hpcgan.session import build, prepare_run_dir, uses_cuda
from hpcgan.watchdog import Watchdog


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return command_line("python -m hpcgan.train", __doc__).parse_args(argv)


def train(cfg: Config, comm: Comm) -> None:
    stop = StopRequest(cfg.train.max_minutes)
    stop.before_start(
        comm, lambda line: print(f"hpcgan: {line}", flush=True)
    )  # a signal during start-up
    cfg = agree(comm, lambda: run_state.keep_split(cfg, Path(cfg.run.dir)))
    pieces = build(cfg, comm)  # every check against the data: exit 2 before anything is written
    info, device = pieces.info, pieces.device
    run_dir = prepare_run_dir(cfg, comm)
    log = RunLog(run_dir if comm.rank == 0 else None)
    watchdog = Watchdog(comm, cfg.dist.timeout_s)
    board = None
    try:
        found = agree(comm, lambda: run_state.find_resume(cfg, info, run_dir, log.info))
        # After the resume is accepted: a refused one (exit 2) adds no event file to the run.
        board = Board(run_dir) if comm.rank == 0 and cfg.run.tensorboard else None
        loop = Loop(cfg, comm, pieces.trainer, pieces.reader, log, run_dir, stop, watchdog, board)
        start = 0
        if found is not None:  # every rank loads the same file: identical replicas
            start = agree(comm, lambda: loop.restore(*found))
            log.info(f"resuming from {found[0]} at step {start}")
        stop_signals.pause_for_test("before_first_step")
        stop.before_start(comm, log.info)  # data open, models built: nothing new written yet
        if comm.rank == 0:  # a failure is shared at the first step (hpcgan.loop)
            log.writes.attempt(atomic_write_text, run_dir / "config.yaml", dump_yaml(cfg))
        log.info(
            f"data {info.path}: {info.n} x {info.shape} {info.dtype} ({info.kind}); "
            f"device {device}, {torch.get_num_threads()} thread(s) per rank"
        )
        if pieces.staged:
            log.info(pieces.staged)
        if cfg.train.loss == "wgan-gp" and any(
            isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in pieces.trainer.D.modules()
        ):
            log.info(
                "note: WGAN-GP penalises each sample's gradient, but batch norm in D mixes the "
                "samples of a batch; model.norm=none is the usual choice (Gulrajani et al. 2017)"
            )
        loop.run(start)
        log.info(f"done: samples in {run_dir}/samples, checkpoints in {run_dir}/checkpoints")
        if board is not None:
            log.writes.attempt(board.close)  # its last events, before the ranks agree
        loop.raise_write_failure()  # the last lines too, and a run that had no step left
    finally:
        watchdog.stop()
        log.close()
        if board is not None:
            log.writes.attempt(board.close)  # (again: a no-op) never hides the error raised


def main(argv: list[str] | None = None) -> int:
    def body(command: Command) -> None:
        args = parse_args(argv)
        cfg = load_config(args.config, args.overrides)
        stop_signals.pause_for_test("before_mpi")
        comm = command.comm = make_comm(cfg.dist, uses_cuda(cfg))
        agree(comm, lambda: validate(cfg, comm.size))
        train(cfg, comm)

    return run_command("hpcgan", body)


if __name__ == "__main__":
    sys.exit(main())
