"""Blur kernels: anisotropic Gaussians, the meta-training sampler, named benchmark kernels, IO.

Convention (MZSR ``gkernel.py``, verified against the paper's Bicubic column):
"width" lambda is a covariance eigenvalue (variance), Sigma = R(theta) diag(l1, l2) R(theta)^T,
evaluated on a ``size`` x ``size`` grid centred at ``size / 2 - 0.5`` with p = (x, y) = (col, row).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
import tensorflow as tf

from mzsr_tf.errors import InputError

__all__ = [
    "Degradation",
    "IDENTITY",
    "NAMED_DEGRADATIONS",
    "gaussian_kernel",
    "gaussian_from_covariance",
    "blind_offset",
    "sample_kernel",
    "sample_blind_kernel",
    "kernel_moments",
    "covariance_eigenvalues",
    "kernel_features",
    "kernel_offset",
    "compose_x4",
    "validate_kernel",
    "load_kernel",
    "resolve_degradation",
]

KERNEL_SIZE = 15  # meta-training kernel size (MZSR config)


def _covariance(lambda1, lambda2, theta):
    c, s = tf.cos(theta), tf.sin(theta)
    rot = tf.stack([tf.stack([c, -s]), tf.stack([s, c])])
    return rot @ tf.linalg.diag(tf.stack([lambda1, lambda2])) @ tf.transpose(rot)


def gaussian_kernel(lambda1, lambda2, theta, size: int = KERNEL_SIZE, dtype=tf.float64, offset=0.0):
    """k(p) ∝ exp(-½ (p-μ)ᵀ Σ⁻¹ (p-μ)), Σ = R(θ) diag(λ1, λ2) R(θ)ᵀ, normalised to sum 1 (MZSR ``gkernel``).

    ``offset`` μ moves the mean off the grid centre by that many pixels along both axes (e.g. 0.5: DIV2KRK's
    ``kernel_shift``, the block-centre convention of :func:`blind_offset`).
    """
    lambda1, lambda2, theta = (tf.cast(v, tf.float64) for v in (lambda1, lambda2, theta))
    return gaussian_from_covariance(_covariance(lambda1, lambda2, theta), size, dtype, offset)


def gaussian_from_covariance(cov, size: int, dtype=tf.float64, offset=0.0, precision=tf.float64):
    """The Gaussian kernel with covariance ``cov`` (2×2, p = (col, row)) on a ``size``² grid, mean ``offset`` px off
    the centre, normalised to sum 1, computed in ``precision`` (float32 for LiteRT graphs)."""
    cov = tf.cast(cov, precision)
    a, b, c = cov[0, 0], cov[0, 1], cov[1, 1]
    det = a * c - b * b
    ax = tf.range(size, dtype=precision) - (size / 2 - 0.5)
    xx, yy = tf.meshgrid(ax, ax)  # xx varies along columns
    x, y = xx - tf.cast(offset, precision), yy - tf.cast(offset, precision)
    q = (c * x * x - 2.0 * b * x * y + a * y * y) / det  # pᵀ Σ⁻¹ p for the 2×2 Σ
    k = tf.exp(-0.5 * q)
    return tf.cast(k / tf.reduce_sum(k), dtype)


def sample_kernel(seed, scale: float, size: int = KERNEL_SIZE, dtype=tf.float32, min_variance: float = 1.0):
    """The paper's meta-training kernel sampler (stateless, so it runs in tf.data).

    θ ~ U[0, π), λ1 ~ U[m, 2.5 s], λ2 ~ U[m, λ1] with m = ``min_variance`` (MZSR ``gkernel.py``: m = 1;
    a smaller m adds nearly sharp kernels such as g^d_0.2).

    Args:
      seed: int tensor of shape [2] (``tf.random.stateless_uniform`` convention).
    """
    u = tf.random.stateless_uniform([3], seed, dtype=tf.float64)
    theta = math.pi * u[0]
    lambda1 = min_variance + (2.5 * scale - min_variance) * u[1]
    lambda2 = min_variance + (lambda1 - min_variance) * u[2]
    return gaussian_kernel(lambda1, lambda2, theta, size, dtype)


def blind_offset(scale: int) -> float:
    """Where a blind estimate puts the kernel's mean: (s − 1)/2 HR pixels right and down of the grid centre.

    A sub-pixel shift of the kernel is a translation of the scene, invisible in the LR image, so its centre is a
    convention, not an estimate: the sensor's (each LR pixel averages its s×s block), which is also MATLAB bicubic's
    alignment and DIV2KRK's (KernelGAN ``kernel_shift``; the ×4 kernel, two ×2 steps, lands at 3 · ½).
    """
    return (int(scale) - 1) / 2


def sample_blind_kernel(seed, size: int = 11, lambda_range=(0.6, 5.0), kernel_noise: float = 0.25, offset=0.5,
                        dtype=tf.float32):  # fmt: skip
    """A DIV2KRK kernel (KernelGAN paper; BlindSR_dataset_generator): an anisotropic Gaussian on a ``size``² grid
    with λ1, λ2 ~ U[``lambda_range``] independently, θ ~ U[0, π), mean ``offset`` px off the centre, times
    elementwise multiplicative noise 1 + U[−ν, ν] with ν ~ U[0, ``kernel_noise``], clipped at 0 and renormalised.

    Args:
      seed: int tensor of shape [2] (stateless, so it runs in tf.data).
    """
    u = tf.random.stateless_uniform([4], seed, dtype=tf.float64)
    lo, hi = lambda_range
    k = gaussian_kernel(lo + (hi - lo) * u[0], lo + (hi - lo) * u[1], math.pi * u[2], size, tf.float64, offset)
    seed2 = tf.random.experimental.stateless_fold_in(seed, 1)
    noise = tf.random.stateless_uniform([size, size], seed2, -1.0, 1.0, dtype=tf.float64) * kernel_noise * u[3]
    k = tf.maximum(k * (1.0 + noise), 0.0)
    return tf.cast(k / tf.reduce_sum(k), dtype)


def compose_x4(kernel):
    """The ×4 kernel of two ×2 direct steps with ``kernel`` (DIV2KRK ×4): k ⊛ (k dilated by 2), size 3n − 2.

    (HR ⊛ k)↓2 ⊛ k)↓2 = (HR ⊛ k4)↓4 away from borders; the mean lands at 3× the ×2 one, the covariance at 5×.
    """
    k = tf.cast(kernel, tf.float64)
    n = int(k.shape[0])
    # k4[m] = Σ_b k[b] k[m - 2b]: the zero-padded k correlated with the flipped k dilated by 2.
    padded = tf.pad(k, [[2 * (n - 1)] * 2, [2 * (n - 1)] * 2])[None, :, :, None]
    out = tf.nn.conv2d(padded, tf.reverse(k, [0, 1])[:, :, None, None], 1, "VALID", dilations=2)
    return out[0, :, :, 0]


def kernel_offset(kernel):
    """Where a kernel's mass sits relative to the pixel ``degrade`` keeps: its mean minus its origin (index
    k // 2, scipy ``correlate``'s), (row, col) in pixels, as a float32 tensor [2]; static or dynamic shape.
    0 for the paper's centred Gaussians, (s − 1)/2 for block-centred ones (:func:`blind_offset`, DIV2KRK).
    Rounded to 1/1024 pixel, so a kernel gives the same phase in every dtype and graph."""
    k = tf.cast(kernel, tf.float32)
    k = k / tf.reduce_sum(k)
    h, w = tf.shape(k)[0], tf.shape(k)[1]
    rows = tf.cast(tf.range(h) - h // 2, tf.float32)
    cols = tf.cast(tf.range(w) - w // 2, tf.float32)
    mean = tf.stack([tf.reduce_sum(tf.reduce_sum(k, 1) * rows), tf.reduce_sum(tf.reduce_sum(k, 0) * cols)])
    return tf.round(mean * 1024.0) / 1024.0


def kernel_moments(kernel, dtype=tf.float64):
    """(mean offset from the grid centre [x, y], covariance 2×2) of a kernel (or [..., h, w] kernels) in pixels,
    p = (col, row); static or dynamic shape, builtin ops (``kernel_features`` runs it on the device in float32)."""
    k = tf.cast(kernel, dtype)
    k = k / tf.reduce_sum(k, axis=[-2, -1], keepdims=True)
    h, w = tf.shape(k)[-2], tf.shape(k)[-1]
    x = tf.cast(tf.range(w), dtype) - (tf.cast(w, dtype) / 2 - 0.5)
    y = (tf.cast(tf.range(h), dtype) - (tf.cast(h, dtype) / 2 - 0.5))[:, None]
    mean_x, mean_y = tf.reduce_sum(k * x, axis=[-2, -1]), tf.reduce_sum(k * y, axis=[-2, -1])
    dx, dy = x - mean_x[..., None, None], y - mean_y[..., None, None]
    xx, xy, yy = (tf.reduce_sum(k * a * b, axis=[-2, -1]) for a, b in ((dx, dx), (dx, dy), (dy, dy)))
    cov = tf.stack([tf.stack([xx, xy], -1), tf.stack([xy, yy], -1)], -2)
    return tf.stack([mean_x, mean_y], -1), cov


LAMBDA_FLOOR = 0.05  # eigenvalue floor of kernel_features: a delta kernel (plain bicubic) has none
KERNEL_FEATURES = 2


def covariance_eigenvalues(cov):
    """(λ1, λ2), λ1 ≥ λ2, of a symmetric 2×2 covariance in closed form (graph code with builtin ops, for LiteRT)."""
    a, b, c = cov[0, 0], cov[0, 1], cov[1, 1]
    spread = tf.sqrt(tf.square((a - c) / 2) + tf.square(b))
    return (a + c) / 2 + spread, (a + c) / 2 - spread


def kernel_features(kernel):
    """(log √(λ1 λ2), log(λ1 / λ2)): a blur kernel's size and anisotropy, λ1 ≥ λ2 the eigenvalues of its
    covariance (:func:`kernel_moments`, float32) floored at ``LAMBDA_FLOOR``."""
    lambda1, lambda2 = covariance_eigenvalues(kernel_moments(kernel, tf.float32)[1])
    log1 = tf.math.log(tf.maximum(lambda1, LAMBDA_FLOOR))
    log2 = tf.math.log(tf.maximum(lambda2, LAMBDA_FLOOR))
    return tf.stack([(log1 + log2) / 2, log1 - log2])


IDENTITY = np.ones((1, 1), np.float32)  # the kernel of no blur: plain MATLAB bicubic / subsampling


@dataclass(frozen=True)
class Degradation:
    """LR = (HR ⊛ k)↓s: a kernel (None = none) and how to subsample ('direct' or 'bicubic'); ``estimated``: the
    kernel estimator's reading of the photo (``kernel_estimation``), not a given kernel."""

    kernel: np.ndarray | None
    subsample: str = "direct"
    name: str = "custom"
    estimated: bool = False

    @property
    def blur(self) -> np.ndarray:
        """The kernel as an array to convolve with: no kernel is the identity [[1]] (plain subsampling)."""
        return IDENTITY if self.kernel is None else self.kernel


def _named(l1, l2, theta, subsample, name, size=KERNEL_SIZE):
    return Degradation(gaussian_kernel(l1, l2, theta, size).numpy(), subsample, name)


# The MZSR paper's benchmark kernels (Table 2). g_d_2.0 is 21x21 like the official kernel.mat.
NAMED_DEGRADATIONS = {
    "g_d_0.2": lambda: _named(0.2, 0.2, 0.0, "direct", "g_d_0.2"),
    "g_d_2.0": lambda: _named(2.0, 2.0, 0.0, "direct", "g_d_2.0", size=21),
    "g_d_ani": lambda: _named(4.0, 1.0, -0.5, "direct", "g_d_ani"),
    "g_b_1.3": lambda: _named(1.3, 1.3, 0.0, "bicubic", "g_b_1.3"),
    "bicubic": lambda: Degradation(None, "bicubic", "bicubic"),
}


def validate_kernel(kernel, source: str = "kernel") -> np.ndarray:
    """Check a kernel is 2-D (h×w, any h, w ≥ 1; trailing, then leading axes of length 1 are dropped), finite, with a
    positive sum; return it normalised to sum 1 (float64, scaled by its peak first so no sum overflows)."""
    k = np.asarray(kernel)
    if k.dtype == object or not (np.issubdtype(k.dtype, np.integer) or np.issubdtype(k.dtype, np.floating)):
        raise InputError(f"{source}: kernel must be a real number array, got {k.dtype}")
    k = k.astype(np.float64)
    while k.ndim > 2 and k.shape[-1] == 1:  # (h, w, 1, ...)
        k = k[..., 0]
    while k.ndim > 2 and k.shape[0] == 1:  # (1, h, w)
        k = k[0]
    if k.ndim != 2 or min(k.shape) < 1:
        raise InputError(f"{source}: kernel must be a 2-D h x w array, got shape {np.shape(kernel)}")
    if not np.all(np.isfinite(k)):
        raise InputError(f"{source}: kernel contains NaN or Inf")
    peak = np.abs(k).max()
    total = (k / peak).sum() if peak > 0 else 0.0
    if not total > 1e-12:
        raise InputError(f"{source}: kernel must have a positive sum")
    return (k / peak) / total


def load_kernel(path) -> np.ndarray:
    """Load a ``.mat`` (variable ``Kernel`` as ZSSR/KernelGAN write it, or ``kernel`` as MZSR) or ``.npy``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: kernel file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".mat":
            data = scipy.io.loadmat(str(path))
            names = [n for n in ("Kernel", "kernel") if n in data]
            if not names:
                found = ", ".join(n for n in data if not n.startswith("__")) or "none"
                raise InputError(f"{path}: no variable 'Kernel' or 'kernel' (found: {found})")
            kernel = data[names[0]]
        elif suffix == ".npy":
            kernel = np.load(str(path), allow_pickle=False)
        else:
            raise InputError(f"{path}: unsupported kernel format (use .mat or .npy)")
    except InputError:
        raise
    except Exception as e:  # scipy/numpy raise many types for corrupt files
        raise InputError(f"{path}: cannot read kernel ({type(e).__name__}: {e})") from None
    return validate_kernel(kernel, str(path))


def resolve_degradation(spec, subsample: str | None = None) -> Degradation:
    """A named kernel (``g_d_2.0`` ...), a ``.mat``/``.npy`` path, or an array → Degradation.

    ``subsample`` overrides the named kernel's mode; files and arrays default to 'direct'.
    """
    if subsample not in (None, "direct", "bicubic"):
        raise InputError(f"subsample must be 'direct' or 'bicubic', got {subsample!r}")
    if isinstance(spec, Degradation):
        deg = spec
    elif isinstance(spec, (str, Path)) and str(spec) in NAMED_DEGRADATIONS:
        deg = NAMED_DEGRADATIONS[str(spec)]()
    elif isinstance(spec, (str, Path)):
        if Path(spec).suffix.lower() not in (".mat", ".npy"):
            names = ", ".join(NAMED_DEGRADATIONS)
            raise InputError(f"unknown kernel {str(spec)!r}: use one of {names}, or a .mat/.npy file")
        deg = Degradation(load_kernel(spec), "direct", Path(spec).stem)
    else:
        deg = Degradation(validate_kernel(spec), "direct")
    if subsample is not None and subsample != deg.subsample:
        deg = Degradation(deg.kernel, subsample, deg.name)
    return deg
