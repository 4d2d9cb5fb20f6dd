"""Generators and discriminators; :func:`build_models` picks them from the config."""

from __future__ import annotations

from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from hpcgan import nd
from hpcgan.condition import ConditionSpec
from hpcgan.config import ModelConfig
from hpcgan.errors import UserError
from hpcgan.models.base import NO_SPEC, Discriminator, Generator, init_normal_
from hpcgan.models.dcgan import DCGANBody, DCGANTrunk
from hpcgan.models.mlp import ConvTrunk, MLPBody
from hpcgan.models.resnet import ResNetBody, ResNetTrunk

DEFAULT_DEPTH = {"mlp": 2, "dcgan": 1, "resnet": 1}


def build_models(
    cfg: ModelConfig,
    shape: tuple[int, ...],
    data: ConditionSpec = NO_SPEC,
    aux_classifier: bool = False,
    regression: bool = False,
) -> tuple[Generator, Discriminator]:
    """(G, D) for samples of ``shape`` = (C, *S); ``data``: what the dataset offers to condition
    on (its classes, its continuous conditions).

    ``model.conditional`` makes G class-conditional and adds D's projection term;
    ``aux_classifier`` makes G class-conditional and adds D's AC-GAN head (with both: the
    multi-task variant). Both need labels. Continuous conditions in ``data`` condition both
    (``model.condition`` says how G takes them); ``regression`` adds D's head that regresses
    them (train.cond_regression). The models' own spec is ``G.spec``. Layers follow the
    spatial rank len(S) (hpcgan.nd).
    """
    shape = tuple(shape)
    spatial = shape[1:]
    if len(spatial) not in (2, 3):
        raise UserError(
            f"model.arch={cfg.arch} builds models for 2-D samples (C, H, W) and 3-D samples "
            f"(C, D, H, W) only, the dataset has samples of shape {shape}"
        )
    ops = nd.ops(len(spatial))
    size = spatial[0]
    if len(set(spatial)) > 1 or size < 16 or size & (size - 1):
        kind = "square images" if len(spatial) == 2 else "cubic volumes"
        raise UserError(
            f"model.arch={cfg.arch} needs {kind} with equal power-of-two sides >= 16, "
            f"the dataset has {'x'.join(map(str, spatial))} (resize or crop it when converting)"
        )
    if (cfg.conditional or aux_classifier) and data.num_classes < 2:
        raise UserError(
            "model.conditional and train.aux_classifier need a dataset with /labels "
            "of at least 2 classes"
        )
    if regression and not data.dim:
        raise UserError("train.cond_regression needs a dataset with /conditions")
    depth = cfg.depth or DEFAULT_DEPTH[cfg.arch]
    if cfg.arch == "dcgan" and depth != 1:
        raise UserError("model.depth is fixed for dcgan (use mlp or resnet to vary it)")
    if cfg.upsample != "transposed" and cfg.arch != "dcgan":
        raise UserError(f"model.upsample={cfg.upsample} applies to dcgan only (not {cfg.arch})")
    if cfg.attention and not (cfg.arch == "resnet" and 8 <= cfg.attention <= size // 2):
        raise UserError(
            f"model.attention={cfg.attention} needs model.arch=resnet and a resolution from 8 "
            f"to {size // 2} (half the sample size), where G and D both have feature maps"
        )
    classes = data.num_classes if (cfg.conditional or aux_classifier) else 0
    spec = ConditionSpec(classes, data.names, data.units)
    embed = min(cfg.z_dim, 64) if spec else 0
    z_in = Generator.input_dim(cfg.z_dim, spec, embed, cfg.condition)
    if cfg.arch == "mlp":
        body: nn.Module = MLPBody(z_in, shape, cfg.width, depth)
        trunk: nn.Module = ConvTrunk(shape, cfg.width, ops)
    elif cfg.arch == "dcgan":
        body = DCGANBody(z_in, shape, cfg.width, cfg.norm, cfg.upsample, ops)
        trunk = DCGANTrunk(shape, cfg.width, cfg.norm, ops)
    else:
        body = ResNetBody(z_in, shape, cfg.width, depth, cfg.norm, cfg.attention, ops)
        trunk = ResNetTrunk(shape, cfg.width, depth, cfg.attention, ops)
    G = Generator(body, cfg.z_dim, spec, embed, cfg.condition)
    D = Discriminator(trunk, trunk.features, spec, cfg.conditional, aux_classifier, regression)
    init_normal_(G)
    init_normal_(D)
    if cfg.spectral_norm:
        for m in list(D.modules()):
            if isinstance(m, (ops.conv, nn.Linear, nn.Embedding)):
                spectral_norm(m)
    return G, D
