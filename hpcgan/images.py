"""Sample grids as PNG (Pillow), written atomically (hpcgan.files)."""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from PIL import Image

from hpcgan.files import atomic_write


def planes(images: torch.Tensor) -> torch.Tensor:
    """[N, C, *S] -> [N, C, H, W]: a volume shows its middle slice along each extra axis."""
    while images.dim() > 4:
        images = images[:, :, images.shape[2] // 2]
    return images


def grid(images: torch.Tensor, pad: int = 2) -> np.ndarray:
    """[N, C, *S] in [-1, 1] -> one uint8 image [rows*H, cols*W, C] on a square-ish grid."""
    images = planes(images)  # [N, C, H, W]
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    n, c, h, w = x.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    out = np.zeros((rows * (h + pad) + pad, cols * (w + pad) + pad, c), dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        out[top : top + h, left : left + w] = x[i].permute(1, 2, 0).numpy()
    return out


def save_grid(images: torch.Tensor, path: str | os.PathLike, min_tile: int = 64) -> np.ndarray:
    """Write a grid PNG; grey-scale for one channel, RGB for three, else the first channel.

    Small images are enlarged (nearest neighbour) to ``min_tile`` pixels so a person can see them.
    Returns the grid's pixels [H, W, C].
    """
    images = planes(images)  # [N, C, H, W]
    factor = max(1, -(-min_tile // images.shape[-1]))
    if factor > 1:
        images = torch.nn.functional.interpolate(images.float(), scale_factor=factor)
    pixels = grid(images)
    if pixels.shape[2] not in (1, 3):
        pixels = pixels[:, :, :1]
    mode_pixels = pixels[:, :, 0] if pixels.shape[2] == 1 else pixels
    atomic_write(path, lambda tmp: Image.fromarray(mode_pixels).save(tmp, format="PNG"))
    return pixels
