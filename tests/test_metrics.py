"""Properties of ``mzsr_tf.metrics``: MATLAB-convention PSNR/SSIM on the Y channel, shave, modcrop."""

import math

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import signal

from mzsr_tf.metrics import gradient_energy, modcrop, psnr_y, rgb_to_y, shave, ssim_y, to_uint8

C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2  # SSIM stabilisers for peak 255 (Wang et al. K1, K2)
SSIM_TOL = 1e-9  # both float64


def _flat(value, h=24, w=24):
    return np.full((h, w, 3), value, np.uint8)


def ssim_float64(a, b):
    """Wang et al. (2004) SSIM in float64: 11x11 Gaussian window, sigma 1.5, 'valid' windows only."""
    t = np.arange(11) - 5.0
    g = np.exp(-(t**2) / (2 * 1.5**2))
    window = np.outer(g, g) / np.outer(g, g).sum()

    def mean(z):
        return signal.correlate2d(z, window, mode="valid")

    mu_a, mu_b = mean(a), mean(b)
    var_a, var_b, cov = mean(a * a) - mu_a**2, mean(b * b) - mu_b**2, mean(a * b) - mu_a * mu_b
    ssim_map = (2 * mu_a * mu_b + C1) * (2 * cov + C2) / ((mu_a**2 + mu_b**2 + C1) * (var_a + var_b + C2))
    return float(ssim_map.mean())


# --- Y channel --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rgb, y",
    [
        ((255, 255, 255), 235),  # 16 + 219
        ((0, 0, 0), 16),
        ((255, 0, 0), 81),  # 16 + 65.481 = 81.481
        ((0, 255, 0), 145),  # 16 + 128.553 = 144.553
        ((0, 0, 255), 41),  # 16 + 24.966 = 40.966
        ((100, 150, 200), 137),  # 16 + (6548.1 + 19282.95 + 4993.2) / 255 = 136.879
        ((12, 200, 7), 121),  # 16 + (785.772 + 25710.6 + 174.762) / 255 = 120.593
    ],
)
def test_rgb_to_y_matches_matlab_rgb2ycbcr(rgb, y):
    """MATLAB ``rgb2ycbcr`` luma: 16 + (65.481 R + 128.553 G + 24.966 B) / 255, rounded."""
    pixel = np.array(rgb, np.uint8).reshape(1, 1, 3)
    assert float(rgb_to_y(pixel)[0, 0]) == y
    assert float(rgb_to_y(pixel.astype(np.float32) / 255.0)[0, 0]) == y  # [0, 1] floats alike


def test_rgb_to_y_of_gray_and_batches():
    gray = np.arange(256, dtype=np.uint8).reshape(16, 16, 1)
    np.testing.assert_array_equal(rgb_to_y(gray).numpy(), gray[..., 0])  # one channel is already luma
    batch = np.stack([_flat(0), _flat(255)])
    y = rgb_to_y(batch).numpy()
    assert y.shape == (2, 24, 24) and y[0].max() == 16 and y[1].min() == 235


def test_to_uint8_rounds_and_clips():
    x = np.array([-0.2, 0.0, 0.4 / 255, 0.6 / 255, 100.3 / 255, 1.0, 1.7], np.float32)
    np.testing.assert_array_equal(to_uint8(x).numpy(), [0, 0, 0, 1, 100, 255, 255])
    assert to_uint8(np.uint8([7])).numpy()[0] == 7


# --- PSNR and SSIM ----------------------------------------------------------------------------


def test_identical_images(astronaut_uint8):
    assert psnr_y(astronaut_uint8, astronaut_uint8) == math.inf
    assert ssim_y(astronaut_uint8, astronaut_uint8) == pytest.approx(1.0, abs=1e-6)


def test_flat_images_with_a_known_y_offset():
    """Gray 100 -> Y = 16 + 100 * 219 / 255 = 101.88 -> 102; gray 110 -> 110.47 -> 110: a Y offset of 8."""
    sr, hr = _flat(110), _flat(100)
    assert psnr_y(sr, hr) == pytest.approx(20 * math.log10(255 / 8), abs=1e-9)  # 30.069 dB
    # Flat windows: SSIM is the luminance term alone, (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1).
    assert ssim_y(sr, hr) == pytest.approx((2 * 110 * 102 + C1) / (110**2 + 102**2 + C1), abs=SSIM_TOL)


@pytest.mark.parametrize("sigma", [2.0, 8.0, 30.0])
def test_ssim_matches_a_float64_reference(astronaut_uint8, chelsea_uint8, sigma):
    """Gaussian window 11x11, sigma 1.5, K = (0.01, 0.03), peak 255, valid windows, on the Y channel."""
    for hr in (astronaut_uint8, chelsea_uint8):
        noise = np.random.default_rng(int(sigma)).normal(0, sigma, hr.shape)
        sr = np.clip(hr + noise, 0, 255).round().astype(np.uint8)
        expected = ssim_float64(rgb_to_y(sr).numpy()[3:-3, 3:-3], rgb_to_y(hr).numpy()[3:-3, 3:-3])
        assert ssim_y(sr, hr, border=3) == pytest.approx(expected, abs=SSIM_TOL)


def test_ssim_is_accurate_on_bright_flat_images():
    sr, hr = _flat(250), _flat(240)
    expected = ssim_float64(rgb_to_y(sr).numpy(), rgb_to_y(hr).numpy())
    assert ssim_y(sr, hr) == pytest.approx(expected, abs=SSIM_TOL)


def test_psnr_of_a_known_error_pattern():
    """Y of gray 0 is 16 and of gray 255 is 235; one pixel in 16 off by 219: MSE = 219^2 / 16."""
    hr = _flat(0, 16, 16)
    sr = hr.copy()
    sr[::4, ::4] = 255
    assert psnr_y(sr, hr) == pytest.approx(10 * math.log10(255**2 / (219**2 / 16)), abs=1e-9)
    assert psnr_y(sr, hr) == pytest.approx(psnr_y(hr, sr), abs=1e-12)  # symmetric


@settings(max_examples=10, deadline=None)
@given(sigma=st.floats(2.0, 40.0), seed=st.integers(0, 1000))
def test_noise_lowers_both_metrics(chelsea_uint8, sigma, seed):
    noise = np.random.default_rng(seed).normal(0, sigma, chelsea_uint8.shape)
    noisy = np.clip(chelsea_uint8 + noise, 0, 255).round().astype(np.uint8)
    worse = np.clip(chelsea_uint8 + 2 * noise, 0, 255).round().astype(np.uint8)
    assert 0 < psnr_y(worse, chelsea_uint8) < psnr_y(noisy, chelsea_uint8) < math.inf
    assert ssim_y(worse, chelsea_uint8) < ssim_y(noisy, chelsea_uint8) < 1.0


def test_float_and_uint8_inputs_agree(astronaut_uint8, chelsea_uint8):
    sr = chelsea_uint8[:60, :60]
    hr = astronaut_uint8[:60, :60]
    assert psnr_y(sr / 255.0, hr) == psnr_y(sr, hr)
    assert ssim_y(sr.astype(np.float32) / 255, hr.astype(np.float64) / 255) == pytest.approx(ssim_y(sr, hr), abs=1e-6)


# --- border shaving ---------------------------------------------------------------------------


@pytest.mark.parametrize("border", [1, 2, 4])
def test_border_pixels_are_ignored(border):
    hr = _flat(90, 32, 32)
    sr = hr.copy()
    sr[:border] = sr[-border:] = 0
    sr[:, :border] = sr[:, -border:] = 255
    assert psnr_y(sr, hr, border=border) == math.inf
    assert psnr_y(sr, hr, border=border - 1) < 20
    inner = hr.copy()
    inner[border, border] = 255  # the first pixel that is kept
    assert psnr_y(inner, hr, border=border) < math.inf
    assert psnr_y(inner, hr, border=border + 1) == math.inf


def test_shave_crops_both_spatial_axes():
    y = np.arange(7 * 9).reshape(7, 9)
    np.testing.assert_array_equal(shave(y, 2), y[2:5, 2:7])
    np.testing.assert_array_equal(shave(y, 0), y)
    assert shave(np.zeros((3, 7, 9)), 1).shape == (3, 5, 7)


def test_ssim_border_is_shaved_before_the_window():
    """SSIM with a border ignores what lies in it: same score whatever the border holds."""
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    sr = np.clip(hr.astype(int) + rng.integers(-20, 21, hr.shape), 0, 255).astype(np.uint8)
    other = sr.copy()
    other[:3] = 0
    assert ssim_y(other, hr, border=3) == pytest.approx(ssim_y(sr, hr, border=3), abs=1e-12)
    assert ssim_y(other, hr, border=2) < ssim_y(sr, hr, border=2)


@pytest.mark.parametrize("metric", [psnr_y, ssim_y])
def test_mismatched_sizes_raise(metric):
    with pytest.raises(ValueError, match="differ in size"):
        metric(_flat(1, 24, 24), _flat(1, 24, 25))


# --- modcrop ----------------------------------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(h=st.integers(1, 30), w=st.integers(1, 30), scale=st.integers(1, 5))
def test_modcrop(h, w, scale):
    img = np.arange(h * w * 3).reshape(h, w, 3)
    out = modcrop(img, scale)
    assert out.shape == (h - h % scale, w - w % scale, 3)
    np.testing.assert_array_equal(out, img[: out.shape[0], : out.shape[1]])
    batched = modcrop(tf.constant(img[None]), scale)
    assert tuple(batched.shape) == (1, *out.shape)


def test_gradient_energy_is_the_mean_squared_neighbour_difference_per_image():
    stripes = np.tile([0.0, 1.0], (6, 3))[..., None]  # vertical stripes: every horizontal step is 1, no vertical one
    flat = np.full((6, 6, 1), 0.3)
    np.testing.assert_allclose(gradient_energy(np.stack([stripes, flat, stripes.transpose(1, 0, 2)])), [0.5, 0, 0.5])
    ramp = np.linspace(0, 1, 11)[None, :, None] * np.ones((4, 1, 3))  # 0.1 a step across, on each channel
    assert float(gradient_energy(ramp)) == pytest.approx(0.01 / 2)
