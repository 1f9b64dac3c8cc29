"""conditioning: φ(k) in closed form equals the eigen-decomposition's, θ(k) is θ + Σ φ_i V_i, and meta-training
learns V with θ frozen."""

import numpy as np
import pytest
import tensorflow as tf

from mzsr_tf.conditioning import (
    GIVEN_FEATURES,
    NOISE_BLIND_FEATURES,
    START_FEATURES,
    conditioned_start,
    log_covariance,
    start_features,
)
from mzsr_tf.kernels import LAMBDA_FLOOR, gaussian_kernel, kernel_moments, resolve_degradation


def _log_eigh(cov):
    e, v = np.linalg.eigh(np.asarray(cov, np.float64))
    return v @ np.diag(np.log(np.maximum(e, LAMBDA_FLOOR))) @ v.T


@pytest.mark.parametrize(
    "cov", [[[2.0, 0.0], [0.0, 2.0]], [[4.0, 1.5], [1.5, 1.0]], [[0.3, -0.1], [-0.1, 0.2]], [[0.0, 0.0], [0.0, 0.0]]]
)
def test_log_covariance_is_the_matrix_logarithm_with_floored_eigenvalues(cov):
    np.testing.assert_allclose(log_covariance(tf.constant(cov)), _log_eigh(cov), atol=2e-5)


def test_start_features_are_1_the_log_covariance_the_noise_level_and_their_products():
    k = resolve_degradation("g_d_ani").kernel
    f = start_features(k, 2.55 / 255).numpy()
    log = _log_eigh(kernel_moments(k, tf.float64)[1]) / 1.6
    a, b, c = log[0, 0], log[1, 1], log[0, 1]
    n = 2.55 / 5
    expected = [1, a, b, c, a * a, b * b, c * c, a * b, a * c, b * c, n, n * a, n * b, n * c, n * n, 0, 0, 0, 0]
    np.testing.assert_allclose(f, expected, atol=1e-4)
    assert f.shape == (START_FEATURES,)
    np.testing.assert_array_equal(start_features(k).numpy(), [*f[:NOISE_BLIND_FEATURES], *[0] * 9])  # clean
    # an estimated kernel: the flag u = 1 and u·(a, b, c) after the given kernel's features, which stay as they are
    blind = start_features(k, 2.55 / 255, estimated=True).numpy()
    np.testing.assert_allclose(blind, [*expected[:GIVEN_FEATURES], 1, a, b, c], atol=1e-4)
    # a kernel and its transpose differ only in the sign of c (orientation), a delta kernel (plain bicubic) is finite
    np.testing.assert_allclose(start_features(np.ascontiguousarray(k.T)).numpy()[[1, 2, 3]], f[[2, 1, 3]], atol=1e-5)
    assert np.all(np.isfinite(start_features(np.ones((1, 1), np.float32))))
    mirrored = start_features(gaussian_kernel(4.0, 1.0, 0.5, 15)).numpy()  # θ = +0.5: the mirror image
    np.testing.assert_allclose(mirrored[[1, 2, 3]], f[[1, 2, 3]] * [1, 1, -1], atol=1e-4)


def test_conditioned_start_is_theta_plus_the_features_times_the_basis():
    rng = np.random.default_rng(0)
    params = [tf.constant(rng.standard_normal(s), tf.float32) for s in [(3, 3, 3, 4), (4,)]]
    basis = [tf.constant(rng.standard_normal((START_FEATURES, *p.shape)), tf.float32) for p in params]
    f = tf.constant(rng.standard_normal(START_FEATURES), tf.float32)
    got = conditioned_start(params, basis, f)
    for p, v, g in zip(params, basis, got):
        np.testing.assert_allclose(g, p + np.tensordot(f.numpy(), v.numpy(), 1), atol=1e-5)
    assert conditioned_start(params, None, f) == params


def _basis(seed: int, scale: float = 2e-3) -> list:
    from mzsr_tf.model import param_shapes

    rng = np.random.default_rng(seed)
    return [tf.constant(scale * rng.standard_normal((START_FEATURES, *s)), tf.float32) for s in param_shapes()]


def test_meta_test_api_and_adapt_cli_start_from_theta_k(astronaut_uint8, tmp_path, capsys):
    """Weights carrying a basis: ``zero_shot_sr(start_basis=V)`` is MZSR from θ(k) for the image's kernel, and the
    API and adapt.py read V from the file and run exactly that."""
    from PIL import Image

    import mzsr_tf
    from mzsr_tf import cli
    from mzsr_tf.commands import adapt as adapt_cli
    from mzsr_tf.model import init_params
    from mzsr_tf.noise import noise_levels
    from mzsr_tf.weights import load_start_basis, save_params
    from mzsr_tf.zero_shot import AdaptConfig, zero_shot_sr

    params, basis = init_params(2), _basis(1)
    photo = np.ascontiguousarray(astronaut_uint8[64:, :60])
    lr = photo.astype(np.float32) / 255.0
    degradation = resolve_degradation("g_d_ani")
    config = AdaptConfig(steps=2)
    start = conditioned_start(params, basis, start_features(degradation.kernel, noise_levels(lr).feature))
    got = zero_shot_sr(params, lr, degradation, 2, config, start_basis=basis).sr
    np.testing.assert_array_equal(got, zero_shot_sr(start, lr, degradation, 2, config).sr)
    assert np.abs(got - zero_shot_sr(params, lr, degradation, 2, config).sr).max() > 1e-3  # V moved the start

    weights = save_params(params, tmp_path / "c.weights.h5", start_basis=basis)
    stored = load_start_basis(weights)  # 4-bit codes on disk
    api = mzsr_tf.ZeroShotSR.from_weights(weights).super_resolve(lr, "g_d_ani", 2)
    np.testing.assert_allclose(api, zero_shot_sr(params, lr, degradation, 2, config, start_basis=stored).sr, atol=1e-6)
    Image.fromarray(photo).save(tmp_path / "in.png")
    argv = ["--weights", weights, "--kernel", "g_d_ani", "--steps", "2", "--precision", "auto"]
    argv += ["--out", tmp_path / "out.png", tmp_path / "in.png"]
    assert cli.run(adapt_cli.main, [str(a) for a in argv]) == 0, capsys.readouterr().err
    from mzsr_tf.metrics import to_uint8

    expected = to_uint8(zero_shot_sr(params, lr, degradation, 2, config, start_basis=stored).sr).numpy()
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out.png")), expected)


def test_a_noise_blind_basis_is_read_with_zero_noise_rows(tmp_path):
    """Weights conditioned on the kernel alone (``NOISE_BLIND_FEATURES`` rows) load as a full basis whose noise
    rows are 0, so a noisy photo starts where a clean one would; a wrong number of rows is refused."""
    from mzsr_tf.errors import InputError
    from mzsr_tf.model import init_params
    from mzsr_tf.weights import load_start_basis, save_params

    kernel_only = [b[:NOISE_BLIND_FEATURES] for b in _basis(2)]
    path = save_params(init_params(2), tmp_path / "k.weights.h5", start_basis=kernel_only)
    loaded = load_start_basis(path)
    for b, v in zip(kernel_only, loaded):
        assert v.shape == (START_FEATURES, *b.shape[1:])
        b = np.asarray(b)
        step = np.abs(b).reshape(len(b), -1, b.shape[-1]).max(axis=1) / 7  # 4-bit codes on disk
        error = np.abs(np.asarray(v[:NOISE_BLIND_FEATURES]) - b).reshape(len(b), -1, b.shape[-1])
        assert np.all(error <= step[:, None])
        np.testing.assert_array_equal(v[NOISE_BLIND_FEATURES:], 0.0)
    with pytest.raises(InputError, match="start_basis has shape"):
        save_params(init_params(2), tmp_path / "bad.weights.h5", start_basis=[b[:4] for b in _basis(2)])


def test_an_estimated_kernel_starts_from_the_rows_for_estimates_and_a_given_one_does_not(astronaut_uint8):
    """The start's rows for estimated kernels (u, u·(a, b, c)) act only when the degradation is flagged estimated,
    as ``KernelEstimate.degradation`` flags the estimator's (not KernelGAN's): a given kernel starts where
    weights without those rows start, bit for bit."""
    from mzsr_tf.kernel_estimation import KernelEstimate
    from mzsr_tf.kernels import Degradation
    from mzsr_tf.model import init_params
    from mzsr_tf.zero_shot import AdaptConfig, zero_shot_sr

    params = init_params(3)
    basis = _basis(4)
    given_only = [tf.concat([b[:GIVEN_FEATURES], tf.zeros_like(b[GIVEN_FEATURES:])], 0) for b in basis]
    lr = astronaut_uint8[:40, :40].astype(np.float32) / 255.0
    k = resolve_degradation("g_d_2.0").kernel
    config = AdaptConfig(steps=0)

    def sr(degradation, b):
        return zero_shot_sr(params, lr, degradation, 2, config, start_basis=b).sr

    np.testing.assert_array_equal(sr(Degradation(k), basis), sr(Degradation(k), given_only))
    assert (
        np.abs(sr(Degradation(k, estimated=True), basis) - sr(Degradation(k, estimated=True), given_only)).max() > 1e-3
    )
    estimate = KernelEstimate(k, np.eye(2) * 2.0, 2)
    assert (
        estimate.degradation.estimated and not KernelEstimate(k, np.eye(2), 2, method="kernelgan").degradation.estimated
    )


def test_weights_store_only_the_rows_a_start_learned(tmp_path):
    """A basis whose rows for estimated kernels are 0 is stored with the given kernel's rows alone (weights stay as
    small as before), one that learned them with all; both load as the full basis."""
    import h5py

    from mzsr_tf.model import init_params
    from mzsr_tf.weights import START_CODES, load_start_basis, save_params

    basis = _basis(5)
    given_only = [tf.concat([b[:GIVEN_FEATURES], tf.zeros_like(b[GIVEN_FEATURES:])], 0) for b in basis]
    for b, rows in ((given_only, GIVEN_FEATURES), (basis, START_FEATURES)):
        path = save_params(init_params(2), tmp_path / f"{rows}.weights.h5", start_basis=b)
        with h5py.File(path, "r") as f:
            assert f[START_CODES].shape[0] == rows
        loaded = load_start_basis(path)
        assert loaded[0].shape[0] == START_FEATURES
        assert bool(np.any(np.asarray(loaded[3])[GIVEN_FEATURES:])) == (rows == START_FEATURES)
