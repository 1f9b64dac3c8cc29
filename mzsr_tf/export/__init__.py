"""Export MZSR meta-weights for serving and devices (issue #7).

``export_all(params, out)`` writes, all or nothing (built in a temporary folder next to ``out``,
renamed into place at the end)::

    out/mzsr.weights.h5        θ_M, Keras weights (``weights.save_params``)
    out/mzsr_weights.npz       θ_M as plain arrays ``convN/kernel``, ``convN/bias``
    out/serving/1/             TF Serving SavedModel: zero-shot SR per request (``mzsr_tf.export.savedmodel``)
    out/mzsr_adapt.tflite      LiteRT on-device adaptation graph, builtin ops only (``mzsr_tf.export.tflite``)
    out/mzsr_sr.tflite         LiteRT SR with baked weights, for after the adaptation (``tflite.bake_weights``)

Example:
  >>> from mzsr_tf.weights import load_params
  >>> export_all(load_params("mzsr_x2_direct.weights.h5"), "exported")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from mzsr_tf.errors import InputError, raise_if_terminated
from mzsr_tf.io import make_staging

__all__ = ["ExportConfig", "FILES", "export_all", "check_output_folder"]

FILES = {
    "weights_h5": "mzsr.weights.h5",
    "weights_npz": "mzsr_weights.npz",
    "serving": "serving/1",
    "tflite": "mzsr_adapt.tflite",
    "tflite_sr": "mzsr_sr.tflite",
}


@dataclass(frozen=True)
class ExportConfig:
    """Export settings; defaults serve the paper's MZSR(1)/MZSR(10) on images up to 512×512."""

    scale: int = 2  # SR factor θ_M was meta-trained for (Direct subsampling, like the shipped weights)
    kernel_size: int = 21  # TFLite kernel input is k×k: 21 like the official kernel.mat and g_d_2.0
    max_pixels: int = 512 * 512  # serving: largest LR request, H·W (= AdaptConfig.max_pixels: trained whole)
    max_steps: int = 20  # serving: most adaptation steps per request (paper: 1 or 10)


def _publish(staging: Path, out: Path, overwrite: bool) -> None:
    """Move the exported entries (``FILES``) from ``staging`` into ``out``, touching nothing else there.

    A new ``out`` is the staging folder renamed (atomic). Into an existing folder each entry is
    moved; with ``overwrite`` an old entry is moved aside first and removed only once every new
    entry is in place, and put back if a move fails. Other files in ``out`` are never touched.
    """
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise InputError(f"{out}: exists and is not a folder")
    if not out.exists():
        os.rename(staging, out)
        return
    clashes = [out / name for name in FILES.values() if (out / name).exists() or (out / name).is_symlink()]
    if clashes and not overwrite:
        raise InputError(f"{clashes[0]}: exists (pass --overwrite to replace it)")
    aside = staging / ".replaced"
    done: list[tuple[Path, Path | None]] = []  # (target now holding the new entry, its old entry aside)
    try:
        for i, name in enumerate(FILES.values()):
            target, old = out / name, None
            if target.exists() or target.is_symlink():
                old = aside / str(i)
                old.parent.mkdir(exist_ok=True)
                os.rename(target, old)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(staging / name, target)
            except OSError:
                if old is not None:
                    os.rename(old, target)
                raise
            done.append((target, old))
    except OSError as e:
        for target, old in reversed(done):  # undo: new entries out, old ones back
            with contextlib.suppress(OSError):
                _remove(target)
                if old is not None:
                    os.rename(old, target)
        raise InputError(f"{out}: cannot move the export into place ({e.strerror})") from None
    _remove(aside)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def check_output_folder(out, overwrite: bool = False, inputs=()) -> Path:
    """Check ``out`` before any work: a folder (new or existing), no exported entry there unless
    ``overwrite``, and never a folder holding one of ``inputs`` (export must not replace what it reads)."""
    out = Path(out)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise InputError(f"{out}: exists and is not a folder")
    if not out.parent.is_dir():
        raise InputError(f"{out.parent}: output folder does not exist")
    root = out.resolve()
    for given in inputs:
        path = Path(given).resolve()
        if path == root or root in path.parents:
            raise InputError(f"--out {out} holds the input {given}; choose another output folder")
    if out.exists() and not overwrite:
        for name in FILES.values():
            if (out / name).exists() or (out / name).is_symlink():
                raise InputError(f"{out / name}: exists (pass --overwrite to replace it)")
    return out


def export_all(
    params,
    out,
    config: ExportConfig = ExportConfig(),
    overwrite: bool = False,
    inputs=(),
    inner_lr=None,
    estimator=None,
    start_basis=None,
) -> dict[str, Path]:
    """Write every export of θ_M (``params``, 16 tensors) into folder ``out``; returns the paths by kind.

    ``overwrite`` replaces earlier exports in ``out`` (only the entries of ``FILES``); ``inputs`` (the
    weights read) must not lie inside ``out``. ``inner_lr``: θ_M's meta-learned rates (``weights.load_inner_lr``),
    kept in the weights files and run by the SavedModel's adaptation and the LiteRT model's ``learning_rates``.
    ``estimator``: kernel estimator weights for the SavedModel's ``blind`` and the LiteRT model's ``estimate_kernel``
    signatures (``kernel_estimation``). ``start_basis``: the basis of kernel-conditioned meta-weights
    (``conditioning``), kept in the weights files and run by the SavedModel; the LiteRT model, held to its size
    budget, adapts from θ_M.
    """
    from mzsr_tf.export.savedmodel import save_serving
    from mzsr_tf.export.tflite import save_inference_model, save_tflite
    from mzsr_tf.weights import save_params

    out = check_output_folder(out, overwrite, inputs)
    staging = make_staging(out)
    try:
        save_params(params, staging / FILES["weights_h5"], inner_lr=inner_lr, start_basis=start_basis)
        save_params(params, staging / FILES["weights_npz"], inner_lr=inner_lr, start_basis=start_basis)
        serving = staging / FILES["serving"]
        save_serving(
            params, serving, config.scale, config.max_pixels, config.max_steps, inner_lr, estimator, start_basis
        )
        save_tflite(params, staging / FILES["tflite"], config.scale, config.kernel_size, estimator, inner_lr)
        save_inference_model(params, staging / FILES["tflite_sr"], config.scale)
        raise_if_terminated()
        _publish(staging, out, overwrite)
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(staging)
    return {kind: out / name for kind, name in FILES.items()}
