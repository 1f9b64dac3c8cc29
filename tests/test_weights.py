"""The shipped weights: present, loadable, finite, within the 1 MB budget, trained, and better than bicubic."""

import numpy as np
import pytest

from mzsr_tf.errors import InputError
from mzsr_tf.model import init_params
from mzsr_tf.weights import WEIGHTS_DIR, default_weights, load_params


@pytest.mark.parametrize("scale,subsample", [(2, "direct"), (2, "bicubic"), (4, "direct")])
def test_shipped_meta_weights_load_and_fit_the_budget(scale, subsample):
    path = default_weights(scale, subsample)
    assert path.stat().st_size <= 1_000_000
    params = load_params(path)
    assert len(params) == 16 and all(np.all(np.isfinite(p)) for p in params)
    # Trained, not an initialisation: biases moved away from zero.
    assert max(float(np.abs(p).max()) for p in params[1::2]) > 1e-3
    assert not np.allclose(params[0], init_params(0)[0])
    if scale != 2:  # its own network, not a copy of the x2 one
        assert not np.allclose(params[0], load_params(default_weights(2, subsample))[0])


def test_missing_shipped_weights_say_what_exists():
    with pytest.raises(InputError, match="mzsr_x2_bicubic.weights.h5, mzsr_x2_direct.weights.h5, mzsr_x4_direct"):
        default_weights(3, "direct")
    assert (WEIGHTS_DIR / "pretrained_x2_direct.weights.h5").is_file()


@pytest.mark.parametrize(
    "kernel,steps,gain,scale",
    [
        ("g_d_2.0", 0, 3.0, 2),  # the paper's headline kernel: far above bicubic before any update
        ("g_d_ani", 1, 2.5, 2),
        ("g_d_0.2", 10, 1.5, 2),  # a nearly sharp kernel: within the weights' range, not below bicubic
        ("g_d_2.0", 10, 2.5, 4),  # the paper's x4 kernel, with the x4 θ_M (measured +3.25)
    ],
)
def test_shipped_meta_weights_beat_bicubic_on_a_photo(astronaut_uint8, kernel, steps, gain, scale):
    """MZSR(steps) with the shipped θ_M on an LR photo made with a paper kernel: PSNR-Y gain over bicubic (dB)."""
    from benchmarks.paper_table import make_lr
    from mzsr_tf.imresize import upscale
    from mzsr_tf.kernels import resolve_degradation
    from mzsr_tf.metrics import psnr_y
    from mzsr_tf.zero_shot import AdaptConfig, zero_shot_sr

    hr = astronaut_uint8
    degradation = resolve_degradation(kernel)
    lr = make_lr(hr, degradation, scale).astype(np.float32) / 255  # as the benchmark tables make it
    bicubic = psnr_y(upscale(lr[None], scale, hr.shape[:2])[0].numpy(), hr, border=scale)
    params = load_params(default_weights(scale))
    result = zero_shot_sr(params, lr, degradation, scale, AdaptConfig(steps=steps), hr.shape[:2])
    assert psnr_y(result.sr, hr, border=scale) > bicubic + gain


@pytest.mark.parametrize("kernel,gain", [("g_d_2.0", 0.1), ("g_b_1.3", 1.0)])
def test_default_adaptation_beats_the_official_schedule(astronaut_uint8, kernel, gain):
    """Ten default (Adam) updates of the shipped θ_M beat ten official SGD ones on a held-out photo (dB)."""
    from benchmarks.paper_table import make_lr
    from mzsr_tf.kernels import resolve_degradation
    from mzsr_tf.metrics import psnr_y
    from mzsr_tf.zero_shot import AdaptConfig, zero_shot_sr

    hr = astronaut_uint8
    degradation = resolve_degradation(kernel)
    lr = make_lr(hr, degradation, 2).astype(np.float32) / 255
    params = load_params(default_weights())
    psnr = {
        name: psnr_y(zero_shot_sr(params, lr, degradation, 2, config).sr, hr, border=2)
        for name, config in (("default", AdaptConfig()), ("official", AdaptConfig.official()))
    }
    assert psnr["default"] > psnr["official"] + gain, psnr


def test_bicubic_model_serves_bicubic_subsampling(astronaut_uint8):
    """g^b_1.3 (blur, then MATLAB bicubic ↓), no update: the bicubic θ_M against bicubic and the direct θ_M (dB)."""
    from benchmarks.paper_table import make_lr
    from mzsr_tf.imresize import upscale
    from mzsr_tf.kernels import resolve_degradation
    from mzsr_tf.metrics import psnr_y
    from mzsr_tf.zero_shot import AdaptConfig, zero_shot_sr

    hr = astronaut_uint8
    degradation = resolve_degradation("g_b_1.3")
    lr = make_lr(hr, degradation, 2).astype(np.float32) / 255
    psnr = {"upsampling": psnr_y(upscale(lr[None], 2, hr.shape[:2])[0].numpy(), hr, border=2)}
    for subsample in ("direct", "bicubic"):
        result = zero_shot_sr(load_params(default_weights(2, subsample)), lr, degradation, 2, AdaptConfig(steps=0))
        psnr[subsample] = psnr_y(result.sr, hr, border=2)
    assert psnr["bicubic"] > psnr["upsampling"] + 2.0 and psnr["bicubic"] > psnr["direct"] + 2.0, psnr
