"""KernelGAN (Bell-Kligler, Shocher & Irani, NeurIPS 2019): the blur kernel of one LR photo from an image-specific
GAN, the slow per-image reference beside the feed-forward estimator (:mod:`kernel_estimation`).

A deep linear generator G (bias-free convolutions 7-5-3-1-1-1, the last with stride 2) learns to downscale the
photo ×2 so that a patch discriminator D (a 7×7 spectral-norm convolution, then 1×1 ones with batch norm and
ReLU, then a sigmoid) cannot tell G's patches from the photo's own; G collapsed into one 13×13 filter is the
kernel. It follows the official code (sefibk/KernelGAN): the losses and their schedule, 3,000 iterations of Adam
(2e-4, β1 0.5, ÷10 every 750), crops drawn in proportion to gradient maps, N(0, 1/255) noise on D's inputs, images
in [−1, 1] and the post-processing (small values cut, centre of mass moved to the sensor's convention). Two
differences, both where the official code does what its authors did not intend: the bicubic prior downscales each
channel alone, as the authors state it (the official convolution sums the three, KernelGAN#28, #47, whose larger
loss delays the prior's decay until G fits it; here the loss starts below ``bicubic_close``), and each
real crop gets fresh noise (the official code adds it to a view of the photo, so noise piles up where crops fall
most, in later G crops too).

×4 is the ×2 kernel composed with itself (the paper's analytic kernel, :func:`kernels.compose_x4`, not cropped).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from mzsr_tf.errors import InputError
from mzsr_tf.imresize import cubic, downscale
from mzsr_tf.kernel_estimation import KernelEstimate
from mzsr_tf.kernels import compose_x4, kernel_moments
from mzsr_tf.optim import Adam, adam, zero_moments

__all__ = [
    "KernelGANConfig",
    "DEFAULT",
    "stderr_progress",
    "kernel_size",
    "init_generator",
    "init_discriminator",
    "generate",
    "generator_kernel",
    "discriminate",
    "bicubic_prior",
    "constraint_losses",
    "crop_centres",
    "post_process",
    "Schedule",
    "min_photo_size",
    "run_kernelgan",
]


@dataclass(frozen=True)
class KernelGANConfig:
    """KernelGAN's settings, the official defaults (``configs.py``, ``kernelGAN.py``, ``learner.py``)."""

    iterations: int = 3000
    crop: int = 64  # G's input crop; D's crop is G's output size
    channels: int = 64  # hidden channels of G and D
    g_structure: tuple[int, ...] = (7, 5, 3, 1, 1, 1)  # G's kernel sizes; the last convolution has stride 2
    d_layers: int = 7  # D: a d_kernel² convolution, d_layers − 2 blocks of 1×1, a 1×1 to the map
    d_kernel: int = 7
    learning_rate: float = 2e-4  # G and D, divided by lr_drop every lr_drop_every iterations
    beta_1: float = 0.5
    lr_drop_every: int = 750
    lr_drop: float = 10.0
    lambda_bicubic: float = 5.0  # the bicubic prior's weight at the start
    lambda_sum2one: float = 0.5
    lambda_boundaries: float = 0.5
    lambda_centralized: float = 1.0  # off until the bicubic prior's weight falls below 5e-3
    lambda_sparse: float = 5.0  # likewise
    bicubic_close: float = 0.4  # the prior starts decaying after 3 iterations in a row below this loss ...
    bicubic_decay: float = 100.0  # ... dividing its weight by this every bicubic_decay_every iterations
    bicubic_decay_every: int = 200
    bicubic_min: float = 5e-6
    n_filtering: int = 40  # post-processing: subtract 0.75 × the (n + 1)-th largest value, clip at 0
    shave: int = 10  # pixels cut from every border first (the official default)
    seed: int = 0


DEFAULT = KernelGANConfig()  # read at call time, so tests may swap it for a short run
NOISE = 1.0 / 255.0  # D's input noise


def kernel_size(config: KernelGANConfig = DEFAULT) -> int:
    """The size of G's collapsed kernel: its receptive field (13 for 7-5-3-1-1-1)."""
    return 1 + sum(k - 1 for k in config.g_structure)


# === Networks === (pure functions over parameter lists, like model.forward)


def _xavier(rng, shape, gain: float = 0.1) -> tf.Tensor:
    """PyTorch ``xavier_normal_(w, gain)`` for an HWIO kernel (the official init of G)."""
    kh, kw, fan_in, fan_out = shape
    std = gain * math.sqrt(2.0 / (kh * kw * (fan_in + fan_out)))
    return tf.constant(rng.normal(0.0, std, shape), tf.float32)


def _torch_default(rng, shape) -> tf.Tensor:
    """PyTorch's default convolution init, U(±1/√fan_in): what D's spectral-norm weights keep in the official code,
    whose xavier init lands on the hook's computed weight (D's constructor has already run a forward), not on
    ``weight_orig``. The forward is the same at any scale (w / σ); Adam's relative step is not."""
    kh, kw, fan_in, _ = shape
    bound = 1.0 / math.sqrt(kh * kw * fan_in)
    return tf.constant(rng.uniform(-bound, bound, shape), tf.float32)


def init_generator(config: KernelGANConfig = DEFAULT, seed: int = 0) -> list[tf.Tensor]:
    """G's bias-free kernels, one channel in and out (RGB runs as a batch of three)."""
    rng = np.random.default_rng(seed)
    sizes, c = config.g_structure, config.channels
    chans = [1] + [c] * (len(sizes) - 1) + [1]
    return [_xavier(rng, (k, k, chans[i], chans[i + 1])) for i, k in enumerate(sizes)]


def init_discriminator(config: KernelGANConfig = DEFAULT, seed: int = 1) -> tuple[list[tf.Tensor], list[tf.Tensor]]:
    """(D's parameters, the spectral norms' power-iteration vectors u, one per convolution).

    Parameters: the first convolution's kernel and bias; per block a 1×1 kernel, bias, batch-norm γ, β; the last
    1×1 kernel and bias."""
    rng = np.random.default_rng(seed)
    c = config.channels
    params = [_torch_default(rng, (config.d_kernel, config.d_kernel, 3, c)), tf.zeros([c])]
    for _ in range(config.d_layers - 2):
        gamma = tf.constant(rng.normal(1.0, 0.02, c), tf.float32)
        params += [_torch_default(rng, (1, 1, c, c)), tf.zeros([c]), gamma, tf.zeros([c])]
    params += [_torch_default(rng, (1, 1, c, 1)), tf.zeros([1])]
    us = [tf.math.l2_normalize(tf.constant(rng.normal(0, 1, n), tf.float32)) for n in [c] * (config.d_layers - 1) + [1]]
    return params, us


def generate(g, x):
    """G: [N, H, W, 1] → [N, (H − k)/2 + 1, …, 1], valid convolutions, the last with stride 2 (k: kernel_size)."""
    for i, w in enumerate(g):
        x = tf.nn.conv2d(x, w, 2 if i == len(g) - 1 else 1, "VALID")
    return x


def generator_kernel(g):
    """G collapsed: the k×k kernel with generate(g, x) = (x correlated with it, valid) at every second pixel."""
    k = 1 + sum(int(w.shape[0]) - 1 for w in g)
    x = tf.pad(tf.ones([1, 1, 1, 1]), [[0, 0], [k - 1, k - 1], [k - 1, k - 1], [0, 0]])
    for w in g:
        x = tf.nn.conv2d(x, w, 1, "VALID")
    return tf.reverse(x[0, :, :, 0], [0, 1])  # a delta's response is the correlation kernel flipped


def _spectral_normalised(w, u):
    """PyTorch ``spectral_norm``: one power iteration from ``u``, then w / σ (σ's vectors held constant)."""
    mat = tf.reshape(tf.transpose(w, [3, 0, 1, 2]), [w.shape[-1], -1])
    v = tf.math.l2_normalize(tf.linalg.matvec(mat, u, transpose_a=True), epsilon=1e-24)
    u = tf.stop_gradient(tf.math.l2_normalize(tf.linalg.matvec(mat, v), epsilon=1e-24))
    v = tf.stop_gradient(v)
    return w / tf.tensordot(u, tf.linalg.matvec(mat, v), 1), u


def discriminate(d, us, x):
    """D's patch map [N, h, w, 1] in (0, 1) for RGB patches [N, H, W, 3], batch norm on the batch's statistics
    (D always trains), and the updated u vectors."""
    w, u = _spectral_normalised(d[0], us[0])
    new_us = [u]
    h = tf.nn.conv2d(x, w, 1, "VALID") + d[1]
    for i in range((len(d) - 4) // 4):
        kernel, bias, gamma, beta = d[2 + 4 * i : 6 + 4 * i]
        w, u = _spectral_normalised(kernel, us[1 + i])
        new_us.append(u)
        h = tf.nn.conv2d(h, w, 1, "VALID") + bias
        mean, var = tf.nn.moments(h, [0, 1, 2])
        h = tf.nn.relu(tf.nn.batch_normalization(h, mean, var, beta, gamma, 1e-5))
    w, u = _spectral_normalised(d[-2], us[-1])
    return tf.sigmoid(tf.nn.conv2d(h, w, 1, "VALID") + d[-1]), new_us + [u]


# === Losses ===

_BICUBIC_TAPS = cubic((np.arange(8) - 3.5) / 2.0) / 2.0  # MATLAB's antialiased ×½ cubic, 8 taps


def bicubic_prior(g_in, g_out):
    """MSE between G's output and the bicubic ×½ of its input (each channel alone), shaved to G's output size."""
    k = tf.constant(np.outer(_BICUBIC_TAPS, _BICUBIC_TAPS)[:, :, None, None], tf.float32)
    down = tf.nn.conv2d(tf.pad(g_in, [[0, 0], [3, 3], [3, 3], [0, 0]]), k, 2, "VALID")
    cut = (down.shape[1] - g_out.shape[1]) // 2
    return tf.reduce_mean(tf.square(g_out - down[:, cut : cut + g_out.shape[1], cut : cut + g_out.shape[2]]))


def _penalty_mask(size: int, scale: float = 30.0) -> np.ndarray:
    """The boundary loss weights: 1 − a wide Gaussian, zero on the central ~half (official ``create_penalty_mask``)."""
    z = np.arange(-size // 2 + 1, size // 2 + 1)
    g = np.exp(-(z**2) / (2.0 * size**2))
    mask = 1.0 - np.outer(g, g) / np.outer(g, g).max()
    margin = (size - (size // 2 + size % 2)) // 2 - 1
    mask[margin:-margin, margin:-margin] = 0
    return scale * mask


def constraint_losses(k):
    """G's kernel priors (sum2one, boundaries, centralized, sparse) of a k×k kernel: sums to 1, nothing near the
    borders, centre of mass half a pixel past the centre (the sensor's, ``kernels.blind_offset``), sparse."""
    size = int(k.shape[0])
    idx = tf.range(size, dtype=tf.float32)
    total = tf.reduce_sum(k)
    centre = size // 2 + 0.5 * (2 - size % 2)
    rows, cols = tf.reduce_sum(k, 1), tf.reduce_sum(k, 0)
    com = tf.stack([tf.reduce_sum(rows * idx), tf.reduce_sum(cols * idx)]) / total
    return tf.stack(
        [
            tf.abs(1.0 - total),
            tf.reduce_mean(tf.abs(k * tf.constant(_penalty_mask(size), tf.float32))),
            tf.reduce_mean(tf.square(com - centre)),
            tf.reduce_mean(tf.pow(tf.abs(k), 0.2)),
        ]
    )


def _gan_loss(d_map, real: bool):
    """The official GAN loss: L1 between D's map and all-ones (real) or all-zeros (fake)."""
    return tf.reduce_mean(tf.abs(d_map - (1.0 if real else 0.0)))


@tf.function(reduce_retracing=True)
def _train_step(g, d, us, g_moments, d_moments, t, g_in, d_in, fake_noise, weights, lr, beta_1):
    """One iteration: G's update (GAN loss + weighted priors), then D's on a real crop and G's new output.

    g_in: [3, crop, crop, 1] (RGB as a batch, in [−1, 1]); d_in: [1, n, n, 3] with its noise; weights:
    [bicubic, sum2one, boundaries, centralized, sparse]."""
    rule = Adam(beta_1=beta_1, epsilon_hat=True)  # torch 1.0's Adam (the official pin): ε on the uncorrected √v
    to_rgb = lambda y: tf.transpose(y, [3, 1, 2, 0])  # noqa: E731  [3, n, n, 1] → [1, n, n, 3]
    with tf.GradientTape() as tape:
        tape.watch(g)
        g_out = generate(g, g_in)
        d_fake, us = discriminate(d, us, to_rgb(g_out))
        priors = tf.concat([[bicubic_prior(g_in, g_out)], constraint_losses(generator_kernel(g))], 0)
        loss_g = _gan_loss(d_fake, True) + tf.reduce_sum(weights * priors)
    g, g_moments = adam(g, tape.gradient(loss_g, g), g_moments, t, lr, rule)
    fake = tf.stop_gradient(to_rgb(generate(g, g_in)) + fake_noise)
    with tf.GradientTape() as tape:
        tape.watch(d)
        d_real, us = discriminate(d, us, d_in)
        d_fake, us = discriminate(d, us, fake)
        loss_d = 0.5 * (_gan_loss(d_fake, False) + _gan_loss(d_real, True))
    d, d_moments = adam(d, tape.gradient(loss_d, d), d_moments, t, lr, rule)
    return g, d, us, g_moments, d_moments, priors[0], loss_d


# === Data: crops drawn where the photo has gradients (official DataGenerator) ===


def _pad_edges(m, edge: int):
    out = np.zeros_like(m)
    out[edge:-edge, edge:-edge] = m[edge:-edge, edge:-edge]
    return out


def _clip_extreme(m, percent: float):
    flat = np.sort(m.ravel())
    pivot = int(percent * len(flat))
    lo = flat[pivot]
    hi = flat[pivot + 1] if flat[pivot + 1] > lo else lo + 1e-5
    return np.clip(m, lo, hi) - lo


def _gradient_map(rgb, window: int = 5, percent: float = 0.97):
    """Where the photo has edges: |∂x|, |∂y| and the magnitude, each clipped at its 97th percentile, box-averaged."""
    from scipy.signal import convolve2d

    gx, gy = np.gradient(rgb @ np.array([0.299, 0.587, 0.114]))
    mag = np.sqrt(gx**2 + gy**2)
    gx, gy, mag = (_pad_edges(np.abs(a), window) for a in (gx, gy, mag))
    lx, ly = _clip_extreme(gx, percent), _clip_extreme(gy, percent)  # the official sum takes the magnitude unclipped
    combined = lx / lx.sum() + ly / ly.sum() + mag / mag.sum()
    loss_map = convolve2d(combined, np.ones((window, window)), "same") / window**2
    return loss_map / loss_map.mean()


def _probabilities(loss_map, crop: int):
    from scipy.signal import convolve2d

    half = crop // 2
    p = _pad_edges(convolve2d(loss_map, np.ones((half, half)), "same") / half**2, half).ravel()
    return p / p.sum() if p.sum() > 0 else np.full(p.size, 1.0 / p.size)


def crop_centres(rgb, iterations: int, g_crop: int, d_crop: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """The flat pixel indices of each iteration's G and D crop centres: G's drawn by the gradients of the photo's
    bicubic ×½ (nearest-neighbour back to full size), D's by the photo's own."""
    small = downscale(tf.constant(rgb, tf.float32), 2).numpy().astype(np.float64)
    small_map = np.repeat(np.repeat(_gradient_map(small), 2, 0), 2, 1)
    p_g = _probabilities(small_map, g_crop)
    p_d = _probabilities(_gradient_map(rgb), d_crop)
    return rng.choice(p_g.size, iterations, p=p_g), rng.choice(p_d.size, iterations, p=p_d)


def _crop(rgb, centre: int, size: int):
    rows, cols = rgb.shape[:2]
    row, col = divmod(int(centre), cols)
    top, left = min(max(0, row - size // 2), rows - size), min(max(0, col - size // 2), cols - size)
    top, left = top - top % 2, left - left % 2
    return rgb[top : top + size, left : left + size]


# === Schedule and post-processing ===


@dataclass
class Schedule:
    """The official ``Learner``: learning-rate drops, then the bicubic prior's decay once G is close to bicubic,
    then the centralisation and sparsity priors switched on."""

    config: KernelGANConfig
    learning_rate: float = 0.0
    lambda_bicubic: float = 0.0
    close_count: int = 0
    close: bool = False
    constraints_on: bool = False

    def __post_init__(self):
        self.learning_rate, self.lambda_bicubic = self.config.learning_rate, self.config.lambda_bicubic

    def weights(self) -> list[float]:
        c, on = self.config, self.constraints_on
        sparse = [c.lambda_centralized if on else 0.0, c.lambda_sparse if on else 0.0]
        return [self.lambda_bicubic, c.lambda_sum2one, c.lambda_boundaries] + sparse

    def update(self, iteration: int, loss_bicubic: float) -> None:
        c = self.config
        if iteration == 0:
            return
        if iteration % c.lr_drop_every == 0:
            self.learning_rate /= c.lr_drop
        if not self.close:
            self.close_count = self.close_count + 1 if loss_bicubic < c.bicubic_close else 0
            self.close = self.close_count >= 3
        elif iteration % c.bicubic_decay_every == 0 and self.lambda_bicubic > c.bicubic_min:
            self.lambda_bicubic = max(self.lambda_bicubic / c.bicubic_decay, c.bicubic_min)
            if not self.constraints_on and self.lambda_bicubic < 5e-3:
                self.constraints_on = True


def post_process(k, n: int = 40) -> np.ndarray:
    """The official output: subtract 0.75 × the (n + 1)-th largest value, clip at 0, normalise, then move the centre
    of mass half a pixel past the grid centre (``kernel_shift``, sf 2; cubic-spline shift on a padded grid)."""
    from scipy import ndimage

    k = np.asarray(k, np.float64)
    k = np.clip(k - 0.75 * np.sort(k.ravel())[-n - 1], 0, 100)
    k = k / k.sum()
    want = np.array(k.shape) // 2 + 0.5 * (2 - np.array(k.shape) % 2)
    shift = want - np.array(ndimage.center_of_mass(k))
    k = np.pad(k, int(np.ceil(np.max(np.abs(shift)))) + 1)
    return ndimage.shift(k, shift)


# === Estimation ===


def min_photo_size(config: KernelGANConfig = DEFAULT) -> int:
    """The smallest LR side KernelGAN takes: G's crop after the border shave."""
    return config.crop + 2 * config.shave


def stderr_progress(iteration: int, *_) -> None:
    """A ``log`` for :func:`run_kernelgan`: one line on stderr every 500 iterations (a run takes minutes)."""
    if iteration % 500 == 0:
        print(f"  KernelGAN iteration {iteration}/{DEFAULT.iterations}", file=sys.stderr, flush=True)


def run_kernelgan(lr_image, scale: int = 2, config: KernelGANConfig | None = None, log=None) -> KernelEstimate:
    """KernelGAN's kernel for SR of ``lr_image`` (H×W×3 float in [0, 1]) by ``scale`` (2, or 4 as two ×2 steps).

    ``log(iteration, loss_bicubic, loss_d)``: called every 100 iterations, if given.
    """
    start = time.perf_counter()
    config = config or DEFAULT
    img = np.asarray(lr_image, np.float64)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise InputError(f"KernelGAN needs an H x W x 3 image, got shape {img.shape}")
    if int(scale) not in (2, 4):
        raise InputError(f"KernelGAN estimates x2 kernels (x4 as two x2 steps), not x{scale}")
    if min(img.shape[:2]) < min_photo_size(config):
        raise InputError(f"KernelGAN needs a photo of at least {min_photo_size(config)} px a side, got {img.shape[:2]}")
    s = config.shave
    img = img[s : img.shape[0] - s, s : img.shape[1] - s]
    img = img[: img.shape[0] - img.shape[0] % 2, : img.shape[1] - img.shape[1] % 2]
    rng = np.random.default_rng(config.seed)
    g = init_generator(config, config.seed)
    d, us = init_discriminator(config, config.seed + 1)
    d_crop = int(generate(g, tf.zeros([1, config.crop, config.crop, 1])).shape[1])
    g_centres, d_centres = crop_centres(img, config.iterations, config.crop, d_crop, rng)
    g_moments, d_moments = zero_moments(g), zero_moments(d)
    schedule = Schedule(config)
    for it in range(config.iterations):
        g_in = np.transpose(_crop(img, g_centres[it], config.crop), [2, 0, 1])[..., None] * 2 - 1
        d_in = (_crop(img, d_centres[it], d_crop) + rng.normal(0, NOISE, (d_crop, d_crop, 3)))[None] * 2 - 1
        fake_noise = rng.normal(0, NOISE, (1, d_crop, d_crop, 3))
        g, d, us, g_moments, d_moments, loss_bic, loss_d = _train_step(
            g, d, us, g_moments, d_moments, tf.constant(it + 1, tf.float32),
            tf.constant(g_in, tf.float32), tf.constant(d_in, tf.float32), tf.constant(fake_noise, tf.float32),
            tf.constant(schedule.weights(), tf.float32), tf.constant(schedule.learning_rate, tf.float32),
            tf.constant(config.beta_1, tf.float32),
        )  # fmt: skip
        schedule.update(it, float(loss_bic))
        if log is not None and (it + 1) % 100 == 0:
            log(it + 1, float(loss_bic), float(loss_d))
    k2 = post_process(generator_kernel(g).numpy(), config.n_filtering)
    kernel = k2 if int(scale) == 2 else compose_x4(k2).numpy()
    kernel = kernel / kernel.sum()
    cov = kernel_moments(kernel)[1].numpy()
    return KernelEstimate(kernel, cov, int(scale), time.perf_counter() - start, method="kernelgan")
