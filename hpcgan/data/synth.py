"""Synthetic datasets behind the built-in ones (data.builtin) and the synth command: small,
download-free, with known properties.

- digits: scikit-learn's 1797 handwritten digits (8x8, values 0..16, shipped with
  scikit-learn), scaled to 0..255 and upsampled, with labels 0..9.
- grf: lognormal Gaussian random fields whose log has power spectrum P(k) ∝ k^slope, a
  stand-in for cosmology maps: a trained generator should reproduce the spectrum.
- grf3d: the same fields as volumes (ndim=3), a stand-in for matter-density boxes.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from hpcgan.errors import UserError
from hpcgan.spectrum import wavenumbers
from hpcgan.symmetry import Symmetry

DIGITS_SOURCE = "sklearn-digits"

# Values per FFT batch in grf: bounds the float64/complex temporaries to tens of MiB.
_GRF_BATCH_VALUES = 1 << 21


def symmetry(kind: str, spatial: tuple[int, ...]) -> Symmetry:
    """The symmetry attribute of a synthetic dataset: the grf fields are periodic, homogeneous
    and isotropic boxes; digits have none."""
    return Symmetry.none(len(spatial)) if kind == "digits" else Symmetry.periodic_box(spatial)


def check_size(size: int) -> None:
    """Sizes are powers of two >= 8 because the generators upsample by factors of two."""
    if size < 8 or size & (size - 1):
        raise UserError(f"size must be a power of two >= 8, got {size}")


def digits(size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Return scikit-learn's digits as uint8 images [1797, 1, size, size] and int64 labels."""
    check_size(size)
    # Imported here: scikit-learn takes about a second to import and only digits needs it.
    from sklearn.datasets import load_digits

    data = load_digits()
    scaled = data.images.astype(np.float32) * np.float32(255.0 / 16.0)  # [N, 8, 8]
    resized = np.stack([_resize(image, size) for image in scaled])  # [N, size, size]
    images = np.clip(np.rint(resized), 0, 255).astype(np.uint8)[:, None]
    return images, data.target.astype(np.int64)


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    """Bicubic resize in float ("F" mode) so the overshoot is clipped once, after rounding."""
    resample = Image.Resampling.BICUBIC
    return np.asarray(Image.fromarray(image).resize((size, size), resample))


def spectrum(k: np.ndarray, slope: float = -3.0) -> np.ndarray:
    """Theoretical power spectrum P(k) = k^slope of the Gaussian field (k in cycles per box).

    P(0) = 0: the fields have zero mean, so their normalisation is set by the other modes.
    """
    k = np.asarray(k, dtype=np.float64)
    power = np.zeros_like(k)
    positive = k > 0
    power[positive] = k[positive] ** slope
    return power


def grf_source(slope: float = -3.0, sigma: float = 0.8, seed: int = 0, ndim: int = 2) -> str:
    """The `source` attribute of a grf dataset: enough to regenerate it (2D as before, volumes
    as "grf3d ...")."""
    name = "grf" if ndim == 2 else f"grf{ndim}d"
    return f"{name} slope={slope:g} sigma={sigma:g} seed={seed}"


def grf(
    n: int,
    size: int = 64,
    seed: int = 0,
    slope: float = -3.0,
    sigma: float = 0.8,
    ndim: int = 2,
) -> np.ndarray:
    """Return n lognormal random fields, float32 [n, 1, *S] with S = (size,) * ndim, mean 1.

    Each field is white noise filtered in Fourier space by sqrt(P(k)), scaled to unit variance,
    then x = exp(sigma * g - sigma^2 / 2). Fields come from one seeded stream in batches, so
    grf(m, seed=s) is the first m fields of grf(n, seed=s) for m < n.
    """
    if n < 1:
        raise UserError(f"n must be >= 1, got {n}")
    check_size(size)
    if sigma <= 0:
        raise UserError(f"sigma must be > 0, got {sigma}")
    rng = np.random.default_rng(seed)
    spatial = (size,) * ndim
    axes = tuple(range(-ndim, 0))
    amplitude = np.sqrt(spectrum(wavenumbers(spatial), slope))  # [*S[:-1], size // 2 + 1]
    fields = np.empty((n, 1, *spatial), dtype=np.float32)
    batch = max(1, _GRF_BATCH_VALUES // size**ndim)
    for start in range(0, n, batch):
        stop = min(n, start + batch)
        noise = rng.standard_normal((stop - start, *spatial))
        filtered = np.fft.rfftn(noise, axes=axes) * amplitude
        gauss = np.fft.irfftn(filtered, s=spatial, axes=axes)  # [B, *S]
        gauss /= gauss.std(axis=axes, keepdims=True)
        fields[start:stop, 0] = np.exp(sigma * gauss - sigma**2 / 2)
    return fields
