"""Map stored values to the networks' range [-1, 1] and back to physical units."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from hpcgan.data.format import DatasetInfo
from hpcgan.errors import UserError


@dataclass(frozen=True)
class ValueTransform:
    """``encode``: stored values -> [-1, 1]; ``decode``: network output -> stored units."""

    kind: str  # "linear" or "log"
    lo: float  # value (or log value) that maps to -1
    hi: float  # value (or log value) that maps to +1

    def encode(self, x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float32, copy=False)
        if self.kind == "log":
            x = np.log(x)
        return (x - self.lo) * (2.0 / (self.hi - self.lo)) - 1.0

    def decode(self, y: torch.Tensor) -> torch.Tensor:
        x = (y.float() + 1.0) * ((self.hi - self.lo) / 2.0) + self.lo
        return torch.exp(x) if self.kind == "log" else x


def make_transform(info: DatasetInfo, name: str) -> ValueTransform:
    """Images use their 0..255 range; fields their stored min/max (in log space if positive)."""
    lo, hi = float(info.stats["min"]), float(info.stats["max"])
    if name == "auto":
        name = "linear" if info.kind == "image" or lo <= 0 else "log"
    if info.dtype == "uint8" and name == "linear":
        return ValueTransform("linear", 0.0, 255.0)
    if name == "log":
        if lo <= 0:
            raise UserError(
                f"data.transform=log needs positive values, but {info.path} has min {lo:g}"
            )
        lo, hi = math.log(lo), math.log(hi)
    if not hi > lo:
        raise UserError(f"{info.path}: all values are equal ({lo:g}); nothing to learn")
    return ValueTransform(name, lo, hi)
