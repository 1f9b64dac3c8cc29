"""The LiteRT op profiler: every op replayed with its real inputs, XNNPACK's verdict per op."""

import tempfile

import numpy as np
import pytest
import tensorflow as tf

from mzsr_tf.export.profile import OpTiming, profile_signature, summarise


class _Two(tf.Module):
    """A conv whose filter is a variable (XNNPACK refuses it) and a batch matmul with the same weights (it takes it)."""

    def __init__(self):
        super().__init__()
        self.w = tf.Variable(np.random.default_rng(0).standard_normal((3, 3, 4, 4)).astype(np.float32))
        self.f = tf.function(self._f, input_signature=[tf.TensorSpec([1, None, None, 4], tf.float32, name="x")])
        self.g = tf.function(self._g, input_signature=[])

    def _f(self, x):
        w = self.w.read_value()
        conv = tf.nn.conv2d(x, w, 1, "SAME")
        return {"y": tf.matmul(conv, w[1, 1][None, None])}

    def _g(self):
        self.w.assign(self.w * 2.0)  # an assignment keeps w a variable in the converted model
        return {"ok": tf.constant(True)}


@pytest.fixture(scope="module")
def model():
    module = _Two()
    with tempfile.TemporaryDirectory() as tmp:
        tf.saved_model.save(module, tmp, signatures={"f": module.f.get_concrete_function(), "g": module.g})
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=["f", "g"])
        converter.experimental_enable_resource_variables = True
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        return converter.convert()


def test_every_compute_op_is_replayed_with_the_delegates_verdict(model):
    x = np.random.default_rng(1).random((1, 16, 12, 4), dtype=np.float32)
    timings, total = profile_signature(model, "f", {"x": x}, repeats=1)
    ops = {t.op: t for t in timings}
    assert {"CONV_2D", "BATCH_MATMUL"} <= set(ops)
    assert not any(t.op in ("VAR_HANDLE", "READ_VARIABLE") for t in timings)  # weights moves are not replayed
    assert not ops["CONV_2D"].delegated  # a variable filter: the reference kernel runs it
    assert ops["BATCH_MATMUL"].delegated  # XNNPACK takes batch matmuls with changing operands
    assert ops["CONV_2D"].output_shape == (1, 16, 12, 4)
    assert total > 0 and all(t.seconds > 0 for t in timings)


def test_summary_adds_up_per_op_type():
    timings = [
        OpTiming(0, "ADD", 0.5, True, ()),
        OpTiming(1, "CONV_2D", 2.0, False, ()),
        OpTiming(2, "ADD", 0.25, False, ()),
    ]
    rows = summarise(timings)
    assert [r["op"] for r in rows] == ["CONV_2D", "ADD"]  # slowest first
    assert rows[1] == {"op": "ADD", "seconds": 0.75, "calls": 2, "delegated": 1}


def test_conv_floor_times_one_computation_three_ways():
    from benchmarks.export_speed import conv_floor

    row = conv_floor(tf, 6, threads=1, repeats=1)  # asserts that the three outputs agree
    assert row["lr_size"] == 6 and min(row["tf_s"], row["litert_constant_s"], row["litert_variable_s"]) > 0
    assert row["variable_ratio"] == round(row["litert_variable_s"] / row["tf_s"], 2)
