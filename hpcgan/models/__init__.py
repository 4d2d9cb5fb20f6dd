"""Generators and discriminators; :func:`build_models` picks them from the config."""

from __future__ import annotations

from torch import nn

from hpcgan.config import ModelConfig
from hpcgan.errors import UserError
from hpcgan.models.dcgan import DCGANDiscriminator, DCGANGenerator


def build_models(cfg: ModelConfig, shape: tuple[int, int, int]) -> tuple[nn.Module, nn.Module]:
    """(G, D) for images of ``shape`` = (C, H, W), initialised as DCGAN does."""
    channels, height, width = shape
    if height != width or height < 16 or height & (height - 1):
        raise UserError(
            f"model.arch={cfg.arch} needs square images with a power-of-two size >= 16, "
            f"the dataset has {height}x{width}"
        )
    if cfg.arch != "dcgan":
        raise UserError(f"model.arch={cfg.arch} is not available yet; use dcgan")
    G = DCGANGenerator(cfg.z_dim, channels, height, cfg.width, cfg.norm)
    D = DCGANDiscriminator(channels, height, cfg.width, cfg.norm)
    return G, D
