"""Seconds per training step on this machine: meta-step second/first order, XLA on/off, pretraining, precision.

Times the exact step function ``train.py`` runs (``training.make_step_fn``) on random batches of
the configured shapes, so data loading is excluded. Paper settings by default (5 tasks x 4 patches
of 64², 5 inner steps).

  python -m benchmarks.meta_speed --json meta_speed.json
  python -m benchmarks.meta_speed --no-jit --precision float32,bfloat16   # mixed precision vs float32
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import keras
import tensorflow as tf

from benchmarks.common import format_table, save_json
from mzsr_tf.meta import MetaConfig
from mzsr_tf.model import MZSRNet
from mzsr_tf.training import PretrainConfig, RunConfig, make_stage, make_step_fn


def random_batch(stage: str, config):
    if stage == "pretrain":
        shape = [config.batch_size, config.patch, config.patch, 3]
        return tf.random.uniform(shape, seed=0), tf.random.uniform(shape, seed=1)
    shape = [config.meta_batch, config.task_batch, config.patch, config.patch, 3]
    return tuple(tf.random.uniform(shape, seed=i) for i in range(4))


def time_step(stage_name, config, first_order, jit, repeats):
    run = RunConfig(stage=stage_name, data=(), out="", steps=1, jit=jit)
    stage = make_stage(run, config)
    net = MZSRNet(scale=config.scale)
    optimizer = keras.optimizers.Adam(1e-4)
    optimizer.build(net.params)
    step_fn = make_step_fn(stage, net.params, optimizer, tf.distribute.get_strategy(), first_order, jit)
    batch = random_batch(stage_name, config)
    t0 = time.perf_counter()
    step_fn(batch, tf.constant(0, tf.int64))[0].numpy()
    trace = time.perf_counter() - t0
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        step_fn(batch, tf.constant(i + 1, tf.int64))[0].numpy()
        times.append(time.perf_counter() - t0)
    return min(times), trace


def markdown(result: dict) -> str:
    """A ``--json`` report as Markdown: seconds per step, one row per step kind and precision, XLA off / on."""
    names = {"second": "meta, second order", "first": "meta, first order", "-": "pretraining"}
    cells = {(r["stage"], r["order"], r.get("precision", "float32"), r["jit"]): r["seconds_per_step"]
             for r in result["rows"]}  # fmt: skip
    jits = [j for j in (False, True) if any(c[3] == j for c in cells)]
    head = ["step", "precision"] + ["XLA on (`--jit`)" if j else "XLA off" for j in jits]
    body = []
    for stage, order, precision in dict.fromkeys(c[:3] for c in cells):
        values = [f"{v:.1f} s" if (v := cells.get((stage, order, precision, j))) is not None else "" for j in jits]
        body.append([names[order], precision, *values])
    return format_table(head, body)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--meta-batch", type=int, default=5)
    p.add_argument("--task-batch", type=int, default=4)
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--inner-steps", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-jit", action="store_true", help="skip the XLA rows")
    p.add_argument("--precision", default="float32", help="comma list of compute types (float32, bfloat16)")
    p.add_argument("--json", type=Path)
    p.add_argument("--table", type=Path, metavar="JSON", help="print the Markdown table of a saved --json report")
    args = p.parse_args(argv)
    if args.table:
        print(markdown(json.loads(args.table.read_text())))
        return None
    precisions = [x.strip() for x in args.precision.split(",") if x.strip()]
    if not precisions or set(precisions) - {"float32", "bfloat16"}:
        p.error(f"--precision takes float32 and/or bfloat16, got {args.precision!r}")
    rows = []
    for precision in precisions:
        meta = MetaConfig(
            meta_batch=args.meta_batch,
            task_batch=args.task_batch,
            patch=args.patch,
            inner_steps=args.inner_steps,
            precision=precision,
        )
        cases = [("meta", meta, False), ("meta", meta, True), ("pretrain", PretrainConfig(precision=precision), True)]
        rows += _time_cases(cases, args)
    settings = {k: v for k, v in vars(args).items() if k != "json"}
    result = {"meta_config": settings, "rows": rows}
    if args.json:
        save_json(args.json, result)
    return result


def _time_cases(cases, args):
    rows = []
    for stage_name, config, first_order in cases:
        for jit in (False,) if args.no_jit else (False, True):
            try:
                seconds, trace = time_step(stage_name, config, first_order, jit, args.repeats)
            except Exception as e:  # an XLA failure is a result to report, not a crash
                print(f"{stage_name} first_order={first_order} jit={jit}: failed ({type(e).__name__})")
                continue
            order = "-" if stage_name == "pretrain" else ("first" if first_order else "second")
            rows.append({"stage": stage_name, "order": order, "jit": jit, "precision": config.precision,
                         "seconds_per_step": round(seconds, 3), "first_call_seconds": round(trace, 1)})  # fmt: skip
            print(
                f"{stage_name:<8} order={order:<6} jit={str(jit):<5} {config.precision:<8} {seconds:8.3f} s/step"
                f"  (first call {trace:.1f} s)"
            )
    return rows


if __name__ == "__main__":
    main()
