"""DCGAN (Radford et al. 2016) in the layout of pytorch/examples, for any power-of-two size.

4x4 kernels, stride 2; ``width`` channels at the highest hidden resolution, doubling each
time the resolution halves. G: ReLU, tanh output; D: LeakyReLU(0.2), no norm on its first layer.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _norm(kind: str, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if kind == "batch" else nn.Identity()


def _channels(resolution: int, width: int) -> list[int]:
    """Hidden channels at 4x4, 8x8, ..., resolution/2: width * 2**k, largest first."""
    stages = int(math.log2(resolution)) - 2  # 4x4 .. resolution/2
    return [width * 2 ** (stages - 1 - i) for i in range(stages)]


def init_dcgan_(module: nn.Module) -> None:
    """N(0, 0.02) conv weights, N(1, 0.02) norm scales, zero biases, as in the paper."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    def __init__(self, z_dim: int, channels: int, resolution: int, width: int, norm: str) -> None:
        super().__init__()
        self.z_dim = z_dim
        hidden = _channels(resolution, width)
        bias = norm != "batch"  # a bias before BatchNorm is redundant
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(z_dim, hidden[0], 4, 1, 0, bias=bias),  # [N, h0, 4, 4]
            _norm(norm, hidden[0]),
            nn.ReLU(True),
        ]
        for c_in, c_out in zip(hidden, hidden[1:]):
            layers += [
                nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=bias),
                _norm(norm, c_out),
                nn.ReLU(True),
            ]
        layers += [nn.ConvTranspose2d(hidden[-1], channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        init_dcgan_(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])  # [N, z] -> [N, C, H, W]


class DCGANDiscriminator(nn.Module):
    def __init__(self, channels: int, resolution: int, width: int, norm: str) -> None:
        super().__init__()
        hidden = _channels(resolution, width)[::-1]  # width at resolution/2 ... largest at 4x4
        bias = norm != "batch"
        layers: list[nn.Module] = [
            nn.Conv2d(channels, hidden[0], 4, 2, 1),
            nn.LeakyReLU(0.2, True),
        ]
        for c_in, c_out in zip(hidden, hidden[1:]):
            layers += [
                nn.Conv2d(c_in, c_out, 4, 2, 1, bias=bias),
                _norm(norm, c_out),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(hidden[-1], 1, 4, 1, 0))  # [N, 1, 1, 1] logits
        self.net = nn.Sequential(*layers)
        init_dcgan_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()  # [N]
