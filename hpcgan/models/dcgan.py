"""DCGAN (Radford et al. 2016) in the layout of pytorch/examples, for any power-of-two size.

4x4 kernels, stride 2; ``width`` channels at the highest hidden resolution, doubling each
time the resolution halves. G: ReLU, tanh output; D: LeakyReLU(0.2), no norm on its first layer.
The discriminator's last 4x4 convolution is the wrappers' linear head on the flattened 4x4 map
(the same function).
"""

from __future__ import annotations

import torch
from torch import nn

from hpcgan.models.base import norm_layer, stage_channels
from hpcgan.nd import Ops

_NO_CAP = 1 << 30


def up_conv(c_in: int, c_out: int, upsample: str, ops: Ops, bias: bool = True) -> list[nn.Module]:
    """Double the resolution: DCGAN's 4x4 stride-2 transposed convolution, or nearest-neighbour
    upsampling then a 3x3 convolution, which has no checkerboard pattern in its output's power
    spectrum (Odena et al. 2016, "Deconvolution and checkerboard artifacts")."""
    if upsample == "nearest":
        return [
            nn.Upsample(scale_factor=2, mode="nearest"),
            ops.conv(c_in, c_out, 3, 1, 1, bias=bias),
        ]
    return [ops.conv_transpose(c_in, c_out, 4, 2, 1, bias=bias)]


class DCGANBody(nn.Module):
    def __init__(
        self, z_in: int, shape: tuple[int, ...], width: int, norm: str, upsample: str, ops: Ops
    ) -> None:
        super().__init__()
        channels, resolution = shape[0], shape[-1]  # (C, *S), S square
        self.ndim = ops.ndim
        hidden = stage_channels(resolution, width, _NO_CAP)
        bias = norm != "batch"  # a bias before BatchNorm is redundant
        layers: list[nn.Module] = [
            ops.conv_transpose(z_in, hidden[0], 4, 1, 0, bias=bias),  # [N, h0, 4, ..., 4]
            norm_layer(norm, hidden[0], ops),
            nn.ReLU(True),
        ]
        for c_in, c_out in zip(hidden, hidden[1:]):
            up = up_conv(c_in, c_out, upsample, ops, bias)
            layers += [*up, norm_layer(norm, c_out, ops), nn.ReLU(True)]
        layers += [*up_conv(hidden[-1], channels, upsample, ops), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[(..., *[None] * self.ndim)])  # [N, z] -> [N, z, 1, ...] -> [N, C, *S]


class DCGANTrunk(nn.Module):
    def __init__(self, shape: tuple[int, ...], width: int, norm: str, ops: Ops) -> None:
        super().__init__()
        channels, resolution = shape[0], shape[-1]
        hidden = stage_channels(resolution, width, _NO_CAP)[::-1]  # width ... largest at 4 a side
        bias = norm != "batch"
        layers: list[nn.Module] = [ops.conv(channels, hidden[0], 4, 2, 1), nn.LeakyReLU(0.2, True)]
        for c_in, c_out in zip(hidden, hidden[1:]):
            layers += [
                ops.conv(c_in, c_out, 4, 2, 1, bias=bias),
                norm_layer(norm, c_out, ops),
                nn.LeakyReLU(0.2, True),
            ]
        self.net = nn.Sequential(*layers, nn.Flatten())
        self.features = hidden[-1] * 4**ops.ndim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # [N, C_last * 4 ** ndim]
