"""The radially averaged power spectrum, for any number of spatial dimensions.

P(k) is |FFT|^2 / (number of grid points) averaged over the Fourier modes whose wavenumber |k|
(cycles per box) rounds to k, for k = 0 .. min(S) // 2; modes beyond that sphere are left out so
every bin is a full shell. With this normalisation white noise of unit variance has P(k) = 1.
``rfftn`` keeps half of the last axis, so the modes whose conjugate it drops count twice.

One definition serves three users, so they agree on what a spectrum is: the metric
(:func:`power_sums` then :func:`spectrum`, float64 sums that add across ranks), the spectral
loss term (:func:`radial_power`, differentiable, on one batch) and the synthetic fields of
hpcgan.data.synth (:func:`wavenumbers`).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from hpcgan import nd


def wavenumbers(spatial: tuple[int, ...]) -> np.ndarray:
    """|k| in cycles per box (float64) on the rfftn grid [*S[:-1], S[-1] // 2 + 1]."""
    *full, last = spatial
    axes = [np.fft.fftfreq(n, d=1.0 / n) for n in full]
    axes.append(np.fft.rfftfreq(last, d=1.0 / last))
    k = np.zeros(())
    for i, a in enumerate(axes):
        shape = [1] * len(axes)
        shape[i] = -1
        k = np.hypot(k, a.reshape(shape))  # 2-D: exactly np.hypot(kx[:, None], ky[None, :])
    return k


def num_bins(spatial: tuple[int, ...]) -> int:
    """Wavenumber bins k = 0 .. min(S) // 2."""
    return min(spatial) // 2 + 1


@lru_cache(maxsize=16)
def rings(spatial: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Bin of each rfftn mode [*S[:-1], S[-1] // 2 + 1] (num_bins for modes outside the sphere)
    and its weight: 1 for the columns rfftn keeps alone (k_last = 0, and Nyquist for an even
    last size), 2 for the others, whose conjugate it drops."""
    bins = num_bins(spatial)
    ring = np.rint(wavenumbers(spatial)).astype(np.int64)
    ring[ring >= bins] = bins
    weight = np.full(ring.shape, 2.0)
    weight[..., 0] = 1.0
    if spatial[-1] % 2 == 0:
        weight[..., -1] = 1.0
    return ring, weight


def mode_counts(spatial: tuple[int, ...]) -> np.ndarray:
    """Modes per bin [num_bins], each counted with its weight (a full shell of |k|)."""
    ring, weight = rings(spatial)
    return np.bincount(ring.ravel(), weights=weight.ravel(), minlength=num_bins(spatial) + 1)[:-1]


@lru_cache(maxsize=16)
def _on_device(
    spatial: tuple[int, ...], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(positions of the modes inside the sphere in the flattened grid, their bins, their
    weights, the weighted mode counts per bin) on ``device``: copied once, not every step."""
    ring, weight = rings(spatial)
    inside = np.flatnonzero(ring.ravel() < num_bins(spatial))
    return tuple(
        torch.from_numpy(a).to(device)
        for a in (inside, ring.ravel()[inside], weight.ravel()[inside], mode_counts(spatial))
    )


def bin_sums(power: torch.Tensor, spatial: tuple[int, ...]) -> torch.Tensor:
    """Weighted sum of a mode power map [*S[:-1], S[-1] // 2 + 1] over the modes of each bin,
    [num_bins] in power's dtype; differentiable."""
    inside, ring, weight, _ = _on_device(spatial, power.device)
    kept = power.flatten()[inside] * weight.to(power.dtype)  # the one weighting of rfftn columns
    return power.new_zeros(num_bins(spatial)).index_add(0, ring, kept)


def power_sums(x: torch.Tensor) -> torch.Tensor:
    """Sum over maps and modes of |FFT|^2 per bin, [num_bins] float64 on x's device.

    ``x`` is [N, C, *S]; every channel of every sample is one map.
    """
    spatial = tuple(x.shape[2:])
    f = torch.fft.rfftn(x.float(), dim=nd.ops(len(spatial)).fft_dims)  # [N, C, *S'] complex
    power = (f.real.square() + f.imag.square()).sum(dim=(0, 1), dtype=torch.float64)
    return bin_sums(power, spatial)


def spectrum(sums: np.ndarray, maps: float, spatial: tuple[int, ...]) -> np.ndarray:
    """P(k) [num_bins] from the per-bin sums of ``maps`` maps of shape ``spatial``."""
    return sums / (mode_counts(spatial) * max(maps, 1.0) * math.prod(spatial))


def radial_power(x: torch.Tensor) -> torch.Tensor:
    """P(k) of a batch [N, C, *S] averaged over its maps, [num_bins - 1] float32 for k = 1 ..
    min(S) // 2 (k = 0, the mean, is left out): the metric's spectrum, differentiable, in the
    precision of a training step."""
    spatial = tuple(x.shape[2:])
    f = torch.fft.rfftn(x.float(), dim=nd.ops(len(spatial)).fft_dims)  # [N, C, *S'] complex
    power = f.abs().square().mean(dim=(0, 1)) / math.prod(spatial)  # [*S']
    counts = _on_device(spatial, x.device)[3].to(power.dtype).clamp_min(1)
    return (bin_sums(power, spatial) / counts)[1:]


def relative_error(fake: np.ndarray, real: np.ndarray) -> np.ndarray:
    """|P_fake(k) / P_real(k) - 1| for k >= 1 (k = 0 is the mean, not structure)."""
    return np.abs(fake[1:] / np.maximum(real[1:], 1e-300) - 1.0)
