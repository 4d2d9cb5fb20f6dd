"""Under mpirun -np 2: every architecture x loss x precision trains a few steps through the
real Trainer and Horovod engine; prints one JSON line per check for the test to assert on.

Also records which parameters Horovod allreduces in each phase (D's must never be reduced in
G's phase), and forces an fp16 overflow on rank 1 only (every rank must skip that D update).
"""

import itertools
import json

import horovod.torch.optimizer as hvd_optimizer
import torch

from hpcgan import objectives
from hpcgan.comm.horovod import HorovodComm
from hpcgan.condition import Condition
from hpcgan.config import load_config
from hpcgan.models import build_models
from hpcgan.trainer import Trainer

comm = HorovodComm()
torch.set_num_threads(1)

phase = {"now": ""}
reduced_in_phase: dict[str, set[str]] = {"D": set(), "G": set()}
_original = hvd_optimizer.allreduce_async_


def recording_allreduce(tensor, name=None, **kw):
    reduced_in_phase[phase["now"]].add(
        name.split(".")[1] if name.startswith("allreduce.") else name.split(".")[0]
    )
    return _original(tensor, name=name, **kw)


hvd_optimizer.allreduce_async_ = recording_allreduce


def traced(method, label):
    def run(self, *args, **kwargs):
        phase["now"] = label
        try:
            return method(self, *args, **kwargs)
        finally:
            phase["now"] = ""

    return run


Trainer.d_phase = traced(Trainer.d_phase, "D")
Trainer.g_phase = traced(Trainer.g_phase, "G")


def make(arch: str, loss: str, precision: str, *extra: str) -> Trainer:
    cfg = load_config(
        None,
        [
            f"model.arch={arch}",
            "model.width=4",
            "model.z_dim=8",
            f"train.loss={loss}",
            f"train.precision={precision}",
            "train.batch_size=8",
            "train.r1_gamma=1",
            "train.r1_every=2",
            *extra,
        ],
    )
    torch.manual_seed(0)
    G, D = build_models(cfg.model, (1, 16, 16))
    return Trainer(cfg, comm, G, D, torch.device("cpu"))


def batch(step: int) -> torch.Tensor:
    # Different data on each rank: identical replicas can only come from averaged gradients.
    g = torch.Generator().manual_seed(100 * step + comm.rank)
    return torch.rand(4, 1, 16, 16, generator=g) * 2 - 1


def report(**record) -> None:
    if comm.rank == 0:
        print(json.dumps(record), flush=True)


for arch, loss, precision in itertools.product(
    ("mlp", "dcgan", "resnet"), tuple(objectives.LOSSES), ("fp32", "bf16", "fp16", "fp64")
):
    # resnet with a self-attention block: its scalar gain is a 0-dim parameter.
    trainer = make(arch, loss, precision, *(["model.attention=8"] if arch == "resnet" else []))
    before = trainer.fingerprint()
    for step in range(5):  # fp16 may skip its first steps while the loss scale settles
        trainer.step(step, [(batch(step), Condition())])
    prints = comm.allgather_object(trainer.fingerprint())
    report(
        check="combo",
        arch=arch,
        loss=loss,
        precision=precision,
        identical=len(set(prints)) == 1,
        moved=prints[0] != before,
    )

report(check="phases", D=sorted(reduced_in_phase["D"]), G=sorted(reduced_in_phase["G"]))


def fp16_second_step(poison: bool) -> dict:
    """fp16: one warm-up step, then a second whose batch is huge on rank 1 only (``poison``),
    which overflows D's half-precision forward there. Per rank: whether D was left unchanged,
    whether D's loss scale was lowered, the skipped-step streak; and whether replicas agree."""
    trainer = make("dcgan", "ns", "fp16")
    trainer.step(0, [(batch(0), Condition())])
    d_before = [p.detach().clone() for p in trainer.D.parameters()]
    scale_before = trainer.scaler_D.get_scale()
    factor = 1e6 if poison and comm.rank == 1 else 1.0
    trainer.step(1, [(batch(1) * factor, Condition())])
    d_unchanged = all(torch.equal(a, b) for a, b in zip(d_before, trainer.D.parameters()))
    state = comm.allgather_object(
        (
            d_unchanged,
            trainer.scaler_D.get_scale() < scale_before,
            trainer.bad_run(),
            trainer.fingerprint(),
        )
    )
    return dict(per_rank=[list(s[:3]) for s in state], identical=len({s[3] for s in state}) == 1)


# The control (no poison) shows that the second step is not skipped on its own while the loss
# scale settles, so a skip in the poisoned run is the poison's, shared by every rank.
report(check="fp16_overflow", **fp16_second_step(poison=True))
report(check="fp16_overflow_control", **fp16_second_step(poison=False))
