"""The one table of what depends on the number of spatial dimensions.

A sample is ``(C, *S)``: ``len(S)`` is 1 for vectors, 2 for images and maps, 3 for volumes.
Models, the spectral loss and the metrics take their convolution, transposed convolution,
batch norm, pooling, interpolation mode and FFT axes from :func:`ops` (as MONAI's
``Conv[Conv.CONV, spatial_dims]`` factories do), so no other module names a rank-specific
layer or axis tuple.
Models are built for 1, 2 and 3 (docs/architecture.md, "Any grid").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hpcgan.errors import UserError


@dataclass(frozen=True)
class Ops:
    """The layers and settings of one spatial rank."""

    ndim: int
    conv: type[nn.Module]  # nn.Conv{ndim}d
    conv_transpose: type[nn.Module]  # nn.ConvTranspose{ndim}d
    batch_norm: type[nn.Module]  # nn.BatchNorm{ndim}d
    adaptive_avg_pool: type[nn.Module]  # nn.AdaptiveAvgPool{ndim}d
    avg_pool: Callable[..., torch.Tensor]  # F.avg_pool{ndim}d
    linear_mode: str  # F.interpolate's mode for linear resizing: linear, bilinear, trilinear
    channels_last: torch.memory_format  # train.channels_last: channels_last(_3d); none for 1

    @property
    def fft_dims(self) -> tuple[int, ...]:
        """The axes of ``torch.fft.rfftn`` for [N, C, *S]: the last ``ndim``."""
        return tuple(range(-self.ndim, 0))


OPS: dict[int, Ops] = {
    1: Ops(
        1,
        nn.Conv1d,
        nn.ConvTranspose1d,
        nn.BatchNorm1d,
        nn.AdaptiveAvgPool1d,
        F.avg_pool1d,
        "linear",
        torch.contiguous_format,
    ),
    2: Ops(
        2,
        nn.Conv2d,
        nn.ConvTranspose2d,
        nn.BatchNorm2d,
        nn.AdaptiveAvgPool2d,
        F.avg_pool2d,
        "bilinear",
        torch.channels_last,
    ),
    3: Ops(
        3,
        nn.Conv3d,
        nn.ConvTranspose3d,
        nn.BatchNorm3d,
        nn.AdaptiveAvgPool3d,
        F.avg_pool3d,
        "trilinear",
        torch.channels_last_3d,
    ),
}


def ops(ndim: int) -> Ops:
    """The table row for ``ndim`` spatial dimensions."""
    if ndim not in OPS:
        raise UserError(f"samples with {ndim} spatial dimensions are not supported (1, 2 or 3)")
    return OPS[ndim]


def spatial_ndim(x: torch.Tensor) -> int:
    """Spatial dimensions of a batch [N, C, *S]."""
    return x.dim() - 2


def non_batch_dims(x: torch.Tensor) -> tuple[int, ...]:
    """Every axis but the batch axis of [N, ...]: (1, ..., x.dim() - 1)."""
    return tuple(range(1, x.dim()))


def spatial_dims(x: torch.Tensor) -> tuple[int, ...]:
    """The spatial axes of [N, C, *S]: (2, ..., x.dim() - 1)."""
    return tuple(range(2, x.dim()))


def per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[N] -> [N, 1, ..., 1], broadcastable against ``like`` [N, ...]."""
    return v.view(-1, *([1] * (like.dim() - 1)))
