"""Properties of ``mzsr_tf.imresize``: MATLAB ``imresize(..., 'bicubic')`` as TF ops.

The float64 NumPy port of MATLAB's algorithm in ``tests/matlab_reference.py`` is the oracle.
"""

import math

import matlab_reference as ref
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from mzsr_tf.imresize import downscale, imresize, output_length, upscale

INTEGER_FACTORS = [2.0, 3.0, 4.0, 1 / 2, 1 / 3, 1 / 4]  # up and down by the paper's x2, x3, x4
scales = st.one_of(st.sampled_from(INTEGER_FACTORS), st.floats(0.3, 3.0))
sizes = st.integers(4, 40)
HALF_UINT8_STEP = 0.5 / 255.0  # a float error below this vanishes when the image is saved as 8-bit


def _random_image(seed, h, w, channels=3):
    return np.random.default_rng(seed).random((h, w, channels))


# --- invariants -------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(value=st.floats(0.0, 1.0), h=sizes, w=sizes, scale=scales)
def test_constant_image_stays_constant(value, h, w, scale):
    """The Keys kernel is a partition of unity and MATLAB normalises each row, so flat stays flat."""
    out = imresize(np.full((h, w, 3), value), scale).numpy()
    np.testing.assert_allclose(out, value, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scale_one_is_identity(dtype):
    x = _random_image(0, 13, 17).astype(dtype)
    out = imresize(x, 1.0).numpy()
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, x)


@settings(max_examples=30, deadline=None)
@given(h=sizes, w=sizes, scale=scales)
def test_output_length_is_matlab_ceil(h, w, scale):
    """MATLAB: output size = ceil(input size * scale)."""
    out = imresize(np.zeros((h, w, 1)), scale)
    assert out.shape == (math.ceil(h * scale - 1e-9), math.ceil(w * scale - 1e-9), 1)
    assert output_length(h, scale) == out.shape[0]


def test_output_length_of_exact_products_is_not_rounded_up():
    """3 * (1/3) is 1.0000000000000002 in floats; MATLAB still gives 1 row, not 2."""
    assert output_length(3, 1 / 3) == 1
    assert output_length(30, 1 / 3) == 10
    assert output_length(7, 0.5) == 4


def test_output_shape_alone_sets_scale_and_size():
    x = _random_image(1, 10, 12)
    out = imresize(x, output_shape=(25, 18)).numpy()
    np.testing.assert_allclose(out, ref.imresize(x, output_shape=(25, 18)), atol=1e-10)
    assert out.shape == (25, 18, 3)


def test_output_shape_wins_over_scale_for_the_length():
    """``imresize(lr, 2, output_shape=gt.shape)``: the scale sets the weights, the shape the length."""
    x = _random_image(2, 10, 11)
    out = imresize(x, 2, output_shape=(19, 23)).numpy()
    assert out.shape == (19, 23, 3)
    np.testing.assert_allclose(out, ref.imresize(x, 2, output_shape=(19, 23)), atol=1e-10)
    # The weights are those of scale 2, not of 19/10: the common rows agree with the plain x2 result.
    np.testing.assert_allclose(out[:19, :22], imresize(x, 2).numpy()[:19, :22], atol=1e-10)


def test_up_then_down_round_trip_on_a_smooth_image(chelsea_uint8):
    """x s then x 1/s is a low-pass of the image; on a smooth image it stays below half an 8-bit step.

    Measured on this image (Gaussian-smoothed, sigma 2): max abs error 1.3e-3 for s = 2, 3, 4,
    mean 1.6e-4 (the mirrored border dominates). Unsmoothed pictures exceed the bound (max ~1.6e-2).
    """
    smooth = ndimage.gaussian_filter(chelsea_uint8.astype(np.float64) / 255.0, (2, 2, 0))
    for s in (2, 3, 4):
        back = downscale(upscale(smooth, s), s).numpy()
        assert back.shape == smooth.shape
        assert np.abs(back - smooth).max() < HALF_UINT8_STEP
        assert np.abs(back - smooth).mean() < 3e-4


# --- agreement with MATLAB --------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(h=sizes, w=sizes, scale=scales, seed=st.integers(0, 2**16), dtype=st.sampled_from([np.float64, np.float32]))
def test_matches_matlab_reference(h, w, scale, seed, dtype):
    x = _random_image(seed, h, w).astype(dtype)
    out = imresize(x, scale).numpy()
    expected = ref.imresize(x, scale)
    assert out.dtype == dtype
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)


@settings(max_examples=20, deadline=None)
@given(h=sizes, w=sizes, scale_h=scales, scale_w=scales, seed=st.integers(0, 2**16))
def test_matches_matlab_reference_with_a_scale_per_axis(h, w, scale_h, scale_w, seed):
    """Anisotropic scales: MATLAB resizes the axis with the smaller scale first."""
    x = _random_image(seed, h, w, channels=2)
    out = imresize(x, (scale_h, scale_w)).numpy()
    expected = ref.imresize(x, (scale_h, scale_w))
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-10)


@pytest.fixture(scope="module")
def dynamic_resizers():
    """One ``tf.function`` per integer factor, traced once with unknown H and W."""
    spec = [tf.TensorSpec([None, None, 3], tf.float32)]
    return {s: tf.function(lambda x, s=s: imresize(x, s), input_signature=spec) for s in INTEGER_FACTORS}


@settings(max_examples=30, deadline=None)
@given(h=st.integers(8, 40), w=st.integers(8, 40), scale=st.sampled_from(INTEGER_FACTORS), seed=st.integers(0, 99))
def test_matches_matlab_reference_with_dynamic_shapes(dynamic_resizers, h, w, scale, seed):
    """The shape-agnostic conv path (what the exported graph runs) for integer factors.

    Sizes start at 8: with unknown shapes the conv path assumes the image is larger than its
    mirrored border (up to 9 px for x1/4), see ``_conv_applies``.
    """
    x = _random_image(seed, h, w).astype(np.float32)
    out = dynamic_resizers[scale](tf.constant(x)).numpy()
    expected = ref.imresize(x, scale)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)


def test_dynamic_output_shape_tensor():
    """``upscale(lr, s, output_shape=tf.shape(hr)[:2])`` inside a graph with unknown sizes."""

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.float32), tf.TensorSpec([2], tf.int32)])
    def up(x, shape):
        return upscale(x, 3, output_shape=(shape[0], shape[1]))

    x = _random_image(3, 11, 9).astype(np.float32)
    out = up(tf.constant(x), tf.constant([31, 26])).numpy()
    np.testing.assert_allclose(out, ref.imresize(x, 3, output_shape=(31, 26)), rtol=0, atol=1e-5)


@pytest.mark.parametrize("scale", [3.0, 1 / 2, 0.7, 2.5])
def test_batch_equals_per_image(scale):
    batch = np.stack([_random_image(seed, 12, 15) for seed in range(3)])
    out = imresize(batch, scale).numpy()
    assert out.ndim == 4 and out.shape[0] == 3
    for i in range(3):
        np.testing.assert_allclose(out[i], imresize(batch[i], scale).numpy(), rtol=0, atol=1e-12)


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.uint16])
def test_non_float_input_raises(dtype):
    with pytest.raises(TypeError, match="float"):
        imresize(np.zeros((8, 8, 3), dtype), 2)


@pytest.mark.parametrize("scale", [0, -2, 0.0, (2, 0), (-1, 2)])
def test_non_positive_scale_raises(scale):
    with pytest.raises(ValueError, match="positive"):
        imresize(np.zeros((8, 8, 3)), scale)


def test_neither_scale_nor_shape_raises():
    with pytest.raises(ValueError):
        imresize(np.zeros((8, 8, 3)))


# --- shifted up-sampling (the kernel's phase) -----------------------------------------------------


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_a_zero_shift_is_matlabs_upsampling(scale):
    x = _random_image(4, 11, 9).astype(np.float32)
    np.testing.assert_allclose(upscale(x, scale, shift=(0.0, 0.0)), upscale(x, scale), rtol=0, atol=1e-6)  # taps in f32


def test_a_block_centred_shift_puts_each_lr_pixel_on_an_hr_pixel():
    # shift (s - 1)/2 moves MATLAB's placement (s - 1)/2 + s·i to s·i + s - 1: every s-th output is an LR pixel
    x = _random_image(5, 10, 13).astype(np.float32)
    for s in (2, 4):
        out = upscale(x, s, shift=((s - 1) / 2, (s - 1) / 2)).numpy()
        np.testing.assert_allclose(out[s - 1 :: s, s - 1 :: s], x, rtol=0, atol=1e-6)
        assert not np.allclose(upscale(x, s).numpy()[s - 1 :: s, s - 1 :: s], x, atol=1e-3)


def test_a_shift_moves_the_samples_and_may_be_a_tensor():
    # a smooth ramp shows the move: the up-sampled ramp goes down by shift / s LR steps per axis
    ramp = np.add.outer(np.arange(12.0), 2 * np.arange(12.0))[..., None].astype(np.float32) / 40
    moved = upscale(ramp, 2, shift=(0.5, 0.25)).numpy() - upscale(ramp, 2).numpy()
    np.testing.assert_allclose(moved[6:-6, 6:-6], -(0.5 * 1 + 0.25 * 2) / 2 / 40, atol=1e-6)
    graph = tf.function(lambda x, d: upscale(x, 2, shift=d), input_signature=[tf.TensorSpec([None, None, 1]),
                                                                             tf.TensorSpec([2])])  # fmt: skip
    np.testing.assert_allclose(graph(ramp, tf.constant([0.5, 0.25])), upscale(ramp, 2, shift=(0.5, 0.25)), atol=1e-6)
    with pytest.raises(ValueError, match="integer up-scaling"):
        imresize(ramp, 1.5, shift=(0.5, 0.5))
