"""Under mpirun: the real trainer, but one rank goes wrong at a given step.

Usage: fail_rank.py raise|perturb RANK STEP key=value...

raise: that rank raises in generator step STEP (a rank failure).
perturb: after step STEP, that rank moves one element of D's first parameter by one ulp (a
replica that drifted without an error); the next checkpoint's replica check must catch it.
"""

import sys

import torch

from hpcgan import train, trainer

mode, fail_rank, fail_step = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
assert mode in ("raise", "perturb"), mode
original_step = trainer.Trainer.step


def failing_step(self, step, real):
    if self.comm.rank == fail_rank and step == fail_step and mode == "raise":
        raise RuntimeError(f"injected failure on rank {fail_rank} at step {fail_step}")
    original_step(self, step, real)
    if self.comm.rank == fail_rank and step == fail_step and mode == "perturb":
        with torch.no_grad():
            first = next(self.D.parameters()).view(-1)
            first[0] = torch.nextafter(first[0], torch.tensor(float("inf"), dtype=first.dtype))


trainer.Trainer.step = failing_step
sys.exit(train.main(sys.argv[4:]))
