"""MZSR meta-test: zero-shot adaptation of the meta-learned net to one image (paper Algorithm 2).

The LR test image is the HR father; its LR son is ``degrade(lr, k, s)`` with the image's own
kernel. A few gradient steps on L1(net(bicubic↑(son)), lr) from θ_M give image-specific fast
weights, which then super-resolve the LR image, trained on the whole image pair. Kernel-conditioned meta-weights
(``conditioning``) start from θ(k) = θ_M + Σ φ_i(k) V_i for the image's kernel instead (``zero_shot_sr``'s
``start_basis``).

Guard (``AdaptConfig.keep_best``, on with the learned rule): of θ_M and the weights after each update, the ones
with the lowest L1 on the image's own pair are returned, so an overshooting update is never the answer (issue 16:
"keep the best step by the loss"; chosen on held-out photos, docs/training.md).

Backtracking (``AdaptConfig.backtrack``, SGD): an update after which the L1 on the pair is higher than before it
is undone, and the next update starts again from the weights before it at ``BACKTRACK_SHRINK`` times its rates,
as do all later ones (Armijo backtracking on the image's own loss; the "bold driver" of Battiti 1989 without its
growth), so the updates after an overshoot still make progress where the guard alone could only keep an earlier
update.

Optimizers: the official ``test.py`` for Direct×2 takes plain SGD steps, lr 2e-2 for step 1, 1e-2 for
steps 2-4, 5e-3 after (``AdaptConfig.official()``, ``OFFICIAL_RATES``; its Bicubic×2 and Direct×4 models
have their own rates). The default is Adam (Kingma &
Ba, Alg. 1) with ``ADAM_RATES``, 1e-4 rising to 2e-4 then 1.5e-4 from step 6: chosen on scikit-image
photos that are neither training nor test images (``benchmarks/adaptation_sweep.py``), where its steps
beat the official ones under each paper kernel (docs/results.md).

Speed: the updates take their conv gradients from TF's own backprop kernels (oneDNN on CPU) and,
with ``precision='auto'``, run the convolutions in bfloat16 on hardware that does so natively
(mixed precision: weights, Adam moments, loss and final SR stay float32), faster at the same
PSNR on the held-out photos (``benchmarks/adaptation_sweep.py``, ``benchmarks/speed.py``).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from mzsr_tf.backward import l1_loss_and_grads
from mzsr_tf.conditioning import conditioned_start, start_features
from mzsr_tf.conv_ops import NATIVE
from mzsr_tf.degradation import degrade
from mzsr_tf.ensemble import back_projection, dihedral_shift, geometric_self_ensemble
from mzsr_tf.errors import InputError
from mzsr_tf.imresize import output_length, shift_reach, upscale
from mzsr_tf.kernels import KERNEL_FEATURES, Degradation, kernel_features, kernel_offset
from mzsr_tf.meta import kernel_rates
from mzsr_tf.model import PARAM_SPECS, forward
from mzsr_tf.noise import noise_levels
from mzsr_tf.optim import Adam, adam, descend, sgd, zero_moments

__all__ = [
    "ADAM_RATES",
    "AdaptConfig",
    "DEFAULT_RATES",
    "OFFICIAL_RATES",
    "TRACES",
    "learning_rates",
    "rate_matrix",
    "native_bfloat16",
    "Adaptation",
    "adapt",
    "adapt_graph",
    "adapt_steps",
    "check_input",
    "training_pair",
    "guard_loss",
    "window_loss",
    "keep_lower",
    "nothing_kept",
    "no_backtrack",
    "super_resolve_tiled",
    "zero_shot_sr",
]

TRACES: collections.Counter = collections.Counter()  # graph traces per function (tests count them)


OFFICIAL_RATES = (2e-2, 1e-2, 1e-2, 1e-2, 5e-3)  # official test.py (Direct×2), plain SGD
_OFFICIAL_RATES = {  # official test.py per released model: (scale, subsampling) -> rates
    (2, "direct"): OFFICIAL_RATES,
    (2, "bicubic"): (1e-2, 1e-2, 1e-2, 1e-3),  # Bicubicx2
    (4, "direct"): (1e-2, 5e-3, 5e-3, 5e-3, 5e-3, 1e-3),  # Directx4
}
ADAM_RATES = (1e-4, 1.5e-4, 2e-4, 2e-4, 2e-4, 1.5e-4)  # chosen on held-out photos (benchmarks/adaptation_sweep.py)
DEFAULT_RATES = {"sgd": OFFICIAL_RATES, "adam": ADAM_RATES}  # per optimizer, when none are given
PRECISIONS = ("auto", "float32", "bfloat16")
BACKTRACK_SHRINK = 0.5  # each undone update multiplies the later updates' rates by this (AdaptConfig.backtrack)


@functools.cache
def native_bfloat16() -> bool:
    """Whether this machine runs bfloat16 convolutions natively (the updates then run faster).

    True on GPUs of compute capability 8.0+ (Ampere on) and, with no GPU, on CPUs with AVX512-BF16 or
    AMX-BF16 (oneDNN's bfloat16 kernels; read from ``/proc/cpuinfo``, so Linux only).
    """
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return all(
            tf.config.experimental.get_device_details(g).get("compute_capability", (0, 0)) >= (8, 0) for g in gpus
        )
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@dataclass(frozen=True)
class AdaptConfig:
    """Meta-test settings: Adam with ``ADAM_RATES`` by default, ``AdaptConfig.official()`` for the official test.py."""

    steps: int = 10  # gradient updates (MZSR(1) / MZSR(10))
    learning_rates: tuple[float, ...] | None = None  # step i uses [min(i, len - 1)]; None: DEFAULT_RATES
    layer_rates: tuple[tuple[float, ...], ...] | None = None  # SGD rates per step (rows) and tensor, learned (LSLR;
    # rows of 16 + F: and kernel slopes, ``meta.kernel_rates``)
    optimizer: str = "adam"  # 'adam' or 'sgd' (official)
    adam_epsilon: float = 1e-8  # Adam's ε on √v̂ (Kingma & Ba's default)
    max_pixels: int = 512 * 512  # LR images above this train on random crops ...
    crop_size: int = 384  # ... of this size (square), one per step
    noise_sigma: float | str = "auto"  # Gaussian noise on the son: 'auto', the photo's own (mzsr_tf.noise); official 0
    precision: str = "auto"  # the updates' convolutions: 'float32', 'bfloat16', or 'auto' (bfloat16 where native)
    self_ensemble: bool = False  # 8-way geometric self-ensemble (mean) of the final SR
    back_projection_iters: int = 0  # official code: off
    tile: int = 1024  # SR inference in tiles of this many HR pixels (bounded memory)
    seed: int = 0
    keep_best: bool = False  # the guard: θ_M or the update with the lowest L1 on the image's pair (paper: the last)
    backtrack: bool = False  # undo an update that raised the L1 on the pair, go on at BACKTRACK_SHRINK × the rates

    def __post_init__(self):
        if self.optimizer not in DEFAULT_RATES:
            raise InputError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if not self.adam_epsilon > 0:
            raise InputError(f"adam_epsilon must be positive, got {self.adam_epsilon}")
        if self.precision not in PRECISIONS:
            raise InputError(f"precision must be 'auto', 'float32' or 'bfloat16', got {self.precision!r}")
        if self.noise_sigma != "auto" and not (isinstance(self.noise_sigma, (int, float)) and self.noise_sigma >= 0):
            raise InputError(f"noise_sigma must be >= 0 or 'auto', got {self.noise_sigma!r}")
        if self.backtrack and self.optimizer != "sgd":
            raise InputError("backtrack undoes SGD updates: not with adam")
        if self.layer_rates is not None and (self.optimizer != "sgd" or self.learning_rates is not None):
            raise InputError("layer_rates are SGD rates of their own: not with adam or learning_rates")
        widths = {len(row) for row in self.layer_rates or ()}
        n = len(PARAM_SPECS)
        if not widths <= {n, n + KERNEL_FEATURES} or len(widths) > 1:
            raise InputError(f"layer_rates rows must have {n} or {n + KERNEL_FEATURES} entries, got {sorted(widths)}")

    @classmethod
    def learned(cls, inner_lr, **overrides) -> AdaptConfig:
        """SGD with the per-tensor, per-step rates learned by meta-training (MAML++ LSLR; ``weights.load_inner_lr``):
        the update rule θ_M was meta-trained for, with the guard (``keep_best``). Steps past the learned ones reuse
        the last row."""
        rows = tuple(tuple(float(a) for a in row) for row in np.asarray(inner_lr))
        return cls(**{"optimizer": "sgd", "layer_rates": rows, "keep_best": True, **overrides})

    @classmethod
    def official(cls, scale: int = 2, subsample: str = "direct", **overrides) -> AdaptConfig:
        """The official MZSR ``test.py`` meta-test: plain SGD, float32, the released model's rates.

        Direct×2: ``OFFICIAL_RATES``; Bicubic×2: 1e-2 for steps 1-3, 1e-3 after; Direct×4: 1e-2, then
        5e-3 for steps 2-5, 1e-3 after. Other (scale, subsampling) pairs take the Direct×2 rates.
        """
        rates = _OFFICIAL_RATES.get((int(scale), subsample), OFFICIAL_RATES)
        official = {"optimizer": "sgd", "learning_rates": rates, "precision": "float32", "noise_sigma": 0.0}
        return cls(**{**official, **overrides})

    def cropped(self, size: int) -> AdaptConfig:
        """This config with every update on one random ``size``² window of images above ``size``² pixels."""
        return dataclasses.replace(self, max_pixels=size * size, crop_size=size)

    @property
    def compute_precision(self) -> str:
        """``precision`` with 'auto' resolved for this machine (:func:`native_bfloat16`)."""
        if self.precision != "auto":
            return self.precision
        return "bfloat16" if native_bfloat16() else "float32"

    @property
    def rule(self) -> str:
        """The update rule's name in reports: 'learned' (per-tensor rates), 'adam' or 'sgd'."""
        return "learned" if self.layer_rates else self.optimizer

    @property
    def schedule(self) -> tuple[float, ...]:
        """The learning rates given, or the optimizer's defaults."""
        return tuple(self.learning_rates or DEFAULT_RATES[self.optimizer])


def learning_rates(config: AdaptConfig) -> np.ndarray:
    """Per-step learning rates of the schedule, length ``config.steps`` (per tensor: :func:`rate_matrix`)."""
    lrs = config.schedule
    return np.array([lrs[min(i, len(lrs) - 1)] for i in range(config.steps)], np.float32)


def rate_matrix(config: AdaptConfig, kernel=None) -> np.ndarray:
    """Learning rate of each step and tensor, [steps, 16]: ``layer_rates`` rows, or the schedule for every tensor.
    Kernel-conditioned rows (``meta.kernel_rates``) need the photo's blur ``kernel``."""
    n = len(PARAM_SPECS)
    if config.layer_rates is None:
        return np.repeat(learning_rates(config)[:, None], n, axis=1)
    rows = np.asarray(config.layer_rates, np.float32)
    rows = rows[np.minimum(np.arange(config.steps), len(rows) - 1)].reshape(config.steps, -1)
    if rows.shape[1] == n:
        return rows
    if kernel is None:
        raise InputError("kernel-conditioned rates need the kernel")
    return kernel_rates(rows, kernel_features(kernel)).numpy()


def training_pair(father, kernel, scale: int, subsample: str = "direct", noise_sigma=0.0, seed=None):
    """The training pair of Algorithm 2: (bicubic↑(degrade(father)), father), both at the father's size, the
    up-sampling's samples moved by the kernel's offset (``kernels.kernel_offset``), as for the test image.

    ``noise_sigma`` (a number or a scalar tensor): Gaussian noise on the son, drawn from ``seed`` (int32 [2]),
    as ``degrade(..., noise_sigma, seed)``.
    """
    son = degrade(father, kernel, scale, subsample)
    if not (isinstance(noise_sigma, (int, float)) and noise_sigma == 0):
        sigma = tf.cast(noise_sigma, son.dtype)
        noisy = tf.clip_by_value(son + tf.random.stateless_normal(tf.shape(son), seed, stddev=sigma), 0.0, 1.0)
        son = tf.cond(sigma > 0, lambda: noisy, lambda: son)
    return upscale(son, scale, tf.shape(father)[1:3], kernel_offset(kernel)), father


def _whole(pair, crop_limits):
    """Whether every update trains on the whole pair (at most ``crop_limits[0]`` pixels)."""
    hw = tf.shape(pair)[1:3]
    return tf.cast(hw[0], tf.int64) * tf.cast(hw[1], tf.int64) <= tf.cast(crop_limits[0], tf.int64)


def training_window(pair, crop_limits, seed, k):
    """The part of the training pair that update ``k`` trains on: all of it, or above ``crop_limits[0]`` pixels a
    random ``crop_limits[1]``² window drawn from ``seed + k`` (graph code)."""
    hw = tf.shape(pair)[1:3]
    size = tf.concat([tf.where(_whole(pair, crop_limits), hw, tf.minimum(crop_limits[1], hw)), [6]], 0)
    return tf.ensure_shape(tf.image.stateless_random_crop(pair[0], size, seed + k), [None, None, 6])[None]


def guard_loss(params, pair, crop_limits, seed, precision: str = "float32"):
    """The L1 the guard compares weights by: on update 0's window (the whole pair unless cropped), convolutions in
    ``precision`` as the updates compute their loss (graph code)."""
    return window_loss(params, training_window(pair, crop_limits, seed, 0), precision)


def window_loss(params, window, precision: str = "float32"):
    """L1(net(bicubic↑(son)), father) on a window of the training pair, forward only (graph code)."""
    return tf.reduce_mean(tf.abs(forward(params, window[..., :3], precision) - window[..., 3:]))


def keep_lower(kept, loss, updates, params):
    """``kept = (loss, updates, params)``, replaced by the new triple if ``loss`` is lower (NaN never is)."""
    return tf.cond(loss < kept[0], lambda: (loss, tf.cast(updates, tf.int32), list(params)), lambda: kept)


def nothing_kept(params):
    """The guard's state before any weights were compared."""
    return tf.constant(np.inf, tf.float32), tf.constant(0, tf.int32), list(params)


def no_backtrack(params):
    """Backtracking's state before any update: (L1 before the last update, the weights and gradients it started
    from, the rates' factor); no loss is higher than the infinite one, so update 0 is never undone."""
    return tf.constant(np.inf, tf.float32), list(params), [tf.zeros_like(p) for p in params], tf.constant(1.0)


def backtracked(fast, grads, loss, back, window, precision: str, whole):
    """Backtracking's check before an update at ``fast`` (its ``loss`` and ``grads`` on ``window``): if the last
    update raised the L1 (NaN counts as raised), go back to the weights before it, with their gradients and
    ``BACKTRACK_SHRINK`` times the factor. Losses on different windows (cropped updates) are compared on this
    one. Returns (weights, grads, loss, new state)."""
    last_loss, last_fast, last_grads, factor = back
    before = tf.cond(
        whole | tf.math.is_inf(last_loss),
        lambda: last_loss,
        lambda: window_loss(last_fast, window, precision),
    )
    worse = tf.logical_not(loss <= before)

    def pick(a, b):
        return tf.cond(worse, lambda: a, lambda: b)

    fast, grads = pick(list(last_fast), list(fast)), pick(list(last_grads), list(grads))
    loss = tf.where(worse, before, loss)
    factor = tf.where(worse, factor * BACKTRACK_SHRINK, factor)
    return fast, grads, loss, (loss, fast, grads, factor)


def adapt_steps(
    params,
    moments,
    kept,
    pair,
    rates,
    crop_limits,
    seed,
    start=0,
    optimizer: str = "sgd",
    precision: str = "float32",
    adam_epsilon: float = 1e-8,
    keep_best: bool = False,
    back=None,
):
    """Updates ``start .. start + len(rates) - 1`` of the meta-test on a training pair, as graph code.

    Fast weights are ``tf.while_loop`` values, never variables, so concurrent callers share no state.
    A run split into calls (``start``, ``moments`` passed on) equals one call over all its steps.

    Args:
      params: the weights to update, list of 16 tensors.
      moments: Adam's first and second moments (32 tensors; zeros at step 0, ignored by SGD).
      kept: the guard's (loss, updates, weights) so far (:func:`nothing_kept` at step 0; passed through
        unless ``keep_best``).
      pair: float32 [1, H, W, 6], bicubic↑(son) and the father stacked on channels (:func:`training_pair`).
      rates: float32 [n] or [n, 16], learning rate of each update (per tensor: learned LSLR rates).
      crop_limits: int32 [2], (max_pixels, crop_size): images with more than max_pixels pixels train
        on random crop_size² windows, smaller ones whole (official: whole image).
      seed: int32 [2], for the crops (window ``i`` from ``seed + i``).
      start: index of the first update (Adam's bias correction and the crop seeds count from 0).
      precision: compute type of the updates' convolutions (``backward.l1_loss_and_grads``).
      adam_epsilon: Adam's ε (with ``optimizer='adam'``).
      keep_best: compare the weights before each update with ``kept`` by :func:`guard_loss`.
      back: backtracking's state (:func:`no_backtrack` at step 0; SGD only), or None: no backtracking.
    Returns:
      (fast weights, moments, kept, back, L1 loss before each update [n]).
    """
    if rates.shape.rank == 1:
        rates = tf.tile(rates[:, None], [1, len(params)])
    rule = Adam(epsilon=adam_epsilon)

    def update(i, fast, state):
        moments, kept, back = state
        k = start + i
        window = training_window(pair, crop_limits, seed, k)
        loss, grads = l1_loss_and_grads(fast, window[..., :3], window[..., 3:], precision, NATIVE)
        factor = 1.0
        if back:  # a static choice: () without backtracking
            fast, grads, loss, back = backtracked(fast, grads, loss, back, window, precision, _whole(pair, crop_limits))
            factor = back[3]
        if keep_best:  # on update 0's window the loss just computed is the guard's
            same = tf.equal(k, 0) | _whole(pair, crop_limits)
            checked = tf.cond(same, lambda: loss, lambda: guard_loss(fast, pair, crop_limits, seed, precision))
            kept = keep_lower(kept, checked, k, fast)
        if optimizer == "adam":
            fast, moments = adam(fast, grads, moments, k + 1, rates[i], rule)
        else:
            fast = sgd(fast, grads, rates[i] * factor)
        return loss, fast, (moments, kept, back)

    state = (list(moments), kept, () if back is None else back)  # a while_loop carries no None
    fast, (moments, kept, back), losses = descend(update, params, state, tf.shape(rates)[0])
    return fast, moments, kept, back or None, losses


def adapt_graph(params, lr_image, kernel, rates, scale: int, config: AdaptConfig, subsample="direct", noise_sigma=0.0):
    """The whole meta-test loop as one piece of graph code (the exporters' in-graph adaptation).

    Args:
      params: θ, list of 16 tensors.
      lr_image: float32 [H, W, 3], the test image (the HR father).
      kernel: float32 [k, k], its blur kernel (``[[1.]]`` for plain bicubic subsampling).
      rates: [steps] or [steps, 16] learning rates (a tensor: the step count may be a request's).
      config: the optimizer, crops, seed (it also draws the son's noise), precision ('auto' is float32 here: a
        graph may run on other hardware) and guard; its ``steps``, schedule and ``noise_sigma`` are not read.
      noise_sigma: std of the son's noise, a number or a scalar tensor (e.g. ``noise.noise_levels_graph(image).son``).
    Returns:
      (fast weights, L1 loss before each update [steps]).
    """
    seed = tf.constant([config.seed, 0], tf.int32)
    pair = tf.concat(training_pair(lr_image[None], kernel, scale, subsample, noise_sigma, seed), -1)
    limits = tf.constant([config.max_pixels, config.crop_size], tf.int32)
    precision = "float32" if config.precision == "auto" else config.precision
    fast, _, kept, _, losses = adapt_steps(
        params, zero_moments(params), nothing_kept(params), pair, rates, limits, seed, 0, config.optimizer,
        precision, config.adam_epsilon, config.keep_best, no_backtrack(params) if config.backtrack else None,
    )  # fmt: skip
    if config.keep_best:
        fast = keep_lower(kept, guard_loss(fast, pair, limits, seed, precision), tf.shape(rates)[0], fast)[2]
    return fast, losses


_PAIR_SPECS = [tf.TensorSpec([None, None, 3], tf.float32), tf.TensorSpec([None, None], tf.float32)]


_KEPT_SPECS = (tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.int32), PARAM_SPECS)
_BACK_SPECS = (tf.TensorSpec([], tf.float32), PARAM_SPECS, PARAM_SPECS, tf.TensorSpec([], tf.float32))


@functools.cache
def _adapt_fns(
    scale: int, subsample: str, optimizer: str, precision: str, adam_epsilon: float, keep_best: bool, backtrack: bool
):
    """(make_pair, run_steps, last_loss) graphs per (scale, subsample, optimizer, ...): any image, kernel, son
    noise, steps."""

    @tf.function(input_signature=[*_PAIR_SPECS, tf.TensorSpec([2], tf.int32), tf.TensorSpec([], tf.float32)])
    def make_pair(lr_image, kernel, seed, noise_sigma):
        return tf.concat(training_pair(lr_image[None], kernel, scale, subsample, noise_sigma, seed), -1)

    @tf.function(
        input_signature=[
            PARAM_SPECS,
            PARAM_SPECS * 2,  # Adam moments
            _KEPT_SPECS,  # the guard's choice so far
            _BACK_SPECS,  # backtracking's state (passed through without backtracking)
            tf.TensorSpec([1, None, None, 6], tf.float32),  # training pair
            tf.TensorSpec([None, len(PARAM_SPECS)], tf.float32),  # learning rate per step and tensor
            tf.TensorSpec([2], tf.int32),  # (max_pixels, crop_size)
            tf.TensorSpec([2], tf.int32),  # seed
            tf.TensorSpec([], tf.int32),  # first step
        ]
    )
    def run_steps(params, moments, kept, back, pair, rates, crop_limits, seed, start):
        TRACES["adapt"] += 1
        fast, moments, kept, back2, losses = adapt_steps(
            params, moments, kept, pair, rates, crop_limits, seed, start, optimizer, precision, adam_epsilon,
            keep_best, back if backtrack else None,
        )  # fmt: skip
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(w)) for w in fast])
        return fast, moments, kept, back2 if backtrack else back, losses, finite

    @tf.function(
        input_signature=[
            PARAM_SPECS,
            tf.TensorSpec([1, None, None, 6], tf.float32),
            tf.TensorSpec([2], tf.int32),
            tf.TensorSpec([2], tf.int32),
        ]
    )
    def last_loss(params, pair, crop_limits, seed):
        """:func:`guard_loss` of the last update's weights (forward only: they have no loss yet)."""
        return guard_loss(params, pair, crop_limits, seed, precision)

    return make_pair, run_steps, last_loss


CHUNK_SECONDS = 0.25  # adaptation runs in graph calls of about this long, so Ctrl-C stops it promptly
DIVERGENCE = 4.0  # an update whose loss is non-finite or above this times the starting loss has diverged


def check_input(lr_image, degradation: Degradation, scale) -> int:
    """Raise InputError if MZSR cannot adapt to this image with this kernel and scale; returns the integer scale."""
    s = int(round(float(scale)))
    if float(scale) <= 1 or abs(float(scale) - s) > 1e-9:
        raise InputError(f"scale must be an integer > 1, got {scale}")
    h, w = lr_image.shape[:2]
    son = (output_length(h, 1 / s), output_length(w, 1 / s))
    if min(son) < shift_reach(s):  # the son's up-sampling reads that many pixels past each edge
        raise InputError(f"image {w}x{h} is too small for x{s} (its LR son would be {son[1]}x{son[0]})")
    if degradation.kernel is not None and (h < degradation.kernel.shape[0] or w < degradation.kernel.shape[1]):
        kh, kw = degradation.kernel.shape
        raise InputError(f"image {w}x{h} is smaller than the {kw}x{kh} kernel")
    return s


class Adaptation(NamedTuple):
    """What :func:`adapt` returns."""

    params: list  # the fast weights: after ``updates`` updates
    losses: np.ndarray  # L1 before each update that ran (fewer than asked when one diverged)
    updates: int  # how many updates made ``params`` (fewer than ran when the guard kept earlier weights)


def adapt(params, lr_image, degradation: Degradation, scale, config: AdaptConfig = AdaptConfig()) -> Adaptation:
    """Zero-shot adaptation: ``config.steps`` updates on (son → LR) from θ_M.

    The updates run in short graph calls (Ctrl-C stops them within about ``CHUNK_SECONDS``). If an
    update diverges (its weights or their loss non-finite, or the loss above ``DIVERGENCE`` times the
    starting one), adaptation stops there and returns the weights before that update (with ``keep_best``,
    the guard's choice among those): ``losses`` then has fewer than ``config.steps`` entries.

    Args:
      params: meta-initial weights θ_M (list of 16 tensors).
      lr_image: float32 [H, W, 3] in [0, 1], the test image.
      degradation: its kernel and subsampling (``mzsr_tf.kernels.Degradation``).
    """
    s = check_input(lr_image, degradation, scale)
    make_pair, run_steps, last_loss = _adapt_fns(
        s, degradation.subsample, config.optimizer, config.compute_precision, config.adam_epsilon, config.keep_best,
        config.backtrack,
    )  # fmt: skip
    sigma = noise_levels(lr_image).son if config.noise_sigma == "auto" else float(config.noise_sigma)
    kernel = degradation.blur
    seed = tf.constant([config.seed, 0], tf.int32)
    pair = make_pair(
        tf.convert_to_tensor(lr_image, tf.float32), tf.convert_to_tensor(kernel, tf.float32), seed, tf.constant(sigma)
    )
    crop_limits = tf.constant([config.max_pixels, config.crop_size], tf.int32)
    rates = rate_matrix(config, kernel)

    def run(state, n):
        """``n`` updates from ``state = (done, fast, moments, kept, back)``."""
        done, fast, moments, kept, back = state
        chunk_rates = rates[done : done + n]
        fast2, moments2, kept2, back2, losses, finite = run_steps(
            fast, moments, kept, back, pair, chunk_rates, crop_limits, seed, tf.constant(done, tf.int32)
        )
        return (done + n, fast2, moments2, kept2, back2), losses.numpy(), bool(finite)

    theta = [tf.convert_to_tensor(p, tf.float32) for p in params]
    state = (0, theta, zero_moments(theta), nothing_kept(theta), no_backtrack(theta))
    starts = [state]  # the last two chunk starts, to go back to when a later loss shows a diverged update
    seen: list[float] = []  # seen[i]: the loss of the weights after i updates (finite, not exploded)
    chunk, bad = 1, None  # bad: the first number of updates whose weights diverged
    while state[0] < config.steps:
        t0 = time.perf_counter()
        new, losses, finite = run(state, min(chunk, config.steps - state[0]))
        limit = DIVERGENCE * (seen[0] if seen else losses[0])
        broken = [j for j, v in enumerate(losses) if not np.isfinite(v) or v > limit]
        if broken or not finite:
            bad = state[0] + (broken[0] if broken else len(losses))
            kept = new[3]  # the guard's choice includes this chunk's updates before the diverged one
            break
        seen.extend(float(v) for v in losses)
        state = new
        starts = [starts[-1], state]
        if time.perf_counter() - t0 < CHUNK_SECONDS / 2:
            chunk *= 2
    else:
        kept = state[3]
    last = np.inf
    if bad is None and config.steps:  # the last update's weights have no loss yet: measure it
        last = float(last_loss(state[1], pair, crop_limits, seed))
        if not np.isfinite(last) or last > DIVERGENCE * seen[0]:
            bad, last = config.steps, np.inf
    if bad == 0:
        raise InputError("the loss is not finite before any update (check the image and the kernel)")
    if bad is not None:  # the diverged update and its starting loss are dropped
        seen = seen[: bad - 1]
    kept_before_bad = bad is None or int(kept[1]) < bad  # not a diverged update's weights (a later one in its chunk)
    if config.keep_best and last >= float(kept[0]) and kept_before_bad:
        return Adaptation(kept[2], np.array(seen, np.float32), int(kept[1]))
    if bad is not None:  # keep the weights after bad - 1 updates: rerun from the chunk start before them
        start = next(s for s in reversed(starts) if s[0] <= bad - 1)
        state = run(start, bad - 1 - start[0])[0] if bad - 1 > start[0] else start
    return Adaptation(state[1], np.array(seen[: state[0]], np.float32), state[0])


@tf.function(input_signature=[PARAM_SPECS, tf.TensorSpec([None, None, None, 3], tf.float32)])
def _forward_graph(params, x):
    TRACES["forward"] += 1
    return forward(params, x)


def super_resolve_tiled(params, lr, scale, output_shape=None, tile: int = 1024, shift=None):
    """net(bicubic↑(lr)) for an NHWC batch of one, in overlapping tiles of ``tile`` HR pixels.

    The input is upsampled whole (cheap; ``shift``: the LR's kernel offset, ``imresize.upscale``), then the network
    runs on tiles padded by its receptive-field radius (8 px), so the result equals the untiled one.
    """
    x = upscale(tf.convert_to_tensor(lr, tf.float32), scale, output_shape, shift)
    h, w = x.shape[1], x.shape[2]
    if h * w <= tile * tile:
        return _forward_graph(params, x)
    margin = 8  # 8 stacked 3x3 convs
    rows = []
    for top in range(0, h, tile):
        row = []
        for left in range(0, w, tile):
            t0, l0 = max(top - margin, 0), max(left - margin, 0)
            t1, l1 = min(top + tile + margin, h), min(left + tile + margin, w)
            out = _forward_graph(params, x[:, t0:t1, l0:l1])
            row.append(out[:, top - t0 : top - t0 + min(tile, h - top), left - l0 : left - l0 + min(tile, w - left)])
        rows.append(tf.concat(row, axis=2))
    return tf.concat(rows, axis=1)


@dataclass
class AdaptResult:
    """What one zero-shot SR run produced."""

    sr: np.ndarray  # float32 [H*s, W*s, 3] in [0, 1]
    losses: list = field(default_factory=list)  # L1 on (son → LR) before each update applied
    steps_requested: int = 0  # more than len(losses) when an update diverged (non-finite) and was dropped
    updates: int = 0  # the updates in the weights used: fewer than len(losses) when the guard kept earlier ones
    seconds_adapt: float = 0.0
    seconds_sr: float = 0.0
    fast_params: list | None = None

    @property
    def diverged(self) -> bool:
        """Whether adaptation stopped early at a non-finite update (the SR uses the last finite one)."""
        return len(self.losses) < self.steps_requested


def zero_shot_sr(
    params,
    lr_image,
    degradation: Degradation,
    scale,
    config: AdaptConfig = AdaptConfig(),
    output_shape=None,
    start_basis=None,
):
    """MZSR(n): adapt θ_M to ``lr_image`` then super-resolve it (plus optional ensemble/back-projection).

    ``start_basis``: the basis V of conditioned meta-weights (``weights.load_start_basis``): adaptation starts from
    θ(k, σ̂) = θ_M + Σ φ_i(k, σ̂) V_i for the image's kernel and the noise level read off it, flagged when the kernel
    is estimated (``Degradation.estimated``, ``conditioning``)."""
    lr_image = np.asarray(lr_image, np.float32)
    s = check_input(lr_image, degradation, scale)
    auto = config.noise_sigma == "auto"  # one reading serves the start and the son; none if neither needs it
    levels = noise_levels(lr_image) if start_basis is not None or auto else None
    if auto:
        config = dataclasses.replace(config, noise_sigma=levels.son)
    if start_basis is not None:
        features = start_features(degradation.blur, levels.feature, degradation.estimated)
        params = conditioned_start(params, start_basis, features)
    t0 = time.perf_counter()
    if config.steps > 0:
        fast, losses, updates = adapt(params, lr_image, degradation, s, config)
    else:
        fast, losses, updates = [tf.convert_to_tensor(p, tf.float32) for p in params], np.zeros([0], np.float32), 0
    t1 = time.perf_counter() if config.steps > 0 else t0  # no steps: no adaptation time
    lr = tf.constant(lr_image[None])
    if output_shape is None:
        output_shape = (lr_image.shape[0] * s, lr_image.shape[1] * s)

    offset = None if degradation.kernel is None else kernel_offset(degradation.kernel)  # as in the training pair

    def sr_fn(x, k=0):  # x: the image under dihedral transform k (geometric_self_ensemble)
        shape = output_shape if x.shape[1] == lr_image.shape[0] else output_shape[::-1]
        return super_resolve_tiled(
            fast, x, s, shape, config.tile, offset if offset is None else dihedral_shift(offset, k, s)
        )

    refine = None
    if config.back_projection_iters:
        kernel = degradation.blur

        def refine(sr, lr):
            return back_projection(sr, lr, kernel, s, degradation.subsample, config.back_projection_iters)

    if config.self_ensemble:
        sr = geometric_self_ensemble(sr_fn, lr, "mean", refine=refine)
    else:
        sr = sr_fn(lr)
        sr = refine(sr, lr) if refine else sr
    sr = tf.clip_by_value(sr[0], 0.0, 1.0).numpy()
    return AdaptResult(sr, [float(v) for v in losses], config.steps, updates, t1 - t0, time.perf_counter() - t1, fast)
