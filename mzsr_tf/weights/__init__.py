"""Weights shipped inside the package (trained by ``train.py``; recipe in the README)."""

from pathlib import Path

from mzsr_tf.errors import InputError

WEIGHTS_DIR = Path(__file__).resolve().parent


def default_weights(scale: int = 2, subsample: str = "direct") -> Path:
    """Path of the shipped meta-weights θ_M for ``scale`` and ``subsample``."""
    path = WEIGHTS_DIR / f"mzsr_x{int(scale)}_{subsample}.weights.h5"
    if not path.is_file():
        shipped = ", ".join(sorted(p.name for p in WEIGHTS_DIR.glob("*.weights.h5"))) or "none"
        raise InputError(
            f"no shipped weights for x{int(scale)} {subsample} subsampling (shipped: {shipped}); pass --weights"
        )
    return path
