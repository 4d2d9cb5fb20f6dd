"""What a sample is conditioned on: one type from the reader to the models, objectives and
samplers (docs/design.md, section 5, "/conditions").

A :class:`Condition` holds one batch's class labels ``[n]`` (int64, from ``/labels``) and/or
continuous conditions ``[n, K]`` (float, from ``/conditions``, already encoded to O(1) by the
data's condition transform), either of which may be absent. A :class:`ConditionSpec` says
what a model is conditioned on: how many classes and which continuous columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ConditionSpec:
    """What G and D take besides the latents and samples."""

    num_classes: int = 0  # class labels 0..num_classes-1; 0: none
    names: tuple[str, ...] = ()  # continuous conditions, the /conditions columns used
    units: tuple[str, ...] = ()  # their units, as the file states them

    @property
    def dim(self) -> int:
        """Number of continuous conditions K."""
        return len(self.names)

    def __bool__(self) -> bool:
        return bool(self.num_classes or self.names)


@dataclass(frozen=True)
class Condition:
    """One batch's conditions; ``Condition()`` for an unconditional batch."""

    labels: torch.Tensor | None = None  # [n] int64 class indices
    values: torch.Tensor | None = None  # [n, K] encoded continuous conditions

    def __bool__(self) -> bool:
        return self.labels is not None or self.values is not None

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Condition:
        """On ``device``; continuous values in ``dtype`` (labels stay int64)."""
        labels = None if self.labels is None else self.labels.to(device, non_blocking=True)
        values = None
        if self.values is not None:
            values = self.values.to(device, dtype or self.values.dtype, non_blocking=True)
        return Condition(labels, values)

    def __getitem__(self, rows: slice | torch.Tensor) -> Condition:
        """The conditions of some rows of the batch."""
        return Condition(
            None if self.labels is None else self.labels[rows],
            None if self.values is None else self.values[rows],
        )

    @staticmethod
    def cat(parts: list[Condition]) -> Condition:
        """Rows of several batches, in order (all alike in which parts they hold)."""
        if not parts or not parts[0]:
            return Condition()
        labels = None if parts[0].labels is None else torch.cat([p.labels for p in parts])
        values = None if parts[0].values is None else torch.cat([p.values for p in parts])
        return Condition(labels, values)
