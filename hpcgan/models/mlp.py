"""The classic GAN of Goodfellow et al.: a fully connected generator, a convolutional critic.

G: z -> 128 -> 256 -> C*prod(S) (for width 64: hidden sizes 2*width, 4*width, ... one per ``depth``)
with LeakyReLU(0.2) and tanh; D: 5x5 stride-2 convolutions with width/2, width, 2*width,
4*width channels (32-64-128-256 at width 64) and LeakyReLU(0.2).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hpcgan.nd import Ops


class MLPBody(nn.Module):
    def __init__(self, z_in: int, shape: tuple[int, ...], width: int, depth: int) -> None:
        super().__init__()
        self.shape = shape
        sizes = [z_in] + [width * 2 ** (i + 1) for i in range(depth)]
        layers: list[nn.Module] = []
        for a, b in zip(sizes, sizes[1:]):
            layers += [nn.Linear(a, b), nn.LeakyReLU(0.2, True)]
        layers += [nn.Linear(sizes[-1], math.prod(shape)), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *self.shape)  # [N, C, *S]


class ConvTrunk(nn.Module):
    def __init__(self, shape: tuple[int, ...], width: int, ops: Ops) -> None:
        super().__init__()
        channels = [shape[0]] + [max(1, width // 2) * 2**i for i in range(4)]
        layers: list[nn.Module] = []
        for a, b in zip(channels, channels[1:]):
            layers += [ops.conv(a, b, 5, 2, 2), nn.LeakyReLU(0.2, True)]
        self.net = nn.Sequential(*layers, nn.Flatten())
        self.features = channels[-1] * math.prod(side // 16 for side in shape[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # [N, 4 * width * prod(S / 16)]
