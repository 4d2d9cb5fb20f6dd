"""What every architecture shares: conditioning around an arch-specific body.

A generator body maps ``[N, z_in]`` to samples ``[N, C, *S]``; a discriminator trunk maps
samples to features ``[N, F]``; their layers come from :func:`hpcgan.nd.ops` for the data's
spatial rank. The wrappers take one :class:`~hpcgan.condition.Condition` per batch and add,
for class labels, the class embedding (concatenated to z in G), the projection term of Miyato
& Koyama (2018) in D and the auxiliary classifier of AC-GAN; for continuous conditions
(docs/training.md, "Continuous conditions"), an embedding concatenated to z or a FiLM of G's
input (``model.condition``), the projection of their embedding in D, and an optional head with
which D regresses them.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from hpcgan.condition import Condition, ConditionSpec
from hpcgan.nd import Ops

CONDITION_MODES = ("concat", "film")  # model.condition: how G takes continuous conditions
NO_CONDITION = Condition()  # what an unconditional batch passes
NO_SPEC = ConditionSpec()  # what an unconditional model is conditioned on
# Hidden width of D's embedding of continuous conditions: its last layer has this times D's
# feature count of weights (a square layer of the features was 98% of D on 45x16x9 grids).
D_CONDITION_WIDTH = 64


def values_embedding(k: int, width: int, out: int) -> nn.Sequential:
    """Continuous conditions ``[N, K]`` to ``[N, out]``: a small MLP, since the encoded values
    are O(1) but what they do to a sample need not be linear in them."""
    return nn.Sequential(nn.Linear(k, width), nn.LeakyReLU(0.2), nn.Linear(width, out))


class Generator(nn.Module):
    """A body behind the conditioning of its input vector: z, then the class embedding, then
    (``concat``) the continuous conditions' embedding; ``film`` instead scales and shifts that
    vector by functions of the continuous conditions (feature-wise linear modulation)."""

    def __init__(
        self,
        body: nn.Module,
        z_dim: int,
        spec: ConditionSpec = NO_SPEC,
        embed_dim: int = 0,
        mode: str = "concat",
    ):
        super().__init__()
        self.z_dim, self.spec, self.mode = z_dim, spec, mode
        self.embed = nn.Embedding(spec.num_classes, embed_dim) if spec.num_classes else None
        self.body = body
        self.values = None  # registered after the body: unconditioned models init as before
        if spec.dim:
            width = z_dim + (embed_dim if spec.num_classes else 0)
            out = embed_dim if mode == "concat" else 2 * width  # FiLM: a scale and a shift
            self.values = values_embedding(spec.dim, embed_dim, out)

    @staticmethod
    def input_dim(z_dim: int, spec: ConditionSpec, embed_dim: int, mode: str) -> int:
        """Width of the body's input vector."""
        concat = spec.dim and mode == "concat"
        return z_dim + embed_dim * (bool(spec.num_classes) + bool(concat))

    @property
    def num_classes(self) -> int:
        """Classes G is conditioned on (0: none)."""
        return self.spec.num_classes

    def forward(self, z: torch.Tensor, cond: Condition = NO_CONDITION) -> torch.Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(cond.labels).to(z.dtype)], dim=1)  # [N, z_dim + E]
        if self.values is not None:
            e = self.values(cond.values).to(z.dtype)  # [N, E] (concat) or [N, 2 * width]
            if self.mode == "concat":
                z = torch.cat([z, e], dim=1)  # [N, z_dim (+ E) + E]
            else:
                scale, shift = e.chunk(2, dim=1)
                z = z * (1 + scale) + shift  # starts near the identity (small weights)
        return self.body(z)


class DOutput(NamedTuple):
    """What D says about a batch."""

    logits: torch.Tensor  # [N] real/fake
    classes: torch.Tensor | None  # [N, num_classes] AC-GAN head's class logits
    values: torch.Tensor | None  # [N, K] regression head's estimate of the encoded conditions


class Discriminator(nn.Module):
    def __init__(
        self,
        trunk: nn.Module,
        features: int,
        spec: ConditionSpec = NO_SPEC,
        projection: bool = False,
        aux_classifier: bool = False,
        regression: bool = False,
    ):
        super().__init__()
        self.trunk = trunk
        self.out = nn.Linear(features, 1)
        self.embed = nn.Embedding(spec.num_classes, features) if projection else None
        self.aux = nn.Linear(features, spec.num_classes) if aux_classifier else None
        # Continuous conditions: always projected; registered last (as in G).
        width = min(D_CONDITION_WIDTH, features)
        self.values = values_embedding(spec.dim, width, features) if spec.dim else None
        self.regress = nn.Linear(features, spec.dim) if regression else None

    def forward(self, x: torch.Tensor, cond: Condition = NO_CONDITION) -> DOutput:
        """Logits [N], and the heads' outputs (None without them)."""
        h = self.trunk(x)  # [N, F]
        logits = self.out(h).flatten()
        if self.embed is not None:
            logits = logits + (self.embed(cond.labels) * h).sum(dim=1)
        if self.values is not None:  # <h, W_c e(c)>: the continuous analogue of the above
            logits = logits + (self.values(cond.values) * h).sum(dim=1)
        classes = self.aux(h) if self.aux is not None else None
        values = self.regress(h) if self.regress is not None else None
        return DOutput(logits, classes, values)


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
