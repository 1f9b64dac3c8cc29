"""The README's before/after picture: bicubic, MZSR(10) and HR crops of a scikit-image photo, side by side.

The photo (scikit-image's astronaut: neither a training nor a test image) is degraded with the paper's
g^d_2.0 kernel at ×2 as ``paper_table`` does (uint8 LR), upscaled bicubically, and super-resolved by the
shipped meta-weights after 10 adaptation updates (``mzsr_tf.from_preset``, default meta-test). One crop of
each, enlarged with nearest-neighbour so single pixels show, goes into one PNG; whole-image PSNR-Y goes into
``--json``, which ``--caption`` turns into the README's caption (a generated block)::

    python -m benchmarks.before_after --out docs/images/before_after.png --json benchmarks/results/before_after.json
    python -m benchmarks.before_after --caption benchmarks/results/before_after.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PHOTO = "astronaut"
KERNEL = "g_d_2.0"
SCALE = 2
STEPS = 10
PRESET = "mzsr_x2_direct"
CROP = (340, 124, 96)  # top, left, size in HR pixels: the mission patch (lettering, fine edges)
ZOOM = 3
LABELS = ("bicubic", f"MZSR({STEPS})", "HR")


def images(photo: str = PHOTO) -> dict[str, object]:
    """HR, bicubic and MZSR(``STEPS``) images (uint8) of the photo, and their PSNR-Y against HR."""
    import numpy as np
    import skimage.data

    import mzsr_tf
    from benchmarks.paper_table import make_lr
    from mzsr_tf.imresize import upscale
    from mzsr_tf.kernels import resolve_degradation
    from mzsr_tf.metrics import modcrop, psnr_y, to_uint8

    hr = modcrop(getattr(skimage.data, photo)(), SCALE)
    lr = make_lr(hr, resolve_degradation(KERNEL), SCALE)
    bicubic = to_uint8(upscale(lr.astype(np.float32) / 255.0, SCALE, hr.shape[:2])).numpy()
    model = mzsr_tf.from_preset(PRESET)
    sr = model.super_resolve(lr, kernel=KERNEL, steps=STEPS)
    return {
        "images": (bicubic, sr, hr),
        "precision": model.adapt_config(STEPS).compute_precision,
        "psnr_y": {"bicubic": psnr_y(bicubic, hr, SCALE), f"mzsr{STEPS}": psnr_y(sr, hr, SCALE)},
    }


def side_by_side(crops, labels=LABELS, zoom: int = ZOOM, gap: int = 6):
    """One PIL image: the crops enlarged ``zoom``× (nearest-neighbour), ``gap`` px apart, each with its label."""
    from PIL import Image, ImageDraw, ImageFont

    tiles = [Image.fromarray(c).resize((c.shape[1] * zoom, c.shape[0] * zoom), Image.NEAREST) for c in crops]
    try:
        font = ImageFont.load_default(size=18)
    except TypeError:  # Pillow without FreeType sizes
        font = ImageFont.load_default()
    band = 28
    width = sum(t.width for t in tiles) + gap * (len(tiles) - 1)
    canvas = Image.new("RGB", (width, max(t.height for t in tiles) + band), "white")
    draw = ImageDraw.Draw(canvas)
    x = 0
    for tile, label in zip(tiles, labels):
        canvas.paste(tile, (x, band))
        text_width = draw.textlength(label, font=font)
        draw.text((x + (tile.width - text_width) / 2, 4), label, fill="black", font=font)
        x += tile.width + gap
    return canvas


def caption(report: dict) -> str:
    """The README's caption of the picture, from a ``--json`` report."""
    steps, size = report["steps"], report["crop"][2]
    bicubic, mzsr = report["psnr_y"]["bicubic"], report["psnr_y"][f"mzsr{steps}"]
    return (
        f"*Left to right: bicubic ({bicubic:.2f} dB), MZSR({steps}) ({mzsr:.2f} dB) and the original (HR):"
        f" scikit-image's {report['photo']} degraded with {report['kernel']} at ×{report['scale']}, shipped weights"
        f" `{report['weights']}`, {report['precision']} updates; PSNR-Y of the whole image, a {size}² crop enlarged"
        f" {report['zoom']}×.*"
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, help="the PNG to write")
    p.add_argument("--json", type=Path, help="write the PSNRs and settings here")
    p.add_argument("--caption", type=Path, metavar="JSON", help="print the caption of an earlier --json")
    args = p.parse_args(argv)
    if args.caption:
        print(caption(json.loads(args.caption.read_text())))
        return 0
    if not args.out:
        p.error("give --out PNG (or --caption JSON)")
    result = images()
    top, left, size = CROP
    crops = [image[top : top + size, left : left + size] for image in result["images"]]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    side_by_side(crops).save(args.out, optimize=True)
    report = {
        "photo": PHOTO,
        "kernel": KERNEL,
        "scale": SCALE,
        "steps": STEPS,
        "weights": PRESET,
        "crop": list(CROP),
        "zoom": ZOOM,
        "precision": result["precision"],
        "psnr_y": result["psnr_y"],
    }
    print(caption(report))
    if args.json:
        from benchmarks.common import save_json

        save_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
