"""Helpers shared by the benchmark scripts."""

import json
import time


def best_of(fn, repeats: int) -> float:
    """Fastest of ``repeats`` timed calls of ``fn`` after one warm-up call (tracing, allocation)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def save_json(path, obj, overwrite: bool = True) -> None:
    """Write ``obj`` as JSON to ``path`` through a temporary file (never half-written)."""
    from mzsr_tf.io import atomic_write

    with atomic_write(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n")
