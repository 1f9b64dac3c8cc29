"""HR fathers: ZSSR's random augmentation of the test image (official ``random_augment``) and the cubic warp."""

from __future__ import annotations

import collections
import math

import tensorflow as tf

from mzsr_tf.zssr.config import ZSSRConfig

__all__ = [
    "select_father",
    "LEAVE_AS_IS",
    "NO_INTERP",
    "AFFINE",
    "Augmentation",
    "random_augmentation",
    "augmentation_matrix",
    "warp_cubic",
]


def select_father(scale, base_scales):
    """Index of the first (smallest) source whose base scale exceeds ``scale`` (official ``random_augment``)."""
    base_scales = tf.convert_to_tensor(base_scales, tf.float32)
    return tf.argmax(tf.cast(base_scales > tf.cast(scale, tf.float32) - 1e-6, tf.int32), output_type=tf.int32)


LEAVE_AS_IS, NO_INTERP, AFFINE = 0, 1, 2  # augmentation modes


class Augmentation(collections.namedtuple("Augmentation", "mode source scale diff reflect theta shear shift")):
    """One random draw of ``random_augment``: mode, father source index and the transform's parameters."""


def random_augmentation(seed, base_scales, max_scale, config: ZSSRConfig) -> Augmentation:
    """Draw the official ``random_augment`` choices (stateless, graph-friendly).

    mode: leave-as-is (p 0.05), one of the 8 rotations/mirrors (0.45) or affine (0.5). The scale is
    uniform in [min_scale, max_scale] (1 for leave-as-is) and picks the father source; affine adds a
    N(0, σ) x/y scale difference, a rotation ~ U[0, 2π), N(0, σ) shears and a mirror.

    Args:
      seed: int32 [2].
      base_scales: float32 [n], the scale of each father source relative to the input (input = 1).
      max_scale: the largest base scale in use (the last source's).
    """
    seeds = tf.random.experimental.stateless_split(tf.convert_to_tensor(seed, tf.int32), 2)
    u = tf.random.stateless_uniform([6], seeds[0], dtype=tf.float64)
    n = tf.random.stateless_normal([4], seeds[1], dtype=tf.float64)
    p_leave, p_dihedral = config.augment_leave_as_is_probability, config.augment_no_interpolate_probability
    mode = tf.where(u[0] < p_leave, LEAVE_AS_IS, tf.where(u[0] < p_leave + p_dihedral, NO_INTERP, AFFINE))
    min_scale = config.augment_min_scale
    scale = tf.where(
        mode == LEAVE_AS_IS,
        tf.constant(1.0, tf.float64),
        u[1] * (tf.cast(max_scale, tf.float64) - min_scale) + min_scale,
    )
    source = select_father(scale, base_scales)
    affine = tf.cast(mode == AFFINE, tf.float64)
    rotate = config.augment_allow_rotation
    reflect = tf.where((mode != LEAVE_AS_IS) & rotate, tf.sign(n[1]), tf.constant(1.0, tf.float64))
    theta = tf.where(mode == AFFINE, 2 * math.pi * u[4], tf.floor(4 * u[5]) * (math.pi / 2))
    theta = tf.where((mode == LEAVE_AS_IS) | (not rotate), tf.constant(0.0, tf.float64), theta)
    diff = affine * n[0] * config.augment_scale_diff_sigma
    shear = affine * n[2:4] * config.augment_shear_sigma
    return Augmentation(mode, source, scale, diff, reflect, theta, shear, u[2:4])


def augmentation_matrix(aug: Augmentation, source_hw, base_scale, crop: int):
    """The 3x3 source→crop matrix of ``random_augment``: centre, scale/mirror, rotate, shear, crop shift, uncentre.

    Non-affine modes keep every translation integral (rounded), so their warp copies pixels exactly.
    """
    f64 = tf.float64
    h, w = tf.cast(source_hw[0], f64), tf.cast(source_hw[1], f64)
    affine = aug.mode == AFFINE

    def integral(v):
        return tf.where(affine, v, tf.round(v))  # np.round: half to even, like tf.round

    def translate(tx, ty):
        return tf.stack([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])

    to_centre, from_centre = translate(integral(-w / 2), integral(-h / 2)), translate(integral(w / 2), integral(h / 2))
    scale = tf.where(affine, aug.scale / tf.cast(base_scale, f64), tf.constant(1.0, f64))
    zero = tf.constant(0.0, f64)
    scale_mat = tf.stack(
        [[aug.reflect * (scale + aug.diff / 2), zero, zero], [zero, scale - aug.diff / 2, zero], [zero, zero, 1.0]]
    )
    shift = aug.shift * tf.clip_by_value(scale * tf.stack([w, h]) - crop, 0.0, 9999.0)
    shift_mat = translate(integral(-shift[0]), integral(-shift[1]))
    c, s = tf.cos(aug.theta), tf.sin(aug.theta)
    rotation = tf.stack([[c, s, zero], [-s, c, zero], [zero, zero, 1.0]])
    shear = tf.stack([[1.0, aug.shear[0], zero], [aug.shear[1], 1.0, zero], [zero, zero, 1.0]])
    return from_centre @ shift_mat @ shear @ rotation @ scale_mat @ to_centre


def _opencv_cubic(t):
    """OpenCV ``interpolateCubic`` weights (A = -0.75) of the 4 taps at offsets -1, 0, 1, 2 for fraction t."""
    a = -0.75
    c0 = ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a
    c1 = ((a + 2) * t - (a + 3)) * t * t + 1
    c2 = ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1
    return tf.stack([c0, c1, c2, 1 - c0 - c1 - c2], axis=-1)


def warp_cubic(image, source_hw, matrix, crop: int):
    """``clip(cv2.warpPerspective(image, matrix, (crop, crop), INTER_CUBIC), 0, 1)`` in TF ops.

    Same conventions as OpenCV: pixel centres at integer coordinates, source positions rounded to
    1/32 pixel (INTER_TAB_SIZE), the A = -0.75 cubic, and a constant-0 border tap by tap.

    Args:
      image: float32 [H, W, 3] (may be zero-padded beyond ``source_hw``).
      source_hw: int32 [2], the valid size; taps outside it read 0.
      matrix: float64 [3, 3] mapping source (x, y, 1) to crop coordinates.
    """
    inv = tf.linalg.inv(matrix)
    r = tf.range(crop, dtype=tf.float64)
    yy, xx = tf.meshgrid(r, r, indexing="ij")
    src = tf.einsum("ij,hwj->hwi", inv, tf.stack([xx, yy, tf.ones_like(xx)], axis=-1))
    taps = tf.constant([-1, 0, 1, 2], tf.int32)
    idx, weights, valid = [], [], []
    for coord, dim in ((1, 0), (0, 1)):  # rows from y (image axis 0), then columns from x (axis 1)
        q = tf.round(src[..., coord] / src[..., 2] * 32)
        q = tf.clip_by_value(q, -(2.0**25), 2.0**25)  # far outside the image either way
        whole = tf.floor(q / 32)
        weights.append(_opencv_cubic(tf.cast((q - 32 * whole) / 32, tf.float32)))
        pos = tf.cast(whole, tf.int32)[..., None] + taps  # [crop, crop, 4]
        valid.append((pos >= 0) & (pos < tf.cast(source_hw[dim], tf.int32)))
        idx.append(tf.clip_by_value(pos, 0, tf.shape(image)[dim] - 1))
    (rows, cols), (wy, wx), (vy, vx) = idx, weights, valid
    flat = rows[..., :, None] * tf.shape(image)[1] + cols[..., None, :]  # [crop, crop, 4, 4]
    values = tf.gather(tf.reshape(image, [-1, 3]), flat)
    values *= tf.cast(vy[..., :, None] & vx[..., None, :], values.dtype)[..., None]
    out = tf.einsum("hwi,hwj,hwijc->hwc", wy, wx, values)
    return tf.clip_by_value(out, 0.0, 1.0)
