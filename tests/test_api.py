"""The Python API (``mzsr_tf.super_resolve``, ``mzsr_tf.from_preset``): the same SR as the library path."""

import numpy as np
import pytest

import mzsr_tf
from mzsr_tf.errors import InputError
from mzsr_tf.kernels import resolve_degradation
from mzsr_tf.model import init_params
from mzsr_tf.weights import save_params
from mzsr_tf.zero_shot import AdaptConfig, zero_shot_sr


@pytest.fixture(scope="module")
def photo(astronaut_uint8):
    return np.ascontiguousarray(astronaut_uint8[:40, :36])


def test_readme_example_runs_on_the_shipped_weights(photo):
    sr = mzsr_tf.super_resolve(photo, kernel="g_d_2.0", steps=1, scale=2)
    assert sr.dtype == np.uint8 and sr.shape == (80, 72, 3)
    model = mzsr_tf.from_preset("mzsr_x2_direct")
    np.testing.assert_array_equal(model.super_resolve(photo, kernel="g_d_2.0", steps=1), sr)
    blind = mzsr_tf.super_resolve(photo, steps=1, scale=2)
    assert blind.shape == sr.shape and not np.array_equal(blind, sr)


def test_equals_the_library_path_and_keeps_the_input_type(photo, tmp_path):
    weights = save_params(init_params(3), tmp_path / "w.weights.h5")
    lr = photo.astype(np.float32) / 255.0
    expected = zero_shot_sr(init_params(3), lr, resolve_degradation("g_d_ani"), 2, AdaptConfig(steps=2)).sr
    as_float = mzsr_tf.super_resolve(lr, kernel="g_d_ani", steps=2, weights=weights)
    assert as_float.dtype == np.float32
    np.testing.assert_allclose(as_float, expected, atol=1e-6)
    as_uint8 = mzsr_tf.super_resolve(photo, kernel="g_d_ani", steps=2, weights=weights)
    np.testing.assert_array_equal(as_uint8, np.floor(expected * 255 + 0.5).astype(np.uint8))
    gray = mzsr_tf.super_resolve(photo[..., 1], kernel=np.ones((3, 3)), steps=1, weights=weights)
    assert gray.shape == (80, 72) and gray.dtype == np.uint8


def test_learned_rates_are_the_default_update_rule(photo, tmp_path):
    rates = np.full([5, 16], 1e-2, np.float32)
    weights = save_params(init_params(4), tmp_path / "lslr.weights.h5", inner_lr=rates)
    model = mzsr_tf.ZeroShotSR.from_weights(weights)
    assert model.adapt_config(3).layer_rates is not None and model.adapt_config(3, optimizer="adam").optimizer == "adam"
    sgd = AdaptConfig.official(steps=3, learning_rates=(1e-2,), precision="auto", noise_sigma="auto", keep_best=True)
    expected = zero_shot_sr(init_params(4), photo / np.float32(255), resolve_degradation("g_d_2.0"), 2, sgd).sr
    np.testing.assert_allclose(model.super_resolve(photo / np.float32(255), "g_d_2.0", 3), expected, atol=2e-3)


def test_no_kernel_means_blind_sr_with_the_estimated_kernel(photo, tmp_path):
    from mzsr_tf.kernel_estimation import estimate_kernel

    weights = save_params(init_params(5), tmp_path / "w.weights.h5")
    lr = photo / np.float32(255)
    estimated = estimate_kernel(lr, 2).kernel
    blind = mzsr_tf.super_resolve(lr, steps=1, weights=weights)
    np.testing.assert_array_equal(blind, mzsr_tf.super_resolve(lr, kernel=estimated, steps=1, weights=weights))
    assert not np.array_equal(blind, mzsr_tf.super_resolve(lr, kernel="g_d_2.0", steps=1, weights=weights))


def test_kernelgan_kernel_is_kernelgans_estimate(astronaut_uint8, tmp_path, monkeypatch):
    import dataclasses

    from mzsr_tf import kernelgan

    monkeypatch.setattr(kernelgan, "DEFAULT", dataclasses.replace(kernelgan.DEFAULT, iterations=3))
    weights = save_params(init_params(5), tmp_path / "w.weights.h5")
    lr = np.ascontiguousarray(astronaut_uint8[:96, :90]) / np.float32(255)
    estimated = kernelgan.run_kernelgan(lr, 2).kernel
    sr = mzsr_tf.super_resolve(lr, kernel="kernelgan", steps=1, weights=weights)
    np.testing.assert_allclose(sr, mzsr_tf.super_resolve(lr, kernel=estimated, steps=1, weights=weights), atol=1e-5)
    assert not np.allclose(sr, mzsr_tf.super_resolve(lr, kernel="g_d_2.0", steps=1, weights=weights), atol=1e-3)
    with pytest.raises(InputError, match="at least 84"):
        mzsr_tf.super_resolve(lr[:80], kernel="kernelgan")


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda p: mzsr_tf.super_resolve(p[..., :2]), "H×W×3"),
        (lambda p: mzsr_tf.super_resolve(p.astype(np.int32)), "uint8 or float"),
        (lambda p: mzsr_tf.super_resolve(p * 2.0), r"in \[0, 1\]"),
        (lambda p: mzsr_tf.super_resolve(p, kernel="g_d_9"), "unknown kernel"),
        (lambda p: mzsr_tf.super_resolve(p, kernel="g_d_2.0", scale=3), "no shipped weights"),
        (lambda p: mzsr_tf.super_resolve(p, scale=3), "estimator knows x2 and x4"),
        (lambda p: mzsr_tf.super_resolve(p, method="edsr"), "method must be"),
        (lambda p: mzsr_tf.from_preset("mzsr_x8"), "unknown preset"),
    ],
)
def test_bad_calls_raise_one_clear_error(photo, call, message):
    with pytest.raises(InputError, match=message):
        call(photo)
