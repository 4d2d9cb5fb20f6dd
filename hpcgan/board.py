"""TensorBoard event files beside metrics.jsonl, written by rank 0 only.

    tensorboard --logdir RUN_DIR/tensorboard

Scalars keep their metrics.jsonl names (``loss/D``, ``eval/ps_rel_err``), so TensorBoard groups
them by prefix; sample grids appear under Images.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


class Board:
    """A TensorBoard writer for one run directory (create it on rank 0 only)."""

    def __init__(self, run_dir: Path) -> None:
        # Imported here: TensorBoard takes about a second to import and only rank 0 needs it.
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """Every finite number of ``values`` (other entries, like ``step``, are skipped)."""
        for name, value in values.items():
            if isinstance(value, (int, float)) and name != "step" and math.isfinite(value):
                self.writer.add_scalar(name, value, step)

    def image(self, step: int, tag: str, grid: np.ndarray) -> None:
        """A uint8 image [H, W, C] (C = 1 or 3), e.g. ``hpcgan.images.grid(samples)``."""
        self.writer.add_image(tag, grid, step, dataformats="HWC")

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
