"""TensorBoard event files beside metrics.jsonl, written by rank 0 only.

    tensorboard --logdir RUN_DIR/tensorboard

Scalars keep their metrics.jsonl names (``loss/D``, ``eval/ps_rel_err``), so TensorBoard groups
them by prefix; sample grids (volumes: central slices and mean projections) appear under
Images, and the power spectrum of data and samples at each evaluation (2-D: radially, 3-D:
spherically averaged) under Images as ``spectrum``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from hpcgan.files import writing


class Board:
    """A TensorBoard writer for one run directory (create it on rank 0 only). Its file is
    written by a background thread, whose error (a full disk) is raised by the next call: a
    WriteFailed naming the folder (hpcgan.files)."""

    def __init__(self, run_dir: Path) -> None:
        # Imported here: TensorBoard takes about a second to import and only rank 0 needs it.
        from torch.utils.tensorboard import SummaryWriter

        self.dir = Path(run_dir) / "tensorboard"
        with writing(self.dir):
            self.writer = SummaryWriter(log_dir=str(self.dir))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """Every finite number of ``values`` (other entries, like ``step``, are skipped)."""
        with writing(self.dir):
            for name, value in values.items():
                if isinstance(value, (int, float)) and name != "step" and math.isfinite(value):
                    self.writer.add_scalar(name, value, step)

    def image(self, step: int, tag: str, grid: np.ndarray) -> None:
        """A uint8 image [H, W, C] (C = 1 or 3), e.g. ``hpcgan.images.grid(samples)``."""
        with writing(self.dir):
            self.writer.add_image(tag, grid, step, dataformats="HWC")

    def spectrum(self, step: int, curves: dict[str, np.ndarray], unit: str = "image") -> None:
        """P(k) of data and samples (``ps_real``, ``ps_fake`` of an evaluation's curves) and
        their ratio, as a figure; nothing when the curves hold no spectrum."""
        if "ps_real" not in curves:
            return
        from matplotlib.figure import Figure  # imported here, as TensorBoard above

        fig = Figure(figsize=(6, 5))
        top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
        k, real, fake = (
            np.arange(1, len(curves["ps_real"])),
            curves["ps_real"][1:],
            curves["ps_fake"][1:],
        )
        top.loglog(k, real, "k-", label="data")
        top.loglog(k, fake, "r--", label="generated")
        top.set_ylabel("P(k)")
        top.legend()
        bottom.loglog(k, fake / np.maximum(real, 1e-300), "r-")
        bottom.axhline(1.0, color="k", lw=0.8)
        bottom.set(xlabel=f"k (cycles per {unit})", ylabel="generated / data")
        fig.tight_layout()
        with writing(self.dir):
            self.writer.add_figure("spectrum", fig, step)

    def close(self) -> None:
        with writing(self.dir):
            self.writer.flush()
            self.writer.close()
