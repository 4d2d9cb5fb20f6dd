"""Radially averaged power spectrum of 2-D fields, the CosmoGAN test of spatial structure.

P(k) is |FFT|^2 / (H W) averaged over the Fourier modes whose wavenumber |k| (cycles per box)
rounds to k, for k = 0 .. min(H, W) // 2; modes beyond that circle are left out so every bin
is a full ring. With this normalisation white noise of unit variance has P(k) = 1.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch


def num_bins(height: int, width: int) -> int:
    """Wavenumber bins k = 0 .. min(H, W) // 2."""
    return min(height, width) // 2 + 1


@lru_cache(maxsize=8)
def _rings(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Bin of each rfft2 mode [H, W // 2 + 1] (num_bins for modes outside the circle) and
    its weight: rfft2 keeps half the plane, so the columns whose conjugate it drops count twice."""
    kx = np.fft.fftfreq(height, d=1.0 / height)[:, None]
    ky = np.fft.rfftfreq(width, d=1.0 / width)[None, :]
    ring = np.rint(np.hypot(kx, ky)).astype(np.int64)
    ring[ring >= num_bins(height, width)] = num_bins(height, width)
    weight = np.full(ring.shape, 2.0)
    weight[:, 0] = 1.0
    if width % 2 == 0:
        weight[:, -1] = 1.0
    return ring, weight


def power_sums(x: torch.Tensor) -> torch.Tensor:
    """Sum over maps and modes of |FFT|^2 per bin, [num_bins] float64 on x's device.

    ``x`` is [N, C, H, W]; every channel of every sample is one map.
    """
    height, width = x.shape[-2:]
    f = torch.fft.rfft2(x.float())  # [N, C, H, W // 2 + 1] complex
    power = (f.real.square() + f.imag.square()).sum(dim=(0, 1), dtype=torch.float64)
    ring, weight = _rings(height, width)
    ring_t = torch.from_numpy(ring).to(x.device).flatten()
    weighted = power.flatten() * torch.from_numpy(weight).to(x.device).flatten()
    return torch.bincount(ring_t, weights=weighted, minlength=num_bins(height, width) + 1)[:-1]


def spectrum(sums: np.ndarray, maps: float, height: int, width: int) -> np.ndarray:
    """P(k) [num_bins] from the per-bin sums of ``maps`` maps of H x W."""
    ring, weight = _rings(height, width)
    modes = np.bincount(ring.ravel(), weights=weight.ravel(), minlength=len(sums) + 1)[:-1]
    return sums / (modes * max(maps, 1.0) * height * width)


def relative_error(fake: np.ndarray, real: np.ndarray) -> np.ndarray:
    """|P_fake(k) / P_real(k) - 1| for k >= 1 (k = 0 is the mean, not structure)."""
    return np.abs(fake[1:] / np.maximum(real[1:], 1e-300) - 1.0)
