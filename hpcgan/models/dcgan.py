"""DCGAN (Radford et al. 2016) in the layout of pytorch/examples, for any grid (models/plan.py).

4x4 kernels, stride 2 (3x3 where a side is odd or stays); ``width`` channels at the highest
hidden resolution, doubling each time the resolution halves. G: ReLU, tanh output; D:
LeakyReLU(0.2), no norm on its first layer. The discriminator's last 4x4 convolution is the
wrappers' linear head on the flattened smallest map (the same function).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hpcgan.models.base import norm_layer
from hpcgan.models.plan import (
    Plan,
    Sides,
    circular_axes,
    conv,
    conv_transpose,
    geometry,
    stage_channels,
    upsampler,
)
from hpcgan.nd import Ops

_NO_CAP = 1 << 30


def up_conv(
    c_in: int,
    c_out: int,
    upsample: str,
    ops: Ops,
    plan: Plan,
    coarse: Sides,
    fine: Sides,
    bias: bool = True,
) -> list[nn.Module]:
    """From ``coarse`` to ``fine`` sides: DCGAN's 4x4 stride-2 transposed convolution, or
    nearest-neighbour upsampling then a 3x3 convolution, which has no checkerboard pattern in
    its output's power spectrum (Odena et al. 2016, "Deconvolution and checkerboard
    artifacts")."""
    if upsample == "nearest":
        circular = circular_axes(plan, fine, 1, 1)
        return [upsampler(coarse, fine), conv(ops, c_in, c_out, 3, 1, 1, circular, bias)]
    kernel, stride = geometry(fine, coarse)
    circular = circular_axes(plan, fine, stride, 1)
    return [conv_transpose(ops, c_in, c_out, kernel, stride, 1, circular, bias)]


class DCGANBody(nn.Module):
    def __init__(
        self, z_in: int, channels: int, plan: Plan, width: int, norm: str, upsample: str, ops: Ops
    ) -> None:
        super().__init__()
        self.ndim = ops.ndim
        hidden = stage_channels(plan.stages, width, _NO_CAP)
        bias = norm != "batch"  # a bias before BatchNorm is redundant
        layers: list[nn.Module] = [
            ops.conv_transpose(z_in, hidden[0], plan.start, 1, 0, bias=bias),  # [N, h0, *start]
            norm_layer(norm, hidden[0], ops),
            nn.ReLU(True),
        ]
        steps = plan.up()
        for c_in, c_out, (coarse, fine) in zip(hidden, hidden[1:], steps):
            up = up_conv(c_in, c_out, upsample, ops, plan, coarse, fine, bias)
            layers += [*up, norm_layer(norm, c_out, ops), nn.ReLU(True)]
        layers += [*up_conv(hidden[-1], channels, upsample, ops, plan, *steps[-1]), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[(..., *[None] * self.ndim)])  # [N, z] -> [N, z, 1, ...] -> [N, C, *S]


class DCGANTrunk(nn.Module):
    def __init__(self, channels: int, plan: Plan, width: int, norm: str, ops: Ops) -> None:
        super().__init__()
        hidden = stage_channels(plan.stages, width, _NO_CAP)[::-1]  # width ... largest
        bias = norm != "batch"
        layers: list[nn.Module] = []
        for i, (c_in, c_out, (fine, coarse)) in enumerate(
            zip([channels, *hidden], hidden, plan.down())
        ):
            kernel, stride = geometry(fine, coarse)
            circular = circular_axes(plan, fine, stride, 1)
            if i == 0:  # no norm on the first layer
                layers += [conv(ops, c_in, c_out, kernel, stride, 1, circular)]
            else:
                layers += [
                    conv(ops, c_in, c_out, kernel, stride, 1, circular, bias),
                    norm_layer(norm, c_out, ops),
                ]
            layers.append(nn.LeakyReLU(0.2, True))
        self.net = nn.Sequential(*layers, nn.Flatten())
        self.features = hidden[-1] * math.prod(plan.start)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # [N, C_last * prod(start)]
