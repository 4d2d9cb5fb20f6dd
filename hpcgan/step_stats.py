"""The training step's statistics, kept on the device between log intervals: the losses and
logits of the steps that were not skipped, the skipped steps, and the longest run of them."""

from __future__ import annotations

import numpy as np
import torch

from hpcgan.comm.base import Comm

STAT_NAMES = ("loss/D", "loss/G", "D/real_logit", "D/fake_logit", "steps/skipped_nonfinite")


class StepStats:
    """Sums over steps on the device (no host synchronisation per step); read per interval."""

    def __init__(self, device: torch.device) -> None:
        self._stats = torch.zeros(len(STAT_NAMES), dtype=torch.float64, device=device)
        self._steps = 0
        # Skipped steps, counted on the device: the current run of consecutive ones, and the
        # longest since bad_run() last read it.
        self._streak = torch.zeros((), device=device)
        self._worst = torch.zeros((), device=device)

    def add(
        self,
        loss_d: torch.Tensor,
        loss_g: torch.Tensor,
        logits: torch.Tensor,
        skipped: torch.Tensor,
    ) -> None:
        """One step: its last D loss, its G loss, the mean real and fake logits [2] over its D
        updates, and its skip flag (0-dim, 1 if any of its updates was skipped)."""
        self._streak.add_(1).mul_(skipped)  # consecutive skipped steps, reset by a good one
        torch.maximum(self._worst, self._streak, out=self._worst)
        # A skipped step's losses are inf/nan: keep them out of the means.
        zero = torch.zeros((), device=skipped.device)
        self._stats[0] += torch.where(skipped > 0, zero, loss_d.float())
        self._stats[1] += torch.where(skipped > 0, zero, loss_g.float())
        self._stats[2:4] += torch.where(skipped > 0, zero, logits)
        self._stats[4] += skipped
        self._steps += 1

    def bad_run(self) -> int:
        """The longest run of consecutive skipped steps that reached into the steps since the
        last call (one host read: the loop asks at log and checkpoint steps, not every step)."""
        worst = int(self._worst.item())
        self._worst.copy_(self._streak)
        return worst

    def forget_streak(self) -> None:
        """After loading a checkpoint: no skipped steps behind."""
        self._streak.zero_()
        self._worst.zero_()

    def pop(self, comm: Comm) -> dict[str, float]:
        """Means since the last call, averaged over ranks (one small reduction per interval)."""
        local = np.append(self._stats.cpu().numpy(), self._steps)
        total = comm.allreduce_sum(local)
        self._stats.zero_()
        self._steps = 0
        count = max(total[-1], 1.0)
        good = max(count - total[4], 1.0)
        # Means over the steps that were not skipped (a skipped step's numbers are inf/nan).
        stats = {k: float(v / good) for k, v in zip(STAT_NAMES[:4], total[:4])}
        stats["steps/skipped_nonfinite"] = int(total[4] / comm.size)
        return stats
