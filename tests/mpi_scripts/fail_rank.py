"""Under mpirun: the real trainer, but one rank raises at a given step (a rank failure).

Usage: fail_rank.py RANK STEP key=value...
"""

import sys

from hpcgan import train, trainer

fail_rank, fail_step = int(sys.argv[1]), int(sys.argv[2])
original_step = trainer.Trainer.step


def failing_step(self, step, real):
    if self.comm.rank == fail_rank and step == fail_step:
        raise RuntimeError(f"injected failure on rank {fail_rank} at step {fail_step}")
    return original_step(self, step, real)


trainer.Trainer.step = failing_step
sys.exit(train.main(sys.argv[3:]))
