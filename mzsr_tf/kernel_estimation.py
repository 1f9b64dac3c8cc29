"""Blind SR: estimate the blur kernel of an LR photo, so zero-shot SR needs no kernel file.

A small feed-forward estimator (after IKC's predictor and DAN's estimator) maps the LR image to the
covariance of its kernel: a CNN over contrast-normalised luminance patches, attention-pooled over the photo's
most textured tiles (:func:`textured_tiles`), then a small head. It predicts Σ in LR pixels (Σ_HR / s²), which
is about the same range at ×2 and ×4, so one network serves both. It is trained (``train.py --stage kernel``) on
the training photos, and copies of them shrunk (``EstimatorConfig.zooms``), degraded with DIV2KRK-style kernels
(:func:`kernels.sample_blind_kernel`) at ×2 and, as two ×2 steps, at ×4.

The estimate is an anisotropic Gaussian with that covariance. Its centre is a convention, not an
estimate (:func:`kernels.blind_offset`): a sub-pixel shift of the kernel is a translation of the scene.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from mzsr_tf.errors import InputError
from mzsr_tf.kernels import Degradation, blind_offset, covariance_eigenvalues, gaussian_from_covariance
from mzsr_tf.metrics import gradient_energy, rgb_to_y
from mzsr_tf.model import ParamList

__all__ = [
    "EstimatorConfig",
    "KernelEstimate",
    "KernelEstimator",
    "estimator_shapes",
    "init_estimator",
    "estimate_covariance",
    "covariance_loss",
    "log_eigen_errors",
    "log_eigen_loss",
    "COVARIANCE_LOSSES",
    "kernel_from_covariance",
    "luminance",
    "estimate_kernel",
    "BLIND_METHODS",
    "blind_estimator",
    "estimate_graph",
    "floor_covariance",
    "narrowest_variance",
    "photo_tiles",
    "textured_tiles",
    "blind_kernel_size",
    "load_estimator",
    "save_estimator",
    "kernel_psnr",
    "kernel_picture",
    "save_kernel_files",
    "default_estimator",
]


@dataclass(frozen=True)
class EstimatorConfig:
    """Estimator training settings (``train.py --stage kernel``)."""

    scales: tuple[int, ...] = (2, 4)  # each batch holds an equal share of every scale
    batch_size: int = 32  # LR patches per step, each under its own kernel
    patch: int = 48  # LR patch size (the estimator also reads photos in tiles of this size)
    lr: float = 1e-3  # Adam
    lr_decay_steps: int = 4000  # halve every this many steps ...
    lr_floor: float = 1e-4  # ... down to this
    width: int = 32  # channels of the first stage (the second has twice as many)
    kernel_size: int = 11  # ×2 training kernels (DIV2KRK)
    lambda_min: float = 0.2  # ×2 eigenvalues ~ U[lambda_min, lambda_max] (DIV2KRK 0.6–5; wider, for photos in general)
    lambda_max: float = 5.5
    kernel_noise: float = 0.25  # DIV2KRK multiplicative kernel noise, up to this
    image_noise: float = 2.0  # LR noise σ ~ U[0, this] in 0–255 units, then uint8 rounding
    zooms: tuple[float, ...] = (1.0,)  # the photos shrunk by these factors (data.zoomed; 1: as they are)
    group: int = 1  # patches of one photo under one kernel pooled into one estimate, as a photo's tiles are
    loss: str = "relative_l1"  # or 'log_eigen' (COVARIANCE_LOSSES)
    soften: float = 0.0  # HR first blurred by an isotropic Gaussian of variance ~ U[0, this] HR px² (photos' own blur)

    def __post_init__(self):
        from mzsr_tf.data import zoomed

        zoomed([], self.zooms)  # its check of the factors, before any photo is read
        if not 0 <= self.soften < float("inf"):
            raise InputError(f"--soften is a variance in HR pixels², >= 0, got {self.soften}")
        if self.loss not in COVARIANCE_LOSSES:
            raise InputError(f"unknown estimator loss {self.loss!r}: use one of {', '.join(COVARIANCE_LOSSES)}")


# === Network === (functional, like model.forward: params is a flat list)


def estimator_shapes(width: int = 32) -> list[tuple[int, ...]]:
    """Kernel/bias shapes: 2 convs at full resolution, a stride-2 conv, 2 convs, a 1×1 to features + attention
    logit, then a 2-layer head to the 3 Cholesky parameters of Σ."""
    w, w2 = width, 2 * width
    convs = [(3, 3, 1, w), (3, 3, w, w), (3, 3, w, w2), (3, 3, w2, w2), (3, 3, w2, w2), (1, 1, w2, w2 + 1)]
    dense = [(w2, w2), (w2, 3)]
    shapes = []
    for s in convs + dense:
        shapes += [s, (s[-1],)]
    return shapes


PRIOR_VARIANCE = 0.75  # about the middle of the training kernels' variances in LR pixels (λ / 4 at ×2, 5λ / 16 at ×4)


def init_estimator(width: int = 32, seed: int = 0) -> list[tf.Tensor]:
    """He-normal kernels and zero biases; the output layer starts small with its bias at Σ = PRIOR_VARIANCE · I, so
    training starts from the prior's guess rather than from random covariances."""
    rng = np.random.default_rng(seed)
    shapes = estimator_shapes(width)
    params = []
    for i, shape in enumerate(shapes):
        last = i >= len(shapes) - 2
        if len(shape) == 1:
            bias = [0.5 * math.log(PRIOR_VARIANCE)] * 2 + [0.0] if last else np.zeros(shape)
            params.append(tf.constant(bias, tf.float32))
        else:
            std = math.sqrt(2.0 / int(np.prod(shape[:-1]))) * (0.1 if last else 1.0)
            params.append(tf.constant(rng.normal(0, std, shape), tf.float32))
    return params


def _normalise(y):
    """Per-patch contrast normalisation of luminance patches [N, h, w, 1]: zero mean, unit std."""
    mean, var = tf.nn.moments(y, axes=[1, 2, 3], keepdims=True)
    return (y - mean) / tf.sqrt(var + 1e-6)


def _features(params, y):
    """Per-position features and attention logits of normalised patches."""
    h = y
    for i, stride in enumerate((1, 1, 2, 1, 1)):
        h = tf.nn.relu(tf.nn.conv2d(h, params[2 * i], stride, "SAME") + params[2 * i + 1])
    out = tf.nn.conv2d(h, params[10], 1, "SAME") + params[11]
    return out[..., :-1], out[..., -1]


def _head(params, pooled):
    h = tf.nn.relu(pooled @ params[12] + params[13])
    return h @ params[14] + params[15]


def _cholesky_to_cov(raw):
    """Σ = L Lᵀ, L = [[e^a, 0], [c, e^b]] (positive definite for any raw output)."""
    a, b, c = raw[..., 0], raw[..., 1], raw[..., 2]
    la, lb = tf.exp(a), tf.exp(b)
    return tf.stack([tf.stack([la * la, la * c], -1), tf.stack([la * c, c * c + lb * lb], -1)], -2)


def estimate_covariance(params, patches, groups=None):
    """Σ in LR pixels, p = (col, row), from luminance patches [N, h, w, 1] in [0, 1].

    ``groups``: how many consecutive patches form one image (attention-pooled together); None = each its own.
    """
    feats, logits = _features(params, _normalise(patches))
    n = tf.shape(feats)[0]
    g = 1 if groups is None else groups
    feats = tf.reshape(feats, [n // g, -1, tf.shape(feats)[-1]])
    weights = tf.nn.softmax(tf.reshape(logits, [n // g, -1]), axis=-1)
    pooled = tf.einsum("bp,bpc->bc", weights, feats)
    return _cholesky_to_cov(_head(params, pooled))


def covariance_loss(pred, true):
    """L1 between covariances, relative to the true one's trace (small and large blurs count alike)."""
    trace = true[..., 0, 0] + true[..., 1, 1]
    return tf.reduce_mean(tf.reduce_sum(tf.abs(pred - true), axis=[-2, -1]) / trace)


def log_eigen_errors(pred, true, eps=1e-12):
    """|log μ1| + |log μ2| per covariance, μ the eigenvalues of Σ_true⁻¹ Σ_pred: the error in each direction relative
    to the true blur in that direction (the affine-invariant metric of covariances, in L1), so the narrow axis of an
    anisotropic kernel counts as much as the wide one, as it does for SR. ``eps`` keeps the gradient finite where
    the eigenvalues meet (training); 0 gives the exact value (evaluation)."""
    a, b, c = true[..., 0, 0], true[..., 0, 1], true[..., 1, 1]
    p, q, r = pred[..., 0, 0], pred[..., 0, 1], pred[..., 1, 1]
    det_true = a * c - b * b
    half_trace = (c * p - 2 * b * q + a * r) / det_true / 2  # tr(Σ_true⁻¹ Σ_pred) / 2
    det = (p * r - q * q) / det_true
    spread = tf.sqrt(tf.maximum(tf.square(half_trace) - det, 0.0) + eps)
    mu1, mu2 = half_trace + spread, tf.maximum(half_trace - spread, eps)
    return tf.abs(tf.math.log(mu1)) + tf.abs(tf.math.log(mu2))


def log_eigen_loss(pred, true):
    """The mean of :func:`log_eigen_errors` over a batch: the estimator's ``log_eigen`` training loss."""
    return tf.reduce_mean(log_eigen_errors(pred, true))


COVARIANCE_LOSSES = {"relative_l1": covariance_loss, "log_eigen": log_eigen_loss}


class KernelEstimator(ParamList, tf.Module):
    """Variables for training and checkpoints; :func:`estimate_covariance` is the computation."""

    def __init__(self, width: int = 32, seed: int = 0):
        super().__init__(name="kernel_estimator")
        self.width = width
        self._params = [tf.Variable(p, name=f"p{i}") for i, p in enumerate(init_estimator(width, seed))]


def luminance(rgb):
    """The metric's luma (MATLAB ``rgb2ycbcr``, uint8 levels) as float32 [..., 1] in [0, 1]: the estimator's input
    (computed in float32, so LiteRT runs it with builtin ops)."""
    return tf.expand_dims(rgb_to_y(rgb, tf.float32), -1) / 255.0


# === Estimation ===


@dataclass(frozen=True)
class KernelEstimate:
    """A blind kernel estimate: the kernel (HR pixels, sum 1) and its covariance Σ_HR (p = (col, row))."""

    kernel: np.ndarray
    covariance: np.ndarray
    scale: int
    seconds: float = 0.0
    method: str = "estimator"  # or 'kernelgan' (:mod:`kernelgan`)

    def eigen(self) -> tuple[float, float, float]:
        """(λ1 ≥ λ2, θ in [0, π)): Σ = R(θ) diag(λ1, λ2) R(θ)ᵀ, the paper's kernel parameters."""
        values, vectors = np.linalg.eigh(self.covariance)
        theta = math.atan2(vectors[1, 1], vectors[0, 1]) % math.pi
        return float(values[1]), float(values[0]), theta

    def describe(self) -> str:
        l1, l2, theta = self.eigen()
        return f"{self.kernel.shape[0]}x{self.kernel.shape[1]}, lambda {l1:.2f}/{l2:.2f}, theta {theta:.2f}"

    @property
    def degradation(self) -> Degradation:
        """The estimate as the degradation to adapt under (direct subsampling, as the estimate assumes); the
        estimator's is flagged ``estimated``: a conditioned start may have rows of its own for it (``conditioning``)."""
        ours = self.method == "estimator"
        return Degradation(self.kernel, "direct", "estimated" if ours else self.method, estimated=ours)

    def as_dict(self) -> dict:
        l1, l2, theta = self.eigen()
        return {
            "size": list(self.kernel.shape),
            "covariance_hr": np.round(self.covariance, 4).tolist(),
            "lambda1": round(l1, 4),
            "lambda2": round(l2, 4),
            "theta": round(theta, 4),
            "centre_offset": blind_offset(self.scale),
            "method": self.method,
            "seconds": round(self.seconds, 4),
        }


def _hr_variance(variance: float, scale: int) -> float:
    """A ×2 training kernel's eigenvalue at ``scale``: as is at ×2, 5× at ×4 (two ×2 steps, ``kernels.compose_x4``)."""
    return variance * (5 if int(scale) == 4 else 1)


def blind_kernel_size(scale: int) -> int:
    """The estimate's odd grid size: ±3σ of the widest kernel the estimator was trained on, around the offset mean
    (λ_max at ×2, 5·λ_max at ×4: two ×2 steps)."""
    widest = _hr_variance(EstimatorConfig().lambda_max, scale)
    return 2 * int(math.ceil(3.0 * math.sqrt(widest) + blind_offset(scale))) + 1


def kernel_from_covariance(cov_hr, scale: int, size: int | None = None, precision=tf.float64):
    """The Gaussian kernel (float32 tensor) with covariance ``cov_hr`` (HR pixels), mean at
    :func:`kernels.blind_offset`, on a ``size``² grid (default :func:`blind_kernel_size`)."""
    size = size or blind_kernel_size(scale)
    return gaussian_from_covariance(cov_hr, size, tf.float32, blind_offset(scale), precision)


def photo_tiles(y, patch: int = 48, max_tiles: int = 1024):
    """Non-overlapping t² tiles [N, t, t, 1] of a luminance image [H, W, 1], t = min(``patch``, H, W), at most
    ``max_tiles`` of them, evenly spaced (graph code: the library and the SavedModel share it)."""
    h, w = tf.shape(y)[0], tf.shape(y)[1]
    t = tf.minimum(patch, tf.minimum(h, w))
    rows, cols = h // t, w // t
    tiles = tf.reshape(tf.slice(y, [0, 0, 0], tf.stack([rows * t, cols * t, 1])), [rows, t, cols, t])
    tiles = tf.reshape(tf.transpose(tiles, [0, 2, 1, 3]), [rows * cols, t, t, 1])
    n = rows * cols
    keep = tf.cast(tf.round(tf.linspace(0.0, tf.cast(n - 1, tf.float32), tf.minimum(n, max_tiles))), tf.int32)
    return tf.gather(tiles, keep)


TEXTURED_SHARE = 1 / 3  # the share of a photo's tiles the estimate is read from, the most textured ones


def textured_tiles(tiles, share: float = TEXTURED_SHARE):
    """The ``share`` of tiles [N, t, t, 1] with the most gradient energy, in their order; at least one (a photo of
    a few tiles is read off its most textured one). The estimator trains on textured patches only (flat ones are
    rejected, ``data.FLAT_THRESHOLD``); a photo's flat tiles (sky, walls) hold little but sensor and rounding
    noise, which reads as a sharp kernel. Builtin ops only (top-k), for LiteRT."""
    energy = gradient_energy(tiles)
    n = tf.shape(tiles)[0]
    keep = tf.maximum(1, tf.cast(tf.round(tf.cast(n, tf.float32) * share), tf.int32))
    _, index = tf.math.top_k(energy, keep)
    return tf.gather(tiles, tf.sort(index))


def narrowest_variance(scale: int) -> float:
    """The smallest kernel eigenvalue the estimator was trained on, in HR pixels."""
    return _hr_variance(EstimatorConfig().lambda_min, scale)


def floor_covariance(cov, floor: float):
    """Σ + max(floor − λ_min, 0)·I: the smallest eigenvalue of a 2×2 covariance raised to ``floor``, the other by as
    much (closed form, builtin ops for LiteRT). A photo unlike the training photos (sharp, aliased stripes) can give
    a nearly singular Σ, whose Gaussian vanishes between the grid's samples."""
    _, smallest = covariance_eigenvalues(cov)
    return cov + tf.maximum(floor - smallest, 0) * tf.eye(2, dtype=cov.dtype)


def estimate_graph(params, lr, scale: int, size: int | None = None, precision=tf.float64, max_tiles: int = 1024):
    """(kernel [k, k] float32, Σ_HR [2, 2] in ``precision``) of an LR image [H, W, 3] in [0, 1], as graph code,
    read off its most textured tiles (:func:`textured_tiles`); k = ``size`` or :func:`blind_kernel_size`. Σ's
    eigenvalues are kept at or above those of the narrowest training kernel (:func:`floor_covariance`). LiteRT
    graphs pass ``precision=tf.float32``."""
    tiles = textured_tiles(photo_tiles(luminance(lr), EstimatorConfig().patch, max_tiles))
    cov_hr = tf.cast(estimate_covariance(params, tiles, groups=tf.shape(tiles)[0])[0], precision) * scale**2
    cov_hr = floor_covariance(cov_hr, narrowest_variance(scale))
    return kernel_from_covariance(cov_hr, scale, size, precision), cov_hr


@tf.function(reduce_retracing=True)
def _estimate(params, lr, scale):
    return estimate_graph(params, lr, scale)


def estimate_kernel(lr_image, scale: int, params=None) -> KernelEstimate:
    """Estimate the blur kernel of ``lr_image`` (H×W×3 float in [0, 1]) for SR by ``scale`` (blind MZSR/ZSSR).

    ``params``: estimator weights (default: the shipped ones, :func:`default_estimator`).
    """
    import time

    start = time.perf_counter()
    params = load_estimator(default_estimator()) if params is None else params
    img = np.asarray(lr_image, np.float32)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise InputError(f"kernel estimation needs an H x W x 3 image, got shape {img.shape}")
    if int(scale) not in (2, 4):
        raise InputError(f"the kernel estimator knows x2 and x4, not x{scale}")
    kernel, cov = _estimate([tf.constant(p) for p in params], tf.constant(img), int(scale))
    kernel = kernel.numpy().astype(np.float64)
    return KernelEstimate(kernel / kernel.sum(), cov.numpy(), int(scale), time.perf_counter() - start)


BLIND_METHODS = ("estimator", "kernelgan")


def blind_estimator(method: str = "estimator", params=None, progress: bool = False):
    """``estimate(lr, scale) -> KernelEstimate`` by a blind method (``BLIND_METHODS``): 'estimator', this
    module's network (``params``: weights or a weights path, loaded once; default the shipped ones), or
    'kernelgan', :func:`kernelgan.run_kernelgan` per photo (``progress``: a line on stderr now and then)."""
    if method == "kernelgan":
        from mzsr_tf.kernelgan import run_kernelgan, stderr_progress

        return lambda lr, scale: run_kernelgan(lr, scale, log=stderr_progress if progress else None)
    if method != "estimator":
        raise InputError(f"unknown blind method {method!r}: use one of {', '.join(BLIND_METHODS)}")
    if params is None or isinstance(params, (str, Path)):
        params = load_estimator(params or default_estimator())
    return lambda lr, scale: estimate_kernel(lr, scale, params)


def kernel_picture(kernel, size: int = 256) -> np.ndarray:
    """The kernel as a grey picture for people: peak white, nearest-neighbour enlarged to about ``size`` pixels."""
    k = np.asarray(kernel, np.float64)
    k = k / k.max()
    factor = max(1, size // max(k.shape))
    return np.repeat(np.repeat(k, factor, 0), factor, 1)[..., None].repeat(3, -1).astype(np.float32)


def save_kernel_files(kernel, npy_path, png_path, overwrite: bool = False) -> tuple[Path, Path]:
    """Write a kernel as ``.npy`` (what ``--kernel`` reads back) and as an enlarged picture, atomically."""
    from mzsr_tf.io import atomic_write, write_image

    with atomic_write(Path(npy_path), overwrite) as tmp, open(tmp, "wb") as f:
        np.save(f, np.asarray(kernel, np.float64), allow_pickle=False)
    write_image(png_path, kernel_picture(kernel), overwrite=overwrite)
    return Path(npy_path), Path(png_path)


def kernel_psnr(estimate, true) -> float:
    """Kernel PSNR (FKP): 20·log10(1/√MSE) on the true kernel's grid (the estimate centre-cropped or padded)."""
    est, true = np.asarray(estimate, np.float64), np.asarray(true, np.float64)
    out = np.zeros_like(true)
    (eh, ew), (th, tw) = est.shape, true.shape
    # align the grid centres (size // 2 for odd sizes, the correlation centre)
    dy, dx = th // 2 - eh // 2, tw // 2 - ew // 2
    ys, xs = max(0, -dy), max(0, -dx)
    yd, xd = max(0, dy), max(0, dx)
    hh, ww = min(eh - ys, th - yd), min(ew - xs, tw - xd)
    out[yd : yd + hh, xd : xd + ww] = est[ys : ys + hh, xs : xs + ww]
    mse = float(np.mean((out - true) ** 2))
    return float("inf") if mse == 0 else 20 * math.log10(1.0 / math.sqrt(mse))


# === Weights IO ===

ESTIMATOR_FILE = "kernel_estimator.npz"


def default_estimator() -> Path:
    """The shipped estimator weights."""
    from mzsr_tf.weights import WEIGHTS_DIR

    path = WEIGHTS_DIR / ESTIMATOR_FILE
    if not path.is_file():
        raise InputError(f"no shipped kernel estimator ({path.name}); train one with train.py --stage kernel")
    return path


def save_estimator(params, path, overwrite: bool = False) -> Path:
    """Save estimator weights as ``.npz`` (arrays ``p0``, ``p1``, ...), atomically."""
    from mzsr_tf.io import atomic_write

    path = Path(path)
    if path.suffix != ".npz":
        raise InputError(f"{path}: estimator weights are saved as .npz")
    with atomic_write(path, overwrite) as tmp, open(tmp, "wb") as f:
        np.savez(f, **{f"p{i}": np.asarray(p, np.float32) for i, p in enumerate(params)})
    return path


def load_estimator(path) -> list[np.ndarray]:
    """Load estimator weights saved by :func:`save_estimator`, or from a ``train.py --stage kernel`` checkpoint."""
    path = Path(path)
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                if any(f"p{i}" not in data for i in range(len(data.files))):
                    raise InputError(f"{path}: not kernel estimator weights")
                arrays = [data[f"p{i}"] for i in range(len(data.files))]
        else:
            prefix = tf.train.latest_checkpoint(str(path)) if path.is_dir() else str(path.with_suffix(""))
            reader = tf.train.load_checkpoint(prefix)
            keys = reader.get_variable_to_shape_map()
            names = sorted((k for k in keys if k.startswith("model/_params/")), key=lambda k: int(k.split("/")[2]))
            arrays = [reader.get_tensor(k) for k in names]
    except InputError:
        raise
    except Exception as e:  # numpy/TF raise many types for corrupt or missing files
        raise InputError(f"{path}: cannot read estimator weights ({type(e).__name__}: {e})") from None
    width = int(arrays[0].shape[-1]) if arrays else 0
    if [tuple(a.shape) for a in arrays] != estimator_shapes(width):
        raise InputError(f"{path}: not kernel estimator weights")
    return [np.asarray(a, np.float32) for a in arrays]
