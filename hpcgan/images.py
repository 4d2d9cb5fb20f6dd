"""Sample grids as PNG (Pillow), written atomically."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def grid(images: torch.Tensor, pad: int = 2) -> np.ndarray:
    """[N, C, H, W] in [-1, 1] -> one uint8 image [rows*H, cols*W, C] on a square-ish grid."""
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
    factor = max(1, -(-min_tile // images.shape[-1]))
    if factor > 1:
        images = torch.nn.functional.interpolate(images.float(), scale_factor=factor)
    pixels = grid(images)
    if pixels.shape[2] not in (1, 3):
        pixels = pixels[:, :, :1]
    mode_pixels = pixels[:, :, 0] if pixels.shape[2] == 1 else pixels
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(mode_pixels).save(tmp, format="PNG")
    os.replace(tmp, path)
    return pixels
