"""The network: parameter count, residual, the Keras wrapper."""

import numpy as np
import tensorflow as tf

from mzsr_tf.conv_ops import TAPS
from mzsr_tf.model import PARAM_NAMES, MZSRNet, forward, init_params, param_shapes, super_resolve


def test_parameter_count_matches_paper():
    assert sum(int(np.prod(s)) for s in param_shapes()) == 225_091
    assert len(init_params(0)) == len(PARAM_NAMES) == 16


def test_global_residual_over_input():
    params = init_params(0)
    params[-2] = tf.zeros_like(params[-2])  # conv8 kernel
    params[-1] = tf.zeros_like(params[-1])
    x = tf.random.uniform([1, 9, 7, 3], seed=1)
    np.testing.assert_allclose(forward(params, x), x, atol=0)


def test_super_resolve_upsamples_then_refines():
    params = init_params(0)
    lr = tf.random.uniform([1, 8, 6, 3], seed=2)
    out = super_resolve(params, lr, 2)
    assert out.shape == (1, 16, 12, 3)
    assert super_resolve(params, lr, 2, (15, 11)).shape == (1, 15, 11, 3)
    np.testing.assert_allclose(super_resolve(params, lr, 2, ops=TAPS), out, atol=1e-5)  # the LiteRT formulation


def test_keras_model_equals_functional_forward():
    net = MZSRNet(scale=2)
    lr = tf.random.uniform([1, 6, 5, 3], seed=6)
    np.testing.assert_allclose(net(lr), super_resolve(net.params, lr, 2), atol=1e-6)
    clone = MZSRNet.from_config(net.get_config())
    assert clone.scale == 2.0
