"""Float64 NumPy reference implementations, used only by the tests.

Written straight from MATLAB's ``imresize`` algorithm (``contributions`` +
symmetric mirror) and ``scipy.ndimage.correlate``, independently of the
TensorFlow code under test.
"""

import math

import numpy as np
from scipy import ndimage


def _cubic(x):
    a = np.abs(x)
    return (1.5 * a**3 - 2.5 * a**2 + 1) * (a <= 1) + (-0.5 * a**3 + 2.5 * a**2 - 4 * a + 2) * ((a > 1) & (a <= 2))


def _contributions(in_len, out_len, scale):
    kernel, width = _cubic, 4.0
    if scale < 1:
        kernel, width = (lambda t: scale * _cubic(scale * t)), width / scale
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    p = int(math.ceil(width)) + 2
    ind = left[:, None] + np.arange(p)[None, :] - 1
    w = kernel(u[:, None] - ind - 1)
    w = w / np.where(w.sum(1, keepdims=True) == 0, 1, w.sum(1, keepdims=True))
    aux = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    ind = aux[np.mod(ind.astype(np.int64), aux.size)]
    return w, ind


def imresize(img, scale=None, output_shape=None):
    """MATLAB imresize (bicubic) on an HWC float64 array."""
    img = np.asarray(img, np.float64)
    if scale is None:
        scales = [output_shape[i] / img.shape[i] for i in range(2)]
    else:
        scales = [float(scale)] * 2 if np.isscalar(scale) else [float(s) for s in scale]
    if output_shape is None:
        output_shape = [int(math.ceil(img.shape[i] * scales[i] - 1e-9)) for i in range(2)]
    out = img
    for axis in sorted((0, 1), key=lambda a: scales[a]):
        w, ind = _contributions(out.shape[axis], output_shape[axis], scales[axis])
        moved = np.moveaxis(out, axis, 0)
        res = np.einsum("op,op...->o...", w, moved[ind])
        out = np.moveaxis(res, 0, axis)
    return out


def degrade_direct(hr, kernel, scale):
    """ZSSR/MZSR ``numeric_kernel``: correlate (reflect) then keep pixels 0, s, 2s, ..."""
    blurred = np.stack([ndimage.correlate(hr[..., c], kernel, mode="reflect") for c in range(hr.shape[-1])], -1)
    return blurred[::scale, ::scale]
