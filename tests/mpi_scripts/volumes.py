"""Under mpirun -np 2: every architecture x loss trains a few steps on 16^3 volumes with the mpi
engine in fp64 (model.norm=none, R1 on), next to a one-process Trainer given the whole global
batch; then dcgan with batch norm in fp32, bf16 and fp16. Prints one JSON line per check for
tests/test_volumes_train.py to assert on.

With arguments (sample shapes such as 1x12x20 1x9x16x5): the first part only, every
architecture with the ns loss on each shape (tests/test_grids.py)."""

import itertools
import json
import sys

import torch

from hpcgan import objectives
from hpcgan.comm.base import SingleProcess
from hpcgan.comm.mpi_engine import MPIAllreduceComm
from hpcgan.condition import Condition
from hpcgan.config import load_config
from hpcgan.models import build_models
from hpcgan.trainer import Trainer

comm = MPIAllreduceComm()
torch.set_num_threads(1)
GLOBAL = 4
SHAPES = [tuple(int(v) for v in arg.split("x")) for arg in sys.argv[1:]]
SHAPE = (1, 16, 16, 16)


def make(
    arch: str,
    loss: str,
    engine,
    norm: str = "none",
    precision: str = "fp64",
    *extra: str,
    shape: tuple[int, ...] = SHAPE,
) -> Trainer:
    cfg = load_config(
        None,
        [
            f"model.arch={arch}",
            "model.width=4",
            "model.z_dim=8",
            f"model.norm={norm}",
            f"train.loss={loss}",
            f"train.precision={precision}",
            f"train.batch_size={GLOBAL}",
            "train.r1_gamma=1",
            "train.r1_every=2",
            "train.ema_halflife_images=100",
            *extra,
        ],
    )
    torch.manual_seed(0)
    G, D = build_models(cfg.model, shape)
    return Trainer(cfg, engine, G, D, torch.device("cpu"))


def batch(step: int, shape: tuple[int, ...] = SHAPE) -> torch.Tensor:
    g = torch.Generator().manual_seed(step)
    return torch.rand(GLOBAL, *shape, generator=g) * 2 - 1


def params(trainer: Trainer) -> torch.Tensor:
    return torch.cat(
        [p.detach().flatten() for p in (*trainer.G.parameters(), *trainer.D.parameters())]
    )


n = GLOBAL // comm.size
archs = ("mlp", "dcgan", "resnet")
combos = (
    [(shape, arch, "ns") for shape in SHAPES for arch in archs]
    if SHAPES
    else [(SHAPE, arch, loss) for arch, loss in itertools.product(archs, objectives.LOSSES)]
)
for shape, arch, loss in combos:
    ranks = make(arch, loss, comm, shape=shape)
    one = make(arch, loss, SingleProcess(), shape=shape)
    before = params(one)
    for step in range(2):
        x = batch(step, shape).double()
        ranks.step(step, [(x[comm.rank * n : (comm.rank + 1) * n], Condition())])
        one.step(step, [(x, Condition())])
    prints = comm.allgather_object(ranks.fingerprint())
    a, b = params(one), params(ranks)
    stats = ranks.pop_stats()
    if comm.rank == 0:
        record = {
            "arch": arch,
            "loss": loss,
            "identical": len(set(prints)) == 1,
            "moved": float((a - before).norm() / before.norm()),
            "relative": float((a - b).norm() / a.norm()),
            "finite": all(torch.isfinite(torch.tensor(v)).item() for v in stats.values()),
            "skipped": stats["steps/skipped_nonfinite"],
            "shape": list(ranks.samples(2).shape),
        }
        print(json.dumps(record), flush=True)

# Batch norm on, every precision: replicas stay identical (fp16 may skip its first steps).
# Last, fp32 in the channels_last_3d memory format (the flat engine's views keep its strides).
for precision, extra in (
    ()
    if SHAPES
    else (
        ("fp32", ()),
        ("bf16", ()),
        ("fp16", ()),
        ("fp32", ("train.channels_last=true",)),
    )
):
    trainer = make("dcgan", "ns", comm, "batch", precision, *extra)
    before = trainer.fingerprint()
    for step in range(4):
        trainer.step(step, [(batch(step)[comm.rank * n : (comm.rank + 1) * n], Condition())])
    prints = comm.allgather_object(trainer.fingerprint())
    if comm.rank == 0:
        record = {"precision": precision, "channels_last": bool(extra)}
        record["identical"] = len(set(prints)) == 1
        print(json.dumps({**record, "moved": prints[0] != before}), flush=True)
