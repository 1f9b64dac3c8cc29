"""Update rules over parameter lists, and the inner loop that applies them: one optimizer for all.

θ ← θ − α·u(g): ``sgd`` takes the plain gradient (MAML's inner loop, paper Algorithm 1; the official
MZSR ``test.py``), ``adam`` Adam's bias-corrected step (Kingma & Ba 2015, Algorithm 1). Both are pure
functions returning new tensors, never assignments (MAML's fast weights), so the same rule serves the
meta-training tape, the meta-test, ZSSR and the LiteRT graph.

``descend`` runs ``steps`` updates as one ``tf.while_loop`` (any step count, one trace); meta-training
unrolls its few inner steps in Python instead, so that the outer tape sees every step (second order).
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

__all__ = ["Adam", "sgd", "adam", "zero_moments", "descend"]


@dataclass(frozen=True)
class Adam:
    """Adam's constants (Kingma & Ba's defaults)."""

    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-8
    epsilon_hat: bool = False  # ε on the uncorrected √v (Kingma & Ba §2 "ε̂"; TF1 AdamOptimizer, ZSSR, Keras)


def _per_tensor(rates, n: int) -> list:
    """One learning rate per tensor: a scalar for all, or a sequence/[n] tensor of ``n``."""
    if isinstance(rates, (int, float)) or (tf.is_tensor(rates) and rates.shape.rank == 0):
        return [rates] * n
    return list(rates) if not tf.is_tensor(rates) else tf.unstack(rates, n)


def sgd(params, grads, rates) -> list:
    """θ − α·g for each tensor; ``rates`` is one α or one per tensor (LSLR)."""
    return [w - a * g for w, g, a in zip(params, grads, _per_tensor(rates, len(params)))]


def zero_moments(params) -> list:
    """Adam's state at step 0: first moments then second moments, zeros shaped like ``params``."""
    return [tf.zeros_like(p) for p in params] * 2


def adam(params, grads, moments, t, rates, rule: Adam = Adam()) -> tuple[list, list]:
    """One Adam update (Kingma & Ba, Algorithm 1) at step ``t`` (1 for the first update).

    Args:
      params, grads: lists of n tensors.
      moments: the 2n tensors from :func:`zero_moments` or the previous update.
      t: the update's index counted from 1 (a number or a float32 scalar tensor).
      rates: α, one for all or one per tensor.
    Returns:
      (new params, new moments).
    """
    n, b1, b2 = len(params), rule.beta_1, rule.beta_2
    t = tf.cast(t, tf.float32)
    m = [b1 * a + (1 - b1) * g for a, g in zip(moments[:n], grads)]
    v = [b2 * b + (1 - b2) * g * g for b, g in zip(moments[n:], grads)]
    if rule.epsilon_hat:  # bias corrections folded into the step size
        sizes = [a * tf.sqrt(1 - b2**t) / (1 - b1**t) for a in _per_tensor(rates, n)]
        new = [w - z * c / (tf.sqrt(d) + rule.epsilon) for w, z, c, d in zip(params, sizes, m, v)]
    else:
        steps = [(c / (1 - b1**t)) / (tf.sqrt(d / (1 - b2**t)) + rule.epsilon) for c, d in zip(m, v)]
        new = sgd(params, steps, rates)
    return new, m + v


def descend(update, params, state, steps):
    """``steps`` updates ``loss, params, state = update(i, params, state)`` in one ``tf.while_loop``.

    ``state`` is any nest of tensors the update carries (Adam's moments, a step count).
    Returns (params, state, the loss of each update [steps], taken before it).
    """

    def body(i, params, state, losses):
        loss, params, state = update(i, params, state)
        return i + 1, params, state, losses.write(i, loss)

    _, params, state, losses = tf.while_loop(
        lambda i, *_: i < steps, body, (0, list(params), state, tf.TensorArray(tf.float32, size=steps))
    )
    return params, state, losses.stack()
