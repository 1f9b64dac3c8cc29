"""Noise level of a photo, for a noise-aware LR son (the official ZSSR adds noise to its sons).

Immerkær, *Fast Noise Variance Estimation*, CVIU 1996: the image is filtered with the difference of two
Laplacians, which cancels smooth structure, and σ = √(π/2) · mean|I ⊛ M| / 6, averaged over the colour
channels (the noise the son gets is drawn per channel), in [0, 1] units. Edges leak into the estimate, so a
clean, detailed photo reads a small σ > 0; blurred LR photos (the MZSR setting) read close to their noise.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.signal

__all__ = ["NOISE_FLOOR", "estimate_noise_sigma", "son_noise_sigma"]

NOISE_FLOOR = 1.0 / 255.0  # what the estimator reads on clean, blurred 8-bit photos (edges, quantisation)

_LAPLACIAN_DIFFERENCE = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float64)


def estimate_noise_sigma(image) -> float:
    """σ of additive white Gaussian noise in ``image`` (float H×W×3 or H×W in [0, 1]), Immerkær's estimator."""
    a = np.asarray(image, np.float64)
    channels = [a] if a.ndim == 2 else [a[..., c] for c in range(a.shape[-1])]
    if min(a.shape[:2]) < 3:
        return 0.0
    means = [np.abs(scipy.signal.convolve2d(c, _LAPLACIAN_DIFFERENCE, mode="valid")).mean() for c in channels]
    return float(math.sqrt(math.pi / 2.0) * np.mean(means) / 6.0)


def son_noise_sigma(image) -> float:
    """The σ to give an LR son so that it is as noisy as ``image``: the estimate above the clean floor,
    √(max(σ̂² − floor², 0)) (a clean photo's son gets none)."""
    return math.sqrt(max(estimate_noise_sigma(image) ** 2 - NOISE_FLOOR**2, 0.0))
