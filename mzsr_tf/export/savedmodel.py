"""TF Serving export: MZSR zero-shot super-resolution (paper Algorithm 2) as one SavedModel request.

``serving_default(image, kernel, steps) -> sr`` runs the whole meta-test in the graph: the LR son is
made from the request image with the request kernel, ``steps`` updates from θ_M follow ``adapt.py``'s
(``AdaptConfig``: Adam, ``ADAM_RATES``, unless given another config), and the adapted net super-resolves
the image. It is :func:`mzsr_tf.zero_shot.adapt_graph`, so the fast weights are ``tf.while_loop``
values: θ_M is read-only and concurrent requests share no state. Kernel-conditioned meta-weights start from
θ(k) = θ_M + Σ φ_i(k) V_i for the request's kernel (``conditioning``), as ``adapt.py``.
``super_resolve(image) -> sr`` is net(bicubic↑(image)) with θ_M, no adaptation.
``png(image_bytes, kernel, steps) -> sr_bytes`` is ``serving_default`` on an encoded image (PNG, JPEG, BMP or GIF,
a string scalar; ``{"b64": ...}`` in a REST body) with a PNG back: a fraction of the size of JSON numbers;
``blind_png(image_bytes, steps) -> sr_bytes, kernel`` likewise for ``blind``.
``blind(image, steps) -> sr, kernel`` (with a kernel estimator) is blind SR: the kernel is estimated from the
image (:func:`mzsr_tf.kernel_estimation.estimate_graph`, as ``adapt.py`` without ``--kernel``), then MZSR(steps).

Images are uint8 NHWC with a batch of one (``[1, H, W, 3]``; a larger batch is refused in the graph); ``sr`` is
``floor(255 · clip(x) + 0.5)`` like :func:`mzsr_tf.metrics.to_uint8`, so a response equals
``adapt.py --precision float32``'s PNG (a servable may run on other hardware, so the config's
``precision='auto'`` exports float32 updates; give ``precision='bfloat16'`` for bfloat16 servers).
Requests are validated in the graph (``tf.debugging.assert_*``): more than ``max_pixels`` LR
pixels, more than ``max_steps`` steps, a kernel that is not finite or has no positive sum, or an
image smaller than the kernel or too small for the scale fail with an ``InvalidArgumentError``
(HTTP 400 in TF Serving) whose first line says why.

The layout is TF Serving's ``<model>/<version>/saved_model.pb`` (https://www.tensorflow.org/tfx/serving/serving_basic).
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from mzsr_tf.conditioning import conditioned_start, start_features
from mzsr_tf.imresize import upscale
from mzsr_tf.kernel_estimation import estimate_graph
from mzsr_tf.kernels import kernel_features, kernel_offset
from mzsr_tf.meta import kernel_rates
from mzsr_tf.metrics import to_uint8
from mzsr_tf.model import PARAM_NAMES, forward
from mzsr_tf.noise import noise_levels_graph
from mzsr_tf.zero_shot import AdaptConfig, adapt_graph

__all__ = ["ServingModule", "schedule_rates", "save_serving"]

SUBSAMPLE = "direct"  # MZSR's Direct×s degradation, the kernel convention of the shipped meta-weights


def schedule_rates(steps, schedule):
    """In-graph :func:`mzsr_tf.zero_shot.rate_matrix`: step i uses row (or entry) ``min(i, len - 1)`` of the
    schedule, a list of rates or of per-tensor rows."""
    table = tf.constant(schedule, tf.float32)
    return tf.gather(table, tf.minimum(tf.range(steps), len(schedule) - 1))


def _image_float(image, scale: int, max_pixels: int):
    """uint8 [1, H, W, 3] → float32 in [0, 1] (KAIR ``uint2single``), after the size checks."""
    n, h, w = tf.shape(image, tf.int64)[0], tf.shape(image, tf.int64)[1], tf.shape(image, tf.int64)[2]
    checks = [
        tf.debugging.assert_equal(n, tf.constant(1, tf.int64), message="send one image per request (batch 1)"),
        tf.debugging.assert_less_equal(
            h * w, tf.constant(max_pixels, tf.int64), message=f"image has more than max_pixels={max_pixels} pixels"
        ),
        tf.debugging.assert_greater_equal(
            tf.minimum(h, w),
            tf.constant(scale + 1, tf.int64),
            message=f"image must be at least {scale + 1} pixels on each side for x{scale}",
        ),
    ]
    with tf.control_dependencies(checks):
        return tf.cast(image, tf.float32) / 255.0


def _decoded(image_bytes):
    """PNG, JPEG, BMP or GIF bytes → uint8 [1, H, W, 3]."""
    return tf.io.decode_image(image_bytes, channels=3, dtype=tf.uint8, expand_animations=False)[None]


def _normalised_kernel(kernel, image):
    """The kernel divided by its sum (as ``kernels.validate_kernel``: in float64, scaled by its peak first
    so that no sum overflows), after its checks."""
    k64 = tf.cast(kernel, tf.float64)
    peak = tf.reduce_max(tf.abs(k64))
    scaled = k64 / tf.where(peak > 0, peak, tf.ones_like(peak))
    total = tf.reduce_sum(scaled)
    size, kernel_size = tf.shape(image)[1:3], tf.shape(kernel)
    checks = [
        tf.debugging.assert_all_finite(kernel, message="kernel contains NaN or Inf"),
        tf.debugging.assert_positive(total, message="kernel must have a positive sum"),
        tf.debugging.assert_greater_equal(size, kernel_size, message="image is smaller than the kernel"),
    ]
    with tf.control_dependencies(checks):
        return tf.cast(scaled / total, tf.float32)


def _checked_steps(steps, max_steps: int):
    checks = [
        tf.debugging.assert_non_negative(steps, message="steps must be >= 0"),
        tf.debugging.assert_less_equal(steps, max_steps, message=f"steps must be at most max_steps={max_steps}"),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(steps)


class ServingModule(tf.Module):
    """θ_M as read-only variables plus the two serving signatures.

    Args:
      params: meta-initial weights θ_M (16 tensors, ``model.PARAM_NAMES`` order).
      scale: integer SR factor the weights were meta-trained for.
      max_pixels: largest accepted LR image, H·W.
      max_steps: most adaptation steps per request.
      config: adaptation settings (optimizer, schedule, crops above ``config.max_pixels``, seed).
      estimator: kernel estimator weights (``kernel_estimation``) for the ``blind`` signature, or None.
      start_basis: the basis V of kernel-conditioned meta-weights (``conditioning``): adaptation starts from θ(k).
    """

    def __init__(
        self,
        params,
        scale: int,
        max_pixels: int,
        max_steps: int,
        config: AdaptConfig = AdaptConfig(),
        estimator=None,
        start_basis=None,
    ):
        super().__init__(name="mzsr")
        self.scale, self.max_pixels, self.max_steps = int(scale), int(max_pixels), int(max_steps)
        self._config = config
        self.theta = [
            tf.Variable(p, trainable=False, name=n.replace("/", "_"), dtype=tf.float32)
            for n, p in zip(PARAM_NAMES, params)
        ]
        self.start_basis = None
        if start_basis is not None:
            self.start_basis = [
                tf.Variable(b, trainable=False, name="start_basis_" + n.replace("/", "_"), dtype=tf.float32)
                for n, b in zip(PARAM_NAMES, start_basis)
            ]
        # Batch dimension open, as TF Serving clients send it, and checked in the graph (one image
        # per request: its weights are adapted to that image, so they must not serve another).
        image = tf.TensorSpec([None, None, None, 3], tf.uint8, name="image")
        kernel = tf.TensorSpec([None, None], tf.float32, name="kernel")
        steps = tf.TensorSpec([], tf.int32, name="steps")
        self.serving_default = tf.function(self._zero_shot_sr, input_signature=[image, kernel, steps])
        self.super_resolve = tf.function(self._super_resolve, input_signature=[image])
        encoded = tf.TensorSpec([], tf.string, name="image_bytes")  # TF Serving's REST: *_bytes travel as base64
        self.png = tf.function(self._png, input_signature=[encoded, kernel, steps])
        self.estimator = None
        if estimator is not None:
            self.estimator = [tf.Variable(p, trainable=False, name=f"estimator_{i}") for i, p in enumerate(estimator)]
            self.blind = tf.function(self._blind, input_signature=[image, steps])
            self.blind_png = tf.function(self._blind_png, input_signature=[encoded, steps])

    def _sr_uint8(self, params, lr, shift=None):
        """net(bicubic↑s(LR)) at (sH, sW), rounded to uint8 as ``metrics.to_uint8`` (``shift``: the kernel's
        offset, as ``zero_shot.zero_shot_sr``)."""
        size = tf.shape(lr)[1:3] * self.scale
        return to_uint8(forward(params, upscale(lr, self.scale, size, shift)))

    def _zero_shot_sr(self, image, kernel, steps):
        """MZSR(steps) on one request: adapt θ_M to the image, then super-resolve it."""
        lr = _image_float(image, self.scale, self.max_pixels)
        return {"sr": self._adapted_sr(lr, _normalised_kernel(kernel, image), steps)}

    def _png(self, image_bytes, kernel, steps):
        """``serving_default`` from and to encoded images (any ``tf.io.decode_image`` format in, PNG out)."""
        return {"sr_bytes": tf.io.encode_png(self._zero_shot_sr(_decoded(image_bytes), kernel, steps)["sr"][0])}

    def _blind_png(self, image_bytes, steps):
        """``blind`` from and to encoded images."""
        out = self._blind(_decoded(image_bytes), steps)
        return {"sr_bytes": tf.io.encode_png(out["sr"][0]), "kernel": out["kernel"]}

    def _blind(self, image, steps):
        """Blind MZSR(steps): estimate the image's kernel, adapt θ_M with it, super-resolve."""
        lr = _image_float(image, self.scale, self.max_pixels)
        kernel, _ = estimate_graph([v.read_value() for v in self.estimator], lr[0], self.scale)
        return {"sr": self._adapted_sr(lr, kernel, steps, estimated=True), "kernel": kernel}

    def _adapted_sr(self, lr, kernel, steps, estimated=False):
        schedule = self._config.layer_rates or self._config.schedule
        rates = schedule_rates(_checked_steps(steps, self.max_steps), schedule)
        if self._config.layer_rates:  # learned rates, kernel-conditioned or not (meta.kernel_rates)
            rates = kernel_rates(rates, kernel_features(kernel))
        levels = noise_levels_graph(lr[0])
        sigma = levels.son if self._config.noise_sigma == "auto" else self._config.noise_sigma
        theta = [v.read_value() for v in self.theta]
        if self.start_basis is not None:  # θ(k, σ̂): the start meant for this kernel and noise level
            basis = [v.read_value() for v in self.start_basis]
            theta = conditioned_start(theta, basis, start_features(kernel, levels.feature, estimated))
        fast, _ = adapt_graph(theta, lr[0], kernel, rates, self.scale, self._config, SUBSAMPLE, sigma)
        return self._sr_uint8(fast, lr, kernel_offset(kernel))

    def _super_resolve(self, image):
        """net(bicubic↑s(image)) with θ_M (MZSR's "no adaptation" row)."""
        lr = _image_float(image, self.scale, self.max_pixels)
        return {"sr": self._sr_uint8([v.read_value() for v in self.theta], lr)}


def save_serving(
    params, path, scale: int, max_pixels: int, max_steps: int, inner_lr=None, estimator=None, start_basis=None
) -> Path:
    """Write the SavedModel to ``path`` (a TF Serving version folder, e.g. ``serving/1``); with meta-learned
    ``inner_lr`` its adaptation is ``AdaptConfig.learned`` (as ``adapt.py`` for such weights); with ``estimator``
    weights it also has the ``blind`` signature; with a ``start_basis`` adaptation starts from θ(k)."""
    config = AdaptConfig() if inner_lr is None else AdaptConfig.learned(inner_lr)
    module = ServingModule(params, scale, max_pixels, max_steps, config, estimator, start_basis)
    signatures = {
        "serving_default": module.serving_default.get_concrete_function(),
        "super_resolve": module.super_resolve.get_concrete_function(),
        "png": module.png.get_concrete_function(),
    }
    if estimator is not None:
        signatures["blind"] = module.blind.get_concrete_function()
        signatures["blind_png"] = module.blind_png.get_concrete_function()
    tf.saved_model.save(module, str(path), signatures=signatures)
    return Path(path)
