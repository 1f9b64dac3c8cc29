"""ZSSR on one image: train the image-specific net per scale stage, then the official ``final_test``."""

from __future__ import annotations

import math
import time

import numpy as np
import tensorflow as tf

from mzsr_tf.ensemble import back_projection, geometric_self_ensemble
from mzsr_tf.errors import InputError
from mzsr_tf.imresize import imresize, output_length
from mzsr_tf.kernels import IDENTITY, Degradation
from mzsr_tf.model import param_shapes
from mzsr_tf.optim import zero_moments
from mzsr_tf.zero_shot import super_resolve_tiled
from mzsr_tf.zssr.config import ZSSRConfig
from mzsr_tf.zssr.graphs import graph, graph_key
from mzsr_tf.zssr.policy import lr_should_drop, next_stop
from mzsr_tf.zssr.results import StageLog, ZSSRResult
from mzsr_tf.zssr.sons import scale_pair

__all__ = ["init_zssr_params", "final_test", "check_input", "train_zssr"]


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
    sh, sw = scale_pair(scale)
    h, w = lr.shape[1:3]
    if output_shape is None:
        output_shape = (output_length(h, sh), output_length(w, sw))

    def sr_fn(x, k):  # x: the input under transform k (shape swapped by 90/270 degrees); the official alignment
        shape = output_shape if x.shape[1] == h else output_shape[::-1]
        return tf.clip_by_value(super_resolve_tiled(params, x, (sh, sw), shape, tile), 0.0, 1.0)

    def refine(sr, lr):
        return back_projection(sr, lr, kernel, (sh, sw), subsample, bp_iters)

    # Without flips the "ensemble" is the plain output, still back-projected twice as in the official code.
    transforms = [0] if not flip else range(8) if sh == sw else range(0, 8, 2)  # non-square: 180° turns only
    return refine(geometric_self_ensemble(sr_fn, lr, "median", transforms, refine), lr)


def stages_of(config: ZSSRConfig, scale: float) -> list[tuple[float, float]]:
    """The (s_h, s_w) of every scale stage: one jump, or the config's gradual stages ending at ``scale``."""
    if config.scale_factors is None:
        return [(scale, scale)]
    stages = [scale_pair(s) for s in config.scale_factors]
    if any(abs(a - b) > 1e-6 for a, b in zip(stages[-1], (scale, scale))):
        raise InputError(f"the config's gradual stages end at x{stages[-1]}, not at the requested x{scale:g}")
    if any(min(s) < 1 for s in stages):
        raise InputError(f"gradual stages must be >= 1 on both axes, got {stages}")
    return stages


def check_sizes(lr_image, degradation: Degradation, scale, output_shape, stages, crop: int):
    """Raise InputError for an image, kernel, scale or output shape ZSSR cannot train on."""
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
    stages = stages_of(config, float(scale))
    check_sizes(np.asarray(lr_image), degradation, scale, output_shape, stages, config.crop_size)


def pad_sources(sources):
    """The HR-father sources zero-padded to one size (one graph input), and their true sizes."""
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
    stages = stages_of(config, float(scale))
    params = [
        tf.convert_to_tensor(p, tf.float32)
        for p in (init_params or init_zssr_params(config.seed, config.init_variance))
    ]
    moments, t = zero_moments(params), tf.constant(0.0)
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
        key = graph_key(stage, subsample, kernel, config)
        train_fn, test_fn = graph("train", key), graph("test", key)
        kernel_t = tf.constant(IDENTITY if kernel is None else kernel, tf.float32)
        data = (*pad_sources(sources), tf.constant(base_scales, tf.float32), kernel_t)  # fathers, sizes, scales
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
            stop = next_stop(i, config, last_change)
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
