"""The three ways to compute the net's 3x3 convolutions and their two gradients (same values, ``ConvOps``).

``BUILTIN``: conv input gradients as a forward conv with the flipped kernel, filter gradients as 9 matrix
products over copy-free flat shifts (im2col for the thin first and last layers): TFLite builtin ops only
and differentiable again, so MAML's second-order meta-gradient flows through them. ``NATIVE``: TF's own
backprop kernels (oneDNN on CPU), the meta-test's choice. ``TAPS``: every convolution as batch matmuls over
shifted views, which LiteRT's XNNPACK delegate runs with weights that change between calls (the device graph).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import tensorflow as tf

__all__ = ["ConvOps", "BUILTIN", "NATIVE", "TAPS"]


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
    copies out of the forward pass (LiteRT runs ops in graph order: copies of x would live until the backward).
    Each product is batched over image rows, then summed over them: XNNPACK's matmul is slow when the
    contracted side is the whole image."""
    cin, cout = x.shape[-1], dy.shape[-1]
    cols, rows = _columns(dy), []
    for i in range(3):
        m = tf.reduce_sum(tf.matmul(x, _rows(cols, 2 - i), transpose_a=True), [0, 1])  # [N, H, cin, (j', o)]
        rows.append(tf.transpose(tf.reverse(tf.reshape(m, [cin, 3, cout]), [1]), [1, 0, 2]))  # j' = 2 - j
    return tf.stack(rows)


def _native_filter_grad(x, dy):
    """TF's own ``Conv2DBackpropFilter`` (oneDNN; faster than the matmul route on CPU, not a TFLite builtin)."""
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
