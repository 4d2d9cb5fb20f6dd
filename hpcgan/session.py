"""What a process sets up before it trains or measures: threads, device, the dataset, the run
directory, and the pieces of a training run built alike on every rank.

Shared by hpcgan.train and hpcgan.bench (which builds exactly what training builds), and, for
threads and device, by sample, evaluate and report. Every check of the configuration against
the dataset happens here, in :func:`fit_to_data`, once at start-up.
"""

from __future__ import annotations

import math
import os
import socket
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import torch
from torch import nn

from hpcgan.comm import agree
from hpcgan.comm.base import Comm
from hpcgan.condition import ConditionSpec
from hpcgan.config import Config
from hpcgan.data.builtin import builtin_path, prepare_builtin
from hpcgan.data.format import DatasetInfo, read_info
from hpcgan.data.holdout import Split, make_split
from hpcgan.data.reader import ShardReader
from hpcgan.data.sharding import ShardPlan
from hpcgan.data.stage import stage_dir, stage_file, staged_path
from hpcgan.data.transforms import ValueTransform, make_condition_transform, make_transform
from hpcgan.errors import UserError
from hpcgan.metrics.evaluate import best_metric_name
from hpcgan.models import build_models
from hpcgan.profile import NoTimer
from hpcgan.trainer import Trainer


def set_threads(cfg: Config, comm: Comm) -> None:
    """train.threads, else OMP_NUM_THREADS, else this rank's share of the cores it may use
    (:func:`thread_share` of every rank's binding on this node; a collective on every rank,
    whatever it then picks, so a rank with another OMP_NUM_THREADS cannot leave the others
    waiting)."""
    mine = frozenset(os.sched_getaffinity(0))
    host = socket.gethostname()
    ranks = comm.allgather_object((host, sorted(mine)))
    n = cfg.train.threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if not n:
        n = thread_share(mine, [frozenset(cpus) for h, cpus in ranks if h == host])
    torch.set_num_threads(max(1, n))


def thread_share(mine: frozenset[int], node: list[frozenset[int]]) -> int:
    """Threads for a rank that may use the cores ``mine``, among the bindings ``node`` of all
    ranks on its node (its own included): each core split evenly among the ranks that may use
    it. Unbound ranks share the node's cores; under a core binding each rank has its own; under
    a package binding the ranks bound to a package share its cores (docs/performance.md)."""
    users = Counter(core for cores in node for core in cores)
    return max(1, math.floor(sum(Fraction(1, users[core]) for core in mine)))


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


def inference_device(comm: Comm) -> torch.device:
    """For sample, evaluate and report: the GPU of this rank's local rank if any, else cpu."""
    if torch.cuda.is_available():
        return torch.device("cuda", comm.local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def open_dataset(cfg: Config, comm: Comm) -> tuple[DatasetInfo, str]:
    """The description of the file this rank reads, and a line for the log about staging."""
    source = cfg.data.path or str(_builtin(cfg, comm))
    path, note = stage(cfg.data.stage, comm, source) if cfg.data.stage else (source, "")
    return agree(comm, lambda: read_info(path)), note


def _builtin(cfg: Config, comm: Comm) -> Path:
    """The built-in dataset, written by rank 0 while the others wait; then by the first rank
    of any other node that does not see it (data.root on node-local storage), so no rank waits
    for a file another node wrote. On a shared file system the second pass finds the file."""
    root, name = cfg.data.root, cfg.data.builtin
    agree(comm, lambda: prepare_builtin(root, name) if comm.rank == 0 else None)
    agree(comm, lambda: prepare_builtin(root, name) if comm.local_rank == 0 else None)
    return builtin_path(root, name)


def stage(setting: str, comm: Comm, source: str) -> tuple[str, str]:
    """data.stage=``setting``: the first rank of each node copies ``source`` to node-local
    storage (or keeps its fresh copy) while the node's other ranks wait; every rank then reads
    its node's copy (docs/data.md, "Node-local staging"). A failure on any node stops every
    rank (exit 2). Training, sample and evaluate stage alike (the same copy)."""
    directory = agree(comm, lambda: stage_dir(setting))
    staged = agree(comm, lambda: stage_file(source, directory) if comm.local_rank == 0 else None)
    nodes = [s for s in comm.gather_object(staged) or [] if s is not None]
    copy = staged_path(source, directory)
    note = ""
    if nodes:  # rank 0
        copied = sum(s.copied for s in nodes)
        note = (
            f"data staged to {copy} on {len(nodes)} node(s) in "
            f"{max(s.seconds for s in nodes):.2f} s ({nodes[0].nbytes / 2**20:.1f} MiB copied "
            f"to {copied}, a fresh copy kept on {len(nodes) - copied})"
        )
    return str(copy), note


def prepare_run_dir(cfg: Config, comm: Comm) -> Path:
    """RUN_DIR with its checkpoints/ and samples/, made by rank 0; refused if not writable."""
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


def shard_plan(cfg: Config, info: DatasetInfo, split: Split) -> ShardPlan:
    """The sequence of global batches over the training samples (positions of
    ``split.train_indices``); one global batch must fit in them."""
    if split.train_count < cfg.train.batch_size:
        held = f" after holding out {split.held} (data.holdout)" if split.held else ""
        raise UserError(
            f"{info.path} has {split.train_count} training samples{held}, fewer than one "
            f"global batch (train.batch_size={cfg.train.batch_size})"
        )
    segment = cfg.data.segment or (info.chunk_samples if info.compression else 8)
    return ShardPlan(split.train_count, cfg.train.batch_size, segment, cfg.train.seed)


@dataclass
class Fitted:
    """What the configuration makes of one dataset."""

    plan: ShardPlan
    split: Split  # data.holdout: the held-out samples training never reads
    transform: ValueTransform
    spec: ConditionSpec  # what G and D are conditioned on
    G: nn.Module
    D: nn.Module
    best_metric: str | None  # run.best_metric resolved (None: off)


def fit_to_data(cfg: Config, info: DatasetInfo) -> Fitted:
    """Every check of the configuration against this dataset, in one place, each made where
    its data are known: dataset size vs batch (the sharding plan), data.transform vs the
    values, the models vs the sample shape and labels (G and D built from train.seed), and
    run.best_metric vs the metrics this data gets (checked even when nothing is evaluated,
    because checkpoints record it). A UserError from any of them stops the run before anything
    is written."""
    split = make_split(cfg.data.holdout, info.n)
    plan = shard_plan(cfg, info, split)
    transform = make_transform(info, cfg.data.transform)
    torch.manual_seed(cfg.train.seed)  # initial weights (rank 0's are broadcast to all)
    G, D = build_models(cfg.model, info.shape, **model_options(cfg, info))
    best = best_metric_name(cfg.run.best_metric, info)
    return Fitted(plan, split, transform, G.spec, G, D, best)


def model_options(cfg: Config, info: DatasetInfo) -> dict:
    """build_models' data-dependent arguments for this dataset: what it offers to condition on
    (classes; the /conditions columns unless model.condition=none), whether D has an AC-GAN
    head and a regression head, and the data's symmetry (periodic axes for padding)."""
    names, units = info.condition_names, info.condition_units
    if cfg.model.condition == "none":
        names, units = (), ()
    return dict(
        data=ConditionSpec(info.num_classes, names, units),
        aux_classifier=cfg.train.aux_classifier,
        regression=cfg.train.cond_regression > 0,
        symmetry=info.symmetry,
    )


@dataclass
class Pieces:
    """What a training run is made of, built alike on every rank."""

    info: DatasetInfo
    device: torch.device
    trainer: Trainer
    reader: ShardReader
    staged: str = ""  # data.stage: where the data were staged and how long it took (rank 0)


def build(cfg: Config, comm: Comm, timer: NoTimer | None = None) -> Pieces:
    """Dataset, device, models and their trainer (``timer``: hpcgan.bench's StepTimer), and
    this rank's reader."""
    set_threads(cfg, comm)
    device = agree(comm, lambda: pick_device(cfg, comm))
    info, staged = open_dataset(cfg, comm)
    fit = agree(comm, lambda: fit_to_data(cfg, info))
    trainer = Trainer(cfg, comm, fit.G, fit.D, device, timer=timer, decode=fit.transform.decode)
    conditions = agree(comm, lambda: make_condition_transform(info, cfg.data.condition_transform))
    reader = ShardReader(info, fit.plan, comm.rank, comm.size, fit.transform, fit.split, conditions)
    return Pieces(info, device, trainer, reader, staged)
