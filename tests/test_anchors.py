"""Acceptance checks against the official MZSR artefacts in ../shared (skipped when it is absent)."""

from pathlib import Path

import numpy as np
import pytest

from mzsr_tf.degradation import degrade
from mzsr_tf.io import list_images, read_image
from mzsr_tf.kernels import Degradation, load_kernel, resolve_degradation
from mzsr_tf.metrics import modcrop, psnr_y, ssim_y, to_uint8

SHARED = Path(__file__).resolve().parents[2] / "shared"
ANCHORS = SHARED / "anchors" / "mzsr_testsets"
PRETRAINED = SHARED / "anchors" / "mzsr_pretrained" / "Pretrained"
pytestmark = pytest.mark.skipif(not ANCHORS.is_dir(), reason="../shared (official MZSR artefacts) not present")


def _set5():
    gts = list_images(ANCHORS / "GT" / "Set5")
    lrs = [ANCHORS / "Input" / "g20" / "Set5" / p.name.replace("_GT", "") for p in gts]
    return [(modcrop(read_image(g).rgb, 2), read_image(lr).rgb) for g, lr in zip(gts, lrs)]


def test_official_g20_lr_images_are_reproduced_bit_exactly():
    kernel = load_kernel(ANCHORS / "Input" / "g20" / "kernel.mat")
    np.testing.assert_allclose(kernel, resolve_degradation("g_d_2.0").kernel, atol=1e-15)
    for hr, lr in _set5():
        ours = to_uint8(degrade(hr.astype(np.float64), kernel, 2)).numpy()
        np.testing.assert_array_equal(ours, to_uint8(lr).numpy())


@pytest.mark.parametrize(
    "kernel,psnr,ssim", [("g_d_0.2", 30.24, 0.8976), ("g_d_2.0", 28.73, 0.8449), ("g_d_ani", 28.15, 0.8265),
                         ("g_b_1.3", 30.54, 0.8773)]
)  # fmt: skip
def test_paper_bicubic_column_on_set5(kernel, psnr, ssim):
    from mzsr_tf.imresize import upscale

    deg = resolve_degradation(kernel)
    psnrs, ssims = [], []
    for hr, _ in _set5():
        lr = to_uint8(degrade(hr.astype(np.float64), deg.kernel, 2, deg.subsample)).numpy() / 255.0
        sr = upscale(lr, 2, hr.shape[:2])
        psnrs.append(psnr_y(sr, hr, 2))
        ssims.append(ssim_y(sr, hr, 2))
    assert np.mean(psnrs) == pytest.approx(psnr, abs=0.01)
    assert np.mean(ssims) == pytest.approx(ssim, abs=0.001)


def test_port_matches_the_official_meta_test_on_the_pretrained_checkpoint():
    """Official code, official checkpoint, Set5 g^d_2.0: 0 / 1 / 10 updates = 29.1360 / 29.1421 / 29.1625 dB."""
    from mzsr_tf.weights import load_params
    from mzsr_tf.zero_shot import AdaptConfig, zero_shot_sr

    params = load_params(PRETRAINED)
    deg = Degradation(load_kernel(ANCHORS / "Input" / "g20" / "kernel.mat"), "direct")
    for steps, expected in ((0, 29.1360), (1, 29.1421), (10, 29.1625)):
        psnrs = [
            psnr_y(zero_shot_sr(params, lr, deg, 2, AdaptConfig.official(steps=steps), hr.shape[:2]).sr, hr, 2)
            for hr, lr in _set5()
        ]
        assert np.mean(psnrs) == pytest.approx(expected, abs=0.002), steps
