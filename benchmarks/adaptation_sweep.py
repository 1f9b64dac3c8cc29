"""Choosing the meta-test optimizer on held-out photos: PSNR-Y after N adaptation steps per optimizer setting.

The images are scikit-image's colour photos (astronaut, chelsea, coffee, rocket, immunohistochemistry):
neither training nor test images, so the choice does not peek at Set5/BSD100. Each is ``modcrop``-ed,
degraded as in ``paper_table`` (uint8 LR) under each kernel, adapted from ``--weights`` (default: the shipped
bicubic weights when every kernel is bicubic-subsampled, else the direct ones) with each
setting and super-resolved; the table is the mean PSNR-Y (border = scale) per kernel and setting.

A setting is ``optimizer:rates``, rates a comma list (step i uses rates[min(i, len - 1)]) or
``default`` (``mzsr_tf.zero_shot.DEFAULT_RATES``: SGD's is the official Direct×2 schedule), or ``learned``
(SGD with the per-tensor rates meta-learned with ``--weights``, ``AdaptConfig.learned``; ``learned*F``: those rates
times F, an ablation of their size), optionally followed
by ``/precision=bfloat16``, ``/crop=N`` (each update on one random N² window of the pair), ``/seed=S``,
``/eps=E`` (Adam's ε), ``/son=auto`` or ``/son=σ`` (Gaussian noise on the LR son, 0–255 units; ``auto``:
the image's own, ``mzsr_tf.noise``), ``/bp=N`` (N back-projection iterations on the SR,
``AdaptConfig.back_projection_iters``), ``/guard=0|1`` (``AdaptConfig.keep_best``) and ``/backtrack=0|1``
(``AdaptConfig.backtrack``, SGD; ``learned`` takes only these two, ``/son`` and ``/bp``)::

    python -m benchmarks.adaptation_sweep --settings "sgd:default;adam:1e-4;adam:1.5e-4;adam:2e-4" \\
        --json benchmarks/results/adaptation_sweep.json
    python -m benchmarks.adaptation_sweep --settings "adam:default;adam:default/precision=bfloat16/crop=128"

``--steps 1,3,10`` runs every setting at each step count (a fresh adaptation each), ``--noise`` adds
Gaussian noise (σ in 0–255 units) to the LR as ``paper_table --noise``. Rows also hold the median
adaptation seconds per image (the first call of a setting traces its graph).

A kernel ``K:estimated`` makes the LR under K but adapts with the kernel estimated from the LR (blind SR,
``kernel_estimation``; direct subsampling), ``K:estimated*F`` with the estimate's covariance times F (an
ablation of its size), ``K:kernelgan`` with KernelGAN's (``kernelgan``, minutes per photo). ``--photos more``
adds six scikit-image photos (grey ones as RGB) to the five; ``--kernel-draws N`` draws N ``div2krk`` kernels per
photo (a held-out blind set of N times as many cases), ``--kernel-estimator`` takes other estimator weights.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

from benchmarks.blind_set import NAME as BLIND
from benchmarks.blind_set import blind_degradation, kernel_draws
from benchmarks.common import add_unconditioned, format_table, save_json
from benchmarks.paper_table import kernelgan_kernel, make_lr
from mzsr_tf import cli
from mzsr_tf.errors import InputError
from mzsr_tf.io import check_destination
from mzsr_tf.kernels import Degradation, resolve_degradation
from mzsr_tf.metrics import modcrop, psnr_y
from mzsr_tf.model import PARAM_SPECS
from mzsr_tf.zero_shot import AdaptConfig, zero_shot_sr

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry")
MORE_PHOTOS = (*PHOTOS, "stereo_motorcycle", "camera", "moon", "clock", "coins", "hubble_deep_field")
ESTIMATED = re.compile(r"estimated(?:\*(?P<factor>\d+(?:\.\d+)?))?|(?P<kernelgan>kernelgan)")
PAPER_KERNELS = "g_d_0.2,g_d_2.0,g_d_ani,g_b_1.3"


def son_sigma(text: str, setting: str):
    """``/son=S``: the son's noise, 'auto' (estimated from the image) or σ in 0-255 units (AdaptConfig.noise_sigma)."""
    if text == "auto":
        return "auto"
    try:
        return float(text) / 255.0
    except ValueError:
        raise InputError(f"setting {setting!r}: /son= takes 'auto' or a σ in 0-255 units") from None


def back_projection_iters(text: str, setting: str) -> int:
    """``/bp=N``: N back-projection iterations on the SR, a whole number >= 0 (AdaptConfig.back_projection_iters)."""
    if not text.isdigit():
        raise InputError(f"setting {setting!r}: /bp= takes a whole number of iterations >= 0")
    return int(text)


def parse_setting(text: str, steps: int, inner_lr=None) -> AdaptConfig:
    """``'adam:1.5e-4'`` / ``'sgd:default'`` / ``'adam:default/precision=bfloat16/crop=128'`` / ``'learned'`` → an
    AdaptConfig (``learned`` takes ``inner_lr``, the weights' meta-learned rates)."""
    head, *options = text.split("/")
    optimizer, _, rates = head.partition(":")
    switches = {"guard": "keep_best", "backtrack": "backtrack"}  # /NAME=0|1, anywhere among the options
    flags = {}
    for name, field_name in switches.items():
        given = [o for o in options if o in (f"{name}=0", f"{name}=1")]
        options = [o for o in options if o not in given]
        flags |= {field_name: given[-1].endswith("=1")} if given else {}
    optimizer, _, factor = optimizer.partition("*")
    if optimizer == "learned":
        if inner_lr is None:
            raise InputError(f"setting {text!r}: the weights carry no learned rates")
        son = [o.removeprefix("son=") for o in options if o.startswith("son=")]
        bp = [o.removeprefix("bp=") for o in options if o.startswith("bp=")]
        if rates or len(son) + len(bp) != len(options):
            raise InputError(
                f"setting {text!r}: 'learned' takes no rates or options but /guard=0|1, /backtrack=0|1, /son=S, /bp=N"
            )
        try:
            factor = float(factor or 1.0)
        except ValueError:
            raise InputError(f"setting {text!r}: learned*F takes a number F") from None
        scaled = np.array(inner_lr, np.float32)
        scaled[:, : len(PARAM_SPECS)] *= factor  # the rates, not a kernel-conditioned table's slopes
        flags |= {"noise_sigma": son_sigma(son[-1], text)} if son else {}
        flags |= {"back_projection_iters": back_projection_iters(bp[-1], text)} if bp else {}
        return AdaptConfig.learned(scaled, steps=steps, **flags)
    if factor:
        raise InputError(f"setting {text!r}: only 'learned' takes a factor (learned*F)")
    try:
        learning_rates = None if rates in ("", "default") else tuple(float(r) for r in rates.split(","))
        extra = {**dict(option.split("=", 1) for option in options), **flags}
        if set(extra) - {"precision", "crop", "seed", "eps", "son", "bp", "keep_best", "backtrack"}:
            raise ValueError
        if "bp" in extra:
            extra["back_projection_iters"] = back_projection_iters(extra.pop("bp"), text)
        if "son" in extra:
            extra["noise_sigma"] = son_sigma(extra.pop("son"), text)
        if "seed" in extra:
            extra["seed"] = int(extra["seed"])
        if "eps" in extra:
            extra["adam_epsilon"] = float(extra.pop("eps"))
        crop = int(extra.pop("crop")) if "crop" in extra else None
        if crop is not None and crop < 1:
            raise ValueError
        config = AdaptConfig(steps=steps, optimizer=optimizer, learning_rates=learning_rates, **extra)
        return config.cropped(crop) if crop else config
    except ValueError:
        raise InputError(
            f"bad setting {text!r}: use optimizer:rates[/precision=P][/crop=N][/seed=S][/eps=E][/son=auto|σ][/bp=N]"
            "[/guard=0|1][/backtrack=0|1], "
            "e.g. adam:1.5e-4"
        ) from None


def photo_names(text: str) -> tuple[str, ...]:
    """``--photos``: 'more' (``MORE_PHOTOS``), a comma list of scikit-image photos, or '' (``PHOTOS``)."""
    return MORE_PHOTOS if text == "more" else tuple(filter(None, text.split(","))) or PHOTOS


def photos(scale: int, names=PHOTOS) -> dict[str, np.ndarray]:
    """scikit-image's photos by name, RGB uint8 (a stereo pair's left view, grey as three channels), modcropped."""
    import skimage.data

    if unknown := [n for n in names if not callable(getattr(skimage.data, n, None))]:
        raise InputError(f"--photos: not a scikit-image photo: {', '.join(unknown)}")

    def rgb(image):
        image = image[0] if isinstance(image, tuple) else image
        return np.repeat(image[..., None], 3, -1) if image.ndim == 2 else image[..., :3]

    return {name: modcrop(rgb(getattr(skimage.data, name)()), scale) for name in names}


def parse_kernel(text: str) -> tuple[str, float | str | None]:
    """``'K'`` → (K, None); ``'K:estimated'`` / ``'K:estimated*F'`` → (K, F): adapt with the estimate, Σ × F;
    ``'K:kernelgan'`` → (K, 'kernelgan'): adapt with KernelGAN's kernel."""
    base, _, blind = text.partition(":")
    match = ESTIMATED.fullmatch(blind)
    if blind and match is None:
        raise InputError(f"bad kernel {text!r}: use K, K:estimated, K:estimated*F or K:kernelgan")
    if base != BLIND:
        degradation = resolve_degradation(base)
        if blind and degradation.subsample != "direct":
            raise InputError(f"{text!r}: blind SR estimates kernels for direct subsampling")
    if not blind:
        return base, None
    return base, "kernelgan" if match["kernelgan"] else float(match["factor"] or 1.0)


def shipped_subsample(kernels: list[str]) -> str:
    """The subsampling whose shipped weights a sweep without ``--weights`` adapts with (each kernel checked by
    :func:`parse_kernel`): one set of weights serves the whole sweep, so the bicubic weights only when every kernel
    is bicubic-subsampled, else the direct ones (the paper's four kernels, g^b_1.3 among them, as before)."""
    bases = [parse_kernel(k)[0] for k in kernels]
    found = {"direct" if base == BLIND else resolve_degradation(base).subsample for base in bases}
    return "bicubic" if found == {"bicubic"} else "direct"


def _estimated(lr, scale: int, factor: float | str, estimate) -> Degradation:
    """The degradation to adapt under: KernelGAN's kernel, or ``estimate``'s covariance × ``factor``."""
    from mzsr_tf.kernel_estimation import kernel_from_covariance

    if factor == "kernelgan":
        return Degradation(kernelgan_kernel(lr, scale), "direct", "kernelgan")
    covariance = estimate(lr, scale).covariance * factor
    return Degradation(kernel_from_covariance(covariance, scale).numpy(), "direct", "estimated", estimated=True)


def _cases(images, blind: bool, draws: int) -> dict:
    """{key: (photo name, kernel seed)}: a ``div2krk`` kernel is drawn ``draws`` times per photo
    (``blind_set.kernel_draws``), any other kernel once."""
    return {key: (n, seed) for n in images for key, seed in kernel_draws(n, draws if blind else 1)}


def sweep(params, images, kernels, settings, scale: int, noise: float = 0.0, start_basis=None, draws: int = 1,
          estimator=None):  # fmt: skip
    """Rows of mean PSNR-Y per (kernel, setting), with each image's figure; kernel ``div2krk``: each image its own
    random DIV2KRK-style kernel (``blind_set``, seeded by the image's name; ``draws`` kernels per image);
    ``K:estimated[*F]`` and ``K:kernelgan`` (:func:`parse_kernel`) adapt with the kernel estimated from each LR
    (``estimator``: its weights, default the shipped ones). ``start_basis``: the weights' kernel-conditioned start
    (``zero_shot.zero_shot_sr``)."""
    from mzsr_tf.kernel_estimation import blind_estimator

    rows = []
    for kernel in kernels:
        base, factor = parse_kernel(kernel)
        cases = _cases(images, base == BLIND, draws)
        degradations = {
            key: blind_degradation(n, scale, seed) if base == BLIND else resolve_degradation(base)
            for key, (n, seed) in cases.items()
        }
        lrs = {
            key: make_lr(images[n], degradations[key], scale, noise, key).astype(np.float32) / 255.0
            for key, (n, _) in cases.items()
        }
        if factor is not None:
            estimate = None if factor == "kernelgan" else blind_estimator(params=estimator)
            degradations = {key: _estimated(lrs[key], scale, factor, estimate) for key in cases}
        for label, config in settings:
            per_image, seconds = {}, []
            for key, (n, _) in cases.items():
                hr = images[n]
                result = zero_shot_sr(params, lrs[key], degradations[key], scale, config, hr.shape[:2], start_basis)
                per_image[key] = psnr_y(result.sr, hr, scale)
                seconds.append(result.seconds_adapt)
            mean = float(np.mean(list(per_image.values())))
            rows.append(
                {"kernel": kernel, "setting": label, "steps": config.steps, "psnr_y": mean, "per_image": per_image,
                 "seconds_adapt_median": float(np.median(seconds)), "noise": noise}
            )  # fmt: skip
            print(f"{kernel:9s} {label:22s} {mean:6.2f}", file=sys.stderr, flush=True)
    return rows


def table(rows) -> str:
    """Markdown: one row per setting (and step count, and LR noise), one column per kernel, plus the mean over
    kernels (blank where a setting lacks a kernel)."""
    kernels = list(dict.fromkeys(r["kernel"] for r in rows))
    several = len({r["steps"] for r in rows}) > 1
    noisy = len({r.get("noise", 0.0) for r in rows}) > 1

    def label(r):
        text = f"{r['setting']} ({r['steps']})" if several else r["setting"]
        return f"σ={r.get('noise', 0.0):g}: {text}" if noisy else text

    settings = list(dict.fromkeys(label(r) for r in rows))
    cell = {(r["kernel"], label(r)): r["psnr_y"] for r in rows}
    body = []
    for s in settings:
        values = [cell.get((k, s)) for k in kernels]
        mean = f"{np.mean(values):.2f}" if None not in values else ""
        body.append([s, *("" if v is None else f"{v:.2f}" for v in values), mean])
    return format_table(["setting", *kernels, "mean"], body)


def saved_rows(paths) -> list[dict]:
    """The rows of ``--json`` files. A file of several runs (``{"runs": {name: run}}``), and several files of
    different weights or of the same settings, label each row with its run (the checkpoint's or the file's name)."""
    runs = []
    for path in paths:
        saved = json.loads(Path(path).read_text())
        if "runs" in saved:
            runs += [(Path(run["weights"]).name, run) for run in saved["runs"].values()]
        else:
            runs.append((Path(path).stem.removeprefix("adaptation_sweep_"), saved))
    keys = [(r["kernel"], r["setting"], r["steps"], r.get("noise", 0.0)) for _, run in runs for r in run["rows"]]
    several = len({str(run.get("weights")) for _, run in runs}) > 1 or len(set(keys)) < len(keys)
    return [{**r, "setting": f"{name}: {r['setting']}"} if several else r for name, run in runs for r in run["rows"]]


def main(argv=None):
    from mzsr_tf.weights import default_weights, fingerprint, load_inner_lr, load_params, load_start_basis

    p = cli.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--settings", default="sgd:default;adam:default", help="';'-separated optimizer:rates")
    p.add_argument("--steps", default="10", help="comma list of step counts (a fresh adaptation for each)")
    p.add_argument("--noise", type=float, default=0.0, help="Gaussian σ of the LR noise, 0-255 units")
    p.add_argument("--kernels", default=PAPER_KERNELS)
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--weights", type=Path, help="default: shipped, bicubic for g^b kernels alone, else direct")
    add_unconditioned(p)
    p.add_argument("--photos", default="", help="comma list of scikit-image photos, or 'more' (default: the five)")
    p.add_argument("--limit", type=int, help="only the first N photos")
    p.add_argument(
        "--kernel-draws", type=cli.bounded_int(1), default=1, help="div2krk: this many kernels per photo (default 1)"
    )
    p.add_argument("--kernel-estimator", type=Path, help="K:estimated: estimator weights (default: shipped)")
    p.add_argument("--json", type=Path)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--table", nargs="+", type=Path, metavar="JSON", help="print the Markdown of saved --json runs")
    args = p.parse_args(argv)
    if args.table:
        print(table(saved_rows(args.table)))
        return 0
    if args.json is not None:
        check_destination(args.json, args.overwrite)  # before the slow part
    try:
        steps = [int(v) for v in args.steps.split(",")]
    except ValueError:
        raise InputError(f"--steps: expected comma-separated integers, got {args.steps!r}") from None
    if any(n < 0 for n in steps) or not 0 <= args.noise < float("inf"):
        raise InputError("--steps and --noise must be >= 0")
    kernels = args.kernels.split(",")
    weights = args.weights or default_weights(args.scale, shipped_subsample(kernels))
    inner_lr = load_inner_lr(weights)
    settings = [(s, parse_setting(s, n, inner_lr)) for n in steps for s in args.settings.split(";")]
    names = photo_names(args.photos)
    images = photos(args.scale, names[: args.limit])  # before the weights: a bad name fails fast
    params = load_params(weights)
    basis = None if args.unconditioned else load_start_basis(weights)
    rows = sweep(params, images, kernels, settings, args.scale, args.noise, basis, args.kernel_draws,
                 args.kernel_estimator)  # fmt: skip
    print(f"{args.steps} steps, mean PSNR-Y (dB) over {', '.join(images)}\n" + table(rows))
    if args.json:
        results = {"weights": str(args.weights or "shipped"), "weights_sha1": fingerprint(weights), "steps": steps}
        results |= {"noise": args.noise, "rows": rows}
        results |= {"kernel_draws": args.kernel_draws} if args.kernel_draws > 1 else {}
        results |= {"kernel_estimator": str(args.kernel_estimator)} if args.kernel_estimator else {}
        results |= {"conditioned_start": True} if basis is not None else {}
        save_json(args.json, results, overwrite=args.overwrite)


if __name__ == "__main__":
    sys.exit(cli.run(main))
