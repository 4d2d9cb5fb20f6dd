"""The classic GAN of Goodfellow et al.: a fully connected generator, a convolutional critic.

G: z -> 128 -> 256 -> C*prod(S) (for width 64: hidden sizes 2*width, 4*width, ... one per ``depth``)
with LeakyReLU(0.2) and tanh; D: 5x5 stride-2 convolutions with width/2, width, 2*width,
4*width channels (32-64-128-256 at width 64) and LeakyReLU(0.2). Any sides: each convolution
maps a side n to ceil(n / 2) (a side of 1 stays 1).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hpcgan.models.plan import Plan, circular_axes, conv
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
    def __init__(self, channels: int, plan: Plan, width: int, ops: Ops) -> None:
        super().__init__()
        widths = [channels] + [max(1, width // 2) * 2**i for i in range(4)]
        sides = plan.sides[0]
        layers: list[nn.Module] = []
        for a, b in zip(widths, widths[1:]):
            layers += [conv(ops, a, b, 5, 2, 2, circular_axes(plan, sides, 2, 2))]
            layers.append(nn.LeakyReLU(0.2, True))
            sides = tuple(-(-s // 2) for s in sides)
        self.net = nn.Sequential(*layers, nn.Flatten())
        self.features = widths[-1] * math.prod(sides)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # [N, 4 * width * prod(ceil(S / 16))]
