"""Speed of MZSR meta-test on this machine: adaptation and SR seconds, achieved GFLOP/s, traces.

For LR sizes 128², 256², 512², MZSR(1)/MZSR(10) and each precision (float32; bfloat16 where the
hardware runs it natively) it times ``zero_shot.adapt`` (son making plus n whole-image updates) and
the final SR forward, and sets the FLOPs that work needs against a bare float32 ``tf.function`` of
the same convolutions (the network forward) on the same input, so the ratio says how close the
adaptation graph runs to what the CPU does for these convolutions.
With ``../shared`` present it also times the 10-update loop over all of Set5's official g^d_2.0 LR
inputs, the figure the official TF1 meta-test loop is compared on (9.1-9.8 s on this CPU), for the
official port (SGD, float32), the default (Adam, precision 'auto') in float32 and bfloat16, and
the default with 128² crops.

  python -m benchmarks.speed --json speed.json
"""

from __future__ import annotations

import argparse
import functools
import json
import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from benchmarks.common import best_of, format_table, save_json
from mzsr_tf.backward import l1_loss_and_grads
from mzsr_tf.conv_ops import NATIVE
from mzsr_tf.kernels import Degradation, load_kernel, resolve_degradation
from mzsr_tf.model import forward, init_params, param_shapes
from mzsr_tf.zero_shot import TRACES, AdaptConfig, adapt, native_bfloat16

ROOT = Path(__file__).resolve().parents[1]
SET5_LR = ROOT.parent / "shared" / "anchors" / "mzsr_testsets" / "Input" / "g20"
FORWARD_FLOP_PER_PIXEL = sum(2 * np.prod(s) for s in param_shapes() if len(s) == 4)  # 449,280
STEP_FLOP_PER_PIXEL = 3 * FORWARD_FLOP_PER_PIXEL  # forward + input grads + filter grads


def bare_forward_gflops(params, size, repeats):
    """GFLOP/s of the 8 convolutions in a plain tf.function (the reference)."""
    bare = tf.function(forward)
    x = tf.random.uniform([1, size, size, 3], seed=0)
    seconds = best_of(lambda: bare(params, x).numpy(), repeats)
    return FORWARD_FLOP_PER_PIXEL * size * size / seconds / 1e9


OFFICIAL_SET5_SECONDS = (9.1, 9.8)  # official TF1 test.py, 10 updates over Set5, on this CPU (the brief)


def set5_settings():
    """The meta-test settings timed on Set5: label → AdaptConfig of 10 updates."""
    settings = {
        "official port (SGD, float32)": AdaptConfig.official(steps=10),
        "default, float32": AdaptConfig(steps=10, precision="float32"),
    }
    if native_bfloat16():
        settings["default, bfloat16"] = AdaptConfig(steps=10, precision="bfloat16")
    crops = AdaptConfig(steps=10).cropped(128)
    settings[f"default, {crops.compute_precision}, 128² crops"] = crops
    return settings


def gradient_seconds(params, size, repeats):
    """Seconds of one L1 gradient at size²: hand-written (TFLite) backward, TF's backprop kernels, ``GradientTape``."""

    def tape_grads(params, x, y):
        with tf.GradientTape() as tape:
            tape.watch(params)
            loss = tf.reduce_mean(tf.abs(forward(params, x) - y))
        return loss, tape.gradient(loss, params)

    x, y = (tf.random.uniform([1, size, size, 3], seed=s) for s in (2, 3))
    times = {}
    native = functools.partial(l1_loss_and_grads, ops=NATIVE)
    for name, fn in (("handwritten", l1_loss_and_grads), ("native", native), ("tape", tape_grads)):
        graph = tf.function(fn)
        times[name] = best_of(lambda graph=graph: graph(params, x, y)[1][0].numpy(), repeats)
    return times


def markdown(result: dict) -> str:
    """The Markdown tables of a ``--json`` report: Set5's 10-update loop, then seconds per LR size."""
    tables = []
    if result.get("set5_g20_10_updates"):
        loop = []
        for r in result["set5_g20_10_updates"]:
            lo, hi = r["speedup_vs_official"]
            loop.append([r["setting"], f"{r['seconds']:.1f} s", f"{lo:.2f}–{hi:.2f}×"])
        tables.append(format_table(["meta-test setting", "Set5, 10 updates", "vs official TF1 loop"], loop) + "\n")
    precisions = list(dict.fromkeys(r["precision"] for r in result["rows"]))
    steps = list(dict.fromkeys(r["steps"] for r in result["rows"]))
    short = {"float32": "f32", "bfloat16": "bf16"}
    names = " / ".join(short.get(p, p) for p in precisions)
    head = [f"MZSR({n}) adapt {names}" for n in steps] + ["SR (f32)", "one gradient: hand-written / TF / tape"]
    head += [f"MZSR({steps[-1]}) f32: share of bare forward GFLOP/s"]
    body = []
    for size in dict.fromkeys(r["lr_size"] for r in result["rows"]):
        rows = {(r["steps"], r["precision"]): r for r in result["rows"] if r["lr_size"] == size}
        cells = [" / ".join(f"{rows[(n, p)]['adapt_seconds']:.2f}" for p in precisions if (n, p) in rows) + " s"
                 for n in steps]  # fmt: skip
        any_row = next(iter(rows.values()))
        cells.append(f"{any_row['sr_seconds']:.2f} s")
        cells.append(" / ".join(f"{v:.2f}" for v in any_row["gradient_seconds"].values()) + " s")
        last = rows.get((steps[-1], "float32"))
        cells.append(f"{last['ratio_to_bare']:.0%} of {last['bare_forward_gflops']:.0f}" if last else "")
        body.append([f"{size}²", *cells])
    tables.append(format_table(["LR size", *head], body))
    return "\n".join(tables)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="128,256,512")
    p.add_argument("--steps", default="1,10")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path)
    p.add_argument("--table", type=Path, metavar="JSON", help="print the Markdown tables of a saved --json report")
    args = p.parse_args(argv)
    if args.table:
        print(markdown(json.loads(args.table.read_text())))
        return None
    params = init_params(0)
    deg = resolve_degradation("g_d_2.0")
    rows, forward_graph = [], tf.function(forward)
    for size in (int(s) for s in args.sizes.split(",")):
        lr = np.random.default_rng(0).random((size, size, 3), dtype=np.float32)
        reference = bare_forward_gflops(params, size, args.repeats)
        x_hr = tf.random.uniform([1, 2 * size, 2 * size, 3], seed=1)
        sr_seconds = best_of(lambda x_hr=x_hr: forward_graph(params, x_hr).numpy(), args.repeats)
        grads = gradient_seconds(params, size, args.repeats)
        print(
            f"LR {size:4d}²  one gradient: hand-written backward {grads['handwritten']:.3f} s, "
            f"TF backprop kernels {grads['native']:.3f} s, GradientTape {grads['tape']:.3f} s",
            flush=True,
        )
        precisions = ["float32", "bfloat16"] if native_bfloat16() else ["float32"]
        for steps, precision in ((int(s), p) for s in args.steps.split(",") for p in precisions):
            config = AdaptConfig(steps=steps, precision=precision)
            traces = TRACES["adapt"]
            seconds = best_of(lambda lr=lr, config=config: adapt(params, lr, deg, 2, config), args.repeats)
            gflops = STEP_FLOP_PER_PIXEL * size * size * steps / seconds / 1e9
            rows.append(
                {
                    "lr_size": size,
                    "steps": steps,
                    "precision": precision,
                    "adapt_seconds": round(seconds, 4),
                    "sr_seconds": round(sr_seconds, 4),
                    "adapt_gflops": round(gflops, 1),
                    "bare_forward_gflops": round(reference, 1),
                    "ratio_to_bare": round(gflops / reference, 3),
                    "new_traces": TRACES["adapt"] - traces,
                    "gradient_seconds": {k: round(v, 4) for k, v in grads.items()},
                }
            )
            print(
                f"LR {size:4d}²  MZSR({steps:2d}) {precision:8s}  adapt {seconds:7.3f} s  SR {sr_seconds:6.3f} s  "
                f"{gflops:6.1f} GFLOP/s = {gflops / reference:5.1%} of bare forward ({reference:.1f})  "
                f"traces +{rows[-1]['new_traces']}",
                flush=True,
            )
    result = {"device": "cpu", "threads": os.cpu_count(), "rows": rows}
    if SET5_LR.is_dir():
        from mzsr_tf.io import list_images, read_image

        kernel = Degradation(load_kernel(SET5_LR / "kernel.mat"), "direct")
        images = [read_image(f).rgb for f in list_images(SET5_LR / "Set5")]
        result["set5_g20_10_updates"] = []
        for label, config in set5_settings().items():
            seconds = best_of(
                lambda config=config: [adapt(params, im, kernel, 2, config) for im in images], args.repeats
            )
            lo, hi = (t / seconds for t in OFFICIAL_SET5_SECONDS)
            result["set5_g20_10_updates"].append(
                {"setting": label, "seconds": round(seconds, 3), "speedup_vs_official": [round(lo, 2), round(hi, 2)]}
            )
            official = f"{OFFICIAL_SET5_SECONDS[0]}-{OFFICIAL_SET5_SECONDS[1]} s"
            print(f"Set5 g^d_2.0, 10 updates on all 5 images, {label:30s} {seconds:6.2f} s = {lo:.1f}-{hi:.1f}x "
                  f"the official TF1 loop ({official})", flush=True)  # fmt: skip
    if args.json:
        save_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
