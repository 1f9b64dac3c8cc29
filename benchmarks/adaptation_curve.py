"""What meta-learning buys: PSNR against adaptation steps (θ_M vs θ_T) and against wall-clock seconds.

For each image of a set, degrade with the kernel, adapt for each step count listed in ``--at`` (a fresh
run from the weights each time, so Adam's moments and the guard are those of a real n-step run) with each weights
file's default meta-test, as ``adapt.py`` (``ZeroShotSR.adapt_config``: its learned rule if it carries learned
rates, else Adam; ``--optimizer adam``/``sgd``: Adam, or the official schedule in float32, for all), and
super-resolve. Writes a JSON and a PNG
(PSNR-Y vs steps per weights file; PSNR-Y vs cumulative adaptation seconds, plus ZSSR's curve when
``--zssr`` is given).

  python -m benchmarks.adaptation_curve --hr ../shared/datasets/test/Set5/HR \\
      --weights mzsr_tf/weights/mzsr_x2_direct.weights.h5 --weights runs/pretrain/final.weights.h5 \\
      --labels "meta θ_M,pretrained θ_T" --png curve.png --json curve.json
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.common import format_table, save_json
from benchmarks.paper_table import load_hr, make_lr, set_name
from mzsr_tf.api import ZeroShotSR
from mzsr_tf.io import list_images
from mzsr_tf.kernels import resolve_degradation
from mzsr_tf.metrics import psnr_y
from mzsr_tf.zero_shot import AdaptConfig, adapt, zero_shot_sr


def curve(params, images, degradation, scale, at, config: AdaptConfig, start_basis=None):
    """Mean PSNR-Y after each step count in ``at`` and the adaptation seconds of that many steps (``start_basis``:
    the weights' kernel-conditioned start)."""
    rows = []
    for n in at:
        psnr, seconds = [], 0.0
        for hr, lr in images:
            result = zero_shot_sr(params, lr, degradation, scale, replace(config, steps=n), hr.shape[:2], start_basis)
            psnr.append(psnr_y(result.sr, hr, scale))
            seconds += result.seconds_adapt
        rows.append({"steps": n, "psnr_y": float(np.mean(psnr)), "seconds": seconds / len(images)})
    return rows


def plot(results, args, png: Path) -> None:
    """Left: PSNR-Y vs adaptation steps per weights file; right: PSNR-Y vs seconds, with ZSSR's rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for label, rows in results["curves"].items():
        a.plot([r["steps"] for r in rows], [r["psnr_y"] for r in rows], marker="o", label=label)
        b.plot([r["seconds"] for r in rows], [r["psnr_y"] for r in rows], marker="o", label=f"MZSR, {label}")
    for path in args.zssr or []:
        for row in json.loads(path.read_text())["results"]:
            if row["method"].startswith("zssr") and row["kernel"] == results["kernel"]:
                b.scatter([row["seconds_per_image"]], [row["psnr_y"]], marker="*", s=150, label=row["method"])
    title = f"{set_name(Path(results['set']))} x{results.get('scale', 2)}, {results['kernel']}"
    a.set(xlabel="adaptation steps", ylabel="PSNR-Y (dB)", title=title)
    b.set(xlabel="seconds per image (this CPU)", ylabel="PSNR-Y (dB)", xscale="symlog", title="PSNR vs time")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=120)


def markdown(results: dict) -> str:
    """A ``--json`` report as Markdown: mean PSNR-Y (and adaptation seconds per image) per step count and weights."""
    curves = results["curves"]
    head = ["updates"] + [f"{label}: PSNR-Y, s/image" for label in curves]
    at = {label: {r["steps"]: r for r in rows} for label, rows in curves.items()}
    body = []
    for n in sorted({r["steps"] for rows in curves.values() for r in rows}):
        cells = [f"{r['psnr_y']:.2f} dB, {r['seconds']:.2f} s" if (r := at[label].get(n)) else "" for label in curves]
        body.append([str(n), *cells])
    return format_table(head, body)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replot", type=Path, help="draw --png from this script's earlier --json, computing nothing")
    p.add_argument("--hr", type=Path)
    p.add_argument("--kernel", default="g_d_2.0")
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--weights", type=Path, action="append")
    p.add_argument("--labels", help="comma list, one per --weights")
    p.add_argument("--at", default="0,1,2,3,5,10,15,20,30,40,50")
    p.add_argument("--limit", type=int)
    p.add_argument(
        "--optimizer", choices=("adam", "sgd"), help="default: each weights file's (adapt.py's); sgd: the official one"
    )
    p.add_argument("--zssr", type=Path, action="append", help="paper_table JSON with zssr rows (points)")
    p.add_argument("--png", type=Path)
    p.add_argument("--json", type=Path)
    p.add_argument("--table", type=Path, metavar="JSON", help="print the Markdown table of an earlier --json")
    args = p.parse_args(argv)
    if args.table:
        results = json.loads(args.table.read_text())
        print(markdown(results))
        return results
    if args.replot:
        if not args.png:
            p.error("--replot needs --png")
        results = json.loads(args.replot.read_text())
        plot(results, args, args.png)
        return results
    if not args.hr or not args.weights:
        p.error("--hr and --weights are required (or --replot)")
    at = sorted({int(v) for v in args.at.split(",")})
    labels = args.labels.split(",") if args.labels else [w.stem for w in args.weights]
    degradation = resolve_degradation(args.kernel)
    images = []
    for path in list_images(args.hr)[: args.limit]:
        hr = load_hr(path, args.scale)
        images.append((hr, make_lr(hr, degradation, args.scale).astype(np.float32) / 255.0))
    models = [ZeroShotSR.from_weights(w, args.scale, degradation.subsample) for w in args.weights]
    curves, rules = {}, {}
    for label, model in zip(labels, models):
        if args.optimizer == "sgd":  # the official test.py: the released model's rates, float32
            config = AdaptConfig.official(args.scale, degradation.subsample)
        else:
            config = AdaptConfig() if args.optimizer == "adam" else model.adapt_config()
        adapt(model.params, images[0][1], degradation, args.scale, replace(config, steps=1))  # trace once, untimed
        rows = curve(model.params, images, degradation, args.scale, at, config, model.start_basis)
        curves[label], rules[label] = rows, config.rule
        for row in curves[label]:
            print(f"{label:<20} {row['steps']:3d} steps  {row['psnr_y']:6.2f} dB  {row['seconds']:7.2f} s/image")
    results = {"kernel": args.kernel, "set": str(args.hr), "scale": args.scale, "optimizer": rules, "curves": curves}
    if args.json:
        save_json(args.json, results)
    if args.png:
        plot(results, args, args.png)
    return results


if __name__ == "__main__":
    main()
