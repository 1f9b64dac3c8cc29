"""Noise level of a photo, for a noise-aware LR son (the official ZSSR adds noise to its sons).

Immerkær, *Fast Noise Variance Estimation*, CVIU 1996: the image is filtered with the difference of two
Laplacians, which cancels smooth structure, and σ = √(π/2) · mean|I ⊛ M| / 6. Edges and texture leak
into that mean, so here it is taken over the quietest part of the image: the ``QUIET_PERCENTILE``-th
percentile of its 8×8 block means (noise is everywhere, structure is not), per colour channel (the noise
the son gets is drawn per channel), averaged, in [0, 1] units. That percentile reads white noise low by a
fixed factor, ``QUIET_BIAS`` (the low tail of the block means), and a clean 8-bit photo reads above 0
(quantisation, texture, aliasing).

Two levels come of one reading (:func:`noise_levels_graph`). The son's noise (``NoiseLevels.son``) is the photo's
own σ: the reading above ``SON_FLOOR`` (a clean photo's son gets none), divided by ``QUIET_BIAS``, so a photo with a
little noise adapts on a son as noisy as itself. The start's noise feature (``NoiseLevels.feature``, the σ̂ of
``conditioning``) is the reading above ``NOISE_FLOOR``, as the shipped weights were meta-trained on it.
Graph code, so the SavedModel estimates in the graph exactly as ``adapt.py``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import tensorflow as tf

__all__ = [
    "NOISE_FLOOR", "SON_FLOOR", "QUIET_BIAS", "QUIET_PERCENTILE", "NoiseLevels", "estimate_noise_sigma",
    "noise_sigma_graph", "noise_levels", "noise_levels_graph",
]  # fmt: skip

NOISE_FLOOR = 1.0 / 255.0  # the start's feature: the reading above this (as the weights were meta-trained)
SON_FLOOR = 0.5 / 255.0  # the son's noise: the reading above this, about what clean smooth photos read
QUIET_BIAS = 0.747  # the reading of white Gaussian noise of σ = 1 (the 5th percentile of its block means)
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


def _above(reading, floor: float):
    """√(max(reading² − floor², 0)): a reading with the clean photo's share taken out."""
    return tf.sqrt(tf.maximum(tf.square(reading) - floor**2, 0.0))


class NoiseLevels(NamedTuple):
    """The two noise levels of one photo, from one reading (module docstring)."""

    feature: tf.Tensor | float  # σ̂ of the conditioned start: the reading above NOISE_FLOOR
    son: tf.Tensor | float  # σ of the LR son's noise: the reading above SON_FLOOR, over QUIET_BIAS


def noise_levels_graph(image) -> NoiseLevels:
    """:class:`NoiseLevels` of ``image`` (float32 tensor H×W×C in [0, 1]). Graph code."""
    reading = noise_sigma_graph(image)
    return NoiseLevels(feature=_above(reading, NOISE_FLOOR), son=_above(reading, SON_FLOOR) / QUIET_BIAS)


def estimate_noise_sigma(image) -> float:
    """:func:`noise_sigma_graph` of an array (H×W×C or H×W, floats in [0, 1])."""
    return float(noise_sigma_graph(tf.constant(np.asarray(image, np.float32))))


def noise_levels(image) -> NoiseLevels:
    """:func:`noise_levels_graph` of an array, as floats."""
    return NoiseLevels(*(float(v) for v in noise_levels_graph(tf.constant(np.asarray(image, np.float32)))))
