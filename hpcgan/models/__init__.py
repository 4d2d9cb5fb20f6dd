"""Generators and discriminators; :func:`build_models` picks them from the config.

``ARCHS`` is the architecture registry (docs/architecture.md, "Architectures"): one entry per
``model.arch`` with its builder and the rules it has for the sample shape and the model
options. Its names are the choices of ``model.arch``; ``hpcgan.config.validate`` runs the
option rules when the configuration is read, :func:`build_models` all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from hpcgan import nd
from hpcgan.condition import ConditionSpec
from hpcgan.errors import UserError
from hpcgan.models.base import NO_SPEC, Discriminator, Generator, init_normal_
from hpcgan.models.dcgan import DCGANBody, DCGANTrunk
from hpcgan.models.mlp import ConvTrunk, MLPBody
from hpcgan.models.plan import MIN_SIDE, Plan
from hpcgan.models.resnet import ResNetBody, ResNetTrunk
from hpcgan.symmetry import Symmetry

if TYPE_CHECKING:  # the model.* section; models sit below config (docs/architecture.md)
    from hpcgan.config import ModelConfig

# (cfg, channels, plan, z_in, depth, ops) -> (G's body [N, z_in] -> [N, C, *S], D's trunk)
Builder = Callable[..., tuple[nn.Module, nn.Module]]


@dataclass(frozen=True)
class Arch:
    """One architecture: its builder and what it accepts."""

    name: str
    build: Builder
    depth: int  # model.depth=0 means this
    fixed_depth: bool = False  # model.depth must be 0 or 1
    upsample: bool = False  # takes model.upsample=nearest
    attention: bool = False  # takes model.attention
    staged: bool = True  # halves the sides stage by stage: needs a side > MIN_SIDE

    def check(self, shape: tuple[int, ...] | None, cfg: ModelConfig) -> None:
        """The model options this architecture supports and, given samples of ``shape`` =
        (C, *S), whether it builds for them; a one-line UserError if not."""
        if self.fixed_depth and cfg.depth not in (0, 1):
            raise UserError(f"model.depth is fixed for {self.name} (use mlp or resnet to vary it)")
        if cfg.upsample != "transposed" and not self.upsample:
            raise UserError(
                f"model.upsample={cfg.upsample} applies to dcgan only (not {self.name})"
            )
        if cfg.attention and not self.attention:
            raise UserError(f"model.attention needs model.arch=resnet (not {self.name})")
        if shape is None:
            return
        spatial = tuple(shape[1:])
        nd.ops(len(spatial))  # 1, 2 or 3 spatial axes
        grid = "x".join(map(str, spatial))
        if min(spatial) < 1:
            raise UserError(f"samples of shape {tuple(shape)} have an empty axis")
        if self.staged and max(spatial) <= MIN_SIDE:
            raise UserError(
                f"model.arch={self.name} needs a side longer than {MIN_SIDE}, the dataset has "
                f"{grid} samples (model.arch=mlp takes any)"
            )
        sides = Plan.of(spatial).attention_sides()
        if cfg.attention and cfg.attention not in sides:
            allowed = ", ".join(map(str, sides)) or "none"
            raise UserError(
                f"model.attention={cfg.attention} needs a resolution (largest side) where G and "
                f"D both have feature maps, for {grid} samples: {allowed}"
            )


def _mlp(cfg: ModelConfig, channels: int, plan: Plan, z_in: int, depth: int, ops: nd.Ops):
    body = MLPBody(z_in, (channels, *plan.sides[0]), cfg.width, depth)
    return body, ConvTrunk(channels, plan, cfg.width, ops)


def _dcgan(cfg: ModelConfig, channels: int, plan: Plan, z_in: int, depth: int, ops: nd.Ops):
    body = DCGANBody(z_in, channels, plan, cfg.width, cfg.norm, cfg.upsample, ops)
    return body, DCGANTrunk(channels, plan, cfg.width, cfg.norm, ops)


def _resnet(cfg: ModelConfig, channels: int, plan: Plan, z_in: int, depth: int, ops: nd.Ops):
    body = ResNetBody(z_in, channels, plan, cfg.width, depth, cfg.norm, cfg.attention, ops)
    return body, ResNetTrunk(channels, plan, cfg.width, depth, cfg.attention, ops)


ARCHS: dict[str, Arch] = {
    "mlp": Arch("mlp", _mlp, depth=2, staged=False),
    "dcgan": Arch("dcgan", _dcgan, depth=1, fixed_depth=True, upsample=True),
    "resnet": Arch("resnet", _resnet, depth=1, attention=True),
}


def periodic_axes(cfg: ModelConfig, symmetry: Symmetry | None, ndim: int) -> tuple[bool, ...]:
    """The axes whose convolutions pad circularly: model.padding=circular on the data's
    periodic axes; none with zeros."""
    if cfg.padding != "circular" or symmetry is None:
        return (False,) * ndim
    if symmetry.ndim != ndim:
        raise UserError(f"a symmetry of {symmetry.ndim} axes for samples of {ndim} axes")
    return symmetry.periodic


def build_models(
    cfg: ModelConfig,
    shape: tuple[int, ...],
    data: ConditionSpec = NO_SPEC,
    aux_classifier: bool = False,
    symmetry: Symmetry | None = None,
    regression: bool = False,
) -> tuple[Generator, Discriminator]:
    """(G, D) for samples of ``shape`` = (C, *S); ``data``: what the dataset offers to condition
    on (its classes, its continuous conditions).

    ``model.conditional`` makes G class-conditional and adds D's projection term;
    ``aux_classifier`` makes G class-conditional and adds D's AC-GAN head (with both: the
    multi-task variant). Both need labels. Continuous conditions in ``data`` condition both
    (``model.condition`` says how G takes them); ``regression`` adds D's head that regresses
    them (train.cond_regression). The models' own spec is ``G.spec``. Layers follow the
    spatial rank len(S) (hpcgan.nd) and the per-axis plan of the sides (models/plan.py);
    ``symmetry``: the data's, whose periodic axes model.padding=circular wraps.
    """
    shape = tuple(shape)
    arch = ARCHS[cfg.arch]
    arch.check(shape, cfg)
    spatial = shape[1:]
    ops = nd.ops(len(spatial))
    plan = Plan.of(spatial, periodic_axes(cfg, symmetry, len(spatial)))
    if (cfg.conditional or aux_classifier) and data.num_classes < 2:
        raise UserError(
            "model.conditional and train.aux_classifier need a dataset with /labels "
            "of at least 2 classes"
        )
    if regression and not data.dim:
        raise UserError(
            "train.cond_regression needs a dataset with /conditions (and model.condition "
            "other than none)"
        )
    classes = data.num_classes if (cfg.conditional or aux_classifier) else 0
    spec = ConditionSpec(classes, data.names, data.units)
    embed = min(cfg.z_dim, 64) if spec else 0
    z_in = Generator.input_dim(cfg.z_dim, spec, embed, cfg.condition)
    body, trunk = arch.build(cfg, shape[0], plan, z_in, cfg.depth or arch.depth, ops)
    G = Generator(body, cfg.z_dim, spec, embed, cfg.condition)
    D = Discriminator(trunk, trunk.features, spec, cfg.conditional, aux_classifier, regression)
    init_normal_(G)
    init_normal_(D)
    if cfg.spectral_norm:
        for m in list(D.modules()):
            if isinstance(m, (ops.conv, nn.Linear, nn.Embedding)):
                spectral_norm(m)
    return G, D
