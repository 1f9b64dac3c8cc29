"""SR-literature metrics: PSNR and SSIM on the Y channel (MATLAB convention).

Y is MATLAB ``rgb2ycbcr``'s luma on uint8 RGB, rounded to uint8; ``shave``
pixels are cropped from every border (``scale`` in the MZSR/ZSSR evaluation);
PSNR uses peak 255; SSIM is Wang et al.'s Gaussian-window SSIM (11x11,
sigma 1.5, K1 0.01, K2 0.03, 'valid' window) in float64 via scikit-image's
``structural_similarity`` (``tf.image.ssim`` works in float32 and loses ~1e-3 on bright flat areas).
Rounding is MATLAB's: halves away from zero (``uint8(x)``), not NumPy's/TF's half-to-even.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from skimage.metrics import structural_similarity

__all__ = ["to_uint8", "rgb_to_y", "modcrop", "shave", "psnr_y", "ssim_y", "gradient_energy"]


def to_uint8(x, precision=tf.float64):
    """[0, 1] float → uint8 with rounding (what saving a PNG does), computed in ``precision`` (float32 for LiteRT
    graphs); uint8 passes through."""
    x = tf.convert_to_tensor(x)
    if x.dtype == tf.uint8:
        return x
    return tf.cast(tf.floor(tf.clip_by_value(tf.cast(x, precision), 0.0, 1.0) * 255.0 + 0.5), tf.uint8)


def rgb_to_y(img, precision=tf.float64):
    """MATLAB ``rgb2ycbcr`` luma of a uint8 (or [0,1] float) HWC/NHWC image, rounded; in [16, 235], of type
    ``precision`` (float64; float32 for LiteRT graphs).

    Single-channel images are returned as they are (already luma).
    """
    x = tf.cast(to_uint8(img, precision), precision)
    if x.shape[-1] == 1:
        return x[..., 0]
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    return tf.floor(16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0 + 0.5)


def gradient_energy(images):
    """Mean squared difference between neighbours, horizontal and vertical averaged, per image of [..., h, w, c]
    (MZSR ``MainSR``'s texture measure: patches with log energy below -6 of [0, 1] levels are flat). Builtin ops, for
    LiteRT."""
    images = tf.convert_to_tensor(images, tf.float32)
    gx = images[..., :, 1:, :] - images[..., :, :-1, :]
    gy = images[..., 1:, :, :] - images[..., :-1, :, :]
    return (tf.reduce_mean(tf.square(gx), [-3, -2, -1]) + tf.reduce_mean(tf.square(gy), [-3, -2, -1])) / 2


def modcrop(img, scale: int):
    """Crop H and W (axes -3, -2) down to multiples of ``scale``."""
    h, w = img.shape[-3] - img.shape[-3] % scale, img.shape[-2] - img.shape[-2] % scale
    return img[..., :h, :w, :]


def shave(img, border: int):
    """Drop ``border`` pixels on each side of the two spatial axes of an [..., H, W] array."""
    return img[..., border : img.shape[-2] - border, border : img.shape[-1] - border] if border else img


def _pair(sr, hr, border):
    if tuple(sr.shape[-3:-1]) != tuple(hr.shape[-3:-1]):
        raise ValueError(f"SR {tuple(sr.shape)} and HR {tuple(hr.shape)} differ in size")
    return shave(rgb_to_y(sr), border), shave(rgb_to_y(hr), border)


def psnr_y(sr, hr, border: int = 0) -> float:
    """PSNR (dB, peak 255) between the Y channels of two RGB images, ``border`` px shaved."""
    a, b = _pair(sr, hr, border)
    mse = float(tf.reduce_mean(tf.square(a - b)))
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))


def ssim_y(sr, hr, border: int = 0) -> float:
    """SSIM between the Y channels (Gaussian 11x11, sigma 1.5), ``border`` px shaved."""
    a, b = _pair(sr, hr, border)
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim == 3:  # a batch: mean over images
        return float(np.mean([ssim_y_single(x, y) for x, y in zip(a, b)]))
    return ssim_y_single(a, b)


def ssim_y_single(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al. SSIM of two [H, W] float64 luma planes (peak 255, Gaussian 11x11, sigma 1.5, valid window)."""
    return float(
        structural_similarity(
            a, b, data_range=255.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, K1=0.01, K2=0.03
        )
    )
