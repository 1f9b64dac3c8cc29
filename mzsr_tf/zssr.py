"""ZSSR: "Zero-Shot" Super-Resolution using Deep Internal Learning (Shocher et al., CVPR 2018).

An image-specific network is trained from scratch (or from given weights) on pairs made from the
test image alone: an **HR father** is a 128x128 augmented crop of the image (or of a downscaled
version of it, or, in gradual mode, of an earlier stage's output), its **LR son** is
``father_to_son(father) = (father ⊛ k)↓s + n``, and the net learns ``net(bicubic↑(son)) ≈ father``
with Adam and an L1 loss. The learning rate drops by 10 when the reconstruction error stops
falling (``lr_should_drop``); training stops below 9e-6 or at 3000 iterations. The result is the
8-way geometric median self-ensemble with back-projection of every member and of the median.

Follows the official code (``assafshocher/ZSSR``: ``ZSSR.py``, ``configs.py``, ``utils.py``), including
its quirks: fathers are picked uniformly in scale, crops rotate about (w/2, h/2) rather than the pixel
centre, small images are zero-padded, and the slope test uses 2018 NumPy's ``polyfit`` covariance.
The augmentation warp reproduces ``cv2.warpPerspective(INTER_CUBIC)`` (A = -0.75, 1/32-pixel
positions, constant-0 border) with TF gathers; it matched OpenCV 4.14 to 2.4e-7 on random draws
(OpenCV is not a dependency). Differences: our network has biases (initialised to 0); the son is
our ``degrade`` (reflect border, pixels 0, s, 2s, ... kept) without ZSSR's ``kernel_shift``; random
numbers come from TF's stateless generators, so runs are reproducible but not NumPy-identical;
the weights start at variance 1/fan-in (MZSR's initialiser) instead of ZSSR's 0.1/fan-in — from 0.1, the
first gradients (~1e-8) sit below Adam's ε and on a bicubic-downscaled image the net did not move before the
first learning-rate drops (Set5 x2 bicubic: 34.91 dB, all of it from back-projection and the ensemble;
``init_variance=0.1`` restores it); ``base_change_sfs`` is not implemented (no official preset uses it);
in gradual mode only stages at the target scale use the given kernel, earlier ones plain bicubic (the
official code takes one kernel file per stage).

Son making, augmentation and the Adam update of a chunk of iterations (up to the next test or
learning-rate check, at most 50) run in one ``tf.function`` (``tf.while_loop``) with dynamic image
sizes, traced once per (stage scale, subsampling, augmentation settings).

Example:
  >>> result = train_zssr(lr_image, resolve_degradation("bicubic"), 2, PRESETS["x2_ideal"])
  >>> result.sr.shape, result.log[-1].iterations, result.log[-1].learning_rate_drops
"""

from __future__ import annotations

import collections
import dataclasses
import math
import time
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from mzsr_tf.degradation import degrade
from mzsr_tf.ensemble import back_projection, geometric_self_ensemble
from mzsr_tf.errors import InputError
from mzsr_tf.imresize import imresize, output_length
from mzsr_tf.kernels import Degradation
from mzsr_tf.model import forward, l1_loss_and_grads, param_shapes
from mzsr_tf.zero_shot import super_resolve_tiled

__all__ = [
    "ZSSRConfig",
    "PRESETS",
    "TRACES",
    "init_zssr_params",
    "lr_should_drop",
    "select_father",
    "Augmentation",
    "random_augmentation",
    "augmentation_matrix",
    "warp_cubic",
    "father_to_son",
    "back_projection",
    "final_test",
    "StageLog",
    "ZSSRResult",
    "train_zssr",
]

TRACES: collections.Counter = collections.Counter()  # graph traces per function (tests count them)

# === Config ===


@dataclass(frozen=True)
class ZSSRConfig:
    """ZSSR settings; defaults are the official ``configs.Config`` (X2 one jump, ideal case)."""

    scale_factors: tuple[tuple[float, float], ...] | None = None  # gradual (h, w) stages; None = one jump
    max_iters: int = 3000  # stop after this many iterations per stage
    min_iters: int = 256  # iterations between learning-rate changes
    min_learning_rate: float = 9e-6  # stop once the rate falls below this
    learning_rate: float = 1e-3  # Adam, batch 1
    learning_rate_change_ratio: float = 1.5  # drop when -ratio * slope < std of the slope
    learning_rate_policy_check_every: int = 60  # test the policy when (iter + 1) % this == 0
    learning_rate_slope_range: int = 256  # fit the line to the last int(range / run_test_every) points
    run_test_every: int = 50  # reconstruction error of net(son(input)) vs input every this many iterations
    init_variance: float = 1.0  # weights ~ N(0, init_variance / (3·3·cin)), biases 0 (official 0.1: module doc)
    crop_size: int = 128  # HR fathers are crop_size x crop_size (smaller images are zero-padded)
    noise_std: float = 0.0  # Gaussian noise added to the LR sons (0.0125 for real images)
    augment_leave_as_is_probability: float = 0.05  # integer crop only
    augment_no_interpolate_probability: float = 0.45  # one of the 8 rotations/mirrors + integer crop
    augment_min_scale: float = 0.5  # affine: scale ~ U[min_scale, max source scale]
    augment_scale_diff_sigma: float = 0.25  # affine: x/y scale difference ~ N(0, sigma)
    augment_shear_sigma: float = 0.1  # affine: shear ~ N(0, sigma) per axis
    augment_allow_rotation: bool = True  # False: no rotations or mirrors (non-symmetric kernels)
    output_flip: bool = True  # 8-way geometric median self-ensemble at test time
    back_projection_iters: tuple[int, ...] = (10,)  # per stage (the last value repeats)
    tile: int = 1024  # test-time inference in tiles of this many HR pixels (bounded memory)
    seed: int = 0  # augmentation, noise and initialisation

    def __post_init__(self):
        ints = ("max_iters", "min_iters", "learning_rate_policy_check_every", "run_test_every", "crop_size")
        for name in ints:
            if int(getattr(self, name)) != getattr(self, name) or getattr(self, name) < 0:
                raise InputError(f"ZSSRConfig.{name} must be a non-negative integer, got {getattr(self, name)}")
        if self.crop_size < 8 or self.run_test_every < 1 or self.learning_rate_policy_check_every < 1:
            raise InputError("ZSSRConfig: crop_size must be >= 8, run_test_every and the check period >= 1")
        points = self.learning_rate_slope_range // self.run_test_every
        if points < 5 or self.min_iters // self.run_test_every + 1 < points:
            raise InputError(
                "ZSSRConfig: the slope fit needs >= 5 reconstruction points (slope_range // run_test_every), "
                "all recorded before the first policy check (min_iters // run_test_every + 1)"
            )
        p_leave, p_dihedral = self.augment_leave_as_is_probability, self.augment_no_interpolate_probability
        if min(p_leave, p_dihedral) < 0 or p_leave + p_dihedral > 1:
            raise InputError(f"ZSSRConfig: augmentation probabilities {p_leave}, {p_dihedral} must sum to <= 1")
        if not 0 < self.augment_min_scale <= 1:
            raise InputError(f"ZSSRConfig.augment_min_scale must be in (0, 1], got {self.augment_min_scale}")
        if not self.back_projection_iters or min(self.back_projection_iters) < 0:
            raise InputError(f"ZSSRConfig.back_projection_iters must be >= 0, got {self.back_projection_iters}")
        if not (self.learning_rate > 0 and self.noise_std >= 0 and self.init_variance >= 0 and self.tile >= 64):
            raise InputError("ZSSRConfig: learning_rate must be > 0, noise/init variance >= 0, tile >= 64")


_X2 = ZSSRConfig()

PRESETS: dict[str, ZSSRConfig] = {
    # X2_ONE_JUMP_IDEAL_CONF: bicubic-like kernels, all augmentations, 8-way ensemble, 10 BP iterations.
    "x2_ideal": _X2,
    # X2_GRADUAL_IDEAL_CONF: six stages to x2, each output becomes an extra HR-father source (~+0.3 dB, ~6x time).
    "x2_gradual_ideal": dataclasses.replace(
        _X2,
        scale_factors=((1.0, 1.5), (1.5, 1.0), (1.5, 1.5), (1.5, 2.0), (2.0, 1.5), (2.0, 2.0)),
        back_projection_iters=(6, 6, 8, 10, 10, 12),
    ),
    # X2_GIVEN_KERNEL_CONF: the kernel may be non-symmetric, so no rotations/mirrors (train or test).
    "x2_given_kernel": dataclasses.replace(
        _X2, output_flip=False, augment_allow_rotation=False, back_projection_iters=(2,)
    ),
    # X2_REAL_CONF: given kernel plus mild unknown noise; back-projection would amplify the noise.
    "x2_real": dataclasses.replace(
        _X2,
        output_flip=False,
        augment_allow_rotation=False,
        back_projection_iters=(0,),
        noise_std=0.0125,
        augment_scale_diff_sigma=0.0,
        augment_shear_sigma=0.0,
        augment_min_scale=0.75,
    ),
}


def init_zssr_params(seed: int = 0, init_variance: float = ZSSRConfig.init_variance) -> list[tf.Tensor]:
    """ZSSR initialisation: kernels ~ N(0, init_variance / (3·3·cin)) (official ``build_network``), zero biases.

    The default variance is ZSSRConfig's: MZSR's fan-in scaling (1.0), not the official ZSSR 0.1 (module docstring).
    """
    params = []
    for i, shape in enumerate(param_shapes()):
        if len(shape) == 4:
            std = math.sqrt(init_variance / (shape[0] * shape[1] * shape[2]))
            params.append(tf.random.stateless_normal(shape, [seed, i], stddev=std))
        else:
            params.append(tf.zeros(shape))
    return params


# === Learning-rate policy ===


def lr_should_drop(steps, errors, ratio: float = 1.5) -> bool:
    """Whether the official ``learning_rate_policy`` divides the rate by 10 after these test points.

    Fits errors ≈ slope·steps + b and drops when ``-ratio · slope < std(slope)``, i.e. when the
    reconstruction error no longer falls clearly faster than its noise. The slope's variance uses
    NumPy's pre-1.16 ``polyfit(..., cov=True)`` scaling resid / (M - order - 2) with order = 2 (what
    ZSSR ran with in 2018), not today's resid / (M - order), which is 3x smaller for M = 5 points.
    """
    x, y = np.asarray(steps, np.float64), np.asarray(errors, np.float64)
    m = len(x)
    if m != len(y) or m < 5:
        raise ValueError(f"the slope test needs >= 5 (step, error) pairs, got {len(x)} and {len(y)}")
    xc = x - x.mean()
    sxx = float(np.sum(xc * xc))
    slope = float(np.sum(xc * (y - y.mean())) / sxx)
    resid = float(np.sum((y - y.mean() - slope * xc) ** 2))
    std = math.sqrt(resid / (m - 4) / sxx)  # cov[0, 0] of old polyfit: inv(AᵀA)[0, 0] · resid / (M - 4)
    return bool(-ratio * slope < std)


# === HR fathers (augmentation) and LR sons ===


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


def _pair(scale) -> tuple[float, float]:
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


# === Training graph ===

_PARAM_SPECS = [tf.TensorSpec(s, tf.float32) for s in param_shapes()]


@dataclass(frozen=True)
class _GraphKey:
    """Everything a traced training/test graph depends on besides its tensor arguments."""

    scale: tuple[float, float]
    subsample: str
    blurred: bool  # a kernel is given (else plain bicubic)
    config: ZSSRConfig  # graph-relevant fields only (see ``_graph_key``)


def _graph_key(scale, subsample, kernel, config: ZSSRConfig) -> _GraphKey:
    graph_config = ZSSRConfig(
        crop_size=config.crop_size,
        noise_std=config.noise_std,
        augment_leave_as_is_probability=config.augment_leave_as_is_probability,
        augment_no_interpolate_probability=config.augment_no_interpolate_probability,
        augment_min_scale=config.augment_min_scale,
        augment_scale_diff_sigma=config.augment_scale_diff_sigma,
        augment_shear_sigma=config.augment_shear_sigma,
        augment_allow_rotation=config.augment_allow_rotation,
    )
    return _GraphKey(_pair(scale), subsample, kernel is not None, graph_config)


def _make_train_fn(key: _GraphKey):
    """``iterations`` ZSSR updates (augment → son → Adam step) in one ``tf.while_loop``; any image size."""
    config, crop = key.config, key.config.crop_size
    son_size = [output_length(crop, 1 / s) for s in key.scale]

    @tf.function(
        input_signature=[
            _PARAM_SPECS,
            [*_PARAM_SPECS, *_PARAM_SPECS],  # Adam moments m, v
            tf.TensorSpec([], tf.float32),  # Adam step count so far
            tf.TensorSpec([None, None, None, 3], tf.float32),  # father sources, zero-padded to one size
            tf.TensorSpec([None, 2], tf.int32),  # their true sizes
            tf.TensorSpec([None], tf.float32),  # their base scales (input = 1)
            tf.TensorSpec([None, None], tf.float32),  # blur kernel ([[1]] when none)
            tf.TensorSpec([], tf.float32),  # learning rate
            tf.TensorSpec([2], tf.int32),  # seed
            tf.TensorSpec([], tf.int32),  # index of the first iteration
            tf.TensorSpec([], tf.int32),  # iterations to run
        ],
        autograph=False,
    )
    def train_fn(params, moments, t, sources, sizes, base_scales, kernel, learning_rate, seed, start, iterations):
        TRACES["zssr_train"] += 1
        kernel = kernel if key.blurred else None
        n = len(params)

        def step(i, params, moments, t, losses):
            seeds = tf.random.experimental.stateless_split(tf.random.experimental.stateless_fold_in(seed, start + i), 2)
            aug = random_augmentation(seeds[0], base_scales, base_scales[-1], config)
            matrix = augmentation_matrix(aug, sizes[aug.source], base_scales[aug.source], crop)
            hr_father = warp_cubic(sources[aug.source], sizes[aug.source], matrix, crop)[None]
            lr_son = father_to_son(hr_father, kernel, key.scale, key.subsample, config.noise_std, seeds[1])
            lr_son = tf.ensure_shape(lr_son, [1, *son_size, 3])  # static: the resize picks its conv path
            loss, grads = l1_loss_and_grads(params, imresize(lr_son, key.scale, (crop, crop)), hr_father)
            # Adam as TF1's AdamOptimizer (ZSSR): bias correction folded into the step size, eps = 1e-8.
            t = t + 1
            step_size = learning_rate * tf.sqrt(1 - 0.999**t) / (1 - 0.9**t)
            m = [0.9 * a + 0.1 * g for a, g in zip(moments[:n], grads)]
            v = [0.999 * b + 0.001 * g * g for b, g in zip(moments[n:], grads)]
            params = [w - step_size * a / (tf.sqrt(b) + 1e-8) for w, a, b in zip(params, m, v)]
            return i + 1, params, m + v, t, losses.write(i, loss)

        _, params, moments, t, losses = tf.while_loop(
            lambda i, *_: i < iterations,
            step,
            (0, list(params), list(moments), t, tf.TensorArray(tf.float32, size=iterations)),
        )
        return params, moments, t, losses.stack()

    return train_fn


def _make_test_fn(key: _GraphKey):
    """Reconstruction MSE of ``clip(net(bicubic↑(son(input))))`` vs the input (official ``quick_test``)."""

    @tf.function(
        input_signature=[
            _PARAM_SPECS,
            tf.TensorSpec([None, None, 3], tf.float32),
            tf.TensorSpec([None, None], tf.float32),
            tf.TensorSpec([2], tf.int32),
        ],
        autograph=False,
    )
    def test_fn(params, image, kernel, seed):
        TRACES["zssr_test"] += 1
        father = image[None]
        son = father_to_son(
            father, kernel if key.blurred else None, key.scale, key.subsample, key.config.noise_std, seed
        )
        out = tf.clip_by_value(forward(params, imresize(son, key.scale, tf.shape(father)[1:3])), 0.0, 1.0)
        return tf.reduce_mean(tf.square(father - out))

    return test_fn


_GRAPHS: dict = {}


def _graph(kind: str, key: _GraphKey):
    if (kind, key) not in _GRAPHS:
        _GRAPHS[kind, key] = (_make_train_fn if kind == "train" else _make_test_fn)(key)
    return _GRAPHS[kind, key]


# === Test time ===


def final_test(
    params, lr_image, kernel, scale, subsample="bicubic", output_shape=None, flip=True, bp_iters=10, tile=1024
):
    """SR of ``lr_image`` by the trained net (official ``final_test``).

    With ``flip``, the 8 rotations/mirrors (only the 4 that keep the axes when s_h != s_w) are
    super-resolved and turned back (``geometric_self_ensemble``); each is back-projected ``bp_iters``
    times against the input (in the input's frame), then the pixel-wise median is back-projected again.

    Returns:
      float32 [1, H_out, W_out, 3] in [0, 1].
    """
    lr = tf.convert_to_tensor(np.asarray(lr_image, np.float32)[None])
    sh, sw = _pair(scale)
    h, w = lr.shape[1:3]
    if output_shape is None:
        output_shape = (output_length(h, sh), output_length(w, sw))

    def sr_fn(x):  # x is the input rotated by 0/180 degrees (shape kept) or by 90/270 degrees (shape swapped)
        shape = output_shape if x.shape[1] == h else output_shape[::-1]
        return tf.clip_by_value(super_resolve_tiled(params, x, (sh, sw), shape, tile), 0.0, 1.0)

    def refine(sr, lr):
        return back_projection(sr, lr, kernel, (sh, sw), subsample, bp_iters)

    # Without flips the "ensemble" is the plain output, still back-projected twice as in the official code.
    transforms = [0] if not flip else range(8) if sh == sw else range(0, 8, 2)  # non-square: 180° turns only
    return refine(geometric_self_ensemble(sr_fn, lr, "median", transforms, refine), lr)


# === Entry point ===


@dataclass
class StageLog:
    """What training one scale stage did."""

    scale: tuple[float, float]
    iterations: int = 0  # updates run
    learning_rate_drops: list = field(default_factory=list)  # iterations after which the rate was divided by 10
    final_learning_rate: float = 0.0
    test_iterations: list = field(default_factory=list)  # iterations after which the errors below were measured
    reconstruction_mse: list = field(default_factory=list)  # MSE of net(son(input)) vs input
    true_mse: list = field(default_factory=list)  # MSE of net(input) vs ground truth (only with ``gt``)
    losses: list = field(default_factory=list)  # L1 of every update
    seconds_train: float = 0.0
    seconds_test: float = 0.0

    def as_dict(self) -> dict:
        """JSON-friendly summary (without the per-update losses)."""
        summary = dataclasses.asdict(self)
        del summary["losses"]
        summary["scale"] = list(self.scale)
        return summary


@dataclass
class ZSSRResult:
    """The super-resolved image, the trained weights and one log per scale stage."""

    sr: np.ndarray  # float32 [H_out, W_out, 3] in [0, 1]
    params: list
    log: list[StageLog]
    stage_outputs: list[np.ndarray] = field(default_factory=list)  # each stage's SR (the last is ``sr``)

    @property
    def iterations(self) -> int:
        return sum(stage.iterations for stage in self.log)

    @property
    def seconds(self) -> float:
        return sum(stage.seconds_train + stage.seconds_test for stage in self.log)


def _stages(config: ZSSRConfig, scale: float) -> list[tuple[float, float]]:
    if config.scale_factors is None:
        return [(scale, scale)]
    stages = [_pair(s) for s in config.scale_factors]
    if any(abs(a - b) > 1e-6 for a, b in zip(stages[-1], (scale, scale))):
        raise InputError(f"the config's gradual stages end at x{stages[-1]}, not at the requested x{scale:g}")
    if any(min(s) < 1 for s in stages):
        raise InputError(f"gradual stages must be >= 1 on both axes, got {stages}")
    return stages


def _check(lr_image, degradation: Degradation, scale, output_shape, stages, crop: int):
    if lr_image.ndim != 3 or lr_image.shape[-1] != 3:
        raise InputError(f"ZSSR expects an RGB image [H, W, 3], got shape {lr_image.shape}")
    if not float(scale) > 1:
        raise InputError(f"scale must be > 1, got {scale}")
    if degradation.subsample == "direct" and degradation.kernel is None:
        raise InputError("direct subsampling needs a kernel")
    if degradation.subsample == "direct" and abs(float(scale) - round(float(scale))) > 1e-9:
        raise InputError(f"direct subsampling needs an integer scale > 1, got {scale}")
    h, w = lr_image.shape[:2]
    kernel = degradation.kernel
    if kernel is not None and (h < kernel.shape[0] or w < kernel.shape[1]):
        raise InputError(f"image {w}x{h} is smaller than the {kernel.shape[1]}x{kernel.shape[0]} kernel")
    if kernel is not None and max(kernel.shape) > crop:
        raise InputError(f"the {kernel.shape[1]}x{kernel.shape[0]} kernel is larger than the {crop}x{crop} crops")
    for sh, sw in stages:
        son = (output_length(h, 1 / sh), output_length(w, 1 / sw))
        if min(son) < 4:
            raise InputError(f"image {w}x{h} is too small for x{max(sh, sw):g} (its LR son would be {son[1]}x{son[0]})")
    if output_shape is not None and degradation.subsample == "direct":
        s = int(round(float(scale)))
        if (output_length(output_shape[0], 1 / s), output_length(output_shape[1], 1 / s)) != (h, w):
            raise InputError(f"output shape {tuple(output_shape)} does not subsample by {s} to the {h}x{w} input")


def check_input(lr_image, degradation: Degradation, scale, config: ZSSRConfig = ZSSRConfig(), output_shape=None):
    """Raise InputError if :func:`train_zssr` cannot run on this image, kernel and scale (before any work)."""
    _check(np.asarray(lr_image), degradation, scale, output_shape, _stages(config, float(scale)), config.crop_size)


def _next_stop(i: int, config: ZSSRConfig, last_change: int) -> int:
    """The first iteration >= i after which Python must act: a test, an eligible policy check or the end."""
    j = i
    while j < config.max_iters - 1:
        if j % config.run_test_every == 0:
            return j
        if (j + 1) % config.learning_rate_policy_check_every == 0 and j - last_change > config.min_iters:
            return j
        j += 1
    return config.max_iters - 1


def _pad_sources(sources):
    hmax, wmax = max(s.shape[0] for s in sources), max(s.shape[1] for s in sources)
    padded = np.zeros((len(sources), hmax, wmax, 3), np.float32)
    for i, s in enumerate(sources):
        padded[i, : s.shape[0], : s.shape[1]] = s
    return tf.constant(padded), tf.constant([s.shape[:2] for s in sources], tf.int32)


def train_zssr(
    lr_image,
    degradation: Degradation,
    scale,
    config: ZSSRConfig = ZSSRConfig(),
    init_params=None,
    gt=None,
    output_shape=None,
    progress=None,
) -> ZSSRResult:
    """ZSSR on one image: train the image-specific net (per scale stage), then ``final_test``.

    Args:
      lr_image: float32 [H, W, 3] in [0, 1], the test image (the first HR-father source).
      degradation: its kernel and subsampling (the LR son is made the same way).
      scale: the SR factor (> 1; an integer for 'direct' subsampling).
      init_params: start weights (16 tensors); None trains from scratch (``init_zssr_params``).
      gt: optional HR ground truth [H_out, W_out, 3], to log the true MSE every test.
      output_shape: (H_out, W_out) of the final stage; default ``ceil(s · size)``.
      progress: called as ``progress(stage, stages, iteration, max_iters, loss, learning_rate)`` after
        every graph call (a few per test period), e.g. to drive a progress bar.
    Returns:
      A :class:`ZSSRResult`.
    """
    lr_image = np.asarray(lr_image, np.float32)
    check_input(lr_image, degradation, scale, config, output_shape)
    stages = _stages(config, float(scale))
    params = [
        tf.convert_to_tensor(p, tf.float32)
        for p in (init_params or init_zssr_params(config.seed, config.init_variance))
    ]
    moments, t = [tf.zeros_like(p) for p in params] * 2, tf.constant(0.0)
    sources, base_scales, logs = [lr_image], [1.0], []
    points = config.learning_rate_slope_range // config.run_test_every
    for index, stage in enumerate(stages):
        final = index == len(stages) - 1
        # Stages before the target scale have no kernel of their own: plain bicubic (official default 'cubic').
        kernel, subsample = (degradation.kernel, degradation.subsample) if final else (None, "bicubic")
        shape = (
            output_shape
            if final and output_shape is not None
            else tuple(output_length(n, s) for n, s in zip(lr_image.shape[:2], stage))
        )
        key = _graph_key(stage, subsample, kernel, config)
        train_fn, test_fn = _graph("train", key), _graph("test", key)
        kernel_t = tf.constant(np.ones((1, 1)) if kernel is None else kernel, tf.float32)
        data = (*_pad_sources(sources), tf.constant(base_scales, tf.float32), kernel_t)  # fathers, sizes, scales
        stage_gt = None
        if gt is not None:
            stage_gt = np.asarray(gt, np.float32)
            if not final:
                relative = tuple(s / float(scale) for s in stage)
                stage_gt = imresize(stage_gt, relative, shape).numpy()
        log = StageLog(stage)
        learning_rate, last_change, i = config.learning_rate, 0, 0
        t0 = time.perf_counter()
        while i < config.max_iters:
            stop = _next_stop(i, config, last_change)
            chunk = [tf.constant(v, tf.int32) for v in ([config.seed, index], i, stop - i + 1)]
            rate = tf.constant(learning_rate, tf.float32)
            params, moments, t, losses = train_fn(params, moments, t, *data, rate, *chunk)
            log.losses += losses.numpy().tolist()
            i = stop + 1
            if progress is not None:
                progress(index, len(stages), i, config.max_iters, log.losses[-1], learning_rate)
            if stop % config.run_test_every == 0:
                log.test_iterations.append(stop)
                test_seed = tf.constant([config.seed + 1, stop], tf.int32)
                log.reconstruction_mse.append(float(test_fn(params, lr_image, kernel_t, test_seed)))
                if stage_gt is not None:
                    sr = super_resolve_tiled(params, lr_image[None], stage, stage_gt.shape[:2], config.tile)
                    log.true_mse.append(float(tf.reduce_mean(tf.square(tf.clip_by_value(sr[0], 0, 1) - stage_gt))))
            check = (stop + 1) % config.learning_rate_policy_check_every == 0 and stop - last_change > config.min_iters
            if check and lr_should_drop(
                log.test_iterations[-points:], log.reconstruction_mse[-points:], config.learning_rate_change_ratio
            ):
                learning_rate /= 10
                last_change = stop
                log.learning_rate_drops.append(stop)
            if learning_rate < config.min_learning_rate:
                break
        log.iterations, log.final_learning_rate = i, learning_rate
        t1 = time.perf_counter()
        bp_iters = config.back_projection_iters[min(index, len(config.back_projection_iters) - 1)]
        sr = final_test(params, lr_image, kernel, stage, subsample, shape, config.output_flip, bp_iters, config.tile)
        sr = sr[0].numpy()
        log.seconds_train, log.seconds_test = t1 - t0, time.perf_counter() - t1
        logs.append(log)
        sources.append(sr)
        base_scales.append(min(stage))
    return ZSSRResult(sr, params, logs, sources[1:])
