"""Where a LiteRT signature spends its time, op by op, and which ops the XNNPACK delegate takes.

The Python LiteRT runtime exposes no per-op profiler (that is the C++ ``benchmark_model`` tool's
``--enable_op_profiling``), so each op is *replayed*: the signature runs once with every
intermediate tensor kept (``experimental_preserve_all_tensors``), then every op becomes a one-op
model of its own, its inputs fed with the values they had in that run (constant inputs stay constant,
so the delegate sees what it sees in the full model), and is timed in a fresh interpreter with the
default delegate. An op counts as delegated when XNNPACK replaces it (the one-op execution plan
holds a ``DELEGATE`` node). The replayed times sum to about the full call (the report gives both).
Variable ops (``VAR_HANDLE``, ``READ_VARIABLE``, ``ASSIGN_VARIABLE``, ``CALL_ONCE``) are not
replayed: they move the weights, not the pixels.
"""

from __future__ import annotations

import time
import warnings
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter
from ai_edge_litert.tools import flatbuffer_utils

__all__ = ["OpTiming", "best_of", "op_name", "profile_signature", "summarise"]

_OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
_NOT_REPLAYED = {"VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "CALL_ONCE"}


@dataclass(frozen=True)
class OpTiming:
    """One op of the signature: its index and type, seconds (best of the repeats) and XNNPACK's verdict."""

    index: int
    op: str
    seconds: float
    delegated: bool
    output_shape: tuple[int, ...]


def op_name(model, op) -> str:
    """The operator's builtin name (``CONV_2D``), or ``CUSTOM:<name>`` for custom ops (Flex included)."""
    code = model.operatorCodes[op.opcodeIndex]
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    if builtin == schema.BuiltinOperator.CUSTOM:
        return f"CUSTOM:{code.customCode.decode() if code.customCode else ''}"
    return _OP_NAMES[builtin]


def _one_op_model(model, sub, op, shapes) -> tuple[bytes, list[int]]:
    """A model whose single subgraph runs ``op`` alone; returns it and the original tensor ids of its inputs."""
    one = schema.ModelT()
    one.version = model.version
    one.operatorCodes = [model.operatorCodes[op.opcodeIndex]]
    one.buffers = [schema.BufferT()]
    g = schema.SubGraphT()
    g.tensors, g.inputs, remap = [], [], {}
    for t in [i for i in op.inputs if i >= 0] + list(op.outputs):
        if t in remap:
            continue
        src = sub.tensors[t]
        tensor = schema.TensorT()
        tensor.name, tensor.type, tensor.quantization = src.name, src.type, src.quantization
        tensor.shape = np.asarray(shapes[t], np.int32)
        data = model.buffers[src.buffer].data if src.buffer < len(model.buffers) else None
        tensor.buffer = 0
        if data is not None and len(data) and t not in op.outputs:
            buf = schema.BufferT()
            buf.data = data
            one.buffers.append(buf)
            tensor.buffer = len(one.buffers) - 1
        elif t not in op.outputs:
            g.inputs.append(len(g.tensors))
        remap[t] = len(g.tensors)
        g.tensors.append(tensor)
    new_op = schema.OperatorT()
    for field in ("builtinOptionsType", "builtinOptions", "customOptions", "builtinOptions2Type", "builtinOptions2"):
        if hasattr(op, field):
            setattr(new_op, field, getattr(op, field))
    new_op.opcodeIndex = 0
    new_op.inputs = [remap[i] if i >= 0 else -1 for i in op.inputs]
    new_op.outputs = [remap[o] for o in op.outputs]
    g.operators = [new_op]
    g.outputs = [remap[o] for o in op.outputs]
    one.subgraphs = [g]
    inputs_by_new = {v: k for k, v in remap.items()}
    return bytes(flatbuffer_utils.convert_object_to_bytearray(one)), [inputs_by_new[i] for i in g.inputs]


def best_of(fn, repeats: int) -> float:
    """Fastest of ``repeats`` timed calls of ``fn`` after one warm-up call (tracing, allocation)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def profile_signature(model: bytes, signature: str, inputs: dict, threads: int = 1, repeats: int = 3):
    """Per-op timings of ``signature`` run on ``inputs`` (its keyword arguments), and the full call's seconds.

    Returns ``(timings, total_seconds)``; ``timings`` lists the replayed ops in execution order.
    """
    call = Interpreter(model_content=model, num_threads=threads).get_signature_runner(signature)
    total = best_of(lambda: call(**inputs), repeats)
    with warnings.catch_warnings():  # "for debugging purposes only": it is what a replay needs
        warnings.simplefilter("ignore", UserWarning)
        keep = Interpreter(model_content=model, num_threads=threads, experimental_preserve_all_tensors=True)
    runner = keep.get_signature_runner(signature)
    runner(**inputs)
    index = runner._subgraph_index
    m = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    sub = m.subgraphs[index]
    ops = [(i, op, op_name(m, op)) for i, op in enumerate(sub.operators)]
    ops = [(i, op, name) for i, op, name in ops if name not in _NOT_REPLAYED]
    wanted = {t for _, op, _ in ops for t in list(op.inputs) + list(op.outputs) if t >= 0}
    skip = (schema.TensorType.RESOURCE, schema.TensorType.VARIANT)
    values = {t: keep.get_tensor(t, index) for t in sorted(wanted) if sub.tensors[t].type not in skip}
    shapes = {t: v.shape for t, v in values.items()}
    timings = []
    for i, op, name in ops:
        one, feeds = _one_op_model(m, sub, op, shapes)
        interp = Interpreter(model_content=one, num_threads=threads)
        details = interp.get_input_details()
        for d, t in zip(details, feeds):
            interp.resize_tensor_input(d["index"], values[t].shape)
        interp.allocate_tensors()
        for d, t in zip(details, feeds):
            interp.set_tensor(d["index"], values[t])
        delegated = any(o["op_name"] == "DELEGATE" for o in interp._get_ops_details())
        seconds = best_of(interp.invoke, repeats)
        timings.append(OpTiming(i, name, seconds, delegated, tuple(shapes.get(op.outputs[0], ()))))
    return timings, total


def summarise(timings) -> list[dict]:
    """Seconds, call count and delegated count per op type, slowest first."""
    rows = defaultdict(lambda: {"seconds": 0.0, "calls": 0, "delegated": 0})
    for t in timings:
        row = rows[t.op]
        row["seconds"] += t.seconds
        row["calls"] += 1
        row["delegated"] += int(t.delegated)
    out = [{"op": op, **{k: (round(v, 5) if k == "seconds" else v) for k, v in r.items()}} for op, r in rows.items()]
    return sorted(out, key=lambda r: -r["seconds"])
