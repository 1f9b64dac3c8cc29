"""Immerkær's noise estimate: close to the σ of Gaussian noise added to a blurred photo, small on a clean one."""

import numpy as np
import pytest

from mzsr_tf.degradation import degrade
from mzsr_tf.kernels import resolve_degradation
from mzsr_tf.noise import NOISE_FLOOR, QUIET_BIAS, SON_FLOOR, estimate_noise_sigma, noise_levels


@pytest.mark.parametrize("sigma", [2.55, 5.0, 10.0])
def test_estimate_follows_added_noise(astronaut64, sigma):
    lr = degrade(astronaut64, resolve_degradation("g_d_2.0").kernel, 2).numpy()
    noisy = lr + np.random.default_rng(0).normal(0, sigma / 255, lr.shape)
    assert 0.65 * sigma < estimate_noise_sigma(noisy) * 255 <= 1.05 * sigma  # errs low


def test_clean_images_read_low_and_flat_reads_zero(astronaut64):
    lr = degrade(astronaut64, resolve_degradation("g_d_2.0").kernel, 2).numpy()
    assert estimate_noise_sigma(lr) * 255 < 2.0
    assert estimate_noise_sigma(np.full((16, 16, 3), 0.5)) == 0.0
    assert estimate_noise_sigma(np.zeros((2, 2, 3))) == 0.0  # too small to filter


def test_the_reading_of_white_noise_is_quiet_bias_times_its_sigma():
    rng = np.random.default_rng(2)
    readings = [estimate_noise_sigma(0.5 + rng.normal(0, sigma / 255, (256, 256, 3))) * 255 / sigma for sigma in (1, 5)]
    np.testing.assert_allclose(readings, QUIET_BIAS, rtol=0.03)


def test_the_son_gets_the_photos_own_noise_above_the_clean_floor(astronaut64):
    lr = degrade(astronaut64, resolve_degradation("g_d_2.0").kernel, 2).numpy()
    assert noise_levels(np.round(lr * 255) / 255).son < 0.5 / 255  # a clean 8-bit photo: next to none on its son
    assert noise_levels(np.full((32, 32, 3), 0.5)).son == 0.0
    for sigma in (1.0, 5.0):
        noisy = lr + np.random.default_rng(1).normal(0, sigma / 255, lr.shape)
        expected = np.sqrt(estimate_noise_sigma(noisy) ** 2 - SON_FLOOR**2) / QUIET_BIAS
        assert noise_levels(noisy).son == pytest.approx(expected, rel=1e-5)
        assert 0.7 * sigma < noise_levels(noisy).son * 255 < 1.3 * sigma  # the photo's own σ, not the reading's


def test_the_starts_feature_is_the_reading_above_its_floor(astronaut64):
    lr = degrade(astronaut64, resolve_degradation("g_d_2.0").kernel, 2).numpy()
    noisy = lr + np.random.default_rng(1).normal(0, 5 / 255, lr.shape)
    expected = np.sqrt(estimate_noise_sigma(noisy) ** 2 - NOISE_FLOOR**2)
    assert noise_levels(noisy).feature == pytest.approx(expected, rel=1e-5) and 3 / 255 < expected < 5.5 / 255
    assert noise_levels(lr + np.random.default_rng(1).normal(0, 1 / 255, lr.shape)).feature < 0.5 / 255
