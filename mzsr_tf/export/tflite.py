"""On-device MZSR: a LiteRT (TFLite) model that adapts its own weights, builtin ops only.

The pattern is LiteRT's on-device training (a ``tf.Module`` with plain ``tf.Variable`` weights and one
signature per action, https://ai.google.dev/edge/litert/models/ondevice_training); the app runs the
meta-test loop (paper Algorithm 2) by calling the signatures:

* ``train_step(image, kernel, learning_rate) -> loss, offset``: one SGD update
  θ_i ← θ_i − lr_i·∇_i L1(net(bicubic↑(son)), image) where son = (image ⊛ kernel)↓s, direct subsampling with a
  reflect border (``degradation.degrade``);
  ``learning_rate`` is float32 [16], one rate per weight tensor in ``get_weights`` order, or [1] for all;
  the gradient is the hand-written ``backward.l1_loss_and_grads`` (``GradientTape`` needs Flex ops);
  ``loss`` is the L1 before the update, as ``zero_shot.adapt`` reports it; ``offset`` is the kernel's
  (``kernels.kernel_offset``, float32 [2]): the phase of the son's up-sampling, kept for ``super_resolve``.
* ``learning_rates(kernel) -> learning_rates``: the update rule to run for this kernel, float32 [K, 16], row i for
  update i + 1 (updates past K reuse the last row): θ_M's meta-learned rates (``AdaptConfig.learned``, MAML++ LSLR;
  scaled by the kernel when they are kernel-conditioned, ``meta.kernel_rates``) when it has them, else the official
  ``test.py`` schedule for the scale (``AdaptConfig.official``).
* ``super_resolve(image) -> sr``: clip(net(bicubic↑s(image))) at (sH, sW) with the current weights, up-sampled
  with the last ``train_step``'s kernel offset (as ``zero_shot.zero_shot_sr``).
* ``reset() -> ok``: back to θ_M and offset 0 (TFLite drops signatures without outputs, hence ``ok``).
* ``get_weights() -> conv1_kernel, conv1_bias, ..., conv8_bias``: the current weights.
* ``estimate_kernel(image) -> kernel, covariance`` (with a kernel estimator): blind SR on the device, the
  image's kernel estimated as ``adapt.py`` does without ``--kernel`` (``kernel_estimation.estimate_graph``,
  float32 arithmetic, the larger weights stored in float16), on the ``train_step`` kernel grid (a wider
  estimate is cut at its edge and renormalised).

``image`` is float32 [1, H, W, 3] in [0, 1], any H, W ≥ the kernel size; ``kernel`` is float32
[k, k] with k fixed at export (``--kernel-size``; put smaller kernels in with :func:`embed_kernel`),
normalised to sum 1 in the graph. The graph has no asserts (they are not builtins): apps validate.
The device runs SGD steps only: for weights without learned rates ``adapt.py`` and the SavedModel take Adam
steps, whose two moment buffers would add two float32 copies of θ to the file, past ``MAX_BYTES``. It has no
meta-test guard (``AdaptConfig.keep_best``) or backtracking (``AdaptConfig.backtrack``): the app keeps the last
update's weights.

Speed: XNNPACK, LiteRT's CPU delegate, takes CONV_2D only with constant filters, and here the filters are
variables; the graph therefore computes every convolution and its gradients as batch matmuls over shifted
views (``conv_ops.TAPS``), which XNNPACK runs with changing weights, with slice bounds that are constants so
that it takes them at any image size (``mzsr_tf.export.profile`` shows which op runs where).

Size: θ_M is needed twice — as the variables' initial values and as ``reset``'s source — but both
are built from the same float32 arrays and the converter stores identical constant data once, so
the file holds one copy; the kernel estimator's weights are stored in float16 (:func:`compact`).
:func:`check_tflite` enforces ``MAX_BYTES``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils

from mzsr_tf.backward import l1_loss_and_grads
from mzsr_tf.conv_ops import TAPS
from mzsr_tf.errors import InputError
from mzsr_tf.export.profile import op_name
from mzsr_tf.kernel_estimation import estimate_graph
from mzsr_tf.kernels import kernel_features, kernel_offset
from mzsr_tf.meta import kernel_rates
from mzsr_tf.model import PARAM_NAMES, super_resolve
from mzsr_tf.optim import sgd
from mzsr_tf.zero_shot import AdaptConfig, rate_matrix, training_pair

__all__ = [
    "SR_SIGNATURES",
    "SLOTS",
    "InferenceModule",
    "inference_model",
    "weight_slots",
    "bake_weights",
    "save_inference_model",
    "compact",
    "SIGNATURES",
    "MAX_BYTES",
    "WEIGHT_NAMES",
    "AdaptationModule",
    "embed_kernel",
    "device_rates",
    "convert",
    "op_names",
    "check_tflite",
    "save_tflite",
]

SIGNATURES = ("train_step", "learning_rates", "super_resolve", "reset", "get_weights")
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


def device_rates(scale: int, inner_lr=None) -> np.ndarray:
    """The update rule behind the ``learning_rates`` signature, one row per update: ``inner_lr``'s rows ([K, 16],
    or [K, 16 + F] kernel-conditioned: ``meta.kernel_rates``), else the official schedule of the released model for
    ``scale`` (``AdaptConfig.official``), [K, 16]."""
    if inner_lr is not None:
        return np.asarray(inner_lr, np.float32)
    return rate_matrix(AdaptConfig.official(scale, steps=len(AdaptConfig.official(scale).schedule)))


class AdaptationModule(tf.Module):
    """θ as ``tf.Variable`` s (Keras variables are not embedded by the converter) and θ_M as constants.

    Args:
      params: meta-initial weights θ_M (16 tensors, ``model.PARAM_NAMES`` order).
      scale: integer SR factor.
      kernel_size: side of ``train_step``'s kernel input.
      estimator: kernel estimator weights (``kernel_estimation``) for ``estimate_kernel``, or None.
      inner_lr: θ_M's meta-learned rates [K, 16] or [K, 16 + F] for ``learning_rates`` (:func:`device_rates`),
        or None.
    """

    def __init__(self, params, scale: int, kernel_size: int, estimator=None, inner_lr=None):
        super().__init__(name="mzsr_adapt")
        self.scale = int(scale)
        meta_initial = [np.asarray(p, np.float32) for p in params]
        # The same arrays initialise the variables and feed reset(): identical data, stored once.
        self._meta_initial = [tf.constant(a) for a in meta_initial]
        self.weights = [tf.Variable(a, name=n) for a, n in zip(meta_initial, WEIGHT_NAMES)]
        self.offset = tf.Variable(tf.zeros([2]), name="offset")  # the last train_step's kernel offset
        image = tf.TensorSpec([1, None, None, 3], tf.float32, name="image")
        kernel = tf.TensorSpec([kernel_size, kernel_size], tf.float32, name="kernel")
        rate = tf.TensorSpec([None], tf.float32, name="learning_rate")
        self.train_step = tf.function(self._train_step, input_signature=[image, kernel, rate])
        self._rates = tf.constant(device_rates(scale, inner_lr))
        self.learning_rates = tf.function(self._learning_rates, input_signature=[kernel])
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
        """One meta-test update on (son → image): SGD with one rate per tensor (the official ``test.py``: one
        for all; MAML++ LSLR: ``learning_rates``' row)."""
        kernel = kernel / tf.reduce_sum(kernel)
        son_up, father = training_pair(image, kernel, self.scale, SUBSAMPLE)
        values = self._values()
        loss, grads = l1_loss_and_grads(values, son_up, father, ops=TAPS)
        rates = tf.broadcast_to(learning_rate, [len(values)])
        for w, new in zip(self.weights, sgd(values, grads, rates)):
            w.assign(new)
        self.offset.assign(kernel_offset(kernel))
        return {"loss": loss, "offset": self.offset.read_value()}

    def _learning_rates(self, kernel):
        """The rates of each update [K, 16] for this kernel (the same for every kernel unless kernel-conditioned)."""
        return {"learning_rates": kernel_rates(self._rates, kernel_features(kernel))}

    def _super_resolve(self, image):
        shape = tf.shape(image)[1:3] * self.scale
        sr = super_resolve(self._values(), image, self.scale, shape, TAPS, self.offset.read_value())
        return {"sr": tf.clip_by_value(sr, 0.0, 1.0)}

    def _reset(self):
        for w, a in zip(self.weights, self._meta_initial):
            w.assign(a)
        self.offset.assign(tf.zeros([2]))
        return {"ok": tf.constant(True)}

    def _get_weights(self):
        return dict(zip(WEIGHT_NAMES, self._values()))

    def _estimate_kernel(self, image):
        kernel, cov = estimate_graph(self._estimator, image[0], self.scale, self.kernel_size, tf.float32)
        return {"kernel": kernel, "covariance": cov}


def convert(module: AdaptationModule) -> bytes:
    """SavedModel → TFLite with resource variables and builtin ops only (no SELECT_TF_OPS: no Flex), compacted."""
    with tempfile.TemporaryDirectory(prefix="mzsr_tflite_") as tmp:
        signatures = {name: getattr(module, name).get_concrete_function() for name in module.signatures}
        tf.saved_model.save(module, tmp, signatures=signatures)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=list(module.signatures))
        converter.experimental_enable_resource_variables = True
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        model = converter.convert()
    return compact(model, "estimate_kernel" if "estimate_kernel" in module.signatures else None)


def _half_constants(m, index: int) -> None:
    """Store subgraph ``index``'s float32 weights (≥ 1024 values, used by no other subgraph) as float16 behind
    DEQUANTIZE ops: the form of the converter's float16 quantization, which XNNPACK runs as constant weights."""
    g = m.subgraphs[index]
    elsewhere = {t.buffer for i, sub in enumerate(m.subgraphs) if i != index for t in sub.tensors}
    produced = {o for op in g.operators for o in op.outputs}
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in m.operatorCodes]
    if schema.BuiltinOperator.DEQUANTIZE not in codes:
        code = schema.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.DEQUANTIZE
        code.version = 3  # float16 input
        m.operatorCodes.append(code)
        codes.append(schema.BuiltinOperator.DEQUANTIZE)
    dequantize = codes.index(schema.BuiltinOperator.DEQUANTIZE)
    ops = []
    for t, tensor in enumerate(list(g.tensors)):
        data = m.buffers[tensor.buffer].data if tensor.buffer else None
        if tensor.type != schema.TensorType.FLOAT32 or data is None or len(data) < 4096 or t in produced:
            continue
        if tensor.buffer in elsewhere:
            continue
        half = schema.BufferT()
        half.data = np.frombuffer(bytes(bytearray(data)), np.float32).astype(np.float16).view(np.uint8)
        m.buffers.append(half)
        stored = schema.TensorT()
        stored.shape, stored.type, stored.buffer = tensor.shape, schema.TensorType.FLOAT16, len(m.buffers) - 1
        g.tensors.append(stored)
        m.buffers[tensor.buffer].data = None
        tensor.buffer = 0
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = dequantize, [len(g.tensors) - 1], [t]
        ops.append(op)
    g.operators = ops + list(g.operators)


def compact(model: bytes, half_signature: str | None = None) -> bytes:
    """Drop tensor names (signature inputs and outputs keep theirs) and, for ``half_signature``, store its own
    weights in float16 (the kernel estimator: half its bytes; θ stays float32 for exact adaptation)."""
    m = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    for sub in m.subgraphs:
        for tensor in sub.tensors:
            tensor.name = None
    if half_signature is not None:
        keys = {s.signatureKey.decode(): s.subgraphIndex for s in m.signatureDefs}
        _half_constants(m, keys[half_signature])
    return bytes(flatbuffer_utils.convert_object_to_bytearray(m))


def op_names(model: bytes) -> set[str]:
    """Every operator used by any subgraph; custom ops (Flex included) as ``CUSTOM:<name>`` (``profile.op_name``)."""
    m = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    return {op_name(m, op) for sub in m.subgraphs for op in sub.operators}


def check_tflite(model: bytes, signatures=SIGNATURES) -> None:
    """Raise unless the model has builtin ops only, exactly ``signatures`` and fits in ``MAX_BYTES`` (a model too large
    for it is an input error: what made it large is the weights or kernel estimator given)."""
    custom = sorted(n for n in op_names(model) if n.startswith("CUSTOM:"))
    if custom:
        raise RuntimeError(f"TFLite model needs non-builtin ops: {', '.join(custom)}")
    m = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    keys = sorted(s.signatureKey.decode() for s in m.signatureDefs)
    if keys != sorted(signatures):
        raise RuntimeError(f"TFLite model has signatures {keys}, expected {sorted(signatures)}")
    if len(model) > MAX_BYTES:
        raise InputError(
            f"the LiteRT model would be {len(model):,} bytes, over the {MAX_BYTES:,} a phone model may take: "
            "export with a smaller kernel estimator, or --kernel-estimator none"
        )


class InferenceModule(tf.Module):
    """``super_resolve(image, offset) -> sr`` with θ as constants: CONV_2D with constant filters, XNNPACK's own
    kernels; ``offset`` float32 [2] is the up-sampling's phase, the adaptation's ``train_step`` offset (0: none).

    The device's fast path after adaptation: :func:`bake_weights` writes the adapted weights into the file's
    constant data (a copy of the bytes), then a new interpreter runs it.
    """

    def __init__(self, params, scale: int):
        super().__init__(name="mzsr_sr")
        self.scale = int(scale)
        self._params = [tf.constant(np.asarray(p, np.float32)) for p in params]
        image = tf.TensorSpec([1, None, None, 3], tf.float32, name="image")
        offset = tf.TensorSpec([2], tf.float32, name="offset")
        self.super_resolve = tf.function(self._super_resolve, input_signature=[image, offset])
        self.signatures = SR_SIGNATURES

    def _super_resolve(self, image, offset):
        sr = super_resolve(self._params, image, self.scale, tf.shape(image)[1:3] * self.scale, shift=offset)
        return {"sr": tf.clip_by_value(sr, 0.0, 1.0)}


SR_SIGNATURES = ("super_resolve",)
SLOTS = "mzsr_weight_slots"  # metadata: where each weight's float32 data sits in the file, and in which layout
_SLOTS_BYTES = 2048  # reserved, space-padded JSON


def _stored(value, kernel: bool) -> np.ndarray:
    """A weight as the converter stores it: CONV_2D filters OHWI (ours are HWIO), biases as they are."""
    a = np.asarray(value, np.float32)
    return np.ascontiguousarray(a.transpose(3, 0, 1, 2) if kernel else a)


def _buffer_spans(model: bytes) -> list[tuple[int, int]]:
    """(start, length) in the file of every buffer's data."""
    m = schema.Model.GetRootAs(model, 0)
    spans = []
    for i in range(m.BuffersLength()):
        b = m.Buffers(i)
        n = b.DataLength()
        spans.append((b._tab.Vector(b._tab.Offset(4)) if n else 0, n))
    return spans


def inference_model(params, scale: int) -> bytes:
    """The baked-weights SR model for ``params``, carrying its weight slots (metadata ``SLOTS``).

    It is converted once with distinct placeholder weights, so that each weight's constant data can be
    found in the file, then ``params`` are baked in.
    """
    rng = np.random.default_rng(0)
    marks = [rng.standard_normal(np.shape(p)).astype(np.float32) for p in params]
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(convert(InferenceModule(marks, scale))))
    meta_buffer = schema.BufferT()
    meta_buffer.data = np.frombuffer(b" " * _SLOTS_BYTES, np.uint8)
    model.buffers.append(meta_buffer)
    meta = schema.MetadataT()
    meta.name, meta.buffer = SLOTS, len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), meta]
    model = bytearray(flatbuffer_utils.convert_object_to_bytearray(model))
    spans = _buffer_spans(bytes(model))
    found = {bytes(model[a : a + n]): a for a, n in spans if n}
    slots = []
    for name, mark in zip(WEIGHT_NAMES, marks):
        layout = "OHWI" if mark.ndim == 4 else "O"
        start = found.get(_stored(mark, mark.ndim == 4).tobytes())
        if start is None:
            raise RuntimeError(f"the converted SR model does not hold {name} as one constant")
        slots.append({"name": name, "offset": start, "layout": layout, "shape": list(np.shape(mark))})
    text = json.dumps(slots, separators=(",", ":")).encode()
    if len(text) > _SLOTS_BYTES:
        raise RuntimeError("weight slots do not fit their metadata buffer")
    start, _ = spans[-1]
    model[start : start + len(text)] = text
    return bake_weights(bytes(model), params)


def weight_slots(model: bytes) -> list[dict]:
    """The ``SLOTS`` table of an :func:`inference_model`: name, byte offset, stored layout, HWIO shape."""
    m = schema.Model.GetRootAs(model, 0)
    for i in range(m.MetadataLength()):
        if m.Metadata(i).Name().decode() == SLOTS:
            start, n = _buffer_spans(model)[m.Metadata(i).Buffer()]
            return json.loads(model[start : start + n].decode())
    raise ValueError("not an MZSR SR model: no weight slots")


def bake_weights(model: bytes, params) -> bytes:
    """A copy of an :func:`inference_model` holding ``params`` (16 arrays, HWIO kernels; e.g. the adapted
    weights from the adaptation model's ``get_weights``). Apps do the same: write each weight, in its
    slot's layout, at its offset."""
    out = bytearray(model)
    for slot, value in zip(weight_slots(model), params, strict=True):
        if list(np.shape(value)) != slot["shape"]:
            raise ValueError(f"{slot['name']}: shape {np.shape(value)}, expected {slot['shape']}")
        data = _stored(value, slot["layout"] == "OHWI").tobytes()
        out[slot["offset"] : slot["offset"] + len(data)] = data
    return bytes(out)


def save_tflite(params, path, scale: int, kernel_size: int, estimator=None, inner_lr=None) -> Path:
    """Build, convert, check and write ``mzsr_adapt.tflite`` (with ``estimator``: its ``estimate_kernel`` too;
    ``inner_lr``: θ_M's learned rates for ``learning_rates``)."""
    module = AdaptationModule(params, scale, kernel_size, estimator, inner_lr)
    model = convert(module)
    check_tflite(model, module.signatures)
    path = Path(path)
    path.write_bytes(model)
    return path


def save_inference_model(params, path, scale: int) -> Path:
    """Build, check and write the baked-weights SR model ``mzsr_sr.tflite`` (:func:`inference_model`)."""
    model = inference_model(params, scale)
    check_tflite(model, SR_SIGNATURES)
    path = Path(path)
    path.write_bytes(model)
    return path
