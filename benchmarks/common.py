"""Helpers shared by the benchmark scripts."""

import json

from mzsr_tf.export.profile import best_of  # noqa: F401  (the benchmarks time with it)


def format_table(head, rows) -> str:
    """A Markdown table from its header cells and one list of cell strings per row (the docs' generated blocks)."""
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def save_json(path, obj, overwrite: bool = True) -> None:
    """Write ``obj`` as JSON to ``path`` through a temporary file (never half-written)."""
    from mzsr_tf.io import atomic_write

    with atomic_write(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n")


def add_unconditioned(parser) -> None:
    """``--unconditioned``: the ablation that adapts from θ_M alone, the weights' basis V left out."""
    parser.add_argument(
        "--unconditioned", action="store_true", help="ablation: adapt from θ_M, leaving out the weights' basis V"
    )
