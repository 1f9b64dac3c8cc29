"""Noise level of a photo, for a noise-aware LR son (the official ZSSR adds noise to its sons).

Immerkær, *Fast Noise Variance Estimation*, CVIU 1996: the image is filtered with the difference of two
Laplacians, which cancels smooth structure, and σ = √(π/2) · mean|I ⊛ M| / 6. Edges and texture leak
into that mean, so here it is taken over the quietest part of the image: the ``QUIET_PERCENTILE``-th
percentile of its 8×8 block means (noise is everywhere, structure is not), per colour channel (the noise
the son gets is drawn per channel), averaged, in [0, 1] units. It errs low: the son is never made
noisier than the photo. Graph code, so the SavedModel estimates in the graph exactly as ``adapt.py``.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

__all__ = [
    "NOISE_FLOOR", "QUIET_PERCENTILE", "estimate_noise_sigma", "noise_sigma_graph", "son_noise_sigma",
    "son_noise_sigma_graph",
]  # fmt: skip

NOISE_FLOOR = 1.0 / 255.0  # what the estimator reads on clean 8-bit photos (quantisation, texture)
QUIET_PERCENTILE = 5.0  # the estimate's share of the image: its quietest 8x8 blocks
BLOCK = 8
_LAPLACIAN_DIFFERENCE = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)


def _percentile(values, q: float):
    """The ``q``-th percentile of a 1-D tensor, linear interpolation (``numpy.percentile``'s default)."""
    v = tf.sort(values)
    position = q / 100.0 * tf.cast(tf.size(v) - 1, tf.float32)
    low = tf.cast(tf.floor(position), tf.int32)
    high = tf.minimum(low + 1, tf.size(v) - 1)
    return v[low] + (position - tf.cast(low, tf.float32)) * (v[high] - v[low])


def noise_sigma_graph(image):
    """σ of additive white Gaussian noise in ``image`` (float32 tensor H×W×C in [0, 1]): Immerkær's estimator
    over the image's quietest blocks; 0 for an image under 3 pixels on a side. Graph code."""
    x = image[..., None] if image.shape.rank == 2 else image
    channels = tf.shape(x)[-1]
    kernel = tf.tile(tf.constant(_LAPLACIAN_DIFFERENCE)[:, :, None, None], [1, 1, channels, 1])

    def quiet_level():
        r = tf.abs(tf.nn.depthwise_conv2d(x[None], kernel, [1, 1, 1, 1], "VALID"))
        blocks = lambda: tf.reshape(tf.nn.avg_pool2d(r, BLOCK, BLOCK, "VALID"), [-1, channels])  # noqa: E731
        responses = lambda: tf.reshape(r, [-1, channels])  # noqa: E731  too small for blocks: each on its own
        if None not in r.shape[1:3]:  # a static size: one branch (the other could not even be built)
            pooled = blocks() if min(r.shape[1:3]) >= BLOCK else responses()
        else:
            pooled = tf.cond(tf.reduce_min(tf.shape(r)[1:3]) >= BLOCK, blocks, responses)
        per_channel = tf.map_fn(lambda c: _percentile(c, QUIET_PERCENTILE), tf.transpose(pooled))
        return math.sqrt(math.pi / 2.0) * tf.reduce_mean(per_channel) / 6.0

    if None not in x.shape[:2]:  # a static size: one branch (the other could not even be built)
        return quiet_level() if min(x.shape[:2]) >= 3 else tf.constant(0.0)
    return tf.cond(tf.reduce_min(tf.shape(x)[:2]) >= 3, quiet_level, lambda: tf.constant(0.0))


def son_noise_sigma_graph(image):
    """The σ to give an LR son so that it is as noisy as ``image``: the estimate above the clean floor,
    √(max(σ̂² − floor², 0)) (a clean photo's son gets none). Graph code."""
    return tf.sqrt(tf.maximum(tf.square(noise_sigma_graph(image)) - NOISE_FLOOR**2, 0.0))


def estimate_noise_sigma(image) -> float:
    """:func:`noise_sigma_graph` of an array (H×W×C or H×W, floats in [0, 1])."""
    return float(noise_sigma_graph(tf.constant(np.asarray(image, np.float32))))


def son_noise_sigma(image) -> float:
    """:func:`son_noise_sigma_graph` of an array."""
    return float(son_noise_sigma_graph(tf.constant(np.asarray(image, np.float32))))
