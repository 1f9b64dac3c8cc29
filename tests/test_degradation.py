"""Properties of ``mzsr_tf.degradation``: LR = (HR ⊛ k)↓s + n (MZSR Eq. 1).

Oracles: ``scipy.ndimage.correlate(mode='reflect')`` + keep pixels 0, s, 2s (``matlab_reference.degrade_direct``,
the official ``numeric_kernel``) and ``matlab_reference.imresize`` for bicubic subsampling.
"""

import math

import matlab_reference as ref
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from mzsr_tf.degradation import blur, degrade
from mzsr_tf.kernels import NAMED_DEGRADATIONS, gaussian_kernel, sample_kernel
from mzsr_tf.metrics import to_uint8


def _correlate(img, kernel):
    return np.stack([ndimage.correlate(img[..., c], kernel, mode="reflect") for c in range(img.shape[-1])], -1)


def _delta(size, row=None, col=None):
    kernel = np.zeros((size, size))
    kernel[size // 2 if row is None else row, size // 2 if col is None else col] = 1.0
    return kernel


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(9, 40),
    w=st.integers(9, 40),
    scale=st.sampled_from([2, 3, 4]),
    mode=st.sampled_from(["direct", "bicubic"]),
)
def test_output_shape_is_ceil_of_h_over_s(h, w, scale, mode):
    lr = degrade(np.zeros((h, w, 3)), _delta(5), scale, subsample=mode)
    assert lr.shape == (math.ceil(h / scale), math.ceil(w / scale), 3)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_direct_keeps_pixels_0_s_2s(scale):
    """An index ramp through a delta kernel: the kept pixels are exactly rows/cols 0, s, 2s, ..."""
    h, w = 17, 14
    ramp = np.arange(h * w, dtype=np.float64).reshape(h, w, 1)
    lr = degrade(ramp, _delta(15), scale).numpy()
    np.testing.assert_array_equal(lr, ramp[::scale, ::scale])


def test_direct_is_a_correlation_with_the_kernel_centre_at_size_over_2():
    """A delta one column right of the centre reads the right neighbour (correlation, not convolution)."""
    ramp = np.arange(12 * 12, dtype=np.float64).reshape(12, 12, 1)
    lr = degrade(ramp, _delta(5, col=3), 2).numpy()
    np.testing.assert_array_equal(lr[:, :-1], ramp[::2, 1::2][:, :-1])
    lr = degrade(ramp, _delta(5, row=1), 2).numpy()  # one row up
    np.testing.assert_array_equal(lr[1:], ramp[1::2, ::2][: lr.shape[0] - 1])
    lr = degrade(ramp, _delta(4, row=2, col=2), 2).numpy()  # even size: centre at size // 2
    np.testing.assert_array_equal(lr, ramp[::2, ::2])


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_direct_is_bit_exact_against_numeric_kernel(astronaut64, scale):
    """The official LR files are ``uint8(numeric_kernel(hr))``: reproduce them exactly in float64."""
    kernels = {
        "g_d_ani": NAMED_DEGRADATIONS["g_d_ani"]().kernel,
        "sampled": sample_kernel(tf.constant([3, scale]), scale, size=15, dtype=tf.float64).numpy(),
        "skewed": np.random.default_rng(scale).random((15, 15)),  # not point-symmetric: orientation matters
    }
    for name, kernel in kernels.items():
        kernel = kernel / kernel.sum()
        lr = degrade(astronaut64, kernel, scale).numpy()
        expected = ref.degrade_direct(astronaut64, kernel, scale)
        assert lr.shape == expected.shape, name
        np.testing.assert_allclose(lr, expected, rtol=0, atol=1e-12, err_msg=name)
        np.testing.assert_array_equal(to_uint8(lr).numpy(), to_uint8(expected).numpy(), err_msg=name)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_mode_is_blur_then_matlab_imresize(astronaut64, scale):
    hr = astronaut64[:61, :50]  # sizes that are not multiples of the scale
    kernel = NAMED_DEGRADATIONS["g_b_1.3"]().kernel
    lr = degrade(hr, kernel, scale, subsample="bicubic").numpy()
    np.testing.assert_allclose(lr, ref.imresize(_correlate(hr, kernel), 1 / scale), rtol=0, atol=1e-10)
    plain = degrade(hr, None, scale, subsample="bicubic").numpy()
    np.testing.assert_allclose(plain, ref.imresize(hr, 1 / scale), rtol=0, atol=1e-10)
    assert np.abs(plain - lr).max() > 1e-2  # the kernel was applied


def test_blur_is_reflect_correlation(astronaut64):
    kernel = np.random.default_rng(0).random((7, 6))
    out = blur(astronaut64[:30, :40], kernel).numpy()
    np.testing.assert_allclose(out, _correlate(astronaut64[:30, :40], kernel), rtol=0, atol=1e-10)


def test_batched_input_equals_per_image(astronaut64):
    batch = np.stack([astronaut64[:32, :32], astronaut64[32:64, :32]])
    kernel = gaussian_kernel(2.0, 1.0, 0.4).numpy()
    for mode in ("direct", "bicubic"):
        out = degrade(batch, kernel, 2, subsample=mode).numpy()
        for i in range(2):
            np.testing.assert_allclose(out[i], degrade(batch[i], kernel, 2, subsample=mode).numpy(), atol=1e-12)


# --- noise ------------------------------------------------------------------------------------


def test_noise_with_a_seed_is_reproducible_and_clipped():
    hr = np.concatenate([np.zeros((16, 32, 3)), np.full((16, 32, 3), 0.5), np.ones((16, 32, 3))])
    kernel = _delta(3)
    noisy = degrade(hr, kernel, 2, noise_sigma=0.05, seed=7).numpy()
    np.testing.assert_array_equal(noisy, degrade(hr, kernel, 2, noise_sigma=0.05, seed=7).numpy())
    np.testing.assert_array_equal(noisy, degrade(hr, kernel, 2, noise_sigma=0.05, seed=tf.constant([0, 7])).numpy())
    assert not np.array_equal(noisy, degrade(hr, kernel, 2, noise_sigma=0.05, seed=8).numpy())
    assert noisy.min() == 0.0 and noisy.max() == 1.0  # the black and white bands were clipped
    grey = noisy[10:14] - 0.5  # LR rows 10..13 come from the mid-grey band, far from clipping
    assert abs(grey.std() - 0.05) < 0.01 and abs(grey.mean()) < 0.01


def test_no_noise_means_no_clipping():
    hr = np.full((8, 8, 1), 1.5)
    np.testing.assert_array_equal(degrade(hr, _delta(3), 2).numpy(), 1.5)


# --- errors -----------------------------------------------------------------------------------


def test_bad_subsample_name_raises():
    with pytest.raises(ValueError, match="subsample"):
        degrade(np.zeros((8, 8, 3)), _delta(3), 2, subsample="nearest")


@pytest.mark.parametrize("scale", [1.5, 2.5, 0.5])
def test_direct_with_non_integer_scale_raises(scale):
    with pytest.raises(ValueError, match="integer scale"):
        degrade(np.zeros((8, 8, 3)), _delta(3), scale)


def test_direct_without_kernel_raises():
    with pytest.raises(ValueError, match="kernel"):
        degrade(np.zeros((8, 8, 3)), None, 2)
