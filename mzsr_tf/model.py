"""The MZSR/ZSSR network as one functional ``forward(params, x)`` plus a thin Keras wrapper.

8 conv 3x3 layers, 64 channels, ReLU after the first 7, global residual over the
bicubic-upsampled LR input (MZSR ``model.py``; ZSSR's net with biases): 225,091 parameters.
``params`` is a list of 16 tensors ordered ``conv1/kernel, conv1/bias, ..., conv8/bias`` (HWIO),
so MAML fast weights are just new lists (cbfinn/maml style).

How the convolutions are computed is a ``conv_ops.ConvOps`` choice (same values); the backward pass is
written out in ``backward``, the weights files are read and written by ``weights``.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from mzsr_tf.conv_ops import BUILTIN, ConvOps
from mzsr_tf.imresize import upscale

__all__ = [
    "DEPTH",
    "WIDTH",
    "PARAM_NAMES",
    "param_shapes",
    "PARAM_SPECS",
    "init_params",
    "residual_and_activations",
    "forward",
    "super_resolve",
    "MZSRNet",
    "ParamList",
]

DEPTH, WIDTH, CHANNELS = 8, 64, 3
PARAM_NAMES = [f"conv{i}/{p}" for i in range(1, DEPTH + 1) for p in ("kernel", "bias")]


def param_shapes() -> list[tuple[int, ...]]:
    """HWIO kernel and bias shapes of the 8 layers."""
    chans = [CHANNELS] + [WIDTH] * (DEPTH - 1) + [CHANNELS]
    shapes = []
    for cin, cout in zip(chans[:-1], chans[1:]):
        shapes += [(3, 3, cin, cout), (cout,)]
    return shapes


PARAM_SPECS = [tf.TensorSpec(s, tf.float32) for s in param_shapes()]  # θ as a ``tf.function`` input signature


def init_params(seed: int | None = None) -> list[tf.Tensor]:
    """TF1 ``variance_scaling_initializer`` defaults (fan_in, scale 1, truncated normal); zero biases."""
    init = keras.initializers.VarianceScaling(1.0, "fan_in", "truncated_normal", seed=seed)
    return [init(s) if len(s) == 4 else tf.zeros(s) for s in param_shapes()]


def _residual_with_activations(params, x, ops: ConvOps = BUILTIN):
    """Returns the residual f(x; θ) and the input of every conv layer (for the hand-written backward)."""
    acts, h = [], x
    for layer in range(DEPTH):
        acts.append(h)
        h = ops.conv(h, params[2 * layer]) + params[2 * layer + 1]
        if layer < DEPTH - 1:
            h = tf.nn.relu(h)
    return h, acts


def residual_and_activations(params, x, compute_dtype=None, ops: ConvOps = BUILTIN):
    """f(x; θ) computed in ``compute_dtype`` and returned in x's type, with the compute-type params and activations.

    Mixed precision (Micikevicius et al. 2018): only the convolutions run in ``compute_dtype``; with
    None (or x's own type) nothing is cast.
    """
    compute_dtype = tf.as_dtype(compute_dtype or x.dtype)
    cparams = [tf.cast(w, compute_dtype) for w in params] if compute_dtype != x.dtype else list(params)
    h, acts = _residual_with_activations(cparams, tf.cast(x, compute_dtype), ops)
    return tf.cast(h, x.dtype), acts, cparams


def forward(params, x, compute_dtype=None, ops: ConvOps = BUILTIN):
    """net(x) = x + f(x; θ) on a bicubic-upsampled image x, NHWC in [0, 1] (MZSR ``MODEL.forward``).

    ``compute_dtype`` and ``ops`` as in ``backward.l1_loss_and_grads`` (f in that type, the residual sum in x's).
    """
    return x + residual_and_activations(params, x, compute_dtype, ops)[0]


def super_resolve(params, lr, scale, output_shape=None, ops: ConvOps = BUILTIN, shift=None):
    """SR = net(bicubic↑s(LR)); ``output_shape`` defaults to ``ceil(s · LR size)``; ``shift``: the LR's kernel
    offset (``imresize.upscale``)."""
    return forward(params, upscale(lr, scale, output_shape, shift), ops=ops)


class ParamList:
    """``params``, the module's weights as the plain list the functional computation takes, and ``set_params``."""

    _params: list

    @property
    def params(self) -> list:
        return list(self._params)

    def set_params(self, values) -> None:
        for var, value in zip(self._params, values, strict=True):
            var.assign(value)


@keras.saving.register_keras_serializable(package="mzsr_tf")
class MZSRNet(ParamList, keras.Model):
    """Keras wrapper: ``net(lr)`` super-resolves by ``scale``; ``net.params`` feed ``forward``.

    Example:
      >>> net = MZSRNet(scale=2)
      >>> sr = net(tf.zeros([1, 8, 8, 3]))  # -> [1, 16, 16, 3]
    """

    def __init__(self, scale: float = 2.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)
        # === Layers === (plain weights: the functional forward is the computation)
        init = init_params()
        self._params = [
            self.add_weight(shape=v.shape, initializer=keras.initializers.Constant(v.numpy()), name=n.replace("/", "_"))
            for n, v in zip(PARAM_NAMES, init)
        ]
        self.built = True

    def call(self, lr):
        return super_resolve(self.params, lr, self.scale)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}
