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


def snapshot(module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def moved(before: list[torch.Tensor], module) -> bool:
    return not all(torch.equal(a, b) for a, b in zip(before, module.parameters()))


# Without R1: with fp16 every lazy-R1 D update overflows on its own and is skipped, at any loss
# scale (the scale halves every r1_every steps and never settles), which would hide the skip
# under test.
FP16_OVERFLOW = ("dcgan", "ns", "fp16", "train.r1_gamma=0")


def fp16_settled_step() -> int:
    """The first fp16 step that updates both G and D, as the step before it did: the first
    steps overflow at the initial loss scale and are skipped while it settles, so only at such
    a step can a skip be told apart from the settling."""
    trainer = make(*FP16_OVERFLOW)
    clean_before = False
    for step in range(40):  # the same on every rank: the skips are decided alike
        g, d = snapshot(trainer.G), snapshot(trainer.D)
        trainer.step(step, [(batch(step), Condition())])
        clean = moved(g, trainer.G) and moved(d, trainer.D)
        if clean and clean_before:
            return step
        clean_before = clean
    raise RuntimeError("the fp16 loss scales did not settle in 40 steps")


def fp16_overflow_step(step: int, poison: bool) -> dict:
    """fp16: steps 0..step-1 as they are, then step ``step`` with a batch that is huge on
    rank 1 only (``poison``), which overflows D's half-precision forward there. Per rank:
    whether that step left D unchanged and lowered D's loss scale, and the skipped-step streak
    it ends; whether the replicas agree."""
    trainer = make(*FP16_OVERFLOW)
    for s in range(step):
        trainer.step(s, [(batch(s), Condition())])
    trainer.bad_run()  # from here on it counts only the step below
    d_before = snapshot(trainer.D)
    scale_before = trainer.scaler_D.get_scale()
    factor = 1e6 if poison and comm.rank == 1 else 1.0
    trainer.step(step, [(batch(step) * factor, Condition())])
    state = comm.allgather_object(
        (
            not moved(d_before, trainer.D),
            trainer.scaler_D.get_scale() < scale_before,
            trainer.bad_run(),
            trainer.fingerprint(),
        )
    )
    return dict(
        per_rank=[list(s[:3]) for s in state],
        identical=len({s[3] for s in state}) == 1,
        step=step,
    )


# The control (no poison) shows that the same step is not skipped on its own (the loss scale
# has settled), so a skip in the poisoned run is the poison's, shared by every rank.
settled = fp16_settled_step()
report(check="fp16_overflow", **fp16_overflow_step(settled, poison=True))
report(check="fp16_overflow_control", **fp16_overflow_step(settled, poison=False))
