"""On-device MZSR: a LiteRT (TFLite) model that adapts its own weights, builtin ops only.

The pattern is LiteRT's on-device training (a ``tf.Module`` with plain ``tf.Variable`` weights and one
signature per action, https://ai.google.dev/edge/litert/models/ondevice_training); the app runs the
meta-test loop (paper Algorithm 2) by calling the signatures:

* ``train_step(image, kernel, learning_rate) -> loss``: one SGD update θ ← θ − lr·∇L1(net(bicubic↑(son)), image)
  where son = (image ⊛ kernel)↓s, direct subsampling with a reflect border (``degradation.degrade``);
  the gradient is the hand-written ``model.l1_loss_and_grads`` (``GradientTape`` needs Flex ops);
  ``loss`` is the L1 before the update, as ``zero_shot.adapt`` reports it.
* ``super_resolve(image) -> sr``: clip(net(bicubic↑s(image))) at (sH, sW) with the current weights.
* ``reset() -> ok``: back to θ_M (TFLite drops signatures without outputs, hence ``ok``).
* ``get_weights() -> conv1_kernel, conv1_bias, ..., conv8_bias``: the current weights.
* ``estimate_kernel(image) -> kernel, covariance`` (with a kernel estimator): blind SR on the device, the
  image's kernel estimated as ``adapt.py`` does without ``--kernel`` (``kernel_estimation.estimate_graph``, in
  float32), on the ``train_step`` kernel grid (a wider estimate is cut at its edge and renormalised).

``image`` is float32 [1, H, W, 3] in [0, 1], any H, W ≥ the kernel size; ``kernel`` is float32
[k, k] with k fixed at export (``--kernel-size``; put smaller kernels in with :func:`embed_kernel`),
normalised to sum 1 in the graph. The graph has no asserts (they are not builtins): apps validate.
Use the official schedule for ``learning_rate``: ×2, 2e-2, then 1e-2 for steps 2-4, then 5e-3;
×4, 1e-2, then 5e-3 for steps 2-5, then 1e-3 (``AdaptConfig.official(scale)``). ``adapt.py`` and the
SavedModel take Adam steps by default; Adam's two moment buffers would add two float32 copies of θ
to the file, past ``MAX_BYTES``, so the device graph keeps SGD (on Set5 ×2 ten official SGD steps
give 0.06 dB more to 0.84 dB less than ten default Adam steps under the four paper kernels, README).

Size: θ_M is needed twice — as the variables' initial values and as ``reset``'s source — but both
are built from the same float32 arrays and the converter stores identical constant data once, so
the file holds one copy (~0.9 MB of weights + ~0.1 MB of graph). :func:`check_tflite` enforces it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils

from mzsr_tf.kernel_estimation import estimate_graph
from mzsr_tf.model import PARAM_NAMES, l1_loss_and_grads, super_resolve
from mzsr_tf.zero_shot import training_pair

__all__ = [
    "SIGNATURES",
    "MAX_BYTES",
    "WEIGHT_NAMES",
    "AdaptationModule",
    "embed_kernel",
    "convert",
    "op_names",
    "check_tflite",
    "save_tflite",
]

SIGNATURES = ("train_step", "super_resolve", "reset", "get_weights")
MAX_BYTES = 1_500_000  # issue #7: at most 1.5 MB (one float32 copy of θ is 0.9 MB)
WEIGHT_NAMES = [n.replace("/", "_") for n in PARAM_NAMES]  # signature output names: conv1_kernel, ...
SUBSAMPLE = "direct"  # MZSR Direct×s, the kernel convention of the shipped meta-weights


def embed_kernel(kernel, size: int) -> np.ndarray:
    """Zero-pad a k×k kernel to size×size keeping its centre (index k // 2 → size // 2).

    The blur is unchanged: the extra taps are zero and the reflect border is the same
    (``degradation`` convention: centre at ``size // 2``, scipy ``correlate``).
    """
    k = np.asarray(kernel, np.float32)
    if k.ndim != 2 or max(k.shape) > size:
        raise ValueError(f"kernel of shape {k.shape} does not fit in {size}x{size}")
    out = np.zeros((size, size), np.float32)
    top, left = size // 2 - k.shape[0] // 2, size // 2 - k.shape[1] // 2
    out[top : top + k.shape[0], left : left + k.shape[1]] = k
    return out


class AdaptationModule(tf.Module):
    """θ as ``tf.Variable`` s (Keras variables are not embedded by the converter) and θ_M as constants.

    Args:
      params: meta-initial weights θ_M (16 tensors, ``model.PARAM_NAMES`` order).
      scale: integer SR factor.
      kernel_size: side of ``train_step``'s kernel input.
    """

    def __init__(self, params, scale: int, kernel_size: int, estimator=None):
        super().__init__(name="mzsr_adapt")
        self.scale = int(scale)
        meta_initial = [np.asarray(p, np.float32) for p in params]
        # The same arrays initialise the variables and feed reset(): identical data, stored once.
        self._meta_initial = [tf.constant(a) for a in meta_initial]
        self.weights = [tf.Variable(a, name=n) for a, n in zip(meta_initial, WEIGHT_NAMES)]
        image = tf.TensorSpec([1, None, None, 3], tf.float32, name="image")
        kernel = tf.TensorSpec([kernel_size, kernel_size], tf.float32, name="kernel")
        rate = tf.TensorSpec([], tf.float32, name="learning_rate")
        self.train_step = tf.function(self._train_step, input_signature=[image, kernel, rate])
        self.super_resolve = tf.function(self._super_resolve, input_signature=[image])
        self.reset = tf.function(self._reset, input_signature=[])
        self.get_weights = tf.function(self._get_weights, input_signature=[])
        self.kernel_size = int(kernel_size)
        self.signatures = SIGNATURES
        if estimator is not None:
            self._estimator = [tf.constant(np.asarray(p, np.float32)) for p in estimator]
            self.estimate_kernel = tf.function(self._estimate_kernel, input_signature=[image])
            self.signatures = SIGNATURES + ("estimate_kernel",)

    def _values(self):
        return [w.read_value() for w in self.weights]

    def _train_step(self, image, kernel, learning_rate):
        """One meta-test update on (son → image), plain SGD like the official ``test.py``."""
        son_up, father = training_pair(image, kernel / tf.reduce_sum(kernel), self.scale, SUBSAMPLE)
        loss, grads = l1_loss_and_grads(self._values(), son_up, father)
        for w, g in zip(self.weights, grads):
            w.assign_sub(learning_rate * g)
        return {"loss": loss}

    def _super_resolve(self, image):
        sr = super_resolve(self._values(), image, self.scale, tf.shape(image)[1:3] * self.scale)
        return {"sr": tf.clip_by_value(sr, 0.0, 1.0)}

    def _reset(self):
        for w, a in zip(self.weights, self._meta_initial):
            w.assign(a)
        return {"ok": tf.constant(True)}

    def _get_weights(self):
        return dict(zip(WEIGHT_NAMES, self._values()))

    def _estimate_kernel(self, image):
        kernel, cov = estimate_graph(self._estimator, image[0], self.scale, self.kernel_size, tf.float32)
        return {"kernel": kernel, "covariance": cov}


def convert(module: AdaptationModule) -> bytes:
    """SavedModel → TFLite with resource variables and builtin ops only (no SELECT_TF_OPS: no Flex)."""
    with tempfile.TemporaryDirectory(prefix="mzsr_tflite_") as tmp:
        signatures = {name: getattr(module, name).get_concrete_function() for name in module.signatures}
        tf.saved_model.save(module, tmp, signatures=signatures)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=list(module.signatures))
        converter.experimental_enable_resource_variables = True
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        return converter.convert()


_OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def op_names(model: bytes) -> set[str]:
    """Every operator used by any subgraph; custom ops (Flex included) as ``CUSTOM:<name>``."""
    m = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    names = set()
    for sub in m.subgraphs:
        for op in sub.operators:
            code = m.operatorCodes[op.opcodeIndex]
            builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
            custom = code.customCode.decode() if code.customCode else ""
            names.add(f"CUSTOM:{custom}" if builtin == schema.BuiltinOperator.CUSTOM else _OP_NAMES[builtin])
    return names


def check_tflite(model: bytes, signatures=SIGNATURES) -> None:
    """Raise unless the model has builtin ops only, exactly ``signatures`` and fits in ``MAX_BYTES``."""
    custom = sorted(n for n in op_names(model) if n.startswith("CUSTOM:"))
    if custom:
        raise RuntimeError(f"TFLite model needs non-builtin ops: {', '.join(custom)}")
    m = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    keys = sorted(s.signatureKey.decode() for s in m.signatureDefs)
    if keys != sorted(signatures):
        raise RuntimeError(f"TFLite model has signatures {keys}, expected {sorted(signatures)}")
    if len(model) > MAX_BYTES:
        raise RuntimeError(f"TFLite model is {len(model):,} bytes, over the {MAX_BYTES:,} limit")


def save_tflite(params, path, scale: int, kernel_size: int, estimator=None) -> Path:
    """Build, convert, check and write ``mzsr_adapt.tflite`` (with ``estimator``: its ``estimate_kernel`` too)."""
    module = AdaptationModule(params, scale, kernel_size, estimator)
    model = convert(module)
    check_tflite(model, module.signatures)
    path = Path(path)
    path.write_bytes(model)
    return path
