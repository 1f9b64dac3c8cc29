"""4-bit storage of the conditioned start's basis V (``conditioning``): symmetric round-to-nearest with one float32
scale per output channel of each (feature, tensor), two codes a byte.

Post-training weight quantisation with per-channel scales (Krishnamoorthi, *Quantizing deep convolutional networks
for efficient inference*, 2018), applied to V only: θ itself is stored as trained. V is nearly full-rank in every
layer, so a low-rank factorisation does not fit it; 4-bit codes do (``docs/training.md``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["LEVELS", "channels", "quantise", "dequantise"]

LEVELS = 7  # codes −7..7 (4 bits, symmetric: 0 is exact)


def channels(shapes) -> int:
    """How many scales a feature's row has: one per output channel (last axis) of each tensor."""
    return sum(int(s[-1]) for s in shapes)


def _slices(flat, shapes):
    """Each tensor's part of ``flat`` [features, all entries] as [features, entries / channels, channels]."""
    start = 0
    for s in shapes:
        n = int(np.prod(s))
        yield flat[:, start : start + n].reshape(flat.shape[0], -1, int(s[-1]))
        start += n


def quantise(flat, shapes) -> tuple[np.ndarray, np.ndarray]:
    """(codes, scales): ``flat`` [features, N] float as uint8 [features, ⌈N/2⌉] (two 4-bit codes a byte, the low
    nibble first, code + 8) and float32 scales [features, :func:`channels`]."""
    flat = np.asarray(flat, np.float32)
    codes, scales = [], []
    for v in _slices(flat, shapes):
        scale = np.abs(v).max(axis=1, keepdims=True) / LEVELS
        safe = np.where(scale > 0, scale, 1.0)
        codes.append(np.clip(np.round(v / safe), -LEVELS, LEVELS).astype(np.int8).reshape(flat.shape[0], -1))
        scales.append(scale[:, 0])
    nibbles = (np.concatenate(codes, axis=1) + 8).astype(np.uint8)
    if nibbles.shape[1] % 2:
        nibbles = np.pad(nibbles, [(0, 0), (0, 1)], constant_values=8)
    return nibbles[:, 0::2] | (nibbles[:, 1::2] << 4), np.concatenate(scales, axis=1)


def dequantise(codes, scales, shapes) -> np.ndarray:
    """:func:`quantise`'s inverse up to rounding: float32 [features, N]."""
    codes, scales = np.asarray(codes, np.uint8), np.asarray(scales, np.float32)
    size = sum(int(np.prod(s)) for s in shapes)
    nibbles = np.stack([codes & 15, codes >> 4], axis=2).reshape(codes.shape[0], -1)[:, :size]
    values = nibbles.astype(np.float32) - 8.0
    out, first = [], 0
    for v in _slices(values, shapes):
        c = v.shape[2]
        out.append((v * scales[:, None, first : first + c]).reshape(values.shape[0], -1))
        first += c
    return np.concatenate(out, axis=1)
