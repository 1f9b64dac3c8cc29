"""ZSSR's learning-rate policy: divide by 10 when the reconstruction error stops falling."""

from __future__ import annotations

import math

import numpy as np

from mzsr_tf.zssr.config import ZSSRConfig

__all__ = ["lr_should_drop", "next_stop"]


def lr_should_drop(steps, errors, ratio: float = 1.5) -> bool:
    """Whether the official ``learning_rate_policy`` divides the rate by 10 after these test points.

    Fits errors ≈ slope·steps + b and drops when ``-ratio · slope < std(slope)``, i.e. when the
    reconstruction error no longer falls clearly faster than its noise. The slope's variance uses
    NumPy's pre-1.16 ``polyfit(..., cov=True)`` scaling resid / (M - order - 2) with order = 2 (what
    ZSSR ran with in 2018), not today's resid / (M - order), which is 3x smaller for M = 5 points.
    """
    x, y = np.asarray(steps, np.float64), np.asarray(errors, np.float64)
    m = len(x)
    if m != len(y) or m < 5:
        raise ValueError(f"the slope test needs >= 5 (step, error) pairs, got {len(x)} and {len(y)}")
    xc = x - x.mean()
    sxx = float(np.sum(xc * xc))
    slope = float(np.sum(xc * (y - y.mean())) / sxx)
    resid = float(np.sum((y - y.mean() - slope * xc) ** 2))
    std = math.sqrt(resid / (m - 4) / sxx)  # cov[0, 0] of old polyfit: inv(AᵀA)[0, 0] · resid / (M - 4)
    return bool(-ratio * slope < std)


def next_stop(i: int, config: ZSSRConfig, last_change: int) -> int:
    """The first iteration >= i after which Python must act: a test, an eligible policy check or the end."""
    j = i
    while j < config.max_iters - 1:
        if j % config.run_test_every == 0:
            return j
        if (j + 1) % config.learning_rate_policy_check_every == 0 and j - last_change > config.min_iters:
            return j
        j += 1
    return config.max_iters - 1
