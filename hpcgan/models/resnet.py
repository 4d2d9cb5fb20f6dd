"""SNGAN-style residual networks (Miyato et al. 2018), optionally with SAGAN self-attention,
for any grid (models/plan.py).

G: linear -> smallest map, then up-sampling residual blocks (BN-ReLU-up-conv3-BN-ReLU-conv3,
with a 1x1 shortcut), BN-ReLU-conv3-tanh. D: down-sampling residual blocks (ReLU-conv3-ReLU-
conv3-avgpool), ReLU and global sum pooling into features. ``depth`` residual blocks per
resolution stage; channels as DCGAN's (``width`` at the highest resolution, doubling, capped
at 8*width).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hpcgan import nd
from hpcgan.models.base import SelfAttention, norm_layer
from hpcgan.models.plan import (
    Plan,
    Sides,
    circular_axes,
    conv,
    downsample,
    stage_channels,
    upsample,
)
from hpcgan.nd import Ops


class UpBlock(nn.Module):
    """At ``fine`` sides, up-sampled from ``coarse`` ones (None: no up-sampling)."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        norm: str,
        coarse: Sides | None,
        fine: Sides,
        plan: Plan,
        ops: Ops,
    ) -> None:
        super().__init__()
        self.coarse, self.fine = coarse, fine
        circular = circular_axes(plan, fine, 1, 1)
        self.n1, self.c1 = norm_layer(norm, c_in, ops), conv(ops, c_in, c_out, 3, 1, 1, circular)
        self.n2, self.c2 = norm_layer(norm, c_out, ops), conv(ops, c_out, c_out, 3, 1, 1, circular)
        resize = coarse is not None
        self.skip = ops.conv(c_in, c_out, 1) if (c_in != c_out or resize) else nn.Identity()

    def _up(self, x: torch.Tensor) -> torch.Tensor:
        return upsample(x, self.coarse, self.fine) if self.coarse is not None else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c1(self._up(F.relu(self.n1(x))))
        h = self.c2(F.relu(self.n2(h)))
        return h + self.skip(self._up(x))


class DownBlock(nn.Module):
    """At ``fine`` sides, pooled to ``coarse`` ones (None: no pooling)."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        fine: Sides,
        coarse: Sides | None,
        first: bool,
        plan: Plan,
        ops: Ops,
    ) -> None:
        super().__init__()
        self.fine, self.coarse = fine, coarse
        self.first, self.pool = first, ops.avg_pool
        circular = circular_axes(plan, fine, 1, 1)
        self.c1 = conv(ops, c_in, c_out, 3, 1, 1, circular)
        self.c2 = conv(ops, c_out, c_out, 3, 1, 1, circular)
        resize = coarse is not None
        self.skip = ops.conv(c_in, c_out, 1) if (c_in != c_out or resize) else nn.Identity()

    def _down(self, x: torch.Tensor) -> torch.Tensor:
        return downsample(self.pool, x, self.fine, self.coarse) if self.coarse is not None else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else F.relu(x)  # no activation on the input image
        h = self.c2(F.relu(self.c1(h)))
        if self.first:  # SNGAN's optimised first block: pool before the shortcut conv
            return self._down(h) + self.skip(self._down(x))
        return self._down(h) + self._down(self.skip(x))


class ResNetBody(nn.Module):
    def __init__(
        self,
        z_in: int,
        channels: int,
        plan: Plan,
        width: int,
        depth: int,
        norm: str,
        attention: int,
        ops: Ops,
    ) -> None:
        super().__init__()
        hidden = stage_channels(plan.stages, width, 8 * width) + [width]  # coarsest .. sample
        self.linear = nn.Linear(z_in, hidden[0] * math.prod(plan.start))
        self.first_map = (hidden[0], *plan.start)  # [c0, *start]
        blocks: list[nn.Module] = []
        for c_in, c_out, (coarse, fine) in zip(hidden, hidden[1:], plan.up()):
            blocks.append(UpBlock(c_in, c_out, norm, coarse, fine, plan, ops))
            blocks += [UpBlock(c_out, c_out, norm, None, fine, plan, ops) for _ in range(depth - 1)]
            if max(fine) == attention:
                blocks.append(SelfAttention(c_out, ops))
        self.blocks = nn.Sequential(*blocks)
        self.out = nn.Sequential(
            norm_layer(norm, hidden[-1], ops),
            nn.ReLU(True),
            conv(ops, hidden[-1], channels, 3, 1, 1, circular_axes(plan, plan.sides[0], 1, 1)),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.linear(z).view(-1, *self.first_map)  # [N, c0, *start]
        return self.out(self.blocks(h))  # [N, C, *S]


class ResNetTrunk(nn.Module):
    def __init__(
        self, channels: int, plan: Plan, width: int, depth: int, attention: int, ops: Ops
    ) -> None:
        super().__init__()
        hidden = stage_channels(plan.stages, width, 8 * width)[::-1]  # finest .. coarsest
        blocks: list[nn.Module] = []
        c_in = channels
        for i, (c_out, (fine, coarse)) in enumerate(zip(hidden, plan.down())):
            blocks += [
                DownBlock(c_in if j == 0 else c_out, c_out, fine, None, i == j == 0, plan, ops)
                for j in range(depth - 1)
            ]
            first = i == 0 and depth == 1
            c_first = c_in if depth == 1 else c_out
            blocks.append(DownBlock(c_first, c_out, fine, coarse, first, plan, ops))
            c_in = c_out
            if max(coarse) == attention:  # on the features this stage made, as in SAGAN's D
                blocks.append(SelfAttention(c_out, ops))
        self.blocks = nn.Sequential(*blocks)
        self.features = hidden[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.blocks(x))  # [N, C_last, *start]
        return h.sum(dim=nd.spatial_dims(h))  # global sum pooling: [N, C_last]
