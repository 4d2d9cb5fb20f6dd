"""A network's shape plan as data: the sides of its feature maps at every stage, per axis
(docs/architecture.md, "Any grid").

D's stages halve every axis still longer than ``MIN_SIDE`` (an odd side n becomes (n + 1) / 2)
and leave the others as they are (stride 1); G's stages run the same sides backwards. So G
ends at exactly the sample's sides and D starts at them: the data are never resampled,
padded or cropped. For square and cubic power-of-two sides every axis halves at every stage, down to
4 a side: DCGAN's and SNGAN's plans, layer for layer.

A stage's convolution geometry follows each axis's step (padding 1 throughout):

| step of an axis | D's convolution   | G's transposed convolution |
|-----------------|-------------------|----------------------------|
| 2m -> m         | kernel 4 stride 2 | kernel 4 stride 2: m -> 2m |
| 2m-1 -> m       | kernel 3 stride 2 | kernel 3 stride 2: m -> 2m-1 |
| n -> n          | kernel 3 stride 1 | kernel 3 stride 1          |

``model.padding=circular`` pads the data's periodic axes circularly (:func:`conv`,
:func:`conv_transpose`) where the wrap-around is a periodic image of the same grid: stride 1,
or stride 2 on an even side.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hpcgan.nd import Ops

MIN_SIDE = 4  # D halves an axis until it is at most this long (DCGAN's 4x4 map)

Sides = tuple[int, ...]


@dataclass(frozen=True)
class Plan:
    """Feature-map sides from the sample's (``sides[0]``) to the smallest (``sides[-1]``)."""

    sides: tuple[Sides, ...]
    periodic: tuple[bool, ...]  # axes padded circularly (model.padding=circular)

    @classmethod
    def of(cls, spatial: Sides, periodic: tuple[bool, ...] | None = None) -> Plan:
        sides = [tuple(spatial)]
        while max(sides[-1]) > MIN_SIDE:
            sides.append(tuple(s if s <= MIN_SIDE else -(-s // 2) for s in sides[-1]))
        return cls(tuple(sides), tuple(periodic or (False,) * len(spatial)))

    @property
    def stages(self) -> int:
        return len(self.sides) - 1

    @property
    def start(self) -> Sides:
        """G's first feature map (D's last)."""
        return self.sides[-1]

    def down(self) -> list[tuple[Sides, Sides]]:
        """D's stages as (fine, coarse) sides, from the sample's down."""
        return list(zip(self.sides, self.sides[1:]))

    def up(self) -> list[tuple[Sides, Sides]]:
        """G's stages as (coarse, fine) sides, up to the sample's."""
        return [(coarse, fine) for fine, coarse in reversed(self.down())]

    def attention_sides(self) -> list[int]:
        """Resolutions (largest side) of the maps that both G and D have, of at least 8: where
        a self-attention block may sit."""
        return [max(s) for s in self.sides[1:-1] if max(s) >= 8]


def stage_channels(stages: int, width: int, cap: int) -> list[int]:
    """Channels of the ``stages`` coarsest maps, coarsest first: ``width`` at the finest,
    doubling towards the coarsest, at most ``cap``."""
    return [min(cap, width * 2 ** (stages - 1 - i)) for i in range(stages)]


def geometry(fine: Sides, coarse: Sides) -> tuple[Sides, Sides]:
    """Per-axis (kernel, stride) of the stage between ``fine`` and ``coarse`` (the table above)."""
    kernel = tuple(4 if c < f and f % 2 == 0 else 3 for f, c in zip(fine, coarse))
    stride = tuple(2 if c < f else 1 for f, c in zip(fine, coarse))
    return kernel, stride


def circular_axes(plan: Plan, sides: Sides, stride: int | Sides, padding: int) -> tuple[bool, ...]:
    """The axes of a convolution over maps of ``sides`` that pad circularly: periodic axes
    where the padding is at most the side and the wrap keeps the grid (stride 1, or an even
    side)."""
    strides = stride if isinstance(stride, tuple) else (stride,) * len(sides)
    return tuple(
        p and padding > 0 and s >= padding and (st == 1 or s % 2 == 0)
        for p, s, st in zip(plan.periodic, sides, strides)
    )


class CircularPad(nn.Module):
    """Circular padding of the marked spatial axes of [N, C, *S] by ``amount`` each side."""

    def __init__(self, axes: tuple[bool, ...], amount: int) -> None:
        super().__init__()
        # F.pad lists the last axis first: (last_lo, last_hi, ..., first_lo, first_hi)
        self.pads = tuple(v for a in reversed(axes) for v in (amount * a,) * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, self.pads, mode="circular")


class Crop(nn.Module):
    """Drop ``amounts[i]`` values at both ends of spatial axis i of [N, C, *S]."""

    def __init__(self, amounts: Sides) -> None:
        super().__init__()
        self.amounts = amounts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cut = tuple(slice(a, x.shape[2 + i] - a) for i, a in enumerate(self.amounts))
        return x[(..., *cut)]


def conv(
    ops: Ops,
    c_in: int,
    c_out: int,
    kernel: int | Sides,
    stride: int | Sides,
    padding: int,
    circular: tuple[bool, ...] = (),
    bias: bool = True,
) -> nn.Module:
    """``ops.conv`` with zero padding, or circular padding on the ``circular`` axes."""
    if not any(circular):
        return ops.conv(c_in, c_out, kernel, stride, padding, bias=bias)
    zeros = tuple(0 if c else padding for c in circular)
    return nn.Sequential(
        CircularPad(circular, padding), ops.conv(c_in, c_out, kernel, stride, zeros, bias=bias)
    )


def conv_transpose(
    ops: Ops,
    c_in: int,
    c_out: int,
    kernel: int | Sides,
    stride: int | Sides,
    padding: int,
    circular: tuple[bool, ...] = (),
    bias: bool = True,
) -> nn.Module:
    """``ops.conv_transpose``; on the ``circular`` axes (padding 1, kernel at most 2 strides +
    1) the periodic transposed convolution: the input wrapped by one value each side, the
    output cut by one stride each side."""
    layer = ops.conv_transpose(c_in, c_out, kernel, stride, padding, bias=bias)
    if not any(circular):
        return layer
    strides = stride if isinstance(stride, tuple) else (stride,) * len(circular)
    return nn.Sequential(
        CircularPad(circular, 1), layer, Crop(tuple(s * c for s, c in zip(strides, circular)))
    )


def upsample(x: torch.Tensor, coarse: Sides, fine: Sides) -> torch.Tensor:
    """Nearest-neighbour resizing of [N, C, *coarse] to [N, C, *fine]."""
    if all(f == 2 * c for c, f in zip(coarse, fine)):
        return F.interpolate(x, scale_factor=2, mode="nearest")
    return F.interpolate(x, size=fine, mode="nearest")


def upsampler(coarse: Sides, fine: Sides) -> nn.Module:
    """:func:`upsample` as a layer."""
    if all(f == 2 * c for c, f in zip(coarse, fine)):
        return nn.Upsample(scale_factor=2, mode="nearest")
    return nn.Upsample(size=fine, mode="nearest")


def downsample(pool, x: torch.Tensor, fine: Sides, coarse: Sides) -> torch.Tensor:
    """Average pooling of [N, C, *fine] to [N, C, *coarse] (``pool``: ops.avg_pool): 2 values
    on the halved axes (the last one alone where a side is odd), 1 on the others."""
    if all(f == 2 * c for f, c in zip(fine, coarse)):
        return pool(x, 2)
    kernel = tuple(2 if c < f else 1 for f, c in zip(fine, coarse))
    return pool(x, kernel, kernel, 0, ceil_mode=any(f % 2 for f in fine))
