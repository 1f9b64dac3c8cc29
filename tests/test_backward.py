"""The hand-written backward == GradientTape, for every way of computing the convolutions (conv_ops)."""

import functools

import numpy as np
import pytest
import tensorflow as tf

from mzsr_tf.backward import l1_loss_and_grads
from mzsr_tf.conv_ops import BUILTIN, NATIVE, TAPS
from mzsr_tf.model import PARAM_NAMES, forward, init_params


@pytest.mark.parametrize("ops", [BUILTIN, NATIVE, TAPS], ids=["builtin", "native", "taps"])
@pytest.mark.parametrize(
    "batch,height,width,dynamic",
    [(1, 12, 10, False), (2, 7, 9, False), (3, 1, 2, False), (2, 5, 3, True), (2, 40, 37, True)],
)
def test_hand_written_backward_matches_gradient_tape(batch, height, width, dynamic, ops):
    params = [p + 0.01 * tf.random.normal(p.shape, seed=i) for i, p in enumerate(init_params(3))]
    x = tf.random.uniform([batch, height, width, 3], seed=4)
    y = tf.random.uniform([batch, height, width, 3], seed=5)
    with tf.GradientTape() as tape:
        tape.watch(params)
        loss = tf.reduce_mean(tf.abs(forward(params, x) - y))
    expected = tape.gradient(loss, params)
    grads_fn = functools.partial(l1_loss_and_grads, ops=ops)
    if dynamic:  # unknown batch and spatial sizes at trace time, as in the serving and TFLite graphs
        spec = tf.TensorSpec([None, None, None, 3])
        grads_fn = tf.function(lambda p, a, b: l1_loss_and_grads(p, a, b, ops=ops)).get_concrete_function(
            [tf.TensorSpec(p.shape) for p in params], spec, spec
        )
    got_loss, got = grads_fn(params, x, y)
    np.testing.assert_allclose(got_loss, loss, rtol=1e-6)
    for name, g, e in zip(PARAM_NAMES, got, expected):
        scale = float(tf.reduce_max(tf.abs(e))) + 1e-12
        assert float(tf.reduce_max(tf.abs(g - e))) / scale < 1e-4, name


def test_bfloat16_backward_is_mixed_precision_and_close_to_float32():
    params = [p + 0.01 * tf.random.normal(p.shape, seed=i) for i, p in enumerate(init_params(3))]
    x = tf.random.uniform([2, 24, 20, 3], seed=4)
    y = tf.clip_by_value(x + 0.05 * tf.random.normal(x.shape, seed=5), 0, 1)
    loss32, g32 = l1_loss_and_grads(params, x, y)
    loss16, g16 = l1_loss_and_grads(params, x, y, tf.bfloat16)
    assert loss16.dtype == tf.float32 and all(g.dtype == tf.float32 for g in g16)
    loss_f32, g_f32 = l1_loss_and_grads(params, x, y, "float32")  # the default path, bit for bit
    assert float(loss_f32) == float(loss32) and all(np.array_equal(a, b) for a, b in zip(g_f32, g32))
    np.testing.assert_array_equal(forward(params, x, "float32"), forward(params, x))
    np.testing.assert_allclose(loss16, loss32, rtol=1e-2)
    for name, a, b in zip(PARAM_NAMES, g32, g16):
        a, b = a.numpy().ravel(), b.numpy().ravel()
        assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.99, name  # same direction
        assert not np.array_equal(a, b), name  # really computed in bfloat16
    _, native16 = l1_loss_and_grads(params, x, y, tf.bfloat16, NATIVE)  # the meta-test's route
    for name, a, b in zip(PARAM_NAMES, g16, native16):
        a, b = a.numpy().ravel(), b.numpy().ravel()
        assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.99, name
