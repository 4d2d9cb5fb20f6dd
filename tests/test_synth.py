"""The synthetic generators behind the built-in datasets (hpcgan.data.synth)."""

from __future__ import annotations

import numpy as np
import pytest

from hpcgan.data import synth
from hpcgan.errors import UserError


def _radial_power(fields: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Power spectrum of [N, size, size] fields averaged over angle and fields, k = 1..size/2."""
    size = fields.shape[-1]
    power = np.abs(np.fft.fft2(fields - fields.mean(axis=(1, 2), keepdims=True))) ** 2
    freqs = np.fft.fftfreq(size, d=1.0 / size)
    k_bin = np.rint(np.hypot(freqs[:, None], freqs[None, :])).astype(int)
    k = np.arange(1, size // 2)
    mean_power = np.array([power[:, k_bin == kk].mean() for kk in k])
    return k, mean_power


def test_digits_are_the_sklearn_set_upscaled():
    images, labels = synth.digits()
    assert images.shape == (1797, 1, 32, 32) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and set(labels.tolist()) == set(range(10))
    assert images.min() == 0 and images.max() == 255
    assert synth.digits(size=8)[0].shape == (1797, 1, 8, 8)


def test_grf_mean_is_one_and_seeded():
    fields = synth.grf(64, size=32, seed=5)
    assert fields.shape == (64, 1, 32, 32) and fields.dtype == np.float32
    assert fields.min() > 0
    assert fields.mean() == pytest.approx(1.0, abs=0.03)
    np.testing.assert_array_equal(fields, synth.grf(64, size=32, seed=5))
    np.testing.assert_array_equal(fields[:10], synth.grf(10, size=32, seed=5))
    assert not np.array_equal(fields, synth.grf(64, size=32, seed=6))


@pytest.mark.parametrize("slope", [-3.0, -2.0])
def test_grf_log_has_the_requested_power_spectrum(slope):
    fields = synth.grf(64, size=64, seed=1, slope=slope)
    k, power = _radial_power(np.log(fields[:, 0].astype(np.float64)))
    mid = (k >= 3) & (k <= 16)
    measured = np.polyfit(np.log(k[mid]), np.log(power[mid]), 1)[0]
    assert measured == pytest.approx(slope, abs=0.3)


def test_spectrum_model():
    np.testing.assert_allclose(synth.spectrum(np.array([0.0, 1.0, 2.0])), [0.0, 1.0, 1 / 8])


@pytest.mark.parametrize("size", [4, 48, 0])
def test_sizes_must_be_powers_of_two(size):
    with pytest.raises(UserError, match="power of two >= 8"):
        synth.grf(2, size=size)
