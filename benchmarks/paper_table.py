"""The MZSR paper's Table 2 protocol: PSNR/SSIM (Y channel, border = scale) per test set, kernel and method.

For every HR image: ``modcrop`` to the scale, LR = ``uint8(degrade(HR, k, s))`` computed in float64 (this
reproduces the official LR files bit-exactly), SR = method(LR as float32 in [0, 1]), then ``psnr_y`` and
``ssim_y`` against the HR with ``border = scale`` (MZSR/ZSSR evaluation). The set name is the folder's name,
or its parent's when the folder is called ``HR`` (``Set5/HR`` -> ``Set5``).

Example::

    python -m benchmarks.paper_table --hr ../shared/datasets/test/Set5/HR --methods bicubic --json out.json

Adding a method: write a factory ``def make_x(args, **groups) -> Method`` and add it to ``METHODS``. Each
key is a regular expression matched against the whole ``--methods`` entry; its named groups are passed to
the factory as keyword strings, so ``r"mzsr(?P<steps>\\d+)": make_mzsr`` serves ``mzsr1`` and ``mzsr10``
with ``steps="1"`` / ``"10"``. The factory runs once per run (load checkpoints there; add any flag it
needs, such as ``--checkpoint``, in ``build_parser``) and returns a callable::

    sr = method(lr, degradation, scale, output_shape=(hr_h, hr_w))

with ``lr`` float32 [h, w, 3] in [0, 1], ``degradation`` a ``mzsr_tf.kernels.Degradation`` (the kernel
and subsampling the LR was made with, for methods that use it, like ZSSR/MZSR's ``lr_son``), and ``sr``
an [hr_h, hr_w, 3] float image in [0, 1] (NumPy or tensor). Only its running time is reported in s/image.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import re
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from benchmarks.common import add_unconditioned, format_table, save_json
from mzsr_tf import cli
from mzsr_tf.degradation import degrade
from mzsr_tf.errors import InputError
from mzsr_tf.imresize import upscale
from mzsr_tf.io import check_destination, list_images, read_image
from mzsr_tf.kernels import Degradation, resolve_degradation
from mzsr_tf.metrics import modcrop, psnr_y, ssim_y, to_uint8
from mzsr_tf.zero_shot import PRECISIONS

DEFAULT_KERNELS = "g_d_0.2,g_d_2.0,g_d_ani,g_b_1.3,bicubic"  # MZSR Table 2 columns

# MZSR paper Table 2 (x2, PSNR / SSIM on Y) for these methods, per (set, kernel).
PAPER_METHODS = ("bicubic", "zssr", "mzsr1", "mzsr10")
_PAPER_ROWS = {
    ("Set5", "g_d_0.2"): ((30.24, 0.8976), (34.29, 0.9373), (33.14, 0.9277), (33.74, 0.9301)),
    ("BSD100", "g_d_0.2"): ((27.45, 0.7992), (29.35, 0.8465), (28.74, 0.8389), (29.03, 0.8415)),
    ("Urban100", "g_d_0.2"): ((24.70, 0.7958), (28.13, 0.8788), (26.24, 0.8394), (26.60, 0.8439)),
    ("Set5", "g_d_2.0"): ((28.73, 0.8449), (34.90, 0.9397), (35.20, 0.9398), (36.05, 0.9439)),
    ("BSD100", "g_d_2.0"): ((26.51, 0.7157), (30.57, 0.8712), (30.58, 0.8627), (31.09, 0.8739)),
    ("Urban100", "g_d_2.0"): ((23.70, 0.7109), (27.86, 0.8582), (28.23, 0.8657), (29.19, 0.8838)),
    ("Set5", "g_d_ani"): ((28.15, 0.8265), (33.96, 0.9307), (34.05, 0.9271), (34.78, 0.9323)),
    ("BSD100", "g_d_ani"): ((26.00, 0.6891), (29.72, 0.8479), (28.82, 0.8013), (29.54, 0.8297)),
    ("Urban100", "g_d_ani"): ((23.13, 0.6796), (27.03, 0.8335), (26.51, 0.8126), (27.34, 0.8369)),
    ("Set5", "g_b_1.3"): ((30.54, 0.8773), (35.24, 0.9434), (35.18, 0.9430), (36.64, 0.9498)),
    ("BSD100", "g_b_1.3"): ((27.49, 0.7546), (30.74, 0.8743), (29.02, 0.8544), (31.25, 0.8818)),
    ("Urban100", "g_b_1.3"): ((24.74, 0.7527), (28.30, 0.8693), (28.27, 0.8771), (29.83, 0.8965)),
}
# x4, g^d_2.0 (the paper's x4 table, ``figure/resultx4.png`` of the official repository).
_PAPER_ROWS_X4 = {
    ("Set5", "g_d_2.0"): ((24.74, 0.7321), (27.39, 0.7685), (30.20, 0.8655), (30.50, 0.8704)),
    ("BSD100", "g_d_2.0"): ((24.01, 0.5998), (25.89, 0.6776), (26.73, 0.7138), (26.89, 0.7168)),
    ("Urban100", "g_d_2.0"): ((21.16, 0.5811), (23.53, 0.6822), (24.36, 0.7333), (24.65, 0.7394)),
}
# Blind SR anchor: KernelGAN + ZSSR on DIV2KRK (KernelGAN paper), beside our DIV2KRK-recipe rows (other photos).
BLIND_ANCHOR = {2: (30.36, 0.8669), 4: (26.81, 0.7316)}
PAPER = {
    (*cell, scale): dict(zip(PAPER_METHODS, figures))
    for scale, rows in ((2, _PAPER_ROWS), (4, _PAPER_ROWS_X4))
    for cell, figures in rows.items()
}  # (set, kernel, scale) -> {method: (PSNR, SSIM)}


class Method(Protocol):
    def __call__(self, lr: np.ndarray, degradation: Degradation, scale: int, *, output_shape) -> np.ndarray: ...


def method_settings(method: Method, subsample: str = "direct") -> dict:
    """What ``method`` runs for a kernel of ``subsample``: its ``settings`` dict, or ``settings(subsample)`` when
    that depends on the subsampling (MZSR takes the shipped weights of each)."""
    settings = getattr(method, "settings", {})
    return dict(settings(subsample) if callable(settings) else settings)


# === Methods ===


def make_bicubic(args: argparse.Namespace) -> Method:
    """The Bicubic baseline: MATLAB ``imresize(lr, s, output_shape=hr.shape)``."""

    def bicubic(lr, degradation, scale, *, output_shape):
        return upscale(lr, scale, output_shape=output_shape)

    return bicubic


def _weights_file(args: argparse.Namespace, subsample: str):
    """``--weights`` for every kernel, else the shipped weights for that subsampling (as adapt.py)."""
    from mzsr_tf.weights import default_weights

    return args.weights or default_weights(args.scale, subsample)


def _weights(args: argparse.Namespace):
    """subsample → ``api.ZeroShotSR`` of :func:`_weights_file`, with its learned rates if it carries them."""
    from mzsr_tf.api import ZeroShotSR

    @functools.cache
    def model_for(subsample: str):
        model = ZeroShotSR.from_weights(_weights_file(args, subsample), args.scale, subsample)
        return replace(model, start_basis=None) if args.unconditioned else model

    return model_for


def _weights_sha1(args: argparse.Namespace):
    """subsample → the SHA-1 of :func:`_weights_file` (``weights.fingerprint``): which file ran."""
    from mzsr_tf.weights import fingerprint

    return functools.cache(lambda subsample: fingerprint(_weights_file(args, subsample)))


def make_mzsr(args: argparse.Namespace, steps: str = "0", official: str | None = None) -> Method:
    """MZSR(n): ``steps`` meta-test updates from ``--weights`` (θ_M), then SR; ``noadapt`` is n = 0.

    Updates as ``adapt.py`` takes them (the weights' learned rule with its guard if they carry learned rates,
    else Adam with ``ADAM_RATES``; ``--optimizer adam``: Adam either way); ``mzsrN_official``: the official SGD
    schedule of the released model for the kernel's subsampling (``AdaptConfig.official``).
    """
    from mzsr_tf.zero_shot import AdaptConfig, zero_shot_sr

    model_for, weights_sha1 = _weights(args), _weights_sha1(args)

    def config_for(scale: int, subsample: str) -> AdaptConfig:  # the official schedule: the model's rates, float32
        if official:
            return AdaptConfig.official(scale, subsample, steps=int(steps))
        rule = {"optimizer": "adam"} if args.optimizer == "adam" else {}  # Adam in place of a learned rule
        rule |= {"backtrack": True} if args.backtrack else {}
        model = model_for(subsample)
        return model.adapt_config(int(steps), precision=args.precision, noise_sigma=args.son_noise, **rule)

    def mzsr(lr, degradation, scale, *, output_shape):
        model, config = model_for(degradation.subsample), config_for(scale, degradation.subsample)
        return zero_shot_sr(model.params, lr, degradation, scale, config, output_shape, model.start_basis).sr

    def settings(subsample: str) -> dict:  # what runs for a kernel of this subsampling (its own weights)
        config = config_for(args.scale, subsample)
        adapts = {"optimizer": config.rule, "keep_best": config.keep_best, "precision": config.compute_precision,
                  "son_noise": config.noise_sigma, **({"backtrack": True} if config.backtrack else {})}  # fmt: skip
        start = {"conditioned_start": True} if model_for(subsample).start_basis is not None else {}
        weights = {"weights": str(args.weights or "shipped"), "weights_sha1": weights_sha1(subsample)}
        return {**weights, **start, **(adapts if config.steps else {})}

    mzsr.settings = settings
    return mzsr


ZSSR_FAST_ITERS = 300  # zssr_fast: stops at the first learning-rate check (iteration 299), a quick estimate


def make_zssr(args: argparse.Namespace, fast: str | None = None) -> Method:
    """ZSSR trained from scratch on each LR image with ``--zssr-preset``; ``zssr_fast`` stops at 300 iterations.

    ``--zssr-max-iters`` overrides the iteration cap of both. Each image's iterations, learning-rate drops
    and time go to stderr.
    """
    from mzsr_tf.zssr import PRESETS, train_zssr

    if args.zssr_preset not in PRESETS:
        raise InputError(f"unknown --zssr-preset {args.zssr_preset!r}: use one of {', '.join(PRESETS)}")
    if args.zssr_max_iters is not None and args.zssr_max_iters < 0:
        raise InputError(f"--zssr-max-iters must be >= 0, got {args.zssr_max_iters}")
    config = PRESETS[args.zssr_preset]
    max_iters = args.zssr_max_iters if args.zssr_max_iters is not None else ZSSR_FAST_ITERS if fast else None
    if max_iters is not None:
        config = replace(config, max_iters=max_iters)

    def zssr(lr, degradation, scale, *, output_shape):
        result = train_zssr(lr, degradation, scale, config, output_shape=output_shape)
        drops = [i for stage in result.log for i in stage.learning_rate_drops]
        print(
            f"  zssr {lr.shape[1]}x{lr.shape[0]} {degradation.name}: {result.iterations} iterations, "
            f"learning-rate drops at {drops}, {result.seconds:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        return result.sr

    zssr.settings = {"preset": args.zssr_preset, **({"max_iters": max_iters} if max_iters is not None else {})}
    return zssr


def _with_kernel(
    args: argparse.Namespace, inner: str, kernel_for, name: str, settings: dict, estimated: bool = False
) -> Method:
    """``<inner>`` run with ``kernel_for(lr, scale, true_kernel)`` in place of the true kernel (direct subsampling);
    each image's kernel PSNR against the true one (FKP's kernel error) is kept in ``method.kernel_psnrs``.
    ``estimated``: the kernel is the estimator's (``Degradation.estimated``: a conditioned start's rows for it)."""
    from mzsr_tf.kernel_estimation import kernel_psnr

    run = make_method(inner, args)

    def method(lr, degradation, scale, *, output_shape):
        kernel = kernel_for(lr, scale, degradation.kernel)
        method.kernel_psnrs.append(kernel_psnr(kernel, degradation.kernel))
        return run(lr, Degradation(kernel, "direct", name, estimated), scale, output_shape=output_shape)

    method.kernel_psnrs = []
    method.settings = {**method_settings(run), **settings}
    return method


def make_blind(args: argparse.Namespace, inner: str) -> Method:
    """``blind_<method>``: the kernel estimated from the LR photo (``kernel_estimation``), then ``<method>`` with it."""
    from mzsr_tf.kernel_estimation import blind_estimator

    estimate = blind_estimator("estimator", args.kernel_estimator)
    settings = {"estimator": str(args.kernel_estimator or "shipped")}

    def kernel_for(lr, scale, _true):
        return estimate(lr, scale).kernel

    return _with_kernel(args, inner, kernel_for, "estimated", settings, estimated=True)


def make_gaussian(args: argparse.Namespace, inner: str) -> Method:
    """``gaussian_<method>``: the Gaussian with the true kernel's covariance, placed as the estimate is
    (``kernel_estimation.kernel_from_covariance``): the best the estimator's Gaussian form can do, the true
    kernel's shape (DIV2KRK's kernel noise) left out."""
    from mzsr_tf.kernel_estimation import kernel_from_covariance
    from mzsr_tf.kernels import kernel_moments

    def kernel_for(lr, scale, true):
        return kernel_from_covariance(kernel_moments(true)[1], scale).numpy()

    return _with_kernel(args, inner, kernel_for, "gaussian", {})


_KERNELGAN_KERNELS: dict = {}


def kernelgan_kernel(lr, scale: int) -> np.ndarray:
    """KernelGAN's kernel for ``lr`` (``kernelgan``, minutes per photo), run once per photo and scale for every
    method and row that asks for it."""
    from mzsr_tf.kernel_estimation import blind_estimator

    key = (hashlib.sha1(np.ascontiguousarray(lr)).hexdigest(), scale)
    if key not in _KERNELGAN_KERNELS:
        estimate = blind_estimator("kernelgan")(lr, scale)
        print(f"  kernelgan {lr.shape[1]}x{lr.shape[0]}: {estimate.seconds:.0f} s", file=sys.stderr, flush=True)
        _KERNELGAN_KERNELS[key] = estimate.kernel
    return _KERNELGAN_KERNELS[key]


def make_kernelgan(args: argparse.Namespace, inner: str) -> Method:
    """``kernelgan_<method>``: the kernel estimated by KernelGAN (``kernelgan``, the per-image reference), then
    ``<method>`` with it."""
    from mzsr_tf.kernelgan import DEFAULT

    def kernel_for(lr, scale, _true):
        return kernelgan_kernel(lr, scale)

    return _with_kernel(args, inner, kernel_for, "kernelgan", {"kernelgan_iterations": DEFAULT.iterations})


def make_fixed(args: argparse.Namespace, variance: str, inner: str) -> Method:
    """``fixed<λ>_<method>``: one isotropic kernel for every photo (Σ = λ·I at ×2, block-centred; at ×4 two ×2
    steps of it), the blind baseline of guessing."""
    from mzsr_tf.kernels import blind_offset, compose_x4, gaussian_kernel

    lam = float(variance)
    k2 = gaussian_kernel(lam, lam, 0.0, 11, offset=blind_offset(2))
    x2, x4 = k2.numpy(), compose_x4(k2).numpy()
    settings = {"fixed_variance": lam}
    return _with_kernel(args, inner, lambda lr, scale, _: x4 if scale == 4 else x2, f"fixed{lam:g}", settings)


METHODS: dict[str, Callable[..., Method]] = {
    "bicubic": make_bicubic,
    "noadapt": make_mzsr,
    r"mzsr(?P<steps>\d+)(?P<official>_official)?": make_mzsr,
    r"zssr(?P<fast>_fast)?": make_zssr,
    r"blind_(?P<inner>.+)": make_blind,
    r"kernelgan_(?P<inner>.+)": make_kernelgan,
    r"gaussian_(?P<inner>.+)": make_gaussian,
    r"fixed(?P<variance>\d+(?:\.\d+)?)_(?P<inner>.+)": make_fixed,
}


def make_method(name: str, args: argparse.Namespace) -> Method:
    """Build the method registered under a key that fully matches ``name``."""
    for pattern, factory in METHODS.items():
        match = re.fullmatch(pattern, name)
        if match:
            return factory(args, **match.groupdict())
    raise InputError(f"unknown method {name!r}: use one of {', '.join(METHODS)}")


# === Evaluation ===


@dataclass
class Result:
    """One row of the table (and of the JSON ``results``)."""

    set: str
    kernel: str
    method: str
    scale: int
    psnr_y: float
    ssim_y: float
    seconds_per_image: float
    per_image: dict[str, float] = field(default_factory=dict)
    noise: float = 0.0  # σ of the LR's Gaussian noise, 0-255 units
    settings: dict = field(default_factory=dict)  # what ran: weights, optimizer, resolved precision / ZSSR preset
    kernel_psnr: float | None = None  # blind_/fixed methods: mean kernel PSNR against the true kernels (FKP)


def set_name(folder: Path) -> str:
    """``Set5/HR`` -> ``Set5``; any other folder -> its own name."""
    folder = folder.resolve()
    return folder.parent.name if folder.name == "HR" else folder.name


def load_hr(path: Path, scale: int) -> np.ndarray:
    """The HR image as uint8 RGB, cropped to a multiple of the scale (``modcrop``)."""
    return modcrop(to_uint8(read_image(path).rgb).numpy(), scale)


def make_lr(hr: np.ndarray, degradation: Degradation, scale: int, noise: float = 0.0, name: str = "") -> np.ndarray:
    """LR = uint8((HR ⊛ k)↓s + n) in float64, as the official test LR files were made (n = 0).

    ``noise``: σ of the Gaussian n in 0–255 units, drawn from a seed made of the image's ``name``
    (the same noise for every method and run).
    """
    lr = degrade(hr.astype(np.float64) / 255.0, degradation.kernel, scale, degradation.subsample).numpy()
    if noise:
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        lr = lr + rng.normal(0.0, noise / 255.0, lr.shape)
    return to_uint8(np.clip(lr, 0.0, 1.0)).numpy()


def evaluate(
    set_label: str,
    images: dict[str, np.ndarray],
    kernel: str,
    method_name: str,
    method: Method,
    scale: int,
    noise: float = 0.0,
) -> Result:
    """Mean PSNR/SSIM over one set of HR images for one kernel and one method (LR noise σ ``noise``/255).

    ``kernel`` 'div2krk': each image gets its own random kernel (``blind_set.blind_degradation``)."""
    from benchmarks.blind_set import NAME as BLIND
    from benchmarks.blind_set import blind_degradation

    degradation = None if kernel == BLIND else resolve_degradation(kernel)
    psnrs, ssims, seconds = {}, [], 0.0
    for name, hr in images.items():
        if kernel == BLIND:
            degradation = blind_degradation(name, scale)
        lr = make_lr(hr, degradation, scale, noise, name).astype(np.float32) / 255.0
        start = time.perf_counter()
        sr = np.asarray(method(lr, degradation, scale, output_shape=hr.shape[:2]))
        seconds += time.perf_counter() - start
        psnrs[name] = psnr_y(sr, hr, border=scale)
        ssims.append(ssim_y(sr, hr, border=scale))
    n = len(images)
    mean_psnr = float(np.mean(list(psnrs.values())))
    settings = method_settings(method, degradation.subsample)
    ssim = float(np.mean(ssims))
    kernel_psnrs = getattr(method, "kernel_psnrs", None)
    kernel_psnr = float(np.mean(kernel_psnrs)) if kernel_psnrs else None
    if kernel_psnrs is not None:
        kernel_psnrs.clear()
    return Result(set_label, kernel, method_name, scale, mean_psnr, ssim, seconds / n, psnrs, noise, settings,
                  kernel_psnr)  # fmt: skip


# === Output ===

HEADER = (
    f"{'set':<10} {'kernel':<16} {'method':<18} {'PSNR':>7} {'SSIM':>7} {'s/image':>9} {'paper':>15}"
    f" {'kernel PSNR':>11}"
)


def kernel_label(kernel: str, noise: float = 0.0) -> str:
    """``g_d_2.0`` or, with LR noise, ``g_d_2.0 σ=2.55``."""
    return f"{kernel} σ={noise:g}" if noise else kernel


def paper_figure(set_label: str, kernel: str, method: str, scale: int = 2) -> tuple[float, float] | None:
    """The paper's (PSNR, SSIM) for this cell (x2: Table 2; x4: g^d_2.0 only; ``zssr_fast`` has none), or None.

    Blind rows (div2krk) give ``blind_zssr`` KernelGAN + ZSSR's published DIV2KRK figure (other photos)."""
    if kernel == "div2krk":
        return BLIND_ANCHOR.get(scale) if method == "blind_zssr" else None
    return PAPER.get((set_label, kernel, scale), {}).get(method)


def format_row(r: Result) -> str:
    paper = None if r.noise else paper_figure(r.set, r.kernel, r.method, r.scale)
    paper_text = f"{paper[0]:.2f} / {paper[1]:.4f}" if paper else "-"
    kernel_text = f"{r.kernel_psnr:.2f}" if r.kernel_psnr is not None else "-"
    return (
        f"{r.set:<10} {kernel_label(r.kernel, r.noise):<16} {r.method:<18} {r.psnr_y:>7.2f} {r.ssim_y:>7.4f}"
        f" {r.seconds_per_image:>9.3f} {paper_text:>15} {kernel_text:>11}"
    )


TABLE_METHODS = {
    "bicubic": "Bicubic",
    "noadapt": "no adapt.",
    "mzsr1": "MZSR(1)",
    "mzsr10": "MZSR(10)",
    "mzsr1_official": "MZSR(1), official SGD",
    "mzsr10_official": "MZSR(10), official SGD",
    "zssr": "ZSSR",
    "blind_mzsr1": "blind MZSR(1)",
    "blind_mzsr10": "blind MZSR(10)",
    "blind_zssr": "blind ZSSR",
    "zssr_fast": "ZSSR (300 it.)",
    "blind_zssr_fast": "blind ZSSR (300 it.)",
}
PAPER_LABELS = {"blind_zssr": "KernelGAN + ZSSR, DIV2KRK (published)"}


def method_label(method: str) -> str:
    """A method's column title: ``TABLE_METHODS``, ``fixed2_mzsr10`` as 'MZSR(10), fixed Σ=2·I', ``kernelgan_mzsr10`` as
    'KernelGAN + MZSR(10)'."""
    fixed = re.fullmatch(r"fixed(\d+(?:\.\d+)?)_(.+)", method)
    if fixed:
        return f"{method_label(fixed[2])}, fixed Σ={fixed[1]}·I"
    if method.startswith("kernelgan_"):
        return f"KernelGAN + {method_label(method.removeprefix('kernelgan_'))}"
    if method.startswith("gaussian_"):
        return f"{method_label(method.removeprefix('gaussian_'))}, true Σ as a Gaussian"
    return TABLE_METHODS.get(method, method)


def markdown_table(results: list[dict]) -> str:
    """Our PSNR / SSIM per (set, kernel) and method beside the paper's Table 2 figures, as Markdown.

    ``results`` are JSON rows of one or more runs; a later row for the same cell replaces an earlier one. A row with a
    ``run`` (``--table --by-file``: its file's name) is its own table row, labelled with it.
    """
    cells = {
        (r["set"], kernel_label(r["kernel"], r.get("noise", 0.0)), r.get("scale", 2), r.get("run", ""), r["method"]): r
        for r in results
    }
    rows = list(dict.fromkeys(c[:4] for c in cells))
    ours = [m for m in TABLE_METHODS if any(m == c[4] for c in cells)]
    ours += sorted({c[4] for c in cells} - set(ours))
    others = [m for m in PAPER_METHODS if m != "bicubic"] + ["blind_zssr"]  # our Bicubic stands beside the paper's
    papers = [m for m in others if any(paper_figure(*row[:2], m, row[2]) for row in rows)]

    def cell(value, kernel_psnr=None):
        if value is None:
            return ""
        psnr, ssim = value
        text = f"{psnr:.2f} / {ssim:.4f}" if psnr is not None else f"inf / {ssim:.4f}"
        return text + (f" (kernel {kernel_psnr:.1f})" if kernel_psnr is not None else "")

    head = ["set, kernel"] + [f"ours: {method_label(m)}" for m in ours]
    head += [f"paper: {PAPER_LABELS.get(m, TABLE_METHODS[m])}" for m in papers]
    body = []
    for s, k, scale, run in rows:
        values = [
            cell((r["psnr_y"], r["ssim_y"]), r.get("kernel_psnr")) if (r := cells.get((s, k, scale, run, m))) else ""
            for m in ours
        ]
        values += [cell(paper_figure(s, k, m, scale)) for m in papers]
        label = (f"{run}: " if run else "") + (f"{s}, {k}" if scale == 2 else f"{s}, {k}, x{scale}")
        body.append([label, *values])
    return format_table(head, body)


def _json_number(value: float) -> float | None:
    """JSON has no Infinity: an exact reconstruction's PSNR is written as null."""
    return value if math.isfinite(value) else None


def write_json(path: Path, results: list[Result], overwrite: bool) -> None:
    rows = []
    for r in results:
        row = asdict(r)
        row["psnr_y"] = _json_number(r.psnr_y)
        row["per_image"] = {k: _json_number(v) for k, v in r.per_image.items()}
        rows.append(row)
    save_json(path, {"results": rows}, overwrite=overwrite)


# === CLI ===


def build_parser() -> cli.ArgumentParser:
    p = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hr", nargs="+", type=Path, help="folders of HR images (.png/.jpg/.bmp)")
    p.add_argument(
        "--table", nargs="+", type=Path, metavar="JSON", help="print one Markdown table of these runs beside the paper"
    )
    p.add_argument("--by-file", action="store_true", help="with --table: a row per file, labelled with its name")
    p.add_argument(
        "--kernels",
        default=DEFAULT_KERNELS,
        help="comma list of named kernels, .mat/.npy files, or div2krk (a random kernel per image, blind_set.py)",
    )
    p.add_argument("--methods", default="bicubic", help=f"comma list of methods ({', '.join(METHODS)})")
    p.add_argument("--scale", type=int, default=2, help="SR factor (integer: 'direct' subsampling)")
    p.add_argument("--json", type=Path, help="write the results here (atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.add_argument("--limit", type=int, help="only the first N images of each set (quick runs)")
    p.add_argument("--noise", default="0", help="comma list of LR noise levels, Gaussian σ in 0-255 units (default 0)")
    p.add_argument("--weights", type=Path, help="network weights for noadapt/mzsrN (default: shipped meta-weights)")
    p.add_argument("--kernel-estimator", type=Path, help="blind_ methods: estimator weights (default: shipped)")
    add_unconditioned(p)
    p.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="mzsrN: the updates' convolutions (mzsrN_official: float32)",
    )
    p.add_argument(
        "--optimizer",
        default="default",
        choices=("default", "adam"),
        help="mzsrN: the weights' own rule (default: learned if they carry learned rates, else Adam) or Adam",
    )
    p.add_argument(
        "--backtrack",
        action="store_true",
        help="mzsrN: undo an update that raised the loss on the photo's pair (AdaptConfig.backtrack; SGD rules)",
    )
    p.add_argument(
        "--son-noise",
        type=cli.son_noise,
        default="auto",
        help="mzsrN: noise on the LR son, 'auto' (the photo's own, the default) or sigma in 0-255 units",
    )
    p.add_argument("--zssr-preset", default="x2_ideal", help="ZSSR config for zssr/zssr_fast (mzsr_tf.zssr.PRESETS)")
    p.add_argument("--zssr-max-iters", type=int, help="ZSSR iteration cap per scale stage (default: the preset's)")
    return p


def _read_results(path: Path) -> list[dict]:
    try:
        rows = json.loads(path.read_text())["results"]
        if not all({"set", "kernel", "method", "psnr_y", "ssim_y"} <= set(r) for r in rows):
            raise KeyError("a result row lacks set/kernel/method/psnr_y/ssim_y")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise InputError(f"{path}: not a paper_table JSON ({type(e).__name__})") from None
    return rows


def _split(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _load_sets(folders: list[Path], scale: int, limit: int | None) -> dict[str, dict[str, np.ndarray]]:
    sets = {}
    for folder in folders:
        if not folder.is_dir():
            raise InputError(f"{folder}: HR folder does not exist")
        paths = list_images(folder)[:limit]
        if not paths:
            raise InputError(f"{folder}: no .png/.jpg/.bmp images")
        sets[set_name(folder)] = {p.name: load_hr(p, scale) for p in paths}
    return sets


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.table and args.hr:
        raise InputError("--table tabulates saved runs; it does not go with --hr")
    if args.by_file and not args.table:
        raise InputError("--by-file labels the rows of --table")
    if args.table:
        runs = [(path.stem if args.by_file else "", row) for path in args.table for row in _read_results(path)]
        print(markdown_table([{**row, "run": run} if run else row for run, row in runs]))
        return 0
    if not args.hr:
        raise InputError("give --hr folders to evaluate, or --table JSON files to tabulate")
    if args.scale < 1 or (args.limit is not None and args.limit < 1):
        raise InputError("--scale and --limit must be positive")
    if args.json is not None:
        check_destination(args.json, args.overwrite)
    try:
        noises = [float(v) for v in _split(args.noise)]
    except ValueError:
        raise InputError(f"--noise: expected comma-separated numbers, got {args.noise!r}") from None
    if not noises or any(not 0 <= v < math.inf for v in noises):
        raise InputError(f"--noise levels must be >= 0 and finite, got {args.noise!r}")
    kernels = _split(args.kernels)
    for kernel in kernels:
        if kernel != "div2krk":
            resolve_degradation(kernel)  # fail before any work on a bad name or file
        elif args.scale not in (2, 4):
            raise InputError(f"--kernels div2krk has x2 and x4, not x{args.scale}")
    methods = {name: make_method(name, args) for name in _split(args.methods)}
    sets = _load_sets(args.hr, args.scale, args.limit)
    print(HEADER, flush=True)
    results = []
    for set_label, images in sets.items():
        for kernel, noise in ((k, n) for k in kernels for n in noises):
            for name, method in methods.items():
                results.append(evaluate(set_label, images, kernel, name, method, args.scale, noise))
                print(format_row(results[-1]), flush=True)
                if args.json is not None:  # after every row: a long run that stops keeps what it measured
                    write_json(args.json, results, overwrite=args.overwrite or len(results) > 1)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
