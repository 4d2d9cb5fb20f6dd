"""The one power spectrum (hpcgan.spectrum): analytic cases, the rfftn grid, and that the
spectral loss term measures what the metric measures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hpcgan import spectrum
from hpcgan.data import synth


def _spectrum(x: torch.Tensor) -> np.ndarray:
    n, c, *spatial = x.shape
    return spectrum.spectrum(spectrum.power_sums(x).numpy(), n * c, tuple(spatial))


def test_white_noise_has_a_flat_unit_spectrum():
    x = torch.randn(64, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    p = _spectrum(x)[1:]
    assert abs(p.mean() - 1) < 0.02
    assert np.abs(p - 1).max() < 0.2  # the k=1 ring has only 8 modes per map


def test_spectrum_of_a_field_with_a_known_spectrum():
    """log of the lognormal grf fields is Gaussian with P(k) proportional to k^-3."""
    size = 32
    g = torch.from_numpy(np.log(synth.grf(256, size=size, seed=1, slope=-3.0)))
    measured = _spectrum(g)[1:]
    ring, weight = spectrum.rings((size, size))
    k = np.hypot(np.fft.fftfreq(size, 1 / size)[:, None], np.fft.rfftfreq(size, 1 / size)[None])
    inside = ring < spectrum.num_bins((size, size))
    theory = np.bincount(ring[inside], (synth.spectrum(k) * weight)[inside])
    theory = theory / np.bincount(ring[inside], weight[inside])
    ratio = measured / theory[1:]  # constant up to sampling noise and the field's scale
    assert ratio.std() / ratio.mean() < 0.1
    ks = np.arange(2, size // 2)
    slope = np.polyfit(np.log(ks), np.log(measured[ks - 1]), 1)[0]
    assert slope == pytest.approx(-3.0, abs=0.15)


def test_spectrum_relative_error_of_scaled_data_is_the_power_ratio():
    p = _spectrum(torch.randn(8, 1, 16, 16))
    assert spectrum.relative_error(1.21 * p, p) == pytest.approx(np.full(len(p) - 1, 0.21))


@pytest.mark.parametrize("shape", [(32, 32), (16, 17), (7, 8), (64, 33)])
def test_wavenumbers_are_the_rfft2_grid_exactly(shape):
    h, w = shape
    expected = np.hypot(np.fft.fftfreq(h, d=1 / h)[:, None], np.fft.rfftfreq(w, d=1 / w)[None, :])
    k = spectrum.wavenumbers(shape)
    assert k.dtype == np.float64 and np.array_equal(k, expected)


def test_wavenumbers_and_weights_in_any_rank():
    k = spectrum.wavenumbers((4, 6, 8))
    assert k.shape == (4, 6, 5)
    assert k[1, 2, 3] == pytest.approx(np.sqrt(1 + 4 + 9))
    assert k[3, 0, 0] == 1.0  # fftfreq: index 3 of 4 is -1
    np.testing.assert_array_equal(spectrum.wavenumbers((8,)), np.arange(5.0))
    ring, weight = spectrum.rings((4, 6, 8))
    # The conjugate of every column but k_last = 0 and the Nyquist column is dropped by rfftn.
    assert (weight[..., 0] == 1).all() and (weight[..., -1] == 1).all()
    assert (weight[..., 1:-1] == 2).all()
    assert spectrum.mode_counts((4, 6, 8)).sum() == weight[ring < 3].sum()  # 3 bins
    assert spectrum.rings((4, 7))[1][:, -1].tolist() == [2.0] * 4  # odd: no Nyquist column
    # Weighted, every mode of the full grid is counted once: the whole FFT of 8^3 points.
    assert spectrum.rings((8, 8, 8))[1].sum() == 8**3


@pytest.mark.parametrize("shape", [(2, 1, 32, 32), (3, 2, 16, 16), (4, 1, 8, 8, 8)])
def test_the_loss_spectrum_is_the_metric_spectrum(shape):
    """radial_power (the spectral loss term's) is the metric's P(k), in one batch."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(3))
    n, c, *_ = shape
    metric = _spectrum(x)[1:]
    loss = spectrum.radial_power(x)
    assert loss.dtype == torch.float32
    np.testing.assert_allclose(loss.numpy(), metric, rtol=1e-5)


def test_radial_power_of_white_noise_is_flat():
    x = torch.randn(64, 1, 32, 32)
    p = spectrum.radial_power(x)
    assert p.shape == (16,)
    assert torch.allclose(p, torch.ones(16), rtol=0.15)  # unit-variance white noise: P(k) = 1
