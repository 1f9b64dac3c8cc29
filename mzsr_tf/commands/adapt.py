"""Zero-shot super-resolution of LR photos: MZSR meta-test (paper Algorithm 2) or ZSSR (Shocher et al. 2018).

python adapt.py photo.png --out photo_x2.png          (blind: the kernel is estimated from the photo)
python adapt.py photo.png --kernel kernelgan --out photo_x2.png   (blind, KernelGAN: minutes per photo)
python adapt.py photo.png --kernel g_d_2.0 --out photo_x2.png
python adapt.py lr_folder/ --kernel kernel.mat --gt hr_folder/ --out results/ --json results.json
python adapt.py photo.png --kernel kernel.mat --method zssr --preset x2_given_kernel
python adapt.py --demo
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from mzsr_tf import cli
from mzsr_tf.io import MAX_IMAGE_PIXELS

DEMO_KERNEL = "g_d_2.0"
MAX_STEPS = 10_000  # the paper's MZSR takes 1-10 updates; ZSSR's whole run is a few thousand


def build_parser():
    p = cli.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("inputs", nargs="*", type=Path, help="LR images and/or folders of them")
    p.add_argument(
        "--kernel",
        help="named kernel (g_d_0.2, g_d_2.0, g_d_ani, g_b_1.3, bicubic), .mat/.npy file, 'estimate' "
        "(default: estimate it from each photo, blind SR; written beside the output as _kernel.npy/.png) or "
        "'kernelgan' (blind SR with KernelGAN: the slow per-photo reference, minutes per photo)",
    )
    p.add_argument(
        "--kernel-estimator", type=Path, help="blind SR: estimator weights (.npz or train.py --stage kernel run/ckpt)"
    )
    p.add_argument("--subsample", choices=("direct", "bicubic"), help="override the kernel's subsampling")
    p.add_argument("--scale", type=cli.scale_type, default=2)
    p.add_argument("--method", choices=("mzsr", "zssr"), default="mzsr", help="MZSR adaptation or ZSSR training")
    p.add_argument(
        "--steps",
        type=cli.bounded_int(0, MAX_STEPS),
        help=f"mzsr: adaptation updates (default 10, at most {MAX_STEPS})",
    )
    p.add_argument(
        "--weights", type=Path, help="mzsr: meta-weights, .weights.h5, .npz or TF1 checkpoint (default: shipped)"
    )
    p.add_argument(
        "--preset", help="zssr: x2_ideal (default), x2_gradual_ideal, x2_given_kernel or x2_real (official configs)"
    )
    p.add_argument("--init", type=Path, help="zssr: start weights (default: train from scratch)")
    p.add_argument("--max-iters", type=cli.positive_int, help="zssr: iteration cap per scale stage (default 3000)")
    p.add_argument("--out", type=Path, help="output file (one input) or folder (default: ./results)")
    p.add_argument(
        "--gt", type=Path, help="HR image or folder: report PSNR/SSIM (mzsr: before/after adaptation; zssr: vs bicubic)"
    )
    p.add_argument("--json", type=Path, help="write a per-image report here")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument(
        "--optimizer",
        choices=("adam", "sgd", "learned"),
        help="mzsr: optimizer (default: learned if the weights carry meta-learned per-layer rates, else adam; "
        "sgd with the default --lr and precision: the official test.py, float32)",
    )
    p.add_argument(
        "--lr",
        type=cli.float_list,
        help="mzsr: learning rates per step, last repeats (default: adam 1e-4,1.5e-4,2e-4,2e-4,2e-4,1.5e-4; "
        "sgd the official test.py's for the model: x2 direct 2e-2,1e-2,1e-2,1e-2,5e-3, x2 bicubic "
        "1e-2,1e-2,1e-2,1e-3, x4 direct 1e-2,5e-3,5e-3,5e-3,5e-3,1e-3)",
    )
    p.add_argument(
        "--precision",
        choices=("auto", "float32", "bfloat16"),
        help="mzsr: the updates' convolutions (default auto: bfloat16 where the hardware runs it natively; "
        "float32 with --optimizer sgd)",
    )
    p.add_argument(
        "--crop",
        type=cli.positive_int,
        metavar="N",
        help="mzsr: each update on one random NxN window of images above N² pixels (faster, slightly lower "
        "PSNR; default: whole images up to 512², 384² windows above)",
    )
    p.add_argument(
        "--son-noise",
        type=cli.son_noise,
        help="mzsr: Gaussian noise on the LR son, 'auto' (default: the photo's own, estimated) or sigma in 0-255",
    )
    p.add_argument(
        "--keep-best",
        action=argparse.BooleanOptionalAction,
        help="mzsr: return θ_M or the update with the lowest loss on the photo's own pair, not the last "
        "(default: on with learned rates, off otherwise)",
    )
    p.add_argument(
        "--backtrack",
        action=argparse.BooleanOptionalAction,
        help="mzsr, SGD rules: undo an update that raised the loss on the photo's own pair and go on at half the "
        "rates (default: off)",
    )
    p.add_argument("--self-ensemble", action="store_true", help="mzsr: 8-way geometric self-ensemble")
    p.add_argument("--back-projection", type=cli.positive_int, metavar="N", help="mzsr: back-projection iterations")
    p.add_argument("--tile", type=int, default=1024, help="SR tile size in HR pixels (bounded memory)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--max-image-pixels",
        type=cli.bounded_int(1),
        default=MAX_IMAGE_PIXELS,
        help=f"refuse inputs of more pixels, from their header (default {MAX_IMAGE_PIXELS}; GT: times scale²)",
    )
    p.add_argument("--demo", action="store_true", help="degrade a scikit-image picture, adapt, report PSNR")
    return p


def run_demo(args, rows):
    """Degrade scikit-image's astronaut with g_d_2.0, super-resolve it, write the last SR image, print PSNRs.

    ``rows``: (label, file tag, ``fn(lr, degradation, hr_shape) -> (sr, seconds)``) per method.
    """
    import numpy as np
    import skimage.data

    from mzsr_tf.degradation import degrade
    from mzsr_tf.imresize import upscale
    from mzsr_tf.io import write_image
    from mzsr_tf.kernels import resolve_degradation
    from mzsr_tf.metrics import psnr_y

    hr = skimage.data.astronaut().astype(np.float64) / 255.0
    degradation = resolve_degradation(args.kernel or DEMO_KERNEL, args.subsample)
    lr = np.round(degrade(hr, degradation.kernel, args.scale, degradation.subsample).numpy() * 255) / 255
    lr = lr.astype(np.float32)
    out = args.out or Path("mzsr_demo")
    out.mkdir(parents=True, exist_ok=True)
    results = [("bicubic", upscale(lr, args.scale, hr.shape[:2]).numpy(), 0.0)]
    results += [(label, *fn(lr, degradation, hr.shape[:2])) for label, _, fn in rows]
    name = out / f"astronaut_x{args.scale}_{rows[-1][1]}.png"
    write_image(out / "astronaut_lr.png", lr, overwrite=True)
    write_image(name, results[-1][1], overwrite=True)
    print(f"astronaut 512x512, kernel {degradation.name}, x{args.scale}; PSNR-Y (shave {args.scale}):")
    for label, sr, seconds in results:
        print(f"  {label:<14} {psnr_y(sr, hr, args.scale):6.2f} dB" + (f"   ({seconds:.2f} s)" if seconds else ""))
    print(f"wrote {name}")


def _method_config(args, degradation, job):
    """(runner, check, demo rows) for ``--method``; flags of the other method are an error. ``degradation`` None:
    blind (each photo's kernel estimated, direct subsampling)."""
    from mzsr_tf.batch import mzsr_runner, zssr_runner
    from mzsr_tf.errors import InputError
    from mzsr_tf.weights import check_scale, load_inner_lr, load_params, load_start_basis

    mzsr_only = {"--steps": args.steps, "--weights": args.weights, "--optimizer": args.optimizer, "--lr": args.lr}
    mzsr_only.update({"--precision": args.precision, "--crop": args.crop, "--son-noise": args.son_noise})
    mzsr_only.update({"--self-ensemble": args.self_ensemble or None, "--back-projection": args.back_projection})
    zssr_only = {"--preset": args.preset, "--init": args.init, "--max-iters": args.max_iters}
    wrong = [flag for flag, v in (mzsr_only if args.method == "zssr" else zssr_only).items() if v is not None]
    if wrong:
        raise InputError(f"{wrong[0]} does not apply to --method {args.method}")
    if args.method == "zssr":
        import dataclasses as dc

        from mzsr_tf.zssr import PRESETS, check_input, train_zssr

        if (args.preset or "x2_ideal") not in PRESETS:
            raise InputError(f"unknown --preset {args.preset!r}: use one of {', '.join(PRESETS)}")
        config = dc.replace(PRESETS[args.preset or "x2_ideal"], tile=args.tile, seed=args.seed)
        if args.max_iters is not None:
            config = dc.replace(config, max_iters=args.max_iters)
        init = load_params(args.init) if args.init else None

        def demo(lr, degradation, shape):
            result = train_zssr(lr, degradation, args.scale, config, init, output_shape=shape)
            return result.sr, result.seconds

        def check(rgb, shape, degradation):
            check_input(rgb, degradation, args.scale, config, shape)

        return zssr_runner(job, config, init, args.preset or "x2_ideal"), check, [("ZSSR", "zssr", demo)]

    from mzsr_tf.weights import default_weights
    from mzsr_tf.zero_shot import AdaptConfig, check_input, zero_shot_sr

    subsample = degradation.subsample if degradation else "direct"  # blind: direct
    weights = args.weights or default_weights(args.scale, subsample)
    check_scale(weights, args.scale)
    params = load_params(weights)
    inner_lr = load_inner_lr(weights)
    start_basis = load_start_basis(weights)
    optimizer = args.optimizer or ("learned" if inner_lr is not None and not args.lr else "adam")
    if optimizer == "learned" and (inner_lr is None or args.lr):
        raise InputError(f"--optimizer learned needs weights with learned rates and no --lr ({weights} has none)")
    common = {
        "steps": 10 if args.steps is None else args.steps,
        "self_ensemble": args.self_ensemble,
        "back_projection_iters": args.back_projection or 0,
        "tile": args.tile,
        "seed": args.seed,
        **({"learning_rates": args.lr} if args.lr else {}),
        **({"precision": args.precision} if args.precision else {}),  # default: official float32 / 'auto'
        **({"noise_sigma": args.son_noise} if args.son_noise is not None else {}),  # default: official 0 / 'auto'
        **({"keep_best": args.keep_best} if args.keep_best is not None else {}),  # default: on for learned rates
        **({"backtrack": args.backtrack} if args.backtrack is not None else {}),
    }
    if optimizer == "learned":
        config = AdaptConfig.learned(inner_lr, **common)
    elif optimizer == "sgd":
        config = AdaptConfig.official(args.scale, subsample, **common)  # the model's own rates
    else:
        config = AdaptConfig(**common)
    config = config.cropped(args.crop) if args.crop else config

    def demo(steps):
        def fn(lr, degradation, shape):
            steps_config = dataclasses.replace(config, steps=steps)
            result = zero_shot_sr(params, lr, degradation, args.scale, steps_config, shape, start_basis)
            return result.sr, result.seconds_adapt

        return fn

    rows = [("no adaptation", "noadapt", demo(0)), (f"MZSR({config.steps})", f"mzsr{config.steps}", demo(config.steps))]

    def check(rgb, shape, degradation):
        check_input(rgb, degradation, args.scale)

    return mzsr_runner(job, config, params, start_basis), check, rows


def main(argv=None):
    args = build_parser().parse_args(argv)
    from mzsr_tf.batch import Job, run_images
    from mzsr_tf.errors import InputError
    from mzsr_tf.kernels import resolve_degradation

    if not args.demo and not args.inputs:
        raise InputError("no input images (give files/folders, or --demo)")
    if args.tile < 64:
        raise InputError(f"--tile must be at least 64, got {args.tile}")
    blind = not args.demo and args.kernel in (None, "estimate", "kernelgan")
    if blind and args.subsample == "bicubic":
        raise InputError("blind SR estimates kernels for direct subsampling; give --kernel with --subsample bicubic")
    if blind and args.scale not in (2, 4):
        raise InputError(f"blind SR estimates kernels at x2 and x4, not x{args.scale}; give --kernel")
    if args.demo and args.kernel in ("estimate", "kernelgan"):
        raise InputError("--demo degrades with a known kernel; run blind SR on your own photos")
    if args.kernel_estimator and (not blind or args.kernel == "kernelgan"):
        raise InputError("--kernel-estimator applies to blind SR by the estimator (no --kernel, or --kernel estimate)")
    degradation = None if blind else resolve_degradation(args.kernel or DEMO_KERNEL, args.subsample)
    job = Job(tuple(args.inputs), args.scale, args.out, args.gt, args.json, args.overwrite, args.max_image_pixels,
              args.kernel_estimator, "kernelgan" if args.kernel == "kernelgan" else "estimator")  # fmt: skip
    run, check, demo_rows = _method_config(args, degradation, job)
    if args.demo:
        return run_demo(args, demo_rows)
    run_images(job, run, check, degradation)
    return 0


def run() -> None:
    """Console entry point ``mzsr-adapt``: one-line errors, exit codes 0 / 2 (bad input) / 130 (Ctrl-C)."""
    sys.exit(cli.run(main))


if __name__ == "__main__":
    run()
