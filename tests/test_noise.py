"""Immerkær's noise estimate: close to the σ of Gaussian noise added to a blurred photo, small on a clean one."""

import numpy as np
import pytest

from mzsr_tf.degradation import degrade
from mzsr_tf.kernels import resolve_degradation
from mzsr_tf.noise import NOISE_FLOOR, estimate_noise_sigma, son_noise_sigma


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


def test_the_son_gets_the_noise_above_the_clean_floor(astronaut64):
    lr = degrade(astronaut64, resolve_degradation("g_d_2.0").kernel, 2).numpy()
    assert son_noise_sigma(np.round(lr * 255) / 255) == 0.0  # a clean 8-bit photo: no noise on its son
    noisy = lr + np.random.default_rng(1).normal(0, 5 / 255, lr.shape)
    expected = np.sqrt(estimate_noise_sigma(noisy) ** 2 - NOISE_FLOOR**2)
    assert son_noise_sigma(noisy) == pytest.approx(expected, rel=1e-5) and 3 / 255 < expected < 5.5 / 255
