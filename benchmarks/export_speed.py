"""Speed of the exported LiteRT adaptation graph against the TF library path on this CPU.

For each LR size it times one ``train_step`` (son making + one SGD update, the same work as
``zero_shot.adapt`` with one step) and one ``super_resolve`` (bicubic↑ + the net at 2x) in the
LiteRT interpreter (``ai-edge-litert``, default XNNPACK delegate) and in TensorFlow
(``zero_shot.adapt`` / ``zero_shot.super_resolve_tiled``). Best of ``--repeats`` after a warm-up.

  python benchmarks/export_speed.py --json export_speed.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from benchmarks.common import best_of, save_json  # noqa: E402
from mzsr_tf.export.tflite import AdaptationModule, convert, embed_kernel  # noqa: E402
from mzsr_tf.kernels import resolve_degradation  # noqa: E402
from mzsr_tf.model import init_params  # noqa: E402
from mzsr_tf.zero_shot import AdaptConfig, adapt, super_resolve_tiled  # noqa: E402

SCALE, KERNEL_SIZE = 2, 21


def time_size(interpreter, params, degradation, size, repeats):
    """Seconds of one update and one SR at LR ``size``², LiteRT and TF."""
    lr = np.random.default_rng(size).random((size, size, 3), dtype=np.float32)
    kernel = embed_kernel(degradation.kernel, KERNEL_SIZE)
    train = interpreter.get_signature_runner("train_step")
    sr = interpreter.get_signature_runner("super_resolve")
    one_step = AdaptConfig(steps=1, precision="float32")  # as the LiteRT graph
    return {
        "lr_size": size,
        "tflite_train_step_s": best_of(
            lambda: train(image=lr[None], kernel=kernel, learning_rate=np.float32(0.01)), repeats
        ),
        "tf_train_step_s": best_of(lambda: adapt(params, lr, degradation, SCALE, one_step), repeats),
        "tflite_super_resolve_s": best_of(lambda: sr(image=lr[None]), repeats),
        "tf_super_resolve_s": best_of(lambda: super_resolve_tiled(params, lr[None], SCALE).numpy(), repeats),
    }


def print_table(rows):
    """Seconds per call and TFLite/TF ratio, one line per LR size."""
    head = f"{'TF':>7} {'ratio':>6}"
    print(f"{'LR':>5} | {'train_step: TFLite':>18} {head} | {'super_resolve: TFLite':>21} {head}")
    for r in rows:
        cells = []
        for op, width in (("train_step", 18), ("super_resolve", 21)):
            lite, tf_s = r[f"tflite_{op}_s"], r[f"tf_{op}_s"]
            cells.append(f"{lite:>{width - 1}.3f}s {tf_s:>6.3f}s {lite / tf_s:>5.2f}x")
        print(f"{r['lr_size']:>4}² | {cells[0]} | {cells[1]}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="128,256", help="LR sizes (square), comma-separated")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="LiteRT threads (default: the interpreter's)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    params = [t.numpy() for t in init_params(0)]
    degradation = resolve_degradation("g_d_2.0")  # 21x21, direct
    t0 = time.perf_counter()
    model = convert(AdaptationModule(params, SCALE, KERNEL_SIZE))
    convert_s = time.perf_counter() - t0
    interpreter = Interpreter(model_content=model, num_threads=args.threads)
    rows = [time_size(interpreter, params, degradation, int(s), args.repeats) for s in args.sizes.split(",")]
    rows = [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in rows]
    print_table(rows)
    report = {
        "rows": rows,
        "repeats": args.repeats,
        "litert_threads": args.threads,
        "convert_seconds": round(convert_s, 2),
        "cpu_count": os.cpu_count(),
    }
    if args.json:
        save_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
