"""Validated image reads and atomic, non-clobbering writes.

Images are float32 HWC RGB in [0, 1] inside the library (``uint2single`` in KAIR's words).
Documented handling of the other kinds of input:

* grayscale (``L``, ``I;16``): replicated to 3 channels for the network, saved back as grayscale;
* alpha (``LA``, ``RGBA``, palette with transparency): the colour is super-resolved and the alpha
  plane is bicubic-upscaled separately, then re-attached;
* palette (``P``) and ``1``-bit images: converted to RGB(A);
* 16-bit PNG/TIFF: read at full precision, saved back as 16-bit;
* anything else (CMYK, float, 32-bit int, multi-page, unreadable, truncated, empty) is an
  :class:`~mzsr_tf.errors.InputError` naming the file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import png  # pypng: 16-bit RGB PNGs, which Pillow cannot hold
import tifffile
from PIL import Image, UnidentifiedImageError

from mzsr_tf.errors import InputError, raise_if_terminated

__all__ = [
    "ImageData",
    "IMAGE_SUFFIXES",
    "MAX_IMAGE_PIXELS",
    "read_image",
    "write_image",
    "atomic_write",
    "atomic_folder",
    "make_staging",
    "list_images",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MAX_IMAGE_PIXELS = 8192 * 8192  # largest input read, W·H, checked from the header before decoding (all decoders)


@dataclass
class ImageData:
    """A decoded image: ``rgb`` float32 [H, W, 3] in [0, 1] plus what is needed to save it alike."""

    rgb: np.ndarray
    alpha: np.ndarray | None = None  # float32 [H, W] in [0, 1]
    gray: bool = False
    bit_depth: int = 8


def list_images(folder) -> list[Path]:
    """Image files in ``folder`` (non-recursive), sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _png_bit_depth(path: Path) -> int | None:
    with open(path, "rb") as f:
        head = f.read(26)
    return head[24] if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 26 else None


def _from_array(a: np.ndarray, path: Path) -> ImageData:
    if a.dtype == np.uint8:
        depth, peak = 8, 255.0
    elif a.dtype == np.uint16:
        depth, peak = 16, 65535.0
    else:
        raise InputError(f"{path}: unsupported sample type {a.dtype} (use 8- or 16-bit)")
    a = a.astype(np.float32) / peak
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 2, 3, 4):
        raise InputError(f"{path}: unsupported image layout {a.shape} (need gray, RGB or RGBA)")
    channels = a.shape[-1]
    color = a[..., :1] if channels in (1, 2) else a[..., :3]
    alpha = a[..., -1] if channels in (2, 4) else None
    gray = channels in (1, 2)
    rgb = np.repeat(color, 3, axis=-1) if gray else color
    if min(rgb.shape[:2]) < 1:
        raise InputError(f"{path}: empty image")
    return ImageData(np.ascontiguousarray(rgb), alpha, gray, depth)


def _check_size(path: Path, width: int, height: int, max_pixels: int) -> None:
    """Refuse an image larger than ``max_pixels`` from its header, before it is decoded (decompression bombs)."""
    if width * height > max_pixels:
        raise InputError(
            f"{path}: {width}x{height} is more than {max_pixels} pixels (raise the limit with --max-image-pixels)"
        )


_PIL_LIMIT = threading.Lock()


def _pil_open(path: Path, max_pixels: int):
    """``Image.open`` with Pillow's own bomb limit at least ``max_pixels`` (ours is checked next, by the caller)."""
    if max_pixels <= (Image.MAX_IMAGE_PIXELS or max_pixels):
        return Image.open(path)
    with _PIL_LIMIT, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, max_pixels
        try:
            return Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def read_image(path, max_pixels: int = MAX_IMAGE_PIXELS) -> ImageData:
    """Decode PNG/JPEG/BMP/TIFF (8 or 16 bit; gray, RGB, RGBA, palette) or raise InputError.

    Images of more than ``max_pixels`` pixels are refused from their header, for every decoder.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            with tifffile.TiffFile(str(path)) as tif:
                if len(tif.pages) != 1:
                    raise InputError(f"{path}: multi-page TIFF is not supported")
                page = tif.pages[0]
                _check_size(path, int(page.imagewidth), int(page.imagelength), max_pixels)
                return _from_array(tif.asarray(), path)
        if _png_bit_depth(path) == 16:
            reader = png.Reader(filename=str(path))
            reader.preamble()
            _check_size(path, reader.width, reader.height, max_pixels)
            width, height, rows, info = reader.asDirect()
            planes = info["planes"]
            a = np.vstack([np.asarray(r, np.uint16) for r in rows]).reshape(height, width, planes)
            return _from_array(a, path)
        im = _pil_open(path, max_pixels)
        with im:
            _check_size(path, *im.size, max_pixels)
            im.load()
            if getattr(im, "n_frames", 1) > 1:
                raise InputError(f"{path}: animated/multi-frame images are not supported")
            if im.mode in ("P", "PA", "1"):
                im = im.convert("RGBA" if "transparency" in im.info or im.mode == "PA" else "RGB")
            if im.mode in ("I;16", "I;16B", "I;16L"):
                return _from_array(np.asarray(im).astype(np.uint16), path)
            if im.mode not in ("L", "LA", "RGB", "RGBA"):
                raise InputError(f"{path}: unsupported image mode {im.mode} (need gray, RGB, RGBA or palette)")
            return _from_array(np.asarray(im), path)
    except InputError:
        raise
    except (UnidentifiedImageError, png.FormatError) as e:
        raise InputError(f"{path}: not a readable image ({str(e).splitlines()[0] if str(e) else e!r})") from None
    except Image.DecompressionBombError as e:
        raise InputError(f"{path}: too many pixels ({e})") from None
    except Exception as e:  # decoders raise many types (OSError, struct.error, IndexError ...) on corrupt files
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"{path}: cannot decode image, file may be truncated or corrupt ({detail})") from None


def check_destination(path, overwrite: bool = False) -> Path:
    """``path`` must be new (or ``overwrite``) and its folder must exist; call it before slow work."""
    path = Path(path)
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise InputError(f"{path}: exists (pass --overwrite to replace it)")
    if not path.parent.is_dir():
        raise InputError(f"{path.parent}: output folder does not exist")
    return path


@contextlib.contextmanager
def atomic_write(path, overwrite: bool = False):
    """Yield a temporary path next to ``path``; on success move it into place atomically.

    Without ``overwrite`` an existing ``path`` is an InputError (checked before and at the
    final link, so a concurrent writer is not clobbered either). On failure nothing is left.
    """
    path = check_destination(path, overwrite)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
    try:
        yield Path(tmp)
        raise_if_terminated()
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if path appeared meanwhile
            except FileExistsError:
                raise InputError(f"{path}: exists (pass --overwrite to replace it)") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def make_staging(out) -> Path:
    """A new folder next to ``out`` (same file system, so the final rename is atomic), umask permissions."""
    out = Path(out)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it 0700
    return staging


@contextlib.contextmanager
def atomic_folder(path):
    """Yield a staging folder next to the new folder ``path``; on success rename it into place, so ``path`` appears
    whole or not at all. An existing ``path`` is an InputError (checked before and at the rename)."""
    path = check_destination(path)
    staging = make_staging(path)
    try:
        yield staging
        raise_if_terminated()
        try:
            os.rename(staging, path)  # fails onto a non-empty folder: one made meanwhile
        except OSError:
            raise InputError(f"{path}: exists (choose a new folder)") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _quantise(x: np.ndarray, bit_depth: int) -> np.ndarray:
    peak, dtype = (65535.0, np.uint16) if bit_depth == 16 else (255.0, np.uint8)
    return np.round(np.clip(np.asarray(x, np.float64), 0.0, 1.0) * peak).astype(dtype)


def write_image(path, image: ImageData | np.ndarray, overwrite: bool = False) -> Path:
    """Save an ImageData (or a float RGB [H, W, 3] array in [0, 1]) atomically.

    Gray images are saved as one channel (the mean of R, G, B), alpha is re-attached,
    and 16-bit images stay 16-bit in PNG/TIFF (JPEG and BMP are 8-bit only).
    """
    if not isinstance(image, ImageData):
        image = ImageData(np.asarray(image, np.float32))
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise InputError(f"{path}: unsupported output format (use {', '.join(IMAGE_SUFFIXES)})")
    depth = image.bit_depth if suffix in (".png", ".tif", ".tiff") else 8
    color = image.rgb.mean(axis=-1, keepdims=True) if image.gray else image.rgb
    planes = [color] + ([image.alpha[..., None]] if image.alpha is not None else [])
    a = _quantise(np.concatenate(planes, axis=-1), depth)
    if suffix in (".jpg", ".jpeg") and a.shape[-1] in (2, 4):
        a = a[..., :-1]  # JPEG has no alpha
    with atomic_write(path, overwrite) as tmp:
        if suffix in (".tif", ".tiff"):
            extra = {"photometric": "minisblack", "extrasamples": ["unassalpha"]} if a.shape[-1] == 2 else {}
            tifffile.imwrite(str(tmp), a[..., 0] if a.shape[-1] == 1 else a, planarconfig="contig", **extra)
        elif depth == 16:
            h, w, c = a.shape
            writer = png.Writer(w, h, greyscale=c in (1, 2), alpha=c in (2, 4), bitdepth=16)
            with open(tmp, "wb") as f:
                writer.write(f, a.reshape(h, w * c))
        else:
            Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a).save(
                tmp, format=Image.registered_extensions()[suffix]
            )
    return path
