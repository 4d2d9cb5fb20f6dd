"""What every architecture shares: optional class conditioning around an arch-specific body.

A generator body maps ``[N, z_in]`` to samples ``[N, C, *S]``; a discriminator trunk maps
samples to features ``[N, F]``; their layers come from :func:`hpcgan.nd.ops` for the data's
spatial rank. The wrappers add the class embedding (concatenated to z in G), the projection
term of Miyato & Koyama (2018) in D, and the auxiliary classifier of AC-GAN.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from hpcgan.nd import Ops


class Generator(nn.Module):
    def __init__(self, body: nn.Module, z_dim: int, num_classes: int = 0, embed_dim: int = 0):
        super().__init__()
        self.z_dim, self.num_classes = z_dim, num_classes
        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes else None
        self.body = body

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(y).to(z.dtype)], dim=1)  # [N, z_dim + embed_dim]
        return self.body(z)


class Discriminator(nn.Module):
    def __init__(
        self,
        trunk: nn.Module,
        features: int,
        num_classes: int = 0,
        projection: bool = False,
        aux_classifier: bool = False,
    ):
        super().__init__()
        self.trunk = trunk
        self.out = nn.Linear(features, 1)
        self.embed = nn.Embedding(num_classes, features) if projection else None
        self.aux = nn.Linear(features, num_classes) if aux_classifier else None

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Real/fake logits [N] and, with an auxiliary classifier, class logits [N, K]."""
        h = self.trunk(x)  # [N, F]
        logits = self.out(h).flatten()
        if self.embed is not None:
            logits = logits + (self.embed(y) * h).sum(dim=1)
        return logits, (self.aux(h) if self.aux is not None else None)


def init_normal_(module: nn.Module, std: float = 0.02) -> None:
    """N(0, std) weights, N(1, std) norm scales, zero biases (DCGAN's initialisation)."""
    for m in module.modules():
        if isinstance(m, (_ConvNd, nn.Linear)):  # convolutions and transposed, of any rank
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, _BatchNorm):
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, 1.0)


def norm_layer(kind: str, channels: int, ops: Ops) -> nn.Module:
    """model.norm: batch norm of the data's rank, or none."""
    return ops.batch_norm(channels) if kind == "batch" else nn.Identity()


class SelfAttention(nn.Module):
    """SAGAN self-attention (Zhang et al. 2019): each position attends to all others."""

    def __init__(self, channels: int, ops: Ops):
        super().__init__()
        self.q = ops.conv(channels, max(1, channels // 8), 1)
        self.k = ops.conv(channels, max(1, channels // 8), 1)
        self.v = ops.conv(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(()))  # starts as the identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.q(x).flatten(2).transpose(1, 2)  # [N, P, C/8] over the P positions of *S
        k = self.k(x).flatten(2)  # [N, C/8, P]
        attn = torch.softmax(q @ k, dim=-1)  # [N, P, P]
        v = self.v(x).flatten(2)  # [N, C, P]
        out = (v @ attn.transpose(1, 2)).view(x.shape)  # [N, C, *S]
        return x + self.gamma * out
