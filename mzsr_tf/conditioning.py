"""Kernel- and noise-conditioned meta-initialisation: θ(k, σ̂) = θ_M + Σ_i φ_i(k, σ̂) V_i (issue 16).

MMAML's task-aware modulation of the initialisation (Vuorio et al., NeurIPS 2019) with the task embedding given
rather than inferred: the meta-test knows the photo's kernel (blind SR estimates it), so adaptation starts from a
point meant for that kernel instead of one θ_M for all of them. The photo's noise level is given too, as the
estimate σ̂ the meta-test reads off the LR (``noise.noise_levels_graph``, its ``feature``): a start that sharpens
a clean photo would sharpen a noisy one's noise. The network at inference is unchanged (8 convs,
225,091 parameters); the weights file carries the basis V, one tensor per parameter with a leading axis of
``START_FEATURES``.

φ(k): 1, the log-Euclidean coordinates (a, b, c) of the kernel's covariance Σ (log Σ = [[a, c], [c, b]], Arsigny
et al. 2006), divided by ``LOG_UNIT``, and their six quadratic terms: a smooth embedding of size, elongation and
orientation in which the sharpest kernel and a wide one are as far apart as their effect on the photo; then
s = σ̂ / ``NOISE_UNIT``, its products with (a, b, c) and s². Training computes σ̂ on each task's LR exactly as the
meta-test does on the photo (``data.kernel_tasks``), so what the estimator misreads as noise (aliasing, texture) is
learned as what it is. Then u (1 for a kernel blind SR estimated, 0 for a given one) and u·(a, b, c): the start
for an estimate hedges for the estimator's error, learned on the estimator's own reading of each task's LR
(``MetaConfig.blind_context``), while a given kernel's start stays as it was. A basis of the first
``NOISE_BLIND_FEATURES`` or ``GIVEN_FEATURES`` rows only (earlier weights) is read as one whose later rows are 0.
"""

from __future__ import annotations

import tensorflow as tf

from mzsr_tf.kernels import LAMBDA_FLOOR, covariance_eigenvalues, kernel_moments

__all__ = [
    "NOISE_BLIND_FEATURES", "GIVEN_FEATURES", "START_FEATURES", "BASIS_ROWS", "LOG_UNIT", "NOISE_UNIT",
    "log_covariance", "start_features", "conditioned_start",
]  # fmt: skip

NOISE_BLIND_FEATURES = 10  # 1, (a, b, c) and their products
GIVEN_FEATURES = 15  # and s, s·(a, b, c), s²: all a given kernel's start reads
START_FEATURES = 19  # and u, u·(a, b, c): an estimated kernel's
BASIS_ROWS = (NOISE_BLIND_FEATURES, GIVEN_FEATURES, START_FEATURES)  # the bases weights files hold
LOG_UNIT = 1.6  # the log-eigenvalue spread of the paper's kernels (λ 0.2 to 10): features of order one
NOISE_UNIT = 5.0 / 255.0  # the noisiest LR the benchmarks check (σ = 5 grey levels): s of order one


def log_covariance(cov):
    """log Σ of a symmetric 2×2 covariance with its eigenvalues floored at ``LAMBDA_FLOOR`` (a delta kernel has
    none), in closed form with builtin ops: log λ2 · I + (log λ1 − log λ2) · P1, P1 = (Σ − λ2 I) / (λ1 − λ2) the
    projector on the first eigenvector."""
    cov = tf.cast(cov, tf.float32)
    lambda1, lambda2 = covariance_eigenvalues(cov)
    log1, log2 = tf.math.log(tf.maximum(lambda1, LAMBDA_FLOOR)), tf.math.log(tf.maximum(lambda2, LAMBDA_FLOOR))
    gap = lambda1 - lambda2  # an isotropic Σ: log1 = log2, the projector's weight is 0
    slope = tf.where(gap > 1e-6, (log1 - log2) / tf.maximum(gap, 1e-6), 0.0)
    return log2 * tf.eye(2) + slope * (cov - lambda2 * tf.eye(2))


def start_features(kernel, noise_sigma=0.0, estimated=False):
    """φ(k, σ̂, u), [START_FEATURES] float32: 1, (a, b, c) / ``LOG_UNIT`` and their products (:func:`log_covariance`),
    then s = ``noise_sigma`` / ``NOISE_UNIT`` (σ̂ in [0, 1] units, a number or a scalar tensor), s·(a, b, c), s², then
    u = ``estimated`` (a bool or a scalar tensor: the kernel is blind SR's estimate) and u·(a, b, c)."""
    log_cov = log_covariance(kernel_moments(kernel, tf.float32)[1]) / LOG_UNIT
    a, b, c = log_cov[0, 0], log_cov[1, 1], log_cov[0, 1]
    s = tf.cast(noise_sigma, tf.float32) / NOISE_UNIT
    u = tf.cast(estimated, tf.float32)
    return tf.stack(
        [1.0, a, b, c, a * a, b * b, c * c, a * b, a * c, b * c, s, s * a, s * b, s * c, s * s, u, u * a, u * b, u * c]
    )


def conditioned_start(params, basis, features) -> list:
    """θ + Σ_i φ_i V_i for each tensor; ``basis`` None is θ itself (meta-weights without conditioning)."""
    if basis is None:
        return list(params)
    features = tf.cast(features, tf.float32)
    return [p + tf.tensordot(features, v, 1) for p, v in zip(params, basis)]
