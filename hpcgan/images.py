"""Sample grids as PNG (Pillow), written atomically (hpcgan.files)."""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from PIL import Image

from hpcgan.files import atomic_write

VOLUME_PAD = 8  # pixels between the tiles of volumes (panels within one are 1 apart)


def views(volumes: torch.Tensor) -> torch.Tensor:
    """[N, C, D, H, W] -> [N, C, 2, 3, P, P], P = max(D, H, W): per volume its central slices
    across D, H and W (row 0) and its means along D, H and W (row 1, projections), each
    centred on a P x P panel of -1 (black)."""
    n, c, *spatial = volumes.shape
    size = max(spatial)
    out = volumes.new_full((n, c, 2, 3, size, size), -1.0, dtype=torch.float32)
    for axis in range(3):
        dim = 2 + axis
        cut = volumes.select(dim, spatial[axis] // 2).float()  # [N, C, a, b]
        mean = volumes.float().mean(dim=dim)
        a, b = cut.shape[-2:]
        top, left = (size - a) // 2, (size - b) // 2
        out[:, :, 0, axis, top : top + a, left : left + b] = cut
        out[:, :, 1, axis, top : top + a, left : left + b] = mean
    return out


def strips(vectors: torch.Tensor) -> torch.Tensor:
    """[N, C, L] -> [N, C, B, L]: each 1-D sample drawn as a band of B = ceil(L / 16) equal
    rows (at least 4), so that a vector of a few hundred values reads as a barcode."""
    band = max(4, -(-vectors.shape[-1] // 16))
    return vectors.unsqueeze(2).expand(-1, -1, band, -1)


def planes(images: torch.Tensor, factor: int = 1, gap: int = 1) -> torch.Tensor:
    """[N, C, *S] -> [N, C, H', W']: 2-D samples as they are; a 1-D sample becomes a band
    (:func:`strips`); a volume becomes one tile of 2 x 3 panels (:func:`views`: central slices
    on top, mean projections below, along D, H, W from left to right), each enlarged
    ``factor`` times, separated by ``gap`` pixels of -1."""
    if images.dim() == 3:
        return strips(images)
    if images.dim() <= 4:
        return images
    while images.dim() > 5:  # more than 3 spatial axes: the middle of the extra ones
        images = images[:, :, images.shape[2] // 2]
    v = views(images)  # [N, C, 2, 3, P, P]
    v = v.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)  # nearest
    n, c, _, _, size, _ = v.shape
    step = size + gap
    tile = v.new_full((n, c, 2 * step - gap, 3 * step - gap), -1.0)
    for row in range(2):
        for col in range(3):
            tile[:, :, row * step : row * step + size, col * step : col * step + size] = v[
                :, :, row, col
            ]
    return tile


def grid(images: torch.Tensor, pad: int | None = None) -> np.ndarray:
    """[N, C, *S] in [-1, 1] -> one uint8 image [rows*H, cols*W, C] on a square-ish grid
    (a volume is shown by its tile of slices and projections, :func:`planes`); ``pad`` pixels
    between samples (default 2, volumes 4)."""
    if pad is None:
        pad = 2 if images.dim() <= 4 else 4
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

    Small images (volumes: their panels) are enlarged (nearest neighbour) to ``min_tile``
    pixels so a person can see them. Returns the grid's pixels [H, W, C].
    """
    if images.dim() > 4:  # volumes: tiles of enlarged panels, tiles set further apart
        factor = max(1, -(-min_tile // max(images.shape[-3:])))
        pixels = grid(planes(images, factor), pad=VOLUME_PAD)
    else:
        images = planes(images)  # 1-D samples: bands
        factor = max(1, -(-min_tile // images.shape[-1]))
        if factor > 1:
            images = torch.nn.functional.interpolate(images.float(), scale_factor=factor)
        pixels = grid(images)
    if pixels.shape[2] not in (1, 3):
        pixels = pixels[:, :, :1]
    mode_pixels = pixels[:, :, 0] if pixels.shape[2] == 1 else pixels
    atomic_write(path, lambda tmp: Image.fromarray(mode_pixels).save(tmp, format="PNG"))
    return pixels
