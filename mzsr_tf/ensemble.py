"""Test-time refinements shared by MZSR and ZSSR: geometric self-ensemble and back-projection."""

from __future__ import annotations

import tensorflow as tf

from mzsr_tf.degradation import degrade
from mzsr_tf.imresize import imresize

__all__ = ["dihedral", "undo_dihedral", "dihedral_shift", "geometric_self_ensemble", "back_projection"]


def dihedral(x, k: int):
    """The k-th of the 8 rotations/mirrors of an NHWC image (ZSSR: rot90^k, then fliplr for k >= 4)."""
    y = tf.image.rot90(x, k % 4)
    return tf.image.flip_left_right(y) if k >= 4 else y


def undo_dihedral(y, k: int):
    """Inverse of :func:`dihedral`."""
    if k >= 4:
        y = tf.image.flip_left_right(y)
    return tf.image.rot90(y, (4 - k % 4) % 4)


def dihedral_shift(shift, k: int, scale: int):
    """Where the LR samples sit after :func:`dihedral` ``k``: (row, col) HR pixels off the kept pixel as
    ``kernels.kernel_offset``. Mirroring a width of W LR pixels puts pixel i's sample s·i + δ of the HR at
    s·(W − 1 − i) + s − 1 − δ of the mirrored one, so δ → s − 1 − δ; rot90 (counter-clockwise) takes
    (δr, δc) to (s − 1 − δc, δr)."""
    row, col = tf.unstack(tf.cast(shift, tf.float32))
    for _ in range(k % 4):
        row, col = scale - 1 - col, row
    if k >= 4:
        col = scale - 1 - col
    return tf.stack([row, col])


def geometric_self_ensemble(sr_fn, lr, reduce: str = "median", transforms=range(8), refine=None):
    """Run ``sr_fn`` on the 8 dihedral transforms of ``lr``, undo them and combine (ZSSR ``final_test``).

    Args:
      sr_fn: (NHWC LR, k) → NHWC SR, k the dihedral transform of the LR (for :func:`dihedral_shift`).
      reduce: 'median' (ZSSR) or 'mean'.
      refine: optional ``fn(sr, lr)`` applied to each member after undoing its transform, against the
        original ``lr`` (ZSSR back-projects every member this way, so anisotropic kernels stay aligned).
    """
    outs = []
    for k in transforms:
        sr_k = undo_dihedral(sr_fn(dihedral(lr, k), k), k)
        outs.append(refine(sr_k, lr) if refine is not None else sr_k)
    stack = tf.stack(outs)
    if reduce == "mean":
        return tf.reduce_mean(stack, axis=0)
    if reduce != "median":
        raise ValueError(f"reduce must be 'median' or 'mean', got {reduce!r}")
    n = len(outs)
    ordered = tf.sort(stack, axis=0)
    return 0.5 * (ordered[(n - 1) // 2] + ordered[n // 2])


def back_projection(sr, lr, kernel, scale, subsample: str = "direct", iters: int = 10):
    """Iterative back-projection (Irani & Peleg; ZSSR ``back_projection``), clipped to [0, 1].

    sr ← clip(sr + bicubic↑s(lr − (sr ⊛ k)↓s)): makes ``degrade(sr)`` agree with ``lr``. ``scale``
    may be (s_h, s_w); the down-projection is held to the LR's size (x1.5 of a 33-px image is 50 px,
    and 50 / 1.5 rounds up to 34).
    """
    lr_shape, sr_shape = tf.shape(lr)[1:3], tf.shape(sr)[1:3]
    for _ in range(iters):
        residual = lr - degrade(sr, kernel, scale, subsample, output_shape=lr_shape)
        sr = tf.clip_by_value(sr + imresize(residual, scale, sr_shape), 0.0, 1.0)
    return sr
