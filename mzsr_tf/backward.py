"""The network's backward pass written out: mean-L1 loss and its gradient for every parameter.

Written by hand (not ``GradientTape``) so that it uses TFLite builtin ops only (the LiteRT model adapts on
the device with it) and is itself differentiable (second-order MAML, paper Algorithm 1). How the
convolutions' gradients are computed is a ``conv_ops.ConvOps`` choice.
"""

from __future__ import annotations

import tensorflow as tf

from mzsr_tf.conv_ops import BUILTIN, ConvOps
from mzsr_tf.model import DEPTH, residual_and_activations

__all__ = ["l1_loss_and_grads"]


def l1_loss_and_grads(params, x, y, compute_dtype=None, ops: ConvOps = BUILTIN):
    """Mean-L1 loss of ``forward(params, x)`` against ``y`` and its gradient for each parameter.

    Equal to ``GradientTape`` gradients of ``reduce_mean(|forward(params, x) - y|)`` (tested),
    in TFLite builtin ops only, and differentiable again (second-order MAML).

    ``compute_dtype`` (e.g. ``tf.bfloat16``) runs the convolutions and their gradients in that type
    (mixed precision, Micikevicius et al. 2018: weights, the residual sum, the loss and the returned
    gradients stay in the type of ``x``); bfloat16 is faster on CPUs with AVX512-BF16.

    ``ops`` picks how the convolutions and their gradients are computed (same values): ``BUILTIN`` (TFLite
    builtins, differentiable again), ``NATIVE`` (TF's ``Conv2DBackpropFilter/Input`` kernels: faster on CPU
    with oneDNN, not TFLite builtins, lowered slowly by XLA on CPU; the meta-test's choice) or ``TAPS`` (batch
    matmuls over shifted views: what LiteRT's XNNPACK delegate runs when the weights are variables).
    """
    dtype = x.dtype
    h, acts, cparams = residual_and_activations(params, x, compute_dtype, ops)
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
