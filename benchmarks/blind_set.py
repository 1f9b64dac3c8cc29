"""A DIV2KRK-style blind benchmark made from HR folders, reproducibly (KernelGAN paper; issue: blind SR).

Per image one random kernel from :func:`mzsr_tf.kernels.sample_blind_kernel` (11×11 anisotropic Gaussian,
λ1, λ2 ~ U[0.6, 5], θ ~ U[0, π), multiplicative kernel noise up to 0.25, mean at the block centre like
KernelGAN's ``kernel_shift``), seeded by (``--seed``, the image's name); LR = (HR ⊛ k)↓2 in uint8 levels.
×4 applies the ×2 step twice, i.e. the kernel ``compose_x4(k)`` (31×31) with direct ×4 subsampling.
``paper_table.py --kernels div2krk`` evaluates on these on the fly; this script also writes them out
(LR PNG, kernel .npy and .mat, HR) for tools that read files, such as KernelGAN.

    python -m benchmarks.blind_set --hr ../shared/datasets/test/BSD100/HR --scale 2 --out blind_x2
"""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

import numpy as np
import tensorflow as tf

from mzsr_tf import cli
from mzsr_tf.errors import InputError
from mzsr_tf.kernels import Degradation, compose_x4, sample_blind_kernel

NAME = "div2krk"
SEED = 1  # FKP / MetaKernelGAN make their DIV2K sets with seed 1
LAMBDA_RANGE = (0.6, 5.0)  # DIV2KRK


def kernel_draws(image_name: str, draws: int = 1) -> list[tuple[str, int]]:
    """(key, seed) of an image's ``draws`` benchmark kernels, seeds ``SEED``, ``SEED + 1``, ...: the key is the image's
    name for one draw, ``name@seed`` beyond (a held-out set of ``draws`` times as many cases)."""
    return [(image_name if draws == 1 else f"{image_name}@{seed}", seed) for seed in range(SEED, SEED + draws)]


def blind_degradation(image_name: str, scale: int, seed: int = SEED) -> Degradation:
    """The benchmark's kernel for one image (direct subsampling): the ×2 kernel, or at ×4 two ×2 steps of it."""
    if scale not in (2, 4):
        raise InputError(f"the DIV2KRK recipe has x2 and x4, not x{scale}")
    tf_seed = tf.constant([seed, zlib.crc32(image_name.encode()) % (2**31 - 1)], tf.int32)
    k = sample_blind_kernel(tf_seed, 11, LAMBDA_RANGE, 0.25, 0.5, tf.float64)
    if scale == 4:
        k = compose_x4(k)
    return Degradation(k.numpy(), "direct", NAME)


def main(argv=None) -> int:
    import scipy.io

    from benchmarks.paper_table import load_hr, make_lr
    from mzsr_tf.io import atomic_folder, list_images, write_image

    p = cli.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hr", required=True, type=Path, help="folder of HR images")
    p.add_argument("--scale", type=int, default=2, choices=(2, 4))
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--out", required=True, type=Path, help="new folder: lr/, hr/, kernels/ (whole or not at all)")
    args = p.parse_args(argv)
    if not args.hr.is_dir():
        raise InputError(f"{args.hr}: HR folder does not exist")
    with atomic_folder(args.out) as staging:
        for sub in ("lr", "hr", "kernels"):
            (staging / sub).mkdir()
        for path in list_images(args.hr):
            hr = load_hr(path, args.scale)
            deg = blind_degradation(path.name, args.scale, args.seed)
            lr = make_lr(hr, deg, args.scale)
            write_image(staging / "lr" / f"{path.stem}.png", lr.astype(np.float32) / 255.0)
            write_image(staging / "hr" / f"{path.stem}.png", hr.astype(np.float32) / 255.0)
            np.save(staging / "kernels" / f"{path.stem}.npy", deg.kernel)
            scipy.io.savemat(staging / "kernels" / f"{path.stem}.mat", {"Kernel": deg.kernel})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
