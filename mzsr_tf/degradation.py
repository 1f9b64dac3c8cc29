"""The degradation model LR = (HR ⊛ k)↓s + n (MZSR paper, Eq. 1).

``direct``: correlate with a reflect border (``scipy.ndimage.correlate`` default,
i.e. TF's ``SYMMETRIC`` pad, kernel centre at ``size // 2``) and keep pixels
0, s, 2s, ... — the official MZSR/ZSSR ``numeric_kernel`` convention.
``bicubic``: blur the same way (if a kernel is given), then MATLAB bicubic ↓s.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from mzsr_tf.imresize import imresize

__all__ = ["blur", "degrade", "subsample_direct"]


def _as_nhwc(x):
    x = tf.convert_to_tensor(x)
    return (x[None], True) if x.shape.rank == 3 else (x, False)


def _depthwise_kernel(kernel, channels, dtype):
    k = tf.cast(tf.convert_to_tensor(kernel), dtype)
    return tf.tile(k[:, :, None, None], [1, 1, channels, 1])


def _reflect_pad(x, kernel):
    """Pad so that a VALID correlation is scipy's ``correlate(mode='reflect')``."""
    kh, kw = tf.shape(kernel)[0], tf.shape(kernel)[1]
    pads = [[0, 0], [kh // 2, kh - 1 - kh // 2], [kw // 2, kw - 1 - kw // 2], [0, 0]]
    return tf.pad(x, pads, mode="SYMMETRIC")


def blur(x, kernel):
    """Per-channel correlation with ``kernel`` (reflect border), same size; NHWC or HWC."""
    x, squeeze = _as_nhwc(x)
    k = _depthwise_kernel(kernel, x.shape[-1], x.dtype)
    y = tf.nn.depthwise_conv2d(_reflect_pad(x, kernel), k, [1, 1, 1, 1], "VALID")
    return y[0] if squeeze else y


def subsample_direct(x, scale: int):
    """Keep pixels 0, s, 2s, ... in both axes (ZSSR ``numeric_kernel`` for integer s)."""
    return x[..., ::scale, ::scale, :]


def degrade(hr, kernel, scale, subsample: str = "direct", noise_sigma: float = 0.0, seed=None, output_shape=None):
    """LR son/test image from an HR image: (hr ⊛ k)↓s + n, clipped to [0, 1] when noisy.

    Args:
      hr: float NHWC or HWC tensor in [0, 1].
      kernel: 2-D blur kernel (sum 1) or None (plain bicubic downscale, ``subsample='bicubic'`` only).
      scale: integer factor for 'direct'; any factor > 1, or (s_h, s_w), for 'bicubic'.
      subsample: 'direct' or 'bicubic'.
      noise_sigma: std of additive Gaussian noise (0 = none).
      seed: int or shape-[2] tensor for the noise (stateless); None draws a fresh one.
      output_shape: imposes the LR size (H, W), e.g. to match a given LR in back-projection.
    """
    hr, squeeze = _as_nhwc(hr)
    scales = [float(s) for s in scale] if isinstance(scale, (tuple, list)) else [float(scale)] * 2
    if subsample == "direct":
        if kernel is None:
            raise ValueError("direct subsampling needs a kernel")
        s = int(round(scales[0]))
        if any(abs(v - s) > 1e-9 for v in scales) or s < 1:
            raise ValueError(f"direct subsampling needs an integer scale, got {scale}")
        k = _depthwise_kernel(kernel, hr.shape[-1], hr.dtype)
        # The strided VALID correlation computes only the kept pixels.
        lr = tf.nn.depthwise_conv2d(_reflect_pad(hr, kernel), k, [1, s, s, 1], "VALID")
        if output_shape is not None:
            lr = lr[:, : output_shape[0], : output_shape[1]]
    elif subsample == "bicubic":
        lr = imresize(blur(hr, kernel) if kernel is not None else hr, [1.0 / v for v in scales], output_shape)
    else:
        raise ValueError(f"subsample must be 'direct' or 'bicubic', got {subsample!r}")
    if noise_sigma:
        if seed is None:
            noise = tf.random.normal(tf.shape(lr), stddev=noise_sigma, dtype=lr.dtype)
        else:
            seed = tf.convert_to_tensor([0, int(seed)] if np.ndim(seed) == 0 else seed)
            noise = tf.random.stateless_normal(tf.shape(lr), seed, stddev=noise_sigma, dtype=lr.dtype)
        lr = tf.clip_by_value(lr + noise, 0.0, 1.0)
    return lr[0] if squeeze else lr
