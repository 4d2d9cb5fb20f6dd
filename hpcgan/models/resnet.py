"""SNGAN-style residual networks (Miyato et al. 2018), optionally with SAGAN self-attention.

G: linear -> 4x4 map, then up-sampling residual blocks (BN-ReLU-up-conv3-BN-ReLU-conv3, with a
1x1 shortcut), BN-ReLU-conv3-tanh. D: down-sampling residual blocks (ReLU-conv3-ReLU-conv3-
avgpool), ReLU and global sum pooling into features. ``depth`` residual blocks per resolution
stage; channels as DCGAN's (``width`` at the highest resolution, doubling, capped at 8*width).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hpcgan import nd
from hpcgan.models.base import SelfAttention, norm_layer, stage_channels
from hpcgan.nd import Ops


class UpBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, norm: str, upsample: bool, ops: Ops) -> None:
        super().__init__()
        self.upsample = upsample
        self.n1, self.c1 = norm_layer(norm, c_in, ops), ops.conv(c_in, c_out, 3, 1, 1)
        self.n2, self.c2 = norm_layer(norm, c_out, ops), ops.conv(c_out, c_out, 3, 1, 1)
        self.skip = ops.conv(c_in, c_out, 1) if (c_in != c_out or upsample) else nn.Identity()

    def _up(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="nearest") if self.upsample else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c1(self._up(F.relu(self.n1(x))))
        h = self.c2(F.relu(self.n2(h)))
        return h + self.skip(self._up(x))


class DownBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, downsample: bool, first: bool, ops: Ops) -> None:
        super().__init__()
        self.downsample, self.first, self.pool = downsample, first, ops.avg_pool
        self.c1, self.c2 = ops.conv(c_in, c_out, 3, 1, 1), ops.conv(c_out, c_out, 3, 1, 1)
        self.skip = ops.conv(c_in, c_out, 1) if (c_in != c_out or downsample) else nn.Identity()

    def _down(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x, 2) if self.downsample else x

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
        shape: tuple[int, ...],
        width: int,
        depth: int,
        norm: str,
        attention: int,
        ops: Ops,
    ) -> None:
        super().__init__()
        channels, resolution = shape[0], shape[-1]  # (C, *S), S square
        hidden = stage_channels(resolution, width, 8 * width) + [width]  # 4 .. resolution a side
        self.linear = nn.Linear(z_in, hidden[0] * 4**ops.ndim)
        self.first_map = (hidden[0], *[4] * ops.ndim)  # [c0, 4, ..., 4]
        blocks: list[nn.Module] = []
        size = 4
        for c_in, c_out in zip(hidden, hidden[1:]):
            blocks.append(UpBlock(c_in, c_out, norm, True, ops))
            blocks += [UpBlock(c_out, c_out, norm, False, ops) for _ in range(depth - 1)]
            size *= 2
            if size == attention:
                blocks.append(SelfAttention(c_out, ops))
        self.blocks = nn.Sequential(*blocks)
        self.out = nn.Sequential(
            norm_layer(norm, hidden[-1], ops),
            nn.ReLU(True),
            ops.conv(hidden[-1], channels, 3, 1, 1),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.linear(z).view(-1, *self.first_map)  # [N, c0, 4, ..., 4]
        return self.out(self.blocks(h))  # [N, C, *S]


class ResNetTrunk(nn.Module):
    def __init__(
        self, shape: tuple[int, ...], width: int, depth: int, attention: int, ops: Ops
    ) -> None:
        super().__init__()
        channels, resolution = shape[0], shape[-1]
        hidden = stage_channels(resolution, width, 8 * width)[::-1]  # resolution/2 .. 4 a side
        blocks: list[nn.Module] = []
        c_in, size = channels, resolution
        for i, c_out in enumerate(hidden):
            blocks += [
                DownBlock(c_in if j == 0 else c_out, c_out, False, i == j == 0, ops)
                for j in range(depth - 1)
            ]
            blocks.append(
                DownBlock(c_in if depth == 1 else c_out, c_out, True, i == 0 and depth == 1, ops)
            )
            c_in, size = c_out, size // 2
            if size == attention:  # on the features this stage made, as in SAGAN's D
                blocks.append(SelfAttention(c_out, ops))
        self.blocks = nn.Sequential(*blocks)
        self.features = hidden[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.blocks(x))  # [N, C_last, *S_last]
        return h.sum(dim=nd.spatial_dims(h))  # global sum pooling: [N, C_last]
