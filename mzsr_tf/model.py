"""The MZSR/ZSSR network as one functional ``forward(params, x)`` plus a thin Keras wrapper.

8 conv 3x3 layers, 64 channels, ReLU after the first 7, global residual over the
bicubic-upsampled LR input (MZSR ``model.py``; ZSSR's net with biases): 225,091 parameters.
``params`` is a list of 16 tensors ordered ``conv1/kernel, conv1/bias, ..., conv8/bias`` (HWIO),
so MAML fast weights are just new lists (cbfinn/maml style).

The backward pass is also written out (``l1_loss_and_grads``): conv input gradients as a
forward conv with the flipped kernel, filter gradients as 9 matrix products over copy-free
flat shifts (im2col for the thin first and last layers). It uses only TFLite builtin ops and is
itself differentiable, so MAML's second-order meta-gradient flows through it; the meta-test takes
the conv gradients from TF's own backprop kernels instead (``NATIVE``, ``benchmarks/speed.py``), and the
LiteRT export computes every convolution as batch matmuls (``TAPS``), which XNNPACK runs with changing weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from mzsr_tf.errors import InputError
from mzsr_tf.imresize import upscale

__all__ = [
    "INNER_LR",
    "load_inner_lr",
    "load_scale",
    "check_scale",
    "DEPTH",
    "WIDTH",
    "PARAM_NAMES",
    "param_shapes",
    "init_params",
    "forward",
    "super_resolve",
    "l1_loss_and_grads",
    "ConvOps",
    "BUILTIN",
    "NATIVE",
    "TAPS",
    "MZSRNet",
    "load_params",
    "save_params",
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


def init_params(seed: int | None = None) -> list[tf.Tensor]:
    """TF1 ``variance_scaling_initializer`` defaults (fan_in, scale 1, truncated normal); zero biases."""
    init = keras.initializers.VarianceScaling(1.0, "fan_in", "truncated_normal", seed=seed)
    return [init(s) if len(s) == 4 else tf.zeros(s) for s in param_shapes()]


def _conv(x, kernel):
    return tf.nn.conv2d(x, kernel, 1, "SAME")


def _conv_input_grad(dy, kernel):
    """∂L/∂x of a stride-1 SAME 3x3 conv: correlate with the flipped, in/out-swapped kernel."""
    return _conv(dy, tf.transpose(tf.reverse(kernel, [0, 1]), [0, 1, 3, 2]))


_THIN = 16  # layers with at most this many channels on a side take the im2col path


def _conv_filter_grad(x, dy):
    """∂L/∂W of a stride-1 SAME 3x3 conv: Σ_p patch(x)_pᵀ · dy_p, as matrix products (TFLite builtins only).

    Thin layers (3 channels on one side) gather the 9 shifted copies of the thin tensor into one matrix
    (im2col); 64→64 layers use flat shifts instead: with x zero-padded and both tensors flattened
    row-major at padded width, tap (i, j) is the contiguous row range starting at i·(w+2)+j, so no
    patch copies are made.
    """
    cin, cout = x.shape[-1], dy.shape[-1]  # static: every conv's channel counts come from its kernel
    if cin <= _THIN or cout <= _THIN:
        return _filter_grad_im2col(x, dy, cin, cout)
    wp = tf.shape(x)[2] + 2
    xp = tf.reshape(tf.pad(x, [[0, 0], [1, 2], [1, 1], [0, 0]]), [-1, cin])
    xp = tf.pad(xp, [[0, 2 * wp + 2], [0, 0]])  # taps of the last image may run past its block
    d = tf.reshape(tf.pad(dy, [[0, 0], [0, 3], [0, 2], [0, 0]]), [-1, cout])  # zeros where xp wraps
    n = tf.shape(d)[0]
    taps = [tf.matmul(xp[i * wp + j : i * wp + j + n], d, transpose_a=True) for i in range(3) for j in range(3)]
    return tf.reshape(tf.stack(taps), [3, 3, cin, cout])


def _shifts(t, flip: bool):
    """The 9 taps of a zero-padded 3x3 neighbourhood, concatenated on channels (tap-major)."""
    h, w = tf.shape(t)[1], tf.shape(t)[2]
    tp = tf.pad(t, [[0, 0], [1, 1], [1, 1], [0, 0]])
    offsets = [(2 - i, 2 - j) if flip else (i, j) for i in range(3) for j in range(3)]
    return tf.concat([tp[:, a : a + h, b : b + w, :] for a, b in offsets], -1)


def _filter_grad_im2col(x, dy, cin, cout):
    """Filter gradient by one matrix product against the 9 shifted copies of the thinner side."""
    if cin <= cout:  # tap (i, j) = Σ_p x[p + (i-1, j-1)]ᵀ dy[p]
        g = tf.matmul(tf.reshape(_shifts(x, False), [-1, 9 * cin]), tf.reshape(dy, [-1, cout]), transpose_a=True)
        return tf.reshape(g, [3, 3, cin, cout])
    # tap (i, j) = Σ_q x[q]ᵀ dy[q - (i-1, j-1)]
    g = tf.matmul(tf.reshape(x, [-1, cin]), tf.reshape(_shifts(dy, True), [-1, 9 * cout]), transpose_a=True)
    return tf.transpose(tf.reshape(g, [cin, 3, 3, cout]), [1, 2, 0, 3])


def _rows(t, i: int):
    """Rows i..i+H of a 1-padded NHWC tensor. Slices here have constant begins and ends (ends counted from the
    size), so LiteRT's XNNPACK delegate takes them at any image size."""
    return t[:, i : (i - 2) or None]


def _columns(x):
    """[N, H+2, W, 3C]: the three column taps of the 1-padded x side by side (tap-major), an im2col along W."""
    xp = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    return tf.concat([xp[:, :, j : (j - 2) or None] for j in range(3)], -1)


def _taps_conv(x, kernel):
    """Stride-1 SAME 3x3 conv as 9 batch matmuls over shifted views: XNNPACK runs BATCH_MATMUL with weights that
    change between calls, CONV_2D only with constant filters."""
    xp = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    taps, y = tf.unstack(tf.reshape(kernel, [9, 1, 1, kernel.shape[2], kernel.shape[3]])), None
    for i in range(3):
        for j in range(3):
            t = tf.matmul(xp[:, i : (i - 2) or None, j : (j - 2) or None], taps[3 * i + j])
            y = t if y is None else y + t
    return y


def _taps_input_grad(dy, kernel):
    """:func:`_conv_input_grad` through :func:`_taps_conv`."""
    return _taps_conv(dy, tf.transpose(tf.reverse(kernel, [0, 1]), [0, 1, 3, 2]))


def _taps_filter_grad(x, dy):
    """:func:`_conv_filter_grad` as 3 batch matmuls ``xᵀ · rows(columns(dy))``: tap (i, j) pairs x[q] with
    dy[q - (i-1, j-1)], i.e. row 2-i and column 2-j of the 1-padded dy. Shifting dy rather than x keeps the
    copies out of the forward pass (LiteRT runs ops in graph order: copies of x would live until the backward)."""
    cin, cout = x.shape[-1], dy.shape[-1]
    cols, xf = _columns(dy), tf.reshape(x, [1, -1, cin])
    rows = []
    for i in range(3):
        m = tf.matmul(xf, tf.reshape(_rows(cols, 2 - i), [1, -1, 3 * cout]), transpose_a=True)  # [1, cin, (j', o)]
        rows.append(tf.transpose(tf.reverse(tf.reshape(m, [cin, 3, cout]), [1]), [1, 0, 2]))  # j' = 2 - j
    return tf.stack(rows)


def _native_filter_grad(x, dy):
    """TF's own ``Conv2DBackpropFilter`` (oneDNN: 1.5x the matmul route for a 64→64 layer; not a TFLite builtin)."""
    shape = [3, 3, x.shape[-1], dy.shape[-1]]  # static, as in _conv_filter_grad
    return tf.raw_ops.Conv2DBackpropFilter(
        input=x, filter_sizes=shape, out_backprop=dy, strides=[1] * 4, padding="SAME"
    )


def _native_input_grad(dy, kernel):
    """TF's own ``Conv2DBackpropInput`` (the transposed conv)."""
    shape = tf.concat([tf.shape(dy)[:3], tf.shape(kernel)[2:3]], 0)
    return tf.raw_ops.Conv2DBackpropInput(
        input_sizes=shape, filter=kernel, out_backprop=dy, strides=[1] * 4, padding="SAME"
    )


@dataclass(frozen=True)
class ConvOps:
    """How the 3x3 convolutions and their two gradients are computed; every choice gives the same values."""

    conv: Callable
    input_grad: Callable
    filter_grad: Callable


BUILTIN = ConvOps(_conv, _conv_input_grad, _conv_filter_grad)  # TFLite builtins, differentiable again (MAML)
NATIVE = ConvOps(_conv, _native_input_grad, _native_filter_grad)  # TF's backprop kernels: the meta-test's choice
TAPS = ConvOps(_taps_conv, _taps_input_grad, _taps_filter_grad)  # batch matmuls: all taken by LiteRT's XNNPACK


def _residual_with_activations(params, x, ops: ConvOps = BUILTIN):
    """Returns the residual f(x; θ) and the input of every conv layer (for the hand-written backward)."""
    acts, h = [], x
    for layer in range(DEPTH):
        acts.append(h)
        h = ops.conv(h, params[2 * layer]) + params[2 * layer + 1]
        if layer < DEPTH - 1:
            h = tf.nn.relu(h)
    return h, acts


def _residual(params, x, compute_dtype=None, ops: ConvOps = BUILTIN):
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

    ``compute_dtype`` and ``ops`` as in :func:`l1_loss_and_grads` (f in that type, the residual sum in x's).
    """
    return x + _residual(params, x, compute_dtype, ops)[0]


def super_resolve(params, lr, scale, output_shape=None, ops: ConvOps = BUILTIN):
    """SR = net(bicubic↑s(LR)); ``output_shape`` defaults to ``ceil(s · LR size)``."""
    return forward(params, upscale(lr, scale, output_shape), ops=ops)


def l1_loss_and_grads(params, x, y, compute_dtype=None, ops: ConvOps = BUILTIN):
    """Mean-L1 loss of ``forward(params, x)`` against ``y`` and its gradient for each parameter.

    Equal to ``GradientTape`` gradients of ``reduce_mean(|forward(params, x) - y|)`` (tested),
    in TFLite builtin ops only, and differentiable again (second-order MAML).

    ``compute_dtype`` (e.g. ``tf.bfloat16``) runs the convolutions and their gradients in that type
    (mixed precision, Micikevicius et al. 2018: weights, the residual sum, the loss and the returned
    gradients stay in the type of ``x``); bfloat16 is 1.3-1.9x faster on CPUs with AVX512-BF16.

    ``ops`` picks how the convolutions and their gradients are computed (same values): ``BUILTIN`` (TFLite
    builtins, differentiable again), ``NATIVE`` (TF's ``Conv2DBackpropFilter/Input`` kernels: faster on CPU
    with oneDNN, not TFLite builtins, lowered slowly by XLA on CPU; the meta-test's choice) or ``TAPS`` (batch
    matmuls over shifted views: what LiteRT's XNNPACK delegate runs when the weights are variables).
    """
    dtype = x.dtype
    h, acts, cparams = _residual(params, x, compute_dtype, ops)
    diff = x + h - y
    loss = tf.reduce_mean(tf.abs(diff))
    d = tf.cast(tf.sign(diff) / tf.cast(tf.size(diff), dtype), cparams[0].dtype)
    grads = [None] * len(params)
    for layer in reversed(range(DEPTH)):
        if layer < DEPTH - 1:
            d = tf.where(acts[layer + 1] > 0, d, tf.zeros_like(d))  # ReLU'(pre) = [post > 0]; no float mask
        grads[2 * layer] = ops.filter_grad(acts[layer], d)
        grads[2 * layer + 1] = tf.reduce_sum(tf.cast(d, dtype), axis=[0, 1, 2])
        if layer > 0:
            d = ops.input_grad(d, cparams[2 * layer])
    return loss, [tf.cast(g, dtype) for g in grads]


@keras.saving.register_keras_serializable(package="mzsr_tf")
class MZSRNet(keras.Model):
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

    @property
    def params(self) -> list:
        return list(self._params)

    def set_params(self, values) -> None:
        for var, value in zip(self._params, values, strict=True):
            var.assign(value)

    def call(self, lr):
        return super_resolve(self.params, lr, self.scale)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


def _check_shapes(arrays, source) -> list[np.ndarray]:
    expected = param_shapes()
    if len(arrays) != len(expected):
        raise InputError(f"{source}: expected {len(expected)} weight tensors, found {len(arrays)}")
    for name, a, s in zip(PARAM_NAMES, arrays, expected):
        if tuple(a.shape) != s:
            raise InputError(f"{source}: {name} has shape {tuple(a.shape)}, expected {s}")
        if not np.all(np.isfinite(a)):
            raise InputError(f"{source}: {name} contains NaN or Inf")
    return [np.asarray(a, np.float32) for a in arrays]


INNER_LR = "inner_lr"  # learned per-tensor, per-step inner rates beside the weights (MAML++ LSLR)
SCALE = "mzsr_scale"  # the SR factor the weights were trained for, when the file records it
# train.py checkpoints hold the network's variables, in ``params`` order, as the optimizer's.
_TRAIN_CKPT = "optimizer/_trainable_variables/{}/.ATTRIBUTES/VARIABLE_VALUE"


def load_params(path) -> list[tf.Tensor]:
    """Load weights from ``.weights.h5`` (ours), ``.npz`` (``convN/kernel`` arrays) or a TF checkpoint.

    A TF checkpoint is either the official MZSR TF1 layout (variables ``MODEL/convN/kernel|bias``)
    or one of ``train.py``'s (``RUN/ckpt/ckpt-N``, to use a step chosen by validation), given as its
    prefix (``.../Pretrained``), its ``.index`` file or its folder (the latest checkpoint).
    """
    path = Path(path)
    name = path.name
    try:
        if name.endswith(".weights.h5"):
            if not path.is_file():
                raise InputError(f"{path}: weights file not found")
            net = MZSRNet()
            net.load_weights(str(path))
            arrays = [v.numpy() for v in net.params]
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                missing = [n for n in PARAM_NAMES if n not in data]
                if missing:
                    raise InputError(f"{path}: missing arrays {', '.join(missing[:3])}")
                arrays = [data[n] for n in PARAM_NAMES]
        else:
            prefix = path.with_suffix("") if path.suffix == ".index" else path
            if path.is_dir():
                prefix = tf.train.latest_checkpoint(str(path)) or path
            if not Path(str(prefix) + ".index").is_file():
                raise InputError(f"{path}: not a .weights.h5, .npz or TF checkpoint")
            reader = tf.train.load_checkpoint(str(prefix))
            keys = reader.get_variable_to_shape_map()
            names = [f"MODEL/{n}" for n in PARAM_NAMES]
            if names[0] not in keys and _TRAIN_CKPT.format(0) in keys:  # a train.py checkpoint
                names = [_TRAIN_CKPT.format(i) for i in range(len(PARAM_NAMES))]
            missing = [n for n in names if n not in keys]
            if missing:
                raise InputError(f"{path}: checkpoint lacks {missing[0]}")
            arrays = [reader.get_tensor(n) for n in names]
    except InputError:
        raise
    except Exception as e:  # h5py/TF raise many types for corrupt files
        raise InputError(f"{path}: cannot read weights ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    return [tf.constant(a) for a in _check_shapes(arrays, path)]


def _check_inner_lr(rates, source) -> np.ndarray:
    rates = np.asarray(rates, np.float32)
    if rates.ndim != 2 or rates.shape[0] < 1 or rates.shape[1] != len(PARAM_NAMES):
        raise InputError(f"{source}: {INNER_LR} has shape {rates.shape}, expected [steps, {len(PARAM_NAMES)}]")
    if not np.all(np.isfinite(rates)):
        raise InputError(f"{source}: {INNER_LR} contains NaN or Inf")
    return rates


def load_inner_lr(path) -> np.ndarray | None:
    """The learned inner learning rates (MAML++ LSLR, [steps, 16]) stored with the weights, or None."""
    path = Path(path)
    try:
        if path.name.endswith(".weights.h5"):
            import h5py

            with h5py.File(path, "r") as f:
                rates = f[INNER_LR][()] if INNER_LR in f else None
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                rates = data[INNER_LR] if INNER_LR in data else None
        else:
            prefix = path.with_suffix("") if path.suffix == ".index" else path
            if path.is_dir():
                prefix = tf.train.latest_checkpoint(str(path)) or path
            reader = tf.train.load_checkpoint(str(prefix))
            key = f"{INNER_LR}/.ATTRIBUTES/VARIABLE_VALUE"
            rates = reader.get_tensor(key) if reader.has_tensor(key) else None
    except Exception as e:  # h5py/TF raise many types for corrupt files
        raise InputError(f"{path}: cannot read weights ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    return None if rates is None else _check_inner_lr(rates, path)


def load_scale(path) -> int | None:
    """The SR factor the weights were trained for, if their file records it (``save_params(scale=...)``)."""
    path = Path(path)
    if not path.is_file():  # a checkpoint folder or prefix records none; a missing file is load_params' to report
        return None
    try:
        if path.name.endswith(".weights.h5"):
            import h5py

            with h5py.File(path, "r") as f:
                value = f.attrs.get(SCALE)
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                value = data[SCALE] if SCALE in data else None
        else:
            return None
    except Exception as e:  # h5py raises many types for corrupt files
        raise InputError(f"{path}: cannot read weights ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    return None if value is None else int(value)


def check_scale(path, scale: int) -> None:
    """Refuse weights whose file records another SR factor than ``scale``."""
    trained = load_scale(path)
    if trained is not None and trained != int(scale):
        raise InputError(f"{path}: weights trained for x{trained}, not x{int(scale)} (use --scale {trained})")


def save_params(params, path, overwrite: bool = False, inner_lr=None, scale: int | None = None) -> Path:
    """Save weights as ``.weights.h5`` (Keras) or ``.npz`` (``convN/kernel`` arrays), atomically.

    ``inner_lr``: learned inner learning rates [steps, 16] to store with them (:func:`load_inner_lr`);
    ``scale``: the SR factor they were trained for (:func:`load_scale`).
    """
    from mzsr_tf.io import atomic_write

    path = Path(path)
    arrays = _check_shapes([np.asarray(p) for p in params], path)
    rates = None if inner_lr is None else _check_inner_lr(inner_lr, path)
    with atomic_write(path, overwrite) as tmp:
        if path.name.endswith(".weights.h5"):
            net = MZSRNet()
            net.set_params(arrays)
            final = tmp.with_name(tmp.name + ".weights.h5")  # Keras insists on the suffix
            net.save_weights(str(final))
            if rates is not None or scale is not None:
                import h5py

                with h5py.File(final, "a") as f:
                    if rates is not None:
                        f.create_dataset(INNER_LR, data=rates)
                    if scale is not None:
                        f.attrs[SCALE] = int(scale)
            final.replace(tmp)
        elif path.suffix == ".npz":
            extra = {} if rates is None else {INNER_LR: rates}
            extra.update({} if scale is None else {SCALE: np.int64(scale)})
            with open(tmp, "wb") as f:
                np.savez(f, **dict(zip(PARAM_NAMES, arrays)), **extra)
        else:
            raise InputError(f"{path}: weights must be saved as .weights.h5 or .npz")
    return path
