"""MATLAB-compatible bicubic ``imresize`` as TensorFlow ops.

Follows MATLAB ``imresize(..., 'bicubic')`` exactly as the ZSSR/MZSR ports do:
Keys cubic kernel with a = -0.5, antialiasing (kernel stretched by 1/s) when
shrinking, symmetric (edge-repeating) border and the coordinate map
``u = x / s + 0.5 * (1 - 1 / s)`` (1-based).  When both a scale and an output
shape are given, the scale sets the weights and the shape the length, as in
``imresize(lr, 2, output_shape=gt.shape)``.

``upscale(..., shift=δ)`` moves the LR samples δ HR pixels (row, col) from MATLAB's placement: the phase for
an LR whose kernel's mean sits δ off its origin (``kernels.kernel_offset``), so that the network sees the
alignment it was trained on (centred kernels) whatever the kernel's centre; δ may be a tensor.

Integer factors use fixed separable convolutions (``PAD`` + depthwise conv +
interleave), which are cheap, shape-agnostic and TFLite-builtin; any other
factor uses a per-axis weight matrix built in-graph from the (possibly dynamic)
lengths.  Inputs are float NHWC (or HWC) images in [0, 1].
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import tensorflow as tf

__all__ = ["cubic", "imresize", "upscale", "downscale", "output_length", "shift_reach"]

_SUPPORT = 4.0  # Keys cubic support width (taps at |x| < 2)


def cubic(x):
    """Keys (1981) cubic convolution kernel, a = -0.5 (MATLAB ``cubic``)."""
    absx = abs(x) if isinstance(x, np.ndarray) else tf.abs(x)
    absx2, absx3 = absx * absx, absx * absx * absx
    near = 1.5 * absx3 - 2.5 * absx2 + 1.0
    far = -0.5 * absx3 + 2.5 * absx2 - 4.0 * absx + 2.0
    if isinstance(absx, np.ndarray):
        return near * (absx <= 1) + far * ((absx > 1) & (absx <= 2))
    one, two = tf.cast(absx <= 1, absx.dtype), tf.cast((absx > 1) & (absx <= 2), absx.dtype)
    return near * one + far * two


def output_length(in_length, scale: float):
    """MATLAB's output length ``ceil(in * scale)``."""
    return int(math.ceil(in_length * scale - 1e-9))


def _integer(value: float) -> int | None:
    rounded = round(value)
    return int(rounded) if rounded >= 1 and abs(value - rounded) < 1e-9 else None


@cache
def _phase_taps(scale: float) -> tuple[np.ndarray, int, int]:
    """Weights of an integer up- (scale = s) or down- (scale = 1/s) resize.

    Returns ``(taps, left, right)``: for up-scaling ``taps`` is [K, s] (one
    column per output phase, K taps starting ``left`` pixels before the source
    pixel); for down-scaling it is [K, 1] starting ``left`` pixels before pixel
    ``s * o``.  ``right`` is the reach past the source pixel.  Rows are
    normalised like MATLAB's contributions (a no-op up to rounding, since the
    Keys kernel is a partition of unity).
    """
    if scale >= 1:
        s = _integer(scale)
        offsets = np.arange(-2, 3)
        centres = (np.arange(s) + 0.5) / s - 0.5  # u - i for each phase
        w = cubic(centres[None, :] - offsets[:, None])
    else:
        s = _integer(1.0 / scale)
        centre = (s - 1) / 2.0  # u - s*o in 0-based coordinates
        offsets = np.arange(math.floor(centre - 2 * s) + 1, math.ceil(centre + 2 * s))
        w = cubic((centre - offsets[:, None]) / s) / s
    nonzero = np.flatnonzero(np.any(w != 0, axis=1))  # trim zero taps at the ends only
    offsets, w = offsets[nonzero[0] : nonzero[-1] + 1], w[nonzero[0] : nonzero[-1] + 1]
    w = w / w.sum(axis=0, keepdims=True)
    return w, int(-offsets[0]), int(offsets[-1])


def shift_reach(scale: int) -> int:
    """LR taps either side of an up-sampling by ``scale`` whose samples move by up to s − 1 HR pixels (the
    offsets a kernel and its mirror images take, ``ensemble.dihedral_shift``): 2 at ×2, 3 at ×4."""
    return math.ceil(3.5 - 1.5 / scale) - 1


def _shifted_taps(scale: int, shift, dtype):
    """[2·reach + 1, s] weights of up-sampling by ``scale`` with the samples moved ``shift`` HR pixels (clipped
    to ±(s − 1); a tensor may be dynamic): ``_phase_taps`` at u − shift / s, zero taps kept."""
    shift = tf.clip_by_value(tf.cast(shift, dtype), 1.0 - scale, scale - 1.0)
    reach = shift_reach(scale)
    offsets = tf.range(-reach, reach + 1, dtype=dtype)
    centres = (tf.range(scale, dtype=dtype) + 0.5) / scale - 0.5 - shift / scale
    w = cubic(centres[None, :] - offsets[:, None])
    return w / tf.reduce_sum(w, axis=0, keepdims=True)


def _move_axis_last_spatial(x, axis):
    """Swap H and W so that the resized axis is axis 1 (NHWC)."""
    return x if axis == 1 else tf.transpose(x, [0, 2, 1, 3])


def _conv_resize(x, scale: float, out_length, shift=None):
    """Resize axis 1 of NHWC ``x`` by an integer factor with a fixed conv (up-sampling: its samples moved
    ``shift`` HR pixels, then the taps are computed in the graph)."""
    channels = x.shape[-1]
    if shift is None:
        taps, left, right = _phase_taps(scale)
        f = np.tile(taps[:, None, None, :], (1, 1, channels, 1)).astype(x.dtype.as_numpy_dtype)
    else:
        taps, left = _shifted_taps(_integer(scale), shift, x.dtype), shift_reach(_integer(scale))
        right = left
        f = tf.tile(taps[:, None, None, :], [1, 1, channels, 1])
    if scale >= 1:
        s = taps.shape[1]
        xp = tf.pad(x, [[0, 0], [left, right], [0, 0], [0, 0]], mode="SYMMETRIC")
        y = tf.nn.depthwise_conv2d(xp, f, [1, 1, 1, 1], "VALID")  # [N, H, W, C*s]
        n, h, w = tf.shape(y)[0], tf.shape(y)[1], tf.shape(y)[2]
        y = tf.reshape(y, [n, h, w, channels, s])
        y = tf.transpose(y, [0, 1, 4, 2, 3])
        return tf.reshape(y, [n, h * s, w, channels])[:, :out_length]
    s = _integer(1.0 / scale)
    # Output o reads source pixels s*o - left .. s*o + right; pad the tail to a multiple of s.
    in_length = tf.shape(x)[1]
    extra = tf.math.floormod(-in_length, s) + right - s + 1
    xp = tf.pad(x, [[0, 0], [left, extra], [0, 0], [0, 0]], mode="SYMMETRIC")
    # depthwise_conv2d needs equal strides: filter densely, then keep every s-th row.
    return tf.nn.depthwise_conv2d(xp, f, [1, 1, 1, 1], "VALID")[:, ::s][:, :out_length]


def _conv_applies(in_length, out_length, scale: float) -> bool:
    """Whether the integer-factor conv path reproduces MATLAB for these lengths."""
    up, down = _integer(scale), _integer(1.0 / scale)
    if up is None and down is None:
        return False
    if not (isinstance(in_length, int) and isinstance(out_length, int)):
        return True  # dynamic shapes: images are assumed larger than the border
    if up is not None:
        return up > 1 and in_length >= 2 and out_length <= in_length * up
    _, left, right = _phase_taps(scale)
    return in_length >= max(left, right + down) and out_length <= output_length(in_length, scale)


def _weight_matrix(in_length, out_length, scale: float, dtype):
    """MATLAB ``contributions`` as a dense [out, in] matrix (mirror folded in)."""
    f64 = tf.float64
    antialias = scale < 1
    width = _SUPPORT / scale if antialias else _SUPPORT
    taps = int(math.ceil(width)) + 2
    u = tf.range(1, tf.cast(out_length, f64) + 1, dtype=f64) / scale + 0.5 * (1 - 1 / scale)
    left = tf.floor(u - width / 2)
    fov = left[:, None] + tf.range(taps, dtype=f64)[None, :] - 1  # 0-based source index
    dist = u[:, None] - fov - 1
    w = scale * cubic(scale * dist) if antialias else cubic(dist)
    total = tf.reduce_sum(w, axis=1, keepdims=True)
    w = w / tf.where(total == 0, tf.ones_like(total), total)
    n = tf.cast(in_length, tf.int64)
    idx = tf.math.floormod(tf.cast(fov, tf.int64), 2 * n)
    idx = tf.where(idx < n, idx, 2 * n - 1 - idx)
    matrix = tf.reduce_sum(tf.one_hot(idx, tf.cast(n, tf.int32), dtype=f64) * w[..., None], axis=1)
    return tf.cast(matrix, dtype)


def _resize_axis(x, axis: int, scale: float, out_length, shift=None):
    """Resize spatial ``axis`` (1 = H, 2 = W) of NHWC ``x`` (``shift``: see :func:`upscale`)."""
    x = _move_axis_last_spatial(x, axis)
    in_length = x.shape[1] if x.shape[1] is not None else tf.shape(x)[1]
    if shift is not None:
        if not (_integer(scale) or 0) > 1:
            raise ValueError(f"a shifted resize needs an integer up-scaling factor, got {scale}")
        y = _conv_resize(x, scale, out_length, shift)
    elif _integer(scale) == 1 and isinstance(in_length, int) and out_length == in_length:
        y = x
    elif _integer(scale) != 1 and _conv_applies(in_length, out_length, scale):
        y = _conv_resize(x, scale, out_length)
    else:
        m = _weight_matrix(in_length, out_length, scale, x.dtype)
        y = tf.einsum("oh,nhwc->nowc", m, x)
    return _move_axis_last_spatial(y, axis)


def imresize(x, scale=None, output_shape=None, shift=None):
    """MATLAB ``imresize(x, scale, output_shape, 'bicubic')`` on NHWC or HWC floats.

    Args:
      x: float tensor [N, H, W, C] or [H, W, C].
      scale: a number or (scale_h, scale_w); derived from ``output_shape`` when None.
      output_shape: (H_out, W_out) (ints or scalar tensors); ``ceil(in * scale)`` when None.
      shift: None (MATLAB), or (row, col) HR pixels to move the samples of an integer up-scaling (:func:`upscale`).
    Returns:
      The resized tensor, same rank and dtype (no clipping or rounding, like MATLAB on doubles).
    """
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        raise TypeError(f"imresize expects a float image, got {x.dtype.name}")
    squeeze = x.shape.rank == 3
    if squeeze:
        x = x[None]
    size = [x.shape[i] if x.shape[i] is not None else tf.shape(x)[i] for i in (1, 2)]
    if scale is None and output_shape is None:
        raise ValueError("imresize needs a scale or an output_shape")
    if scale is None:
        if not all(isinstance(v, int) for v in list(size) + list(output_shape)):
            raise ValueError("imresize needs a scale when shapes are dynamic")
        scales = [output_shape[i] / size[i] for i in range(2)]
    else:
        scales = list(scale) if isinstance(scale, (tuple, list)) else [scale, scale]
        scales = [float(s) for s in scales]
    if any(s <= 0 for s in scales):
        raise ValueError(f"imresize scale must be positive, got {scales}")
    if output_shape is None:
        output_shape = [
            output_length(size[i], scales[i])
            if isinstance(size[i], int)
            else tf.cast(tf.math.ceil(tf.cast(size[i], tf.float64) * scales[i] - 1e-9), tf.int32)
            for i in range(2)
        ]
    # MATLAB/ZSSR order: the axis with the smaller scale first.
    for axis in sorted((1, 2), key=lambda a: scales[a - 1]):
        x = _resize_axis(x, axis, scales[axis - 1], output_shape[axis - 1], None if shift is None else shift[axis - 1])
    return x[0] if squeeze else x


def upscale(x, scale, output_shape=None, shift=None):
    """Bicubic up-sampling by ``scale`` (the network's input, paper Sec. 3).

    ``shift``: None, MATLAB's placement (LR pixel i at HR (s − 1)/2 + s·i); or (row, col), numbers or a
    tensor [2], the HR pixels to move the LR samples by, e.g. the kernel's offset (``kernels.kernel_offset``).
    """
    return imresize(x, scale, output_shape, shift)


def downscale(x, scale, output_shape=None):
    """Antialiased bicubic down-sampling by ``1 / scale``."""
    return imresize(x, 1.0 / scale, output_shape)
