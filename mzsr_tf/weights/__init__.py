"""Weights files: the ones shipped inside the package, and reading/writing θ (and its learned inner rates).

Formats: ``.weights.h5`` (Keras, ours), ``.npz`` (``convN/kernel`` arrays), TF checkpoints (the official
MZSR TF1 layout, or ``train.py``'s); every write is atomic.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import tensorflow as tf

from mzsr_tf.conditioning import BASIS_ROWS, START_FEATURES
from mzsr_tf.errors import InputError
from mzsr_tf.kernels import KERNEL_FEATURES
from mzsr_tf.model import PARAM_NAMES, MZSRNet, param_shapes
from mzsr_tf.weights.quantisation import channels, dequantise, quantise

__all__ = [
    "WEIGHTS_DIR",
    "INNER_LR",
    "default_weights",
    "fingerprint",
    "load_params",
    "save_params",
    "load_inner_lr",
    "load_start_basis",
    "load_scale",
    "check_scale",
]

WEIGHTS_DIR = Path(__file__).resolve().parent


def fingerprint(path) -> str:
    """A SHA-1 digest of weights (a file, or a checkpoint's files): which weights a run or a result came from."""
    path = Path(path)
    if path.is_dir():
        path = Path(tf.train.latest_checkpoint(str(path)) or path)
    files = [path] if path.is_file() else sorted(path.parent.glob(path.name.removesuffix(".index") + ".*"))
    digest = hashlib.sha1()
    for f in files:
        digest.update(f.read_bytes())
    return digest.hexdigest()


def default_weights(scale: int = 2, subsample: str = "direct") -> Path:
    """Path of the shipped meta-weights θ_M for ``scale`` and ``subsample``."""
    path = WEIGHTS_DIR / f"mzsr_x{int(scale)}_{subsample}.weights.h5"
    if not path.is_file():
        shipped = ", ".join(sorted(p.name for p in WEIGHTS_DIR.glob("*.weights.h5"))) or "none"
        raise InputError(
            f"no shipped weights for x{int(scale)} {subsample} subsampling (shipped: {shipped}); pass --weights"
        )
    return path


def _check_shapes(arrays, source) -> list[np.ndarray]:
    expected = param_shapes()
    if len(arrays) != len(expected):
        raise InputError(f"{source}: expected {len(expected)} weight tensors, found {len(arrays)}")
    for name, a, s in zip(PARAM_NAMES, arrays, expected):
        if tuple(a.shape) != s:
            raise InputError(f"{source}: {name} has shape {tuple(a.shape)}, expected {s}")
        if not np.all(np.isfinite(a)):
            raise InputError(f"{source}: {name} contains NaN or Inf")
    return [np.asarray(a, np.float32) for a in arrays]


INNER_LR = "inner_lr"  # learned per-tensor, per-step inner rates beside the weights (MAML++ LSLR)
START_BASIS = "start_basis"  # the conditioned start's basis V (``conditioning``), [features, all θ's entries]
START_CODES, START_SCALES = "start_basis_int4", "start_basis_scales"  # V as stored: 4-bit codes (``quantisation``)
SCALE = "mzsr_scale"  # the SR factor the weights were trained for, when the file records it
# train.py checkpoints hold the network's variables, in ``params`` order, as the optimizer's.
_TRAIN_CKPT = "optimizer/_trainable_variables/{}/.ATTRIBUTES/VARIABLE_VALUE"


def load_params(path) -> list[tf.Tensor]:
    """Load weights from ``.weights.h5`` (ours), ``.npz`` (``convN/kernel`` arrays) or a TF checkpoint.

    A TF checkpoint is either the official MZSR TF1 layout (variables ``MODEL/convN/kernel|bias``)
    or one of ``train.py``'s (``RUN/ckpt/ckpt-N``, to use a step chosen by validation), given as its
    prefix (``.../Pretrained``), its ``.index`` file or its folder (the latest checkpoint).
    """
    path = Path(path)
    name = path.name
    try:
        if name.endswith(".weights.h5"):
            if not path.is_file():
                raise InputError(f"{path}: weights file not found")
            net = MZSRNet()
            net.load_weights(str(path))
            arrays = [v.numpy() for v in net.params]
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                missing = [n for n in PARAM_NAMES if n not in data]
                if missing:
                    raise InputError(f"{path}: missing arrays {', '.join(missing[:3])}")
                arrays = [data[n] for n in PARAM_NAMES]
        else:
            prefix = path.with_suffix("") if path.suffix == ".index" else path
            if path.is_dir():
                prefix = tf.train.latest_checkpoint(str(path)) or path
            if not Path(str(prefix) + ".index").is_file():
                raise InputError(f"{path}: not a .weights.h5, .npz or TF checkpoint")
            reader = tf.train.load_checkpoint(str(prefix))
            keys = reader.get_variable_to_shape_map()
            names = [f"MODEL/{n}" for n in PARAM_NAMES]
            if names[0] not in keys and _TRAIN_CKPT.format(0) in keys:  # a train.py checkpoint
                names = [_TRAIN_CKPT.format(i) for i in range(len(PARAM_NAMES))]
            elif names[0] not in keys and "step/.ATTRIBUTES/VARIABLE_VALUE" in keys:
                raise InputError(
                    f"{path}: a train.py checkpoint without θ (its run froze θ, which its --init holds): use the run's "
                    "final.weights.h5 (train.py --config RUN/config.json --resume --steps N writes it)"
                )
            missing = [n for n in names if n not in keys]
            if missing:
                raise InputError(f"{path}: checkpoint lacks {missing[0]}")
            arrays = [reader.get_tensor(n) for n in names]
    except InputError:
        raise
    except Exception as e:  # h5py/TF raise many types for corrupt files
        raise InputError(f"{path}: cannot read weights ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    return [tf.constant(a) for a in _check_shapes(arrays, path)]


def _check_inner_lr(rates, source) -> np.ndarray:
    rates = np.asarray(rates, np.float32)
    n = len(PARAM_NAMES)
    if rates.ndim != 2 or rates.shape[0] < 1 or rates.shape[1] not in (n, n + KERNEL_FEATURES):
        raise InputError(
            f"{source}: {INNER_LR} has shape {rates.shape}, expected [steps, {n}] or, kernel-conditioned, "
            f"[steps, {n + KERNEL_FEATURES}]"
        )
    if not np.all(np.isfinite(rates)):
        raise InputError(f"{source}: {INNER_LR} contains NaN or Inf")
    return rates


def _stored(path, name: str, from_checkpoint):
    """What a weights file holds beside θ under ``name`` (an h5 dataset, an npz array), or for a TF checkpoint
    ``from_checkpoint(reader)``; None when it holds none."""
    path = Path(path)
    try:
        if path.name.endswith(".weights.h5"):
            import h5py

            with h5py.File(path, "r") as f:
                return f[name][()] if name in f else None
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return data[name] if name in data else None
        prefix = path.with_suffix("") if path.suffix == ".index" else path
        if path.is_dir():
            prefix = tf.train.latest_checkpoint(str(path)) or path
        return from_checkpoint(tf.train.load_checkpoint(str(prefix)))
    except Exception as e:  # h5py/TF raise many types for corrupt files
        raise InputError(f"{path}: cannot read weights ({type(e).__name__}: {str(e).splitlines()[0]})") from None


def load_inner_lr(path) -> np.ndarray | None:
    """The learned inner learning rates (MAML++ LSLR, [steps, 16]; with kernel slopes [steps, 18],
    ``meta.kernel_rates``) stored with the weights, or None."""
    key = f"{INNER_LR}/.ATTRIBUTES/VARIABLE_VALUE"
    rates = _stored(path, INNER_LR, lambda reader: reader.get_tensor(key) if reader.has_tensor(key) else None)
    return None if rates is None else _check_inner_lr(rates, path)


def _check_basis(basis, source) -> np.ndarray:
    """A [features, entries] basis; an earlier one (fewer of ``conditioning.BASIS_ROWS``) padded with zero rows."""
    basis = np.asarray(basis)
    size = sum(int(np.prod(s)) for s in param_shapes())
    rows = BASIS_ROWS
    if basis.ndim != 2 or basis.shape[0] not in rows or basis.shape[1] != size:
        raise InputError(
            f"{source}: {START_BASIS} has shape {basis.shape}, expected ({' or '.join(map(str, rows))}, {size})"
        )
    if not np.all(np.isfinite(basis)):
        raise InputError(f"{source}: {START_BASIS} contains NaN or Inf")
    return np.pad(basis, [(0, START_FEATURES - basis.shape[0]), (0, 0)])


def _trimmed(basis) -> np.ndarray:
    """The basis without trailing zero rows, down to the fewest of ``conditioning.BASIS_ROWS`` that keeps the rest: a
    start that never learned the later features stores none."""
    used = max((i + 1 for i in range(len(basis)) if np.any(basis[i])), default=0)
    return basis[: min(r for r in BASIS_ROWS if r >= used)]


def _unflatten(basis) -> list[tf.Tensor]:
    """[features, all entries] -> one float32 [features, *shape] tensor per θ tensor."""
    out, start = [], 0
    for s in param_shapes():
        n = int(np.prod(s))
        out.append(tf.constant(np.asarray(basis[:, start : start + n], np.float32).reshape(START_FEATURES, *s)))
        start += n
    return out


def _decoded(codes, scales, source) -> np.ndarray:
    """V from its 4-bit codes and per-channel scales (``quantisation``), their shapes checked."""
    shapes = param_shapes()
    size, rows = sum(int(np.prod(s)) for s in shapes), np.shape(codes)[0] if np.ndim(codes) == 2 else -1
    if scales is None or np.shape(codes) != (rows, (size + 1) // 2) or np.shape(scales) != (rows, channels(shapes)):
        raise InputError(
            f"{source}: {START_CODES} {np.shape(codes)} and {START_SCALES} {np.shape(scales)} do not make a basis "
            f"of {size} entries a row"
        )
    return dequantise(codes, scales, shapes)


def load_start_basis(path) -> list[tf.Tensor] | None:
    """The conditioned start's basis V stored with the weights (``conditioning.conditioned_start``), or None: a
    checkpoint's as trained, a weights file's 4-bit codes decoded (or, in earlier files, float16)."""
    keys = [f"{START_BASIS}/{i}/.ATTRIBUTES/VARIABLE_VALUE" for i in range(len(PARAM_NAMES))]

    def from_checkpoint(reader):
        if not reader.has_tensor(keys[0]):
            return None
        tensors = [reader.get_tensor(k) for k in keys]
        return np.concatenate([t.reshape(t.shape[0], -1) for t in tensors], axis=1)

    basis = _stored(path, START_BASIS, from_checkpoint)
    if basis is None:
        codes = _stored(path, START_CODES, lambda reader: None)
        if codes is None:
            return None
        basis = _decoded(codes, _stored(path, START_SCALES, lambda reader: None), path)
    return _unflatten(_check_basis(basis, path))


def load_scale(path) -> int | None:
    """The SR factor the weights were trained for, if their file records it (``save_params(scale=...)``)."""
    path = Path(path)
    if not path.is_file():  # a checkpoint folder or prefix records none; a missing file is load_params' to report
        return None
    try:
        if path.name.endswith(".weights.h5"):
            import h5py

            with h5py.File(path, "r") as f:
                value = f.attrs.get(SCALE)
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                value = data[SCALE] if SCALE in data else None
        else:
            return None
    except Exception as e:  # h5py raises many types for corrupt files
        raise InputError(f"{path}: cannot read weights ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    return None if value is None else int(value)


def check_scale(path, scale: int) -> None:
    """Refuse weights whose file records another SR factor than ``scale``."""
    trained = load_scale(path)
    if trained is not None and trained != int(scale):
        raise InputError(f"{path}: weights trained for x{trained}, not x{int(scale)} (use --scale {trained})")


def save_params(
    params, path, overwrite: bool = False, inner_lr=None, scale: int | None = None, start_basis=None
) -> Path:
    """Save weights as ``.weights.h5`` (Keras) or ``.npz`` (``convN/kernel`` arrays), atomically.

    ``inner_lr``: learned inner learning rates [steps, 16] to store with them (:func:`load_inner_lr`);
    ``scale``: the SR factor they were trained for (:func:`load_scale`); ``start_basis``: the conditioned start's
    basis, one [features, *shape] tensor per θ tensor (:func:`load_start_basis`), stored as 4-bit codes with a
    scale per output channel (``quantisation``).
    """
    from mzsr_tf.io import atomic_write

    path = Path(path)
    arrays = _check_shapes([np.asarray(p) for p in params], path)
    rates = None if inner_lr is None else _check_inner_lr(inner_lr, path)
    stored = {}
    if start_basis is not None:
        flat = np.concatenate([np.asarray(b, np.float32).reshape(len(b), -1) for b in start_basis], axis=1)
        flat = _check_basis(flat, path)
        stored = dict(zip((START_CODES, START_SCALES), quantise(_trimmed(flat), param_shapes())))
    with atomic_write(path, overwrite) as tmp:
        if path.name.endswith(".weights.h5"):
            net = MZSRNet()
            net.set_params(arrays)
            final = tmp.with_name(tmp.name + ".weights.h5")  # Keras insists on the suffix
            net.save_weights(str(final))
            if rates is not None or scale is not None or stored:
                import h5py

                with h5py.File(final, "a") as f:
                    if rates is not None:
                        f.create_dataset(INNER_LR, data=rates)
                    for name, array in stored.items():
                        f.create_dataset(name, data=array, compression="gzip", compression_opts=9)
                    if scale is not None:
                        f.attrs[SCALE] = int(scale)
            final.replace(tmp)
        elif path.suffix == ".npz":
            extra = {} if rates is None else {INNER_LR: rates}
            extra.update({} if scale is None else {SCALE: np.int64(scale)})
            extra.update(stored)
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **dict(zip(PARAM_NAMES, arrays)), **extra)
        else:
            raise InputError(f"{path}: weights must be saved as .weights.h5 or .npz")
    return path
