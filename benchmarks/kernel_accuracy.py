"""How close the blind kernel estimate is to the true kernel, per image, on the DIV2KRK-recipe benchmark.

The estimator alone (no SR): for each HR image of ``--hr`` its ``blind_set`` kernel and LR, the estimate
(``kernel_estimation.estimate_kernel``), its kernel PSNR (FKP) and its size against the true kernel's: the log
of the ratio of their areas, ½·log(det Σ_est / det Σ_true) (0: the right size; +0.35: twice the area, too blurry;
negative: too sharp). The summary gives the mean (the estimator's bias on these photos) and the spread.

The estimator measures blur against sharp photos, and a test image's HR may be soft itself. So each image's
own blur is estimated too, from its HR subsampled without any blur, and the size is also compared with the
true kernel plus that own blur (covariances add under convolution): ``log_area_ratio_own``::

    python -m benchmarks.kernel_accuracy --hr ../shared/datasets/test/BSD100/HR --scale 2 \\
        --json benchmarks/results/kernel_accuracy_bsd100_x2.json
    python -m benchmarks.kernel_accuracy --table benchmarks/results/kernel_accuracy_*.json

``--photos more --kernel-draws 4`` measures it on scikit-image's photos instead, four kernels each (a held-out set
for choosing an estimator), ``--kernel-estimator`` other estimator weights; the direction error (the estimator's
training loss ``log_eigen``) sees shape errors that the area ratio misses.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from benchmarks.blind_set import blind_degradation
from benchmarks.common import format_table, save_json
from mzsr_tf import cli
from mzsr_tf.errors import InputError


def covariance(kernel) -> np.ndarray:
    """A kernel's 2×2 covariance in pixels (``kernels.kernel_moments``)."""
    from mzsr_tf.kernels import kernel_moments

    return np.asarray(kernel_moments(kernel)[1])


def log_area_ratio(estimate, true, own=None) -> float:
    """½·log(det Σ_estimate / det Σ_true) of two kernels' covariances; with ``own``, against Σ_true + Σ_own."""
    reference = covariance(true) + (0 if own is None else covariance(own))
    return float(0.5 * np.log(np.linalg.det(covariance(estimate)) / np.linalg.det(reference)))


def log_eigen_error(estimate, true) -> float:
    """The direction error of two kernels' covariances, shape and size (``kernel_estimation.log_eigen_errors``,
    exact; 0: the same covariance)."""
    from mzsr_tf.kernel_estimation import log_eigen_errors

    return float(log_eigen_errors(covariance(estimate).astype(np.float64), covariance(true).astype(np.float64), 0.0))


def measure(images, set_name: str, scale: int, draws: int = 1, estimator=None) -> dict:
    """Per image (``images``: (name, HR) pairs, read as they come) and kernel draw (``blind_set.kernel_draws``):
    kernel PSNR, log area ratio and direction error of the estimate (``estimator``: weights or their path, default
    the shipped ones); the set's mean, spread and extremes."""
    from benchmarks.blind_set import kernel_draws
    from benchmarks.paper_table import make_lr
    from mzsr_tf.kernel_estimation import blind_estimator, kernel_psnr
    from mzsr_tf.kernels import IDENTITY, Degradation

    read_kernel = blind_estimator("estimator", estimator)

    def estimate_for(hr, degradation):
        return read_kernel(make_lr(hr, degradation, scale).astype(np.float32) / 255.0, scale).kernel

    results = {}
    for name, hr in images:
        own = estimate_for(hr, Degradation(IDENTITY, "direct"))  # no blur: the photo's own
        for key, seed in kernel_draws(name, draws):
            degradation = blind_degradation(name, scale, seed)
            estimate = estimate_for(hr, degradation)
            results[key] = {
                "kernel_psnr": kernel_psnr(estimate, degradation.kernel),
                "log_area_ratio": log_area_ratio(estimate, degradation.kernel),
                "log_area_ratio_own": log_area_ratio(estimate, degradation.kernel, own),
                "log_eigen_error": log_eigen_error(estimate, degradation.kernel),
            }
            print(f"{key}: {results[key]}", flush=True)
    ratios = np.array([v["log_area_ratio"] for v in results.values()])
    own = np.array([v["log_area_ratio_own"] for v in results.values()])
    report = {
        "set": set_name,
        "scale": scale,
        "images": len(results),
        "kernel_psnr": float(np.mean([v["kernel_psnr"] for v in results.values()])),
        "log_area_ratio_mean": float(ratios.mean()),
        "log_area_ratio_std": float(ratios.std()),
        "log_area_ratio_own_mean": float(own.mean()),
        "log_area_ratio_own_std": float(own.std()),
        "log_eigen_error_mean": float(np.mean([v["log_eigen_error"] for v in results.values()])),
        "too_blurry": int(np.sum(ratios > np.log(2) / 2)),  # estimate more than twice the true area
        "too_sharp": int(np.sum(ratios < -np.log(2) / 2)),  # less than half
        "per_image": results,
    }
    report |= {"kernel_draws": draws} if draws > 1 else {}
    return report | ({"estimator": str(estimator)} if estimator else {})


def render(reports) -> str:
    """One Markdown row per report."""
    head = ["set", "scale", "images", "kernel PSNR", "log area ratio, mean ± std", "> 2× area", "< ½ area", "worst"]
    head += ["against true + own blur", "direction error"]
    rows = []
    for r in reports:
        worst = max(r["per_image"].items(), key=lambda kv: abs(kv[1]["log_area_ratio"]))
        rows.append(
            [
                r["set"] + (f", {Path(r['estimator']).parent.name}" if "estimator" in r else ""),
                f"×{r['scale']}",
                str(r["images"]),
                f"{r['kernel_psnr']:.2f}",
                f"{r['log_area_ratio_mean']:+.3f} ± {r['log_area_ratio_std']:.3f}",
                str(r["too_blurry"]),
                str(r["too_sharp"]),
                f"{worst[0]} ({worst[1]['log_area_ratio']:+.2f})",
                f"{r['log_area_ratio_own_mean']:+.3f} ± {r['log_area_ratio_own_std']:.3f}",
                f"{r['log_eigen_error_mean']:.3f}" if "log_eigen_error_mean" in r else "",
            ]
        )
    return format_table(head, rows)


def main(argv=None) -> None:
    p = cli.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hr", type=Path, help="folder of HR images")
    p.add_argument("--photos", help="instead of --hr: comma list of scikit-image photos, or 'more' (adaptation_sweep)")
    p.add_argument("--scale", type=int, default=2, choices=(2, 4))
    p.add_argument("--limit", type=int, help="only the first N images")
    p.add_argument("--kernel-draws", type=cli.bounded_int(1), default=1, help="this many kernels per image (default 1)")
    p.add_argument("--kernel-estimator", type=Path, help="estimator weights (default: shipped)")
    p.add_argument("--json", type=Path)
    p.add_argument("--table", nargs="+", type=Path, metavar="JSON", help="print the Markdown of saved --json runs")
    args = p.parse_args(argv)
    if args.table:
        print(render([json.loads(path.read_text()) for path in args.table]))
        return
    if args.photos:
        from benchmarks.adaptation_sweep import photo_names, photos

        images = photos(args.scale, photo_names(args.photos)[: args.limit]).items()
        set_name = f"scikit-image ({args.photos})"
    elif args.hr is None or not args.hr.is_dir():
        raise InputError(f"{args.hr}: HR folder does not exist (--hr)")
    else:
        from benchmarks.paper_table import load_hr
        from mzsr_tf.io import list_images

        images = ((path.name, load_hr(path, args.scale)) for path in list_images(args.hr)[: args.limit])
        set_name = args.hr.parent.name if args.hr.name == "HR" else args.hr.name
    report = measure(images, set_name, args.scale, args.kernel_draws, args.kernel_estimator)
    print(render([report]))
    if args.json:
        save_json(args.json, report)


if __name__ == "__main__":
    sys.exit(cli.run(main))
