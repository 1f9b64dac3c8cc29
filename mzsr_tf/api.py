"""The Python API: zero-shot super-resolution of an image array in one call (MZSR, paper Algorithm 2; or ZSSR).

Example:
  >>> import mzsr_tf, skimage.data
  >>> photo = skimage.data.astronaut()[:128, :128]  # uint8 H×W×3 (floats in [0, 1] work too)
  >>> sr = mzsr_tf.super_resolve(photo, kernel="g_d_2.0", steps=10, scale=2)  # uint8 256×256×3
  >>> model = mzsr_tf.from_preset("mzsr_x2_direct")  # the shipped meta-weights, loaded once
  >>> sr = model.super_resolve(photo, kernel="g_d_2.0", steps=1)

An image comes back in the type it came in: uint8 as uint8, float as float32 in [0, 1]. A gray H×W
image is super-resolved as RGB and returned as H'×W'.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mzsr_tf.errors import InputError
from mzsr_tf.kernels import NAMED_DEGRADATIONS, Degradation, resolve_degradation
from mzsr_tf.weights import WEIGHTS_DIR

__all__ = ["PRESETS", "ZeroShotSR", "from_preset", "super_resolve"]

PRESETS = {  # name -> (scale, subsampling) of the shipped meta-weights ``mzsr_tf/weights/NAME.weights.h5``
    "mzsr_x2_direct": (2, "direct"),
    "mzsr_x2_bicubic": (2, "bicubic"),
    "mzsr_x4_direct": (4, "direct"),
}


def _as_float_rgb(image) -> tuple[np.ndarray, np.dtype, bool]:
    """(float32 H×W×3 in [0, 1], the input's dtype, whether it was gray H×W) after checking the array."""
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    gray = a.ndim == 2
    if gray:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] != 3 or min(a.shape[:2]) < 1:
        raise InputError(f"image must be H×W×3 (or H×W gray), got shape {np.shape(image)}")
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0, a.dtype, gray
    if not np.issubdtype(a.dtype, np.floating):
        raise InputError(f"image must be uint8 or float in [0, 1], got {a.dtype}")
    if not np.all(np.isfinite(a)) or a.min() < 0 or a.max() > 1:
        raise InputError("a float image must be finite and in [0, 1]")
    return a.astype(np.float32), a.dtype, gray


def _as_input_type(sr: np.ndarray, dtype, gray: bool) -> np.ndarray:
    sr = np.clip(sr, 0.0, 1.0)
    if gray:
        sr = sr.mean(axis=-1)
    if dtype == np.uint8:
        from mzsr_tf.metrics import to_uint8

        return to_uint8(sr).numpy()
    return sr.astype(np.float32)


@dataclass(frozen=True)
class ZeroShotSR:
    """Meta-weights θ_M with the adaptation they were trained for; ``super_resolve`` adapts and super-resolves.

    Args:
      params: θ_M, 16 tensors (``weights.load_params``).
      scale: the SR factor θ_M was meta-trained for.
      subsample: its kernels' subsampling, 'direct' or 'bicubic'.
      inner_lr: meta-learned per-tensor rates (``weights.load_inner_lr``); None: the default Adam steps.
      start_basis: the basis V of a kernel-conditioned start (``weights.load_start_basis``); None: θ_M for every
        kernel.
    """

    params: tuple
    scale: int = 2
    subsample: str = "direct"
    inner_lr: np.ndarray | None = None
    start_basis: tuple | None = None

    @classmethod
    def from_preset(cls, name: str) -> ZeroShotSR:
        """The shipped weights ``name`` (``PRESETS``), e.g. ``"mzsr_x2_direct"``."""
        if name not in PRESETS:
            raise InputError(f"unknown preset {name!r}: use one of {', '.join(PRESETS)}")
        return cls.from_weights(WEIGHTS_DIR / f"{name}.weights.h5", *PRESETS[name])

    @classmethod
    def from_weights(cls, path, scale: int = 2, subsample: str = "direct") -> ZeroShotSR:
        """Weights trained by ``train.py`` (``.weights.h5``, ``.npz``, a run's checkpoint or the official TF1 one)."""
        from mzsr_tf.weights import load_inner_lr, load_params, load_start_basis

        basis = load_start_basis(path)
        return cls(tuple(load_params(path)), int(scale), subsample, load_inner_lr(path), basis and tuple(basis))

    def adapt_config(self, steps: int = 10, **overrides):
        """The meta-test settings: SGD with the learned rates if θ_M has them, else ``AdaptConfig``'s Adam."""
        from mzsr_tf.zero_shot import AdaptConfig

        if self.inner_lr is not None and not {"optimizer", "learning_rates"} & set(overrides):
            return AdaptConfig.learned(self.inner_lr, steps=steps, **overrides)
        return AdaptConfig(steps=steps, **overrides)

    def super_resolve(self, image, kernel=None, steps: int = 10, **overrides) -> np.ndarray:
        """MZSR(``steps``) on ``image`` with its blur ``kernel`` (a name, a .mat/.npy path, an array, a
        ``Degradation``, None: estimated from the image, or 'kernelgan': estimated by KernelGAN, minutes), then SR
        by ``scale``. ``overrides``: ``AdaptConfig`` fields (``self_ensemble=True``...)."""
        from mzsr_tf.zero_shot import zero_shot_sr

        lr, dtype, gray = _as_float_rgb(image)
        degradation = _degradation(kernel, self.subsample, lr, self.scale)
        config = self.adapt_config(steps, **overrides)
        result = zero_shot_sr(self.params, lr, degradation, self.scale, config, start_basis=self.start_basis)
        return _as_input_type(result.sr, dtype, gray)


def _degradation(kernel, subsample: str | None = None, lr=None, scale: int = 2) -> Degradation:
    """A named kernel keeps its own subsampling; a file or an array takes ``subsample`` (default direct); None is
    the kernel estimated from ``lr`` (blind SR, direct subsampling), 'kernelgan' the same by KernelGAN."""
    if kernel is None or (isinstance(kernel, str) and kernel == "kernelgan"):
        from mzsr_tf.kernel_estimation import blind_estimator

        if subsample == "bicubic":
            raise InputError("blind SR estimates kernels for direct subsampling; give the kernel")
        return blind_estimator(kernel or "estimator")(lr, scale).degradation
    if isinstance(kernel, Degradation) or (isinstance(kernel, str) and kernel in NAMED_DEGRADATIONS):
        return resolve_degradation(kernel)
    return resolve_degradation(kernel if isinstance(kernel, (str, Path)) else np.asarray(kernel), subsample)


def from_preset(name: str) -> ZeroShotSR:
    """``ZeroShotSR.from_preset``: the shipped meta-weights ``name`` (``PRESETS``)."""
    return ZeroShotSR.from_preset(name)


def super_resolve(image, kernel=None, steps: int = 10, scale: int = 2, method: str = "mzsr", weights=None):
    """Super-resolve one image array by ``scale`` under its blur ``kernel``.

    Args:
      image: H×W×3 (or H×W gray) uint8, or float in [0, 1].
      kernel: a paper kernel name (``g_d_2.0``, ``g_d_ani``, ``g_b_1.3``, ``bicubic``...), a .mat/.npy path,
        a 2-D array (direct subsampling), a ``kernels.Degradation``, None: estimated from the image (blind SR,
        ``kernel_estimation``), or 'kernelgan': estimated by KernelGAN (``kernelgan``, minutes per image).
      steps: MZSR's adaptation updates (paper: 1 or 10); ignored by ZSSR.
      method: 'mzsr' (meta-weights adapted in ``steps`` updates) or 'zssr' (trained from scratch, minutes).
      weights: meta-weights file; default: the shipped ones for the scale and the kernel's subsampling.
    Returns:
      The SR image, ``scale`` times larger, in the input's type.
    """
    lr, dtype, gray = _as_float_rgb(image)
    degradation = _degradation(kernel, None, lr, scale)
    if method == "zssr":
        from mzsr_tf.zssr import PRESETS as ZSSR_PRESETS
        from mzsr_tf.zssr import train_zssr

        config = ZSSR_PRESETS["x2_given_kernel" if degradation.kernel is not None else "x2_ideal"]
        return _as_input_type(train_zssr(lr, degradation, scale, config).sr, dtype, gray)
    if method != "mzsr":
        raise InputError(f"method must be 'mzsr' or 'zssr', got {method!r}")
    if weights is not None:
        model = ZeroShotSR.from_weights(weights, scale, degradation.subsample)
    else:
        name = f"mzsr_x{int(scale)}_{degradation.subsample}"
        if name not in PRESETS:
            raise InputError(f"no shipped weights for x{scale} {degradation.subsample} subsampling; pass weights=")
        model = _preset(name)
    return model.super_resolve(image, degradation, steps)


_LOADED: dict[str, ZeroShotSR] = {}


def _preset(name: str) -> ZeroShotSR:
    """Shipped weights, loaded once per process."""
    if name not in _LOADED:
        _LOADED[name] = ZeroShotSR.from_preset(name)
    return _LOADED[name]
