"""DCGAN (Radford et al. 2016) in the layout of pytorch/examples, for any power-of-two size.

4x4 kernels, stride 2; ``width`` channels at the highest hidden resolution, doubling each
time the resolution halves. G: ReLU, tanh output; D: LeakyReLU(0.2), no norm on its first layer.
The discriminator's last 4x4 convolution is the wrappers' linear head on the flattened 4x4 map
(the same function).
"""

from __future__ import annotations

import torch
from torch import nn

from hpcgan.models.base import norm2d, stage_channels

_NO_CAP = 1 << 30


def up_conv(c_in: int, c_out: int, upsample: str, bias: bool = True) -> list[nn.Module]:
    """Double the resolution: DCGAN's 4x4 stride-2 transposed convolution, or nearest-neighbour
    upsampling then a 3x3 convolution, which has no checkerboard pattern in its output's power
    spectrum (Odena et al. 2016, "Deconvolution and checkerboard artifacts")."""
    if upsample == "nearest":
        return [
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(c_in, c_out, 3, 1, 1, bias=bias),
        ]
    return [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=bias)]


class DCGANBody(nn.Module):
    def __init__(
        self,
        z_in: int,
        channels: int,
        resolution: int,
        width: int,
        norm: str,
        upsample: str = "transposed",
    ) -> None:
        super().__init__()
        hidden = stage_channels(resolution, width, _NO_CAP)
        bias = norm != "batch"  # a bias before BatchNorm is redundant
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(z_in, hidden[0], 4, 1, 0, bias=bias),  # [N, h0, 4, 4]
            norm2d(norm, hidden[0]),
            nn.ReLU(True),
        ]
        for c_in, c_out in zip(hidden, hidden[1:]):
            layers += [*up_conv(c_in, c_out, upsample, bias), norm2d(norm, c_out), nn.ReLU(True)]
        layers += [*up_conv(hidden[-1], channels, upsample), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])  # [N, z] -> [N, C, H, W]


class DCGANTrunk(nn.Module):
    def __init__(self, channels: int, resolution: int, width: int, norm: str) -> None:
        super().__init__()
        hidden = stage_channels(resolution, width, _NO_CAP)[::-1]  # width ... largest at 4x4
        bias = norm != "batch"
        layers: list[nn.Module] = [nn.Conv2d(channels, hidden[0], 4, 2, 1), nn.LeakyReLU(0.2, True)]
        for c_in, c_out in zip(hidden, hidden[1:]):
            layers += [
                nn.Conv2d(c_in, c_out, 4, 2, 1, bias=bias),
                norm2d(norm, c_out),
                nn.LeakyReLU(0.2, True),
            ]
        self.net = nn.Sequential(*layers, nn.Flatten())
        self.features = hidden[-1] * 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # [N, C_last * 4 * 4]
