"""Speed, size and memory of the exported LiteRT adaptation model against the TF library path on this CPU.

Three parts, each its own JSON:

* ``--json``: per LR size, one ``train_step`` (son making + one SGD update) and one ``super_resolve``
  (bicubic↑ + the net at 2x) in the LiteRT interpreter (``ai-edge-litert``, default XNNPACK delegate) and in
  TensorFlow (the same ops: ``zero_shot.training_pair`` + ``backward.l1_loss_and_grads`` with TF's conv kernels,
  and ``zero_shot.super_resolve_tiled``), both on ``--threads`` threads, best of ``--repeats``; the ratios;
  the model's size; where LiteRT spends the time, per op type, and which ops XNNPACK takes
  (``mzsr_tf.export.profile``); the peak memory of a 512² adaptation in a process of its own; the floor: the
  net's 64→64 convolutions alone in TF and in LiteRT with constant and with variable filters (:func:`conv_floor`).
* ``--phone-json``: a phone-shaped run, MZSR(10) with the official SGD schedule + SR of a 512² photo,
  through the LiteRT model with 1, 2 and 4 threads, beside the TF library's ``adapt`` + ``super_resolve_tiled``.

  python -m benchmarks.export_speed --json benchmarks/results/export_speed.json
  python -m benchmarks.export_speed --sizes "" --phone-json benchmarks/results/export_speed_phone.json
  python -m benchmarks.export_speed --table benchmarks/results/export_speed{,_phone}.json
  python -m benchmarks.export_speed --table benchmarks/results/export_speed{,_phone}.json --phone
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import best_of, format_table, save_json

SCALE, KERNEL_SIZE, PHONE_SIZE, PHONE_STEPS = 2, 21, 512, 10
ZERO_RATE = np.zeros(1, np.float32)  # train_step's learning_rate: [1], one rate for every tensor
NO_OFFSET = np.zeros(2, np.float32)  # the baked SR model's offset: a centred kernel's phase

_MEMORY_PROBE = """
import json, sys
import numpy as np
from ai_edge_litert.interpreter import Interpreter


def high_water():  # this process's peak resident MB (VmHWM: reset at exec, unlike ru_maxrss)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024


path, size, threads, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
it = Interpreter(model_path=path, num_threads=threads)
train, sr = it.get_signature_runner("train_step"), it.get_signature_runner("super_resolve")
image = np.random.default_rng(0).random((1, size, size, 3), dtype=np.float32)
kernel = np.full((k, k), 1 / k**2, np.float32)
report = {"loaded_mb": high_water()}
train(image=image, kernel=kernel, learning_rate=np.zeros(1, np.float32))
report["train_step_mb"] = high_water()
sr(image=image)
report["super_resolve_mb"] = high_water()
print(json.dumps(report))
"""


def _tf_setup(threads: int):
    """Import TF on ``threads`` intra-op threads (set before any op runs)."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    return tf


def tf_train_step(tf):
    """The TF path's update as one graph: son, bicubic↑, L1 gradient with TF's conv kernels, SGD."""
    from mzsr_tf.backward import l1_loss_and_grads
    from mzsr_tf.conv_ops import NATIVE
    from mzsr_tf.zero_shot import training_pair

    @tf.function(reduce_retracing=True)
    def step(params, image, kernel, rate):
        son_up, father = training_pair(image, kernel, SCALE, "direct")
        loss, grads = l1_loss_and_grads(params, son_up, father, ops=NATIVE)
        return loss, [p - rate * g for p, g in zip(params, grads)]

    return step


def time_size(tf, interpreter, baked, params, kernel, size, repeats):
    """Seconds of one update and one SR at LR ``size``², LiteRT (adaptation model; baked SR model) and TF."""
    from mzsr_tf.export.tflite import embed_kernel
    from mzsr_tf.zero_shot import super_resolve_tiled

    lr = np.random.default_rng(size).random((1, size, size, 3), dtype=np.float32)
    train = interpreter.get_signature_runner("train_step")
    sr = interpreter.get_signature_runner("super_resolve")
    baked_sr = baked.get_signature_runner("super_resolve")
    lite_kernel, rate = embed_kernel(kernel, KERNEL_SIZE), ZERO_RATE  # rate 0: every call sees θ_M
    step, tensors = tf_train_step(tf), [tf.constant(p) for p in params]
    tf_lr, tf_kernel = tf.constant(lr), tf.constant(kernel)
    row = {
        "lr_size": size,
        "tflite_train_step_s": best_of(lambda: train(image=lr, kernel=lite_kernel, learning_rate=rate), repeats),
        "tf_train_step_s": best_of(lambda: step(tensors, tf_lr, tf_kernel, 0.0)[0].numpy(), repeats),
        "tflite_super_resolve_s": best_of(lambda: sr(image=lr), repeats),
        "tflite_baked_super_resolve_s": best_of(lambda: baked_sr(image=lr, offset=NO_OFFSET), repeats),
        "tf_super_resolve_s": best_of(lambda: super_resolve_tiled(tensors, tf_lr, SCALE).numpy(), repeats),
    }
    return with_ratios(
        row,
        train_step_ratio=("tflite_train_step_s", "tf_train_step_s"),
        super_resolve_ratio=("tflite_super_resolve_s", "tf_super_resolve_s"),
        baked_super_resolve_ratio=("tflite_baked_super_resolve_s", "tf_super_resolve_s"),
    )


def with_ratios(row: dict, **ratios) -> dict:
    """``row`` with its seconds rounded to 0.1 ms and each ``name=(numerator, denominator)`` ratio (2 decimals)."""
    row = {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
    return {**row, **{name: round(row[a] / row[b], 2) for name, (a, b) in ratios.items()}}


def conv_floor(tf, size: int, threads: int, repeats: int) -> dict:
    """The net's six 64→64 convolutions (ReLU between) at the SR's size for LR ``size``², three ways: TF (oneDNN on
    CPU), LiteRT with constant filters (XNNPACK's CONV_2D, as in the baked SR model) and LiteRT with variable
    filters (``conv_ops.TAPS``, as in the adaptation model): what each formulation can reach on this CPU."""
    from ai_edge_litert.interpreter import Interpreter

    from mzsr_tf.conv_ops import TAPS
    from mzsr_tf.export.tflite import convert

    rng = np.random.default_rng(size)
    filters = [rng.normal(0, 0.05, (3, 3, 64, 64)).astype(np.float32) for _ in range(6)]
    spec = tf.TensorSpec([1, None, None, 64], tf.float32, name="x")

    class Stack(tf.Module):
        def __init__(self, weights, conv):
            super().__init__()
            self.weights, self.conv, self.signatures = weights, conv, ("run",)
            self.run = tf.function(self._run, input_signature=[spec])

        def _run(self, x):
            for w in self.weights:
                x = tf.nn.relu(self.conv(x, w))
            return {"y": x}

    x = rng.random((1, SCALE * size, SCALE * size, 64), dtype=np.float32)
    constant = Stack([tf.constant(f) for f in filters], lambda x, w: tf.nn.conv2d(x, w, 1, "SAME"))
    variable = Stack([tf.Variable(f) for f in filters], TAPS.conv)
    x_tf = tf.constant(x)
    reference = constant.run(x_tf)["y"].numpy()
    row = {"lr_size": size, "tf_s": best_of(lambda: constant.run(x_tf)["y"].numpy(), repeats)}
    for name, module in (("litert_constant_s", constant), ("litert_variable_s", variable)):
        runner = Interpreter(model_content=convert(module), num_threads=threads).get_signature_runner("run")
        np.testing.assert_allclose(runner(x=x)["y"], reference, rtol=1e-4, atol=1e-4)  # the same computation
        row[name] = best_of(lambda runner=runner: runner(x=x), repeats)
    return with_ratios(row, constant_ratio=("litert_constant_s", "tf_s"), variable_ratio=("litert_variable_s", "tf_s"))


def print_table(rows):
    """Seconds per call and TFLite/TF ratio, one line per LR size."""
    head = f"{'TF':>7} {'ratio':>6}"
    print(f"{'LR':>5} | {'train_step: TFLite':>18} {head} | {'super_resolve: TFLite':>21} {head} | baked  ratio")
    for r in rows:
        cells = []
        for op, width in (("train_step", 18), ("super_resolve", 21)):
            cells.append(f"{r[f'tflite_{op}_s']:>{width - 1}.3f}s {r[f'tf_{op}_s']:>6.3f}s {r[f'{op}_ratio']:>5.2f}x")
        baked = f"{r['tflite_baked_super_resolve_s']:.3f}s {r['baked_super_resolve_ratio']:.2f}x"
        print(f"{r['lr_size']:>4}² | {cells[0]} | {cells[1]} | {baked}")


def profile(model: bytes, baked: bytes, kernel, size: int, threads: int, repeats: int) -> dict:
    """Per-op-type seconds and XNNPACK delegation of both signatures, and of the baked SR model, at LR ``size``²."""
    from mzsr_tf.export.profile import profile_signature, summarise
    from mzsr_tf.export.tflite import embed_kernel

    lr = np.random.default_rng(size).random((1, size, size, 3), dtype=np.float32)
    inputs = {
        "train_step": {"image": lr, "kernel": embed_kernel(kernel, KERNEL_SIZE), "learning_rate": ZERO_RATE},
        "super_resolve": {"image": lr},
    }
    out = {"lr_size": size}
    for name, feed in [*inputs.items(), ("baked_super_resolve", {"image": lr, "offset": NO_OFFSET})]:
        source, signature = (baked, "super_resolve") if name.startswith("baked") else (model, name)
        timings, total = profile_signature(source, signature, feed, threads, repeats)
        out[name] = {
            "call_s": round(total, 4),
            "replayed_sum_s": round(sum(t.seconds for t in timings), 4),
            "ops": len(timings),
            "delegated_ops": sum(t.delegated for t in timings),
            "by_op": summarise(timings),
        }
    return out


def peak_memory(model: bytes, size: int, threads: int) -> dict:
    """Peak resident memory (MB) of a process that loads the model, adapts once and super-resolves at ``size``²."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.tflite"
        path.write_bytes(model)
        run = subprocess.run(
            [sys.executable, "-c", _MEMORY_PROBE, str(path), str(size), str(threads), str(KERNEL_SIZE)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    report = json.loads(run.stdout.strip().splitlines()[-1])
    return {"lr_size": size, **{k: round(v, 1) for k, v in report.items()}}


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def phone(tf, model: bytes, baked: bytes, params, kernel, threads_list) -> dict:
    """MZSR(10) (official SGD schedule) + SR of a ``PHONE_SIZE``² photo, once each after a small warm-up: LiteRT
    per thread count (the 10 updates, then SR by the adaptation model or by the SR model with the adapted
    weights baked in, baking and loading included), and the TF library path (``adapt`` + ``super_resolve_tiled``)."""
    from ai_edge_litert.interpreter import Interpreter

    from mzsr_tf.export.tflite import WEIGHT_NAMES, bake_weights, embed_kernel
    from mzsr_tf.kernels import Degradation
    from mzsr_tf.zero_shot import AdaptConfig, adapt, rate_matrix, super_resolve_tiled

    config = AdaptConfig.official(SCALE, steps=PHONE_STEPS)
    rates = list(rate_matrix(config))  # one [16] row per update, as the app passes learning_rates' rows
    photo = np.random.default_rng(0).random((1, PHONE_SIZE, PHONE_SIZE, 3), dtype=np.float32)
    small = photo[:, :48, :48]
    lite_kernel = embed_kernel(kernel, KERNEL_SIZE)
    rows = []
    for threads in threads_list:
        it = Interpreter(model_content=model, num_threads=threads)
        train, sr = it.get_signature_runner("train_step"), it.get_signature_runner("super_resolve")
        train(image=small, kernel=lite_kernel, learning_rate=ZERO_RATE)  # warm-up
        it.get_signature_runner("reset")()
        adapt_s = _timed(lambda train=train: [train(image=photo, kernel=lite_kernel, learning_rate=r) for r in rates])
        sr_s = _timed(lambda sr=sr: sr(image=photo))
        weights = it.get_signature_runner("get_weights")()

        def baked_sr(weights=weights, threads=threads):
            model_sr = bake_weights(baked, [weights[n] for n in WEIGHT_NAMES])
            runner = Interpreter(model_content=model_sr, num_threads=threads).get_signature_runner("super_resolve")
            runner(image=photo, offset=NO_OFFSET)

        baked_s = _timed(baked_sr)
        rows.append(
            {
                "threads": threads,
                "adapt_s": round(adapt_s, 2),
                "sr_s": round(sr_s, 2),
                "baked_sr_s": round(baked_s, 2),
                "seconds": round(adapt_s + sr_s, 2),
                "baked_seconds": round(adapt_s + baked_s, 2),
            }
        )
        print(f"LiteRT, {threads} thread(s): {rows[-1]}", flush=True)
    degradation = Degradation(kernel, "direct")
    adapt(params, small[0], degradation, SCALE, config)  # warm-up: tracing

    def run_tf():
        fast = adapt(params, photo[0], degradation, SCALE, config).params
        return super_resolve_tiled(fast, photo, SCALE).numpy()

    return {"lr_size": PHONE_SIZE, "steps": PHONE_STEPS, "litert": rows, "tf_seconds": round(_timed(run_tf), 2)}


def render(speed: dict, phone: dict | None = None) -> str:
    """The README's markdown for the two JSON reports (``--table``)."""
    head = ["LR", "`train_step` LiteRT", "TF", "ratio", "`super_resolve` LiteRT", "TF", "ratio"]
    head += ["baked SR model", "ratio"]
    body = []
    for r in speed["rows"]:
        cells = [f"{r['lr_size']}²"]
        for op in ("train_step", "super_resolve"):
            cells += [f"{r[f'tflite_{op}_s']:.3f} s", f"{r[f'tf_{op}_s']:.3f} s", f"{r[f'{op}_ratio']:.2f}×"]
        cells += [f"{r['tflite_baked_super_resolve_s']:.3f} s", f"{r['baked_super_resolve_ratio']:.2f}×"]
        body.append(cells)
    lines = [format_table(head, body)]
    mem = speed.get("peak_memory")
    notes = [
        f"{speed['threads']} thread(s) each, float32; `mzsr_adapt.tflite` {speed['model_bytes'] / 1e6:.2f} MB, "
        f"`mzsr_sr.tflite` {speed['sr_model_bytes'] / 1e6:.2f} MB"
    ]
    if mem:
        notes.append(
            f"peak memory of a {mem['lr_size']}² adaptation step {mem['train_step_mb'] - mem['loaded_mb']:.0f} MB "
            f"above the loaded model ({mem['train_step_mb']:.0f} MB resident), "
            f"{mem['super_resolve_mb'] - mem['loaded_mb']:.0f} MB after its SR"
        )
    for name in ("train_step", "super_resolve", "baked_super_resolve"):
        prof = speed.get("profile", {}).get(name)
        if prof:
            notes.append(f"{name.replace('_', ' ')}: {prof['delegated_ops']} of {prof['ops']} ops on XNNPACK")
    lines += ["", "; ".join(notes) + "."]
    if speed.get("conv_floor"):
        cells = ", ".join(
            f"LR {r['lr_size']}²: {r['constant_ratio']:.2f}× / {r['variable_ratio']:.2f}×" for r in speed["conv_floor"]
        )
        lines += [
            "",
            "The net's six 64→64 convolutions alone at the SR's size, LiteRT against TF, with constant filters "
            f"(XNNPACK's CONV_2D) / with variable filters (`conv_ops.TAPS`, 9 batch matmuls and their sums): {cells}.",
        ]
    if phone:
        lines += ["", phone_sentence(speed, phone)]
    return "\n".join(lines)


def phone_sentence(speed: dict, phone: dict) -> str:
    """The phone-shaped run in one sentence (``--table SPEED PHONE --phone``: the README's export section)."""
    runs = ", ".join(
        f"{r['threads']} thread(s) {r['seconds']:.1f} s ({r['baked_seconds']:.1f} s with the baked SR model)"
        for r in phone["litert"]
    )
    return (
        f"MZSR({phone['steps']}) + SR of a {phone['lr_size']}² photo through the LiteRT model on this "
        f"{speed['cpu_count']}-core CPU: {runs}; "
        f"the TF library path ({phone.get('tf_threads', 1)} thread): {phone['tf_seconds']:.1f} s."
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="128,256,512", help="LR sizes (square), comma-separated; empty: none")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="threads of both LiteRT and TF for the size rows")
    p.add_argument("--profile-size", type=int, default=128, help="LR size of the per-op profile (0: none)")
    p.add_argument("--memory-size", type=int, default=512, help="LR size of the peak-memory probe (0: none)")
    p.add_argument("--phone-threads", default="1,2,4", help="LiteRT threads of the phone-shaped run")
    p.add_argument("--json", type=Path)
    p.add_argument("--phone-json", type=Path, help="run the phone-shaped MZSR(10)+SR and write it here")
    p.add_argument("--table", nargs="+", type=Path, metavar="JSON", help="print the README markdown of these reports")
    p.add_argument("--phone", action="store_true", help="with --table: only the phone-shaped run's sentence")
    args = p.parse_args(argv)
    if args.table:
        reports = [json.loads(path.read_text()) for path in args.table]
        if args.phone:
            if len(reports) != 2:
                p.error("--phone needs --table SPEED_JSON PHONE_JSON")
            print(phone_sentence(*reports))
        else:
            print(render(*reports))
        return None
    tf = _tf_setup(args.threads)
    from ai_edge_litert.interpreter import Interpreter

    from mzsr_tf.export.tflite import AdaptationModule, convert, inference_model
    from mzsr_tf.kernel_estimation import load_estimator
    from mzsr_tf.kernels import resolve_degradation
    from mzsr_tf.weights import WEIGHTS_DIR, load_params

    params = [t.numpy() for t in load_params(WEIGHTS_DIR / "mzsr_x2_direct.weights.h5")]  # the exported model
    estimator = load_estimator(WEIGHTS_DIR / "kernel_estimator.npz")
    kernel = resolve_degradation("g_d_2.0").kernel  # 21x21, direct
    t0 = time.perf_counter()
    model = convert(AdaptationModule(params, SCALE, KERNEL_SIZE, estimator))
    convert_s = time.perf_counter() - t0
    baked = inference_model(params, SCALE)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if sizes:
        interpreter = Interpreter(model_content=model, num_threads=args.threads)
        baked_interpreter = Interpreter(model_content=baked, num_threads=args.threads)
        rows = [time_size(tf, interpreter, baked_interpreter, params, kernel, s, args.repeats) for s in sizes]
        print_table(rows)
        floor = [conv_floor(tf, s, args.threads, args.repeats) for s in sizes]
        for r in floor:
            print(f"six 64->64 convs at {SCALE * r['lr_size']}²: {r}")
        report = {
            "rows": rows,
            "conv_floor": floor,
            "threads": args.threads,
            "repeats": args.repeats,
            "model_bytes": len(model),
            "sr_model_bytes": len(baked),
            "convert_seconds": round(convert_s, 2),
            "cpu_count": os.cpu_count(),
        }
        if args.profile_size:
            report["profile"] = profile(model, baked, kernel, args.profile_size, args.threads, args.repeats)
            for name in ("train_step", "super_resolve", "baked_super_resolve"):
                prof = report["profile"][name]
                top = ", ".join(
                    f"{r['op']} {r['seconds']:.3f}s ({r['delegated']}/{r['calls']} XNNPACK)" for r in prof["by_op"][:4]
                )
                print(f"{name} at {args.profile_size}²: {prof['delegated_ops']}/{prof['ops']} ops on XNNPACK; {top}")
        if args.memory_size:
            report["peak_memory"] = peak_memory(model, args.memory_size, args.threads)
            print(f"peak memory, {args.memory_size}² LR: {report['peak_memory']}")
        if args.json:
            save_json(args.json, report)
    if args.phone_json:
        threads = [int(t) for t in args.phone_threads.split(",")]
        report = phone(tf, model, baked, params, kernel, threads)
        report.update(model_bytes=len(model), tf_threads=args.threads)
        print(f"MZSR({PHONE_STEPS}) + SR of a {PHONE_SIZE}² photo: {report}")
        save_json(args.phone_json, report)


if __name__ == "__main__":
    main()
