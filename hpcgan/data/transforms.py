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


# A column is encoded in log10 (auto) when its values are positive and span more than this
# ratio: energies over decades, where a linear scale would squeeze the low ones together.
LOG_RATIO = 10.0
CONDITION_TRANSFORMS = ("auto", "log", "linear")


@dataclass(frozen=True)
class ConditionTransform:
    """Continuous conditions in physical units [n, K] <-> O(1) values for the networks: per
    column, log10 or not, then standardised with the file's statistics (mean 0, std 1)."""

    names: tuple[str, ...]
    log: tuple[bool, ...]  # column k is encoded as log10
    center: tuple[float, ...]  # mean of the (log10) values
    scale: tuple[float, ...]  # their std (1 for a constant column)

    def encode(self, values: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Physical values [n, K] -> float32 [n, K] (numpy in, numpy out; torch likewise)."""
        lib = torch if isinstance(values, torch.Tensor) else np
        x = values.double() if lib is torch else np.asarray(values, dtype=np.float64)
        log, center, scale = self._columns(lib, x)
        x = lib.where(log, lib.log10(lib.where(log, x, 1.0)), x)  # log10 where chosen
        y = (x - center) / scale
        return y.float() if lib is torch else y.astype(np.float32)

    def decode(self, values: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Encoded [n, K] -> physical values [n, K] (float64 for numpy, float32 for torch)."""
        lib = torch if isinstance(values, torch.Tensor) else np
        y = values.double() if lib is torch else np.asarray(values, dtype=np.float64)
        log, center, scale = self._columns(lib, y)
        x = y * scale + center
        x = lib.where(log, 10.0**x, x)
        return x.float() if lib is torch else x

    def _columns(self, lib, like):
        """The per-column constants as arrays of `lib` ([K]), next to `like`."""
        if lib is np:
            return np.array(self.log), np.array(self.center), np.array(self.scale)
        device = like.device
        return (
            torch.tensor(self.log, device=device),
            torch.tensor(self.center, dtype=torch.float64, device=device),
            torch.tensor(self.scale, dtype=torch.float64, device=device),
        )


def make_condition_transform(info: DatasetInfo, name: str = "auto") -> ConditionTransform | None:
    """The transform of the file's /conditions (None without them), chosen for every column by
    ``data.condition_transform``: auto (log10 for positive columns spanning more than a factor
    LOG_RATIO, else linear), log or linear."""
    if not info.has_conditions:
        return None
    if name not in CONDITION_TRANSFORMS:
        raise UserError(f"data.condition_transform={name!r}: use {', '.join(CONDITION_TRANSFORMS)}")
    s = info.condition_stats
    log, center, scale = [], [], []
    for k, column in enumerate(info.condition_names):
        lo, hi = s["min"][k], s["max"][k]
        if name == "log" and lo <= 0:
            raise UserError(
                f"data.condition_transform=log needs positive values, but condition {column} "
                f"of {info.path} has min {lo:g}"
            )
        use_log = name == "log" or (name == "auto" and lo > 0 and hi > LOG_RATIO * lo)
        mean, std = (
            (s["log10_mean"][k], s["log10_std"][k]) if use_log else (s["mean"][k], s["std"][k])
        )
        log.append(use_log)
        center.append(float(mean))
        scale.append(float(std) if std > 0 else 1.0)
    return ConditionTransform(info.condition_names, tuple(log), tuple(center), tuple(scale))


@dataclass(frozen=True)
class Decoding:
    """How a run's networks read its training data: G's [-1, 1] output -> physical values
    (``values``) and physical conditions -> G's inputs (``conditions``; None when G takes no
    continuous conditions). Fixed by the training file's statistics, so checkpoints keep it
    (docs/evaluation.md, "Which file is which"): decoding never follows another file."""

    values: ValueTransform
    conditions: ConditionTransform | None = None

    def to_state(self) -> dict:
        """Plain containers, for a checkpoint (torch.load(weights_only=True) reads them)."""
        c = self.conditions
        return {
            "values": {"kind": self.values.kind, "lo": self.values.lo, "hi": self.values.hi},
            "conditions": None
            if c is None
            else {
                "names": list(c.names),
                "log": list(c.log),
                "center": list(c.center),
                "scale": list(c.scale),
            },
        }

    @classmethod
    def from_state(cls, state: dict) -> Decoding:
        v, c = state["values"], state["conditions"]
        values = ValueTransform(str(v["kind"]), float(v["lo"]), float(v["hi"]))
        if c is None:
            return cls(values)
        conditions = ConditionTransform(
            tuple(str(s) for s in c["names"]),
            tuple(bool(b) for b in c["log"]),
            tuple(float(x) for x in c["center"]),
            tuple(float(x) for x in c["scale"]),
        )
        return cls(values, conditions)
