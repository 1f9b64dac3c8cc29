"""Training data straight from folders of HR images (no TFRecord step).

Every batch is a pure function of ``(seed, step)``: image choice, crop, flat-patch rejection,
8-way augmentation, kernels and noise all come from generators keyed on them. So a run resumed
at step k sees exactly the batches an uninterrupted run would (``train.py --resume``).

* bicubic pairs (large-scale training, θ_T): HR patch → MATLAB-bicubic LR (rounded to uint8 levels)
  → bicubic-upsampled network input (MZSR ``Large-Scale_Training``);
* kernel tasks (meta-transfer learning, θ_M): per task one random anisotropic kernel shared by
  its support (D_tr) and query (D_te) patches (MZSR ``dataGenerator``), or support pairs made as the meta-test
  makes its own, LR son → LR of the query patches (``support='son'``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from mzsr_tf.conditioning import start_features
from mzsr_tf.degradation import blur, degrade
from mzsr_tf.errors import InputError
from mzsr_tf.imresize import downscale, upscale
from mzsr_tf.io import IMAGE_SUFFIXES
from mzsr_tf.kernels import (
    IDENTITY,
    LAMBDA_FLOOR,
    blind_offset,
    compose_x4,
    gaussian_kernel,
    kernel_features,
    kernel_moments,
    kernel_offset,
    sample_blind_kernel,
    sample_kernel,
)
from mzsr_tf.metrics import gradient_energy
from mzsr_tf.noise import noise_levels_graph

__all__ = [
    "load_images",
    "sample_patches",
    "bicubic_pairs",
    "kernel_pairs",
    "kernel_tasks",
    "blind_pairs",
    "zoomed",
    "FLAT_THRESHOLD",
]

BLIND_KERNEL_SIZE, BLIND_LAMBDAS, BLIND_KERNEL_NOISE = 11, (0.6, 5.0), 0.25  # DIV2KRK at ×2 (KernelGAN)
FLAT_THRESHOLD = -6.0  # MainSR: keep patches with log(mean squared gradient) >= -6
_MAX_TRIES = 20
SOFTEN_SIZE = 9  # the softening Gaussian's grid (variance up to a few HR px²)
NOISY_SHARE = 0.5  # the share of tasks that get noise with ``task_noise``


def load_images(dirs, min_size: int) -> list[np.ndarray]:
    """Decode every .png/.jpg/.bmp/... under ``dirs`` (recursively) as uint8 RGB, skipping small ones."""
    files = sorted(p for d in dirs for p in Path(d).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"no training images found in {', '.join(map(str, dirs))}")
    images = []
    for f in files:
        try:
            with Image.open(f) as im:
                a = np.asarray(im.convert("RGB"))
        except Exception as e:
            raise InputError(f"{f}: cannot read training image ({e})") from None
        if min(a.shape[:2]) >= min_size:
            images.append(a)
    if not images:
        raise InputError(f"no training image is at least {min_size}x{min_size}")
    return images


def _is_flat(patch: np.ndarray) -> bool:
    energy = float(gradient_energy(patch.astype(np.float32) / 255.0))
    return np.log(energy + 1e-12) < FLAT_THRESHOLD


def _hw(size) -> tuple[int, int]:
    """A crop size: ``s`` (square) or ``(h, w)``."""
    return (size, size) if np.ndim(size) == 0 else (int(size[0]), int(size[1]))


def _fits(img, size) -> bool:
    """Whether an ``(h, w)`` crop fits the image, upright or turned a quarter."""
    (h, w), (rows, cols) = _hw(size), img.shape[:2]
    return (rows >= h and cols >= w) or (rows >= w and cols >= h)


def sample_patches(images, count: int, size, rng: np.random.Generator, group: int = 1) -> np.ndarray:
    """``count`` random uint8 crops of ``size`` (``s``: s², or ``(h, w)``: from each image upright or turned a
    quarter, as it fits), flat ones rejected, each under a random dihedral transform (those that keep an h×w
    shape when h ≠ w). Each run of ``group`` consecutive crops comes from one photo (its first crop's)."""
    h, w = _hw(size)
    out = np.empty((count, h, w, 3), np.uint8)
    img = None
    for n in range(count):
        for _ in range(_MAX_TRIES):
            if n % group == 0:  # a new photo; the rest of a group stay on it
                img = images[rng.integers(len(images))]
                if img.shape[0] < h or img.shape[1] < w:
                    img = np.swapaxes(img, 0, 1)
            top = rng.integers(img.shape[0] - h + 1)
            left = rng.integers(img.shape[1] - w + 1)
            patch = img[top : top + h, left : left + w]
            if not _is_flat(patch):
                break
        k = rng.integers(8)
        patch = np.rot90(patch, k % 4 if h == w else 2 * (k % 2))
        out[n] = patch[:, ::-1] if k >= 4 else patch
    return out


def _quantise(x):
    return tf.round(tf.clip_by_value(x, 0.0, 1.0) * 255.0) / 255.0


def zoomed(images, zooms=(1.0,)) -> list[np.ndarray]:
    """The photos shrunk by every factor z in ``zooms`` (z = 1: as they are; antialiased MATLAB bicubic, uint8):
    scale augmentation. A photo shrunk by z has z× sharper content, as photos downscaled for the web or
    renders; training photos at their own resolution alone teach that photos are soft."""
    if not zooms or not all(1 <= z < float("inf") for z in zooms):
        raise InputError(f"--zooms shrink the photos: factors are >= 1, got {list(zooms)}")
    out = []
    for z in sorted(set(zooms)):
        for img in images:
            if z == 1:
                out.append(img)
            elif min(img.shape[:2]) >= z:  # at least a pixel left
                small = downscale(tf.constant(img, tf.float32), z)
                out.append(tf.cast(tf.clip_by_value(tf.round(small), 0, 255), tf.uint8).numpy())
    return out


def _patch_dataset(images, count, size, seed, start_step, group: int = 1):
    images = [img for img in images if _fits(img, size)]
    if not images:
        raise InputError(f"no training image is at least {'x'.join(map(str, _hw(size)))}")

    def make(step):
        rng = np.random.default_rng([seed, int(step)])
        return sample_patches(images, count, size, rng, group)

    def to_tensor(step):
        patches = tf.numpy_function(make, [step], tf.uint8, stateful=False)
        return step, tf.ensure_shape(tf.cast(patches, tf.float32) / 255.0, [count, *_hw(size), 3])

    return tf.data.Dataset.range(start_step, 2**62).map(
        to_tensor, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )


def bicubic_pairs(images, batch: int, patch: int, scale: int, seed: int = 0, start_step: int = 0):
    """Batches ``(bicubic↑(LR), HR)`` of ``batch`` patches, LR = MATLAB-bicubic↓s(HR) in uint8 levels."""

    def pair(step, hr):
        return _bicubic_input(hr, scale), hr

    ds = _patch_dataset(images, batch, patch, seed, start_step)
    return ds.map(pair, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(2)


def _bicubic_input(hr, scale):
    """bicubic↑(uint8(MATLAB-bicubic↓s(hr)))."""
    return upscale(_quantise(downscale(hr, scale)), scale, tf.shape(hr)[1:3])


def _random_kernel_lr(hr, stream: int, step, scale, subsample, kernel_size, noise, min_variance=1.0, kernel=None):
    """(uint8((hr ⊛ k)↓s + n), k) for patches sharing one k ~ p(k), drawn from seed (stream, step), or the fixed
    ``kernel``."""
    seed = tf.stack([tf.constant(stream, tf.int64), step])
    if kernel is None:
        kernel = sample_kernel(tf.cast(seed, tf.int32), scale, kernel_size, min_variance=min_variance)
    lr = degrade(hr, kernel, scale, subsample, noise, tf.cast(seed[::-1], tf.int32) if noise else None)
    return _quantise(lr), kernel


def _random_kernel_input(hr, stream: int, step, scale, subsample, kernel_size, noise, min_variance=1.0, kernel=None):
    """bicubic↑ of :func:`_random_kernel_lr`'s LR."""
    lr, _ = _random_kernel_lr(hr, stream, step, scale, subsample, kernel_size, noise, min_variance, kernel)
    return upscale(lr, scale, tf.shape(hr)[1:3])


def _blind_seed(stream: int, step):
    return tf.cast(tf.stack([tf.constant(stream, tf.int64), step]) % (2**31 - 1), tf.int32)


def _div2krk_lr(hr, seed, scale: int, kernel_size=BLIND_KERNEL_SIZE, lambda_range=BLIND_LAMBDAS,
                kernel_noise=BLIND_KERNEL_NOISE, noise=0.0, noise_seed=None):  # fmt: skip
    """(LR, k): HR under a DIV2KRK kernel k drawn from ``seed`` (block-centred, :func:`kernels.blind_offset`),
    LR = (HR ⊛ k)↓2, twice at ×4 (the DIV2KRK recipe), with Gaussian ``noise`` on the last step."""
    k = sample_blind_kernel(seed, kernel_size, lambda_range, kernel_noise, blind_offset(2))
    lr = degrade(hr, k, 2) if scale == 4 else hr
    return degrade(lr, k, 2, "direct", noise, noise_seed), k


def _blind_kernel_lr(hr, stream: int, step, scale, noise):
    """(uint8(LR + n), the ×2 kernel k) for patches sharing one DIV2KRK-style kernel (:func:`_div2krk_lr`), the
    kernels blind SR estimates."""
    seed = _blind_seed(stream, step)
    lr, k = _div2krk_lr(hr, seed, scale, noise=noise, noise_seed=seed[::-1] if noise else None)
    return _quantise(lr), k


def _task_noise(lr, seed, task_noise: float):
    """uint8(LR + n): with probability ``NOISY_SHARE`` n ~ N(0, σ²), σ ~ U[0, ``task_noise``], else LR as it is."""
    draw = tf.random.stateless_uniform([2], seed)
    sigma = tf.where(draw[0] < NOISY_SHARE, draw[1] * task_noise, 0.0)
    return _quantise(tf.clip_by_value(lr + sigma * tf.random.stateless_normal(tf.shape(lr), seed[::-1]), 0.0, 1.0))


def kernel_pairs(
    images,
    batch: int,
    patch: int,
    scale: int,
    subsample: str = "direct",
    kernel_size: int = 15,
    noise: float = 0.0,
    seed: int = 0,
    start_step: int = 0,
    bicubic: int = 0,
    min_variance: float = 1.0,
    kernel=None,
):
    """Batches ``(bicubic↑(LR), HR)`` with LR = (HR ⊛ k)↓s, a fresh k ~ p(k) per patch.

    The meta-training degradations as plain supervised pairs: a cheaper stage-1 option than bicubic
    pairs when compute is scarce (``train.py --stage pretrain --degradation kernels``). The first
    ``bicubic`` patches of each batch are bicubic pairs instead (``--degradation mixed``); ``min_variance``
    below 1 widens p(k) towards sharp kernels (``sample_kernel``). ``kernel``: one fixed k for every patch
    instead (a non-blind network for that kernel, ``--kernel``).
    """
    fixed = None if kernel is None else tf.constant(np.asarray(kernel, np.float32))

    def pairs(step, hr):
        x = [_bicubic_input(hr[:bicubic], scale)] if bicubic else []
        x += [_random_kernel_input(hr[n : n + 1], seed * 1000 + 500 + n, step, scale, subsample, kernel_size, noise,
                                   min_variance, fixed)
              for n in range(bicubic, batch)]  # fmt: skip
        return tf.concat(x, axis=0), hr

    ds = _patch_dataset(images, batch, patch, seed, start_step)
    return ds.map(pairs, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(2)


def kernel_tasks(
    images,
    meta_batch: int,
    task_batch: int,
    patch: int,
    scale: int,
    subsample: str = "direct",
    kernel_size: int = 15,
    noise: float = 0.0,
    seed: int = 0,
    start_step: int = 0,
    min_variance: float = 1.0,
    blind_tasks: int = 0,
    support: str = "external",
    bicubic_tasks: int = 0,
    task_noise: float = 0.0,
    blind_context=(),
    estimator=None,
):
    """Batches of ``meta_batch`` tasks, (x_tr, y_tr, x_te, y_te, φ, φ_start): ``task_batch`` patches apiece in each
    pair and the features of the task's kernel as the meta-test is given it (``kernels.kernel_features``), and of
    its kernel and LR noise as the meta-test reads them (``conditioning.start_features``: σ̂ by
    ``noise.noise_levels_graph`` on the task's LR patches side by side, as on a photo).

    One kernel k ~ p(k) per task (paper Sec. 4.2; eigenvalues from ``min_variance``, ``sample_kernel``);
    LR = (HR ⊛ k)↓s (+ noise), rounded to uint8 levels; x = bicubic↑(LR), y = HR. The first ``blind_tasks``
    tasks draw a DIV2KRK-style kernel instead (block-centred, kernel noise: what blind SR estimates and adapts to),
    the last ``bicubic_tasks`` none (k = [[1]] under ``subsample='bicubic'``: plain MATLAB bicubic, the benchmarks'
    standard degradation and the meta-test's kernel 'bicubic'). With ``task_noise`` each task is noisy with
    probability ``NOISY_SHARE``: Gaussian noise of σ ~ U[0, task_noise] on its LR (then rounded again), on top of
    ``noise``.

    ``support``: 'external' (official): D_tr and D_te are (x, y) pairs of different HR patches. 'son': D_te is
    (x, y) of the task's patches and D_tr their LRs' own training pairs, bicubic↑(LR son) → LR
    (``zero_shot.training_pair``, with the son's noise as the meta-test's default ``noise_sigma='auto'``; MLSR,
    Park et al. 2020), so the inner loop learns on the pairs it will see at test time.

    ``blind_context`` (an HR crop size, ``(h, w)``, or ``s`` for s²) runs the blind tasks as blind SR runs on a
    photo: each degrades such a crop, the ``estimator`` (``kernel_estimation`` weights) reads the kernel k̂ off the
    crop's LR (``kernel_estimation.estimate_graph``, σ̂ too), and the task's patches are cut from the crop;
    k̂ then stands for the kernel everywhere (the son, the up-sampling's phase, the features, flagged estimated).
    """
    from mzsr_tf.kernel_estimation import estimate_graph
    from mzsr_tf.zero_shot import training_pair

    per_task = task_batch if support == "son" else 2 * task_batch
    if blind_context:
        estimator = [tf.constant(np.asarray(p, np.float32)) for p in estimator]

    def blind_task(crop, t, step):
        """``task`` of blind task ``t`` run blind (``blind_context``): its patches cut from ``crop`` [h, w, 3]."""
        lr, _ = _blind_kernel_lr(crop[None], seed * 1000 + 700 + t, step, scale, noise)
        if task_noise:
            lr = _task_noise(lr, _blind_seed(seed * 1000 + 900 + t, step), task_noise)
        k, _ = estimate_graph(estimator, lr[0], scale)
        sigma = noise_levels_graph(lr[0])  # the start's σ̂ and the son's σ
        seed_t, size = _blind_seed(seed * 1000 + 800 + t, step), patch // scale
        corners = tf.stack([tf.random.stateless_uniform([per_task], seed_t + i, 0, (c - patch) // scale + 1, tf.int32)
                            for i, c in enumerate(_hw(blind_context))], axis=1)  # fmt: skip
        lr = tf.stack([tf.slice(lr[0], [corners[i, 0], corners[i, 1], 0], [size, size, 3]) for i in range(per_task)])
        hr = tf.stack([tf.slice(crop, [corners[i, 0] * scale, corners[i, 1] * scale, 0], [patch, patch, 3])
                       for i in range(per_task)])  # fmt: skip
        return upscale(lr, scale, [patch, patch], kernel_offset(k)), lr, k, sigma, hr, True

    def task(hr, t, step):
        """(bicubic↑(LR), LR, the LR's kernel at ``scale`` as the meta-test is given it, σ̂ of the LR, HR, whether the
        kernel is estimated) of task ``t``."""
        offset = None  # a blind task's LR is up-sampled with its kernel's phase, as the meta-test does
        if t < blind_tasks:
            lr, k = _blind_kernel_lr(hr, seed * 1000 + 700 + t, step, scale, noise)
            offset, k = kernel_offset(k) * (scale - 1), tf.cast(compose_x4(k), tf.float32) if scale == 4 else k
        else:
            plain = tf.constant(IDENTITY) if t >= meta_batch - bicubic_tasks else None
            lr, k = _random_kernel_lr(hr, seed * 1000 + t, step, scale, subsample, kernel_size, noise, min_variance,
                                      plain)  # fmt: skip
        if task_noise:
            lr = _task_noise(lr, _blind_seed(seed * 1000 + 900 + t, step), task_noise)
        photo = tf.concat(tf.unstack(lr), axis=1)  # the patches side by side, as one photo
        sigma = noise_levels_graph(photo)  # the start's σ̂ and the son's σ
        return upscale(lr, scale, tf.shape(hr)[1:3], offset), lr, k, sigma, hr, False

    def tasks(step, hr, crops=None):
        hr = tf.reshape(hr, [meta_batch, per_task, patch, patch, 3])
        x, lr, k, sigma, hr, estimated = zip(*(
            blind_task(crops[t], t, step) if crops is not None and t < blind_tasks else task(hr[t], t, step)
            for t in range(meta_batch)
        ))  # fmt: skip
        hr = tf.stack(hr)
        features = tf.stack([kernel_features(k[t]) for t in range(meta_batch)])
        start = tf.stack([start_features(k[t], sigma[t].feature, estimated[t]) for t in range(meta_batch)])
        if support == "son":
            son, father = zip(*(training_pair(lr[t], k[t], scale, subsample, sigma[t].son,
                                              _blind_seed(seed * 1000 + 950 + t, step))
                                for t in range(meta_batch)))  # fmt: skip
            return tf.stack(son), tf.stack(father), tf.stack(x), hr, features, start
        x = tf.stack(x)
        return x[:, :task_batch], hr[:, :task_batch], x[:, task_batch:], hr[:, task_batch:], features, start

    ds = _patch_dataset(images, meta_batch * per_task, patch, seed, start_step)
    if blind_context and blind_tasks:
        crops = _patch_dataset(images, blind_tasks, blind_context, seed + 1, start_step)
        ds = tf.data.Dataset.zip(ds, crops).map(lambda main, ctx: (*main, ctx[1]))
    return ds.map(tasks, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(2)


def _blind_lr(hr, stream: int, step, scale: int, kernel_size, lambda_range, kernel_noise, image_noise, soften=0.0):
    """(uint8-level LR, Σ of its kernel in LR pixels) for HR patches [n, h, w, 3] under one DIV2KRK kernel k
    (block-centre offset): LR = (HR ⊛ k)↓2, twice at ×4 (kernel ``compose_x4``: Σ = 5 Σ_k), plus noise σ ~ U[0, max].
    With ``soften``, HR is first blurred by an isotropic Gaussian of variance ~ U[0, soften] HR px², a photo's own
    softness, which the estimate is to leave out: the target is still k."""
    seed = _blind_seed(stream, step)
    if soften:
        variance = tf.maximum(tf.random.stateless_uniform([], seed + 2) * soften, LAMBDA_FLOOR)
        hr = blur(hr, gaussian_kernel(variance, variance, 0.0, SOFTEN_SIZE, tf.float32))
    lr, k = _div2krk_lr(hr, seed, scale, kernel_size, lambda_range, kernel_noise)
    sigma = tf.random.stateless_uniform([], seed[::-1]) * image_noise / 255.0
    lr = _quantise(lr + tf.random.stateless_normal(tf.shape(lr), seed + 1, stddev=sigma))
    _, cov = kernel_moments(k)
    return lr, tf.cast(cov * (5.0 if scale == 4 else 1.0) / scale**2, tf.float32)


def blind_pairs(
    images,
    batch: int,
    patch: int,
    scales=(2, 4),
    seed: int = 0,
    start_step: int = 0,
    kernel_size: int = BLIND_KERNEL_SIZE,
    lambda_range=BLIND_LAMBDAS,
    kernel_noise: float = BLIND_KERNEL_NOISE,
    image_noise: float = 0.0,
    group: int = 1,
    soften: float = 0.0,
):
    """Batches ``(LR, Σ)`` for the kernel estimator: ``batch`` LR ``patch``² RGB patches [batch / group, group, patch,
    patch, 3], an equal share per scale (×2 and ×4 as two ×2 steps, DIV2KRK), and the covariance of each group's
    kernel in LR pixels [batch / group, 2, 2]. A group is ``group`` patches of one photo under one fresh kernel, which
    the estimator reads as one photo's tiles (``kernel_estimation.estimate_covariance``). Each scale's HR patches
    come from the photos large enough for them (with :func:`zoomed`, shrunk copies too)."""
    if any(s not in (2, 4) for s in scales):
        raise InputError(f"blind kernels are made at x2 and x4, not {scales}")
    share = batch // len(scales)
    if group < 1 or share % group:
        raise InputError(f"each scale's {share} patches do not make groups of {group}")
    streams = [_patch_dataset(images, share, patch * s, seed + 31 * i, start_step, group) for i, s in enumerate(scales)]

    def pairs(*per_scale):
        step = per_scale[0][0]
        lrs, covs = [], []
        for i, (scale, (_, hr)) in enumerate(zip(scales, per_scale)):
            for n in range(share // group):
                lr, cov = _blind_lr(hr[n * group : (n + 1) * group], seed * 1000 + 100 * i + n, step, scale,
                                    kernel_size, lambda_range, kernel_noise, image_noise, soften)  # fmt: skip
                lrs.append(lr)
                covs.append(cov)
        return tf.stack(lrs), tf.stack(covs)

    ds = tf.data.Dataset.zip(tuple(streams))
    return ds.map(pairs, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(2)
