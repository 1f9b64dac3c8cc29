"""Validation PSNR against training steps, read from ``train.py`` run folders (TensorBoard logs).

  python -m benchmarks.learning_curve runs/pretrain_x2 runs/meta_x2 --png curve.png --json curve.json

A run started with ``--init`` from another run's final weights continues it: join them with ``+``
(``runs/pretrain_a+runs/pretrain_b``) to draw one curve, the later run's steps counted on from the
earlier one's last step.

Pretraining runs log ``val/psnr``; meta runs log ``val/psnr_before`` and ``val/psnr_after`` (PSNR on a
fixed set of kernel tasks before and after the inner loop), which is where meta-learning shows.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from benchmarks.common import format_table, save_json

TAGS = ("val/psnr", "val/psnr_bicubic", "val/psnr_before", "val/psnr_after")


def read_scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Every validation scalar of a run, in step order, across all its event files."""
    import tensorflow as tf
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    series: dict[str, dict[int, float]] = {}
    for events in sorted((run / "logs").glob("events.*")):
        acc = EventAccumulator(str(events), size_guidance={"tensors": 0})
        acc.Reload()
        for tag in set(acc.Tags()["tensors"]) & set(TAGS):
            for e in acc.Tensors(tag):
                series.setdefault(tag, {})[e.step] = float(tf.make_ndarray(e.tensor_proto))
    return {tag: sorted(series[tag].items()) for tag in TAGS if tag in series}  # fixed order: fixed colours


def read_chain(chain: str) -> dict[str, list[tuple[int, float]]]:
    """``A+B+...``: the runs' scalars end to end, each run's steps offset by the steps before it.

    A later run's step-0 point (its initial weights, the earlier run's end) is left out where the
    earlier run logged the same tag: that run's last point already stands there.
    """
    series: dict[str, list[tuple[int, float]]] = {}
    offset = 0
    for run in chain.split("+"):
        run_series = read_scalars(Path(run))
        for tag, points in run_series.items():
            kept = [(offset + step, value) for step, value in points if step > 0 or tag not in series]
            series.setdefault(tag, []).extend(kept)
        offset += max((points[-1][0] for points in run_series.values()), default=0)
    return series


def markdown(curves: dict) -> str:
    """Curves as Markdown: per run and tag, the number of validation points, the first, the best and the last."""
    body = []
    for run, series in curves.items():
        name = " → ".join(Path(r).name for r in run.split("+"))
        for tag, points in series.items():
            best = max(points, key=lambda p: p[1])
            first, last = points[0], points[-1]
            cells = [f"step {s}: {v:.3f} dB" for s, v in (first, best, last)]
            body.append([name, f"`{tag}`", str(len(points)), *cells])
    return format_table(["run", "tag", "points", "first", "best", "last"], body)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="*", help="run folders; A+B for a run initialised from A's final weights")
    p.add_argument(
        "--include",
        type=Path,
        nargs="+",
        default=[],
        metavar="JSON",
        help="curves saved by --json (of runs since deleted)",
    )
    p.add_argument("--only", nargs="+", help="with --include: keep only these of its curves")
    p.add_argument("--png", type=Path)
    p.add_argument("--json", type=Path)
    p.add_argument("--table", action="store_true", help="print a Markdown summary of the curves instead of text")
    args = p.parse_args(argv)
    if not args.runs and not args.include:
        p.error("give run folders and/or --include JSON files")
    if args.only and not args.include:
        p.error("--only selects curves of --include files")
    curves = {}
    for path in args.include:
        saved = json.loads(path.read_text())
        curves.update({run: series for run, series in saved.items() if not args.only or run in args.only})
    curves.update({run: read_chain(run) for run in args.runs})
    if not curves:
        p.error("no curves to plot (--only matched none)")
    if args.table:
        print(markdown(curves))
    for run, series in curves.items() if not args.table else ():
        for tag, points in series.items():
            last = points[-1]
            print(f"{run:<40} {tag:<18} {len(points):4d} points, last: step {last[0]} = {last[1]:.3f} dB")
    if args.json:
        save_json(args.json, curves)
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        columns = min(len(curves), 3)
        rows = math.ceil(len(curves) / columns)
        fig, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 4 * rows), squeeze=False)
        for ax in axes.flat[len(curves) :]:
            ax.set_visible(False)
        for ax, (run, series) in zip(axes.flat, curves.items()):
            for tag, points in series.items():
                ax.plot([s for s, _ in points], [v for _, v in points], marker=".", label=tag)
            title = " → ".join(Path(r).name for r in run.split("+"))
            ax.set(title=title, xlabel="step", ylabel="validation PSNR (dB, RGB)")
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        fig.savefig(args.png, dpi=120)
    return curves


if __name__ == "__main__":
    main()
