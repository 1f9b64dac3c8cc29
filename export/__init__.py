"""Export MZSR meta-weights for serving and devices (issue #7).

``export_all(params, out)`` writes, all or nothing (built in a temporary folder next to ``out``,
renamed into place at the end)::

    out/mzsr.weights.h5        θ_M, Keras weights (``model.save_params``)
    out/mzsr_weights.npz       θ_M as plain arrays ``convN/kernel``, ``convN/bias``
    out/serving/1/             TF Serving SavedModel: zero-shot SR per request (``export.savedmodel``)
    out/mzsr_adapt.tflite      LiteRT on-device adaptation graph, builtin ops only (``export.tflite``)

Example:
  >>> from mzsr_tf.model import load_params
  >>> export_all(load_params("mzsr_x2_direct.weights.h5"), "exported")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from mzsr_tf.errors import InputError
from mzsr_tf.io import check_destination

__all__ = ["ExportConfig", "FILES", "export_all", "check_destination"]

FILES = {
    "weights_h5": "mzsr.weights.h5",
    "weights_npz": "mzsr_weights.npz",
    "serving": "serving/1",
    "tflite": "mzsr_adapt.tflite",
}


@dataclass(frozen=True)
class ExportConfig:
    """Export settings; defaults serve the paper's MZSR(1)/MZSR(10) on images up to 512×512."""

    scale: int = 2  # SR factor θ_M was meta-trained for (Direct subsampling, like the shipped weights)
    kernel_size: int = 21  # TFLite kernel input is k×k: 21 like the official kernel.mat and g_d_2.0
    max_pixels: int = 512 * 512  # serving: largest LR request, H·W (= AdaptConfig.max_pixels: trained whole)
    max_steps: int = 20  # serving: most adaptation steps per request (paper: 1 or 10)


def _make_staging(out: Path) -> Path:
    """A new folder next to ``out`` (same file system, so the final rename is atomic), umask permissions."""
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it 0700
    return staging


def _publish(staging: Path, out: Path, overwrite: bool) -> None:
    """Rename ``staging`` to ``out``; an old ``out`` is moved aside first and removed last."""
    old = None
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise InputError(f"{out}: exists (pass --overwrite to replace it)")
        old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(out, old)
    try:
        os.rename(staging, out)
    except OSError as e:
        if old is not None:
            os.rename(old, out)
        raise InputError(f"{out}: cannot move the export into place ({e.strerror})") from None
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()


def export_all(params, out, config: ExportConfig = ExportConfig(), overwrite: bool = False) -> dict[str, Path]:
    """Write every export of θ_M (``params``, 16 tensors) into folder ``out``; returns the paths by kind."""
    from export.savedmodel import save_serving
    from export.tflite import save_tflite
    from mzsr_tf.model import save_params

    out = check_destination(out, overwrite)
    staging = _make_staging(out)
    try:
        save_params(params, staging / FILES["weights_h5"])
        save_params(params, staging / FILES["weights_npz"])
        save_serving(params, staging / FILES["serving"], config.scale, config.max_pixels, config.max_steps)
        save_tflite(params, staging / FILES["tflite"], config.scale, config.kernel_size)
        _publish(staging, out, overwrite)
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(staging)
    return {kind: out / name for kind, name in FILES.items()}
