"""LR sons: ``father_to_son(father) = (father ⊛ k)↓s + n`` (official ``father_to_son``)."""

from __future__ import annotations

import tensorflow as tf

from mzsr_tf.degradation import degrade

__all__ = ["scale_pair", "father_to_son"]


def scale_pair(scale) -> tuple[float, float]:
    """(s_h, s_w) from a number or a pair."""
    return tuple(float(s) for s in scale) if isinstance(scale, (tuple, list)) else (float(scale), float(scale))


def father_to_son(hr_father, kernel, scale, subsample: str = "bicubic", noise_std: float = 0.0, seed=None):
    """The LR son: clip((hr_father ⊛ k)↓s + N(0, noise_std²), 0, 1) (official ``father_to_son``).

    Args:
      hr_father: float NHWC in [0, 1].
      kernel: 2-D blur kernel or None (plain bicubic, ``subsample='bicubic'`` only).
      scale: the SR factor, a number or (s_h, s_w) for 'bicubic'; an integer for 'direct'.
      seed: int32 [2] for the noise (stateless); None draws a fresh one.
    """
    lr_son = degrade(hr_father, kernel, scale, subsample)
    if noise_std:
        shape = tf.shape(lr_son)
        noise = (
            tf.random.normal(shape, stddev=noise_std)
            if seed is None
            else tf.random.stateless_normal(shape, seed, stddev=noise_std)
        )
        lr_son = lr_son + tf.cast(noise, lr_son.dtype)
    return tf.clip_by_value(lr_son, 0.0, 1.0)
