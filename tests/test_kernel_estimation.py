"""Blind kernel estimation: DIV2KRK kernels, the ×4 composition, the estimator's properties and training."""

import math

import numpy as np
import pytest
import tensorflow as tf

from mzsr_tf import kernel_estimation as ke
from mzsr_tf.degradation import degrade
from mzsr_tf.errors import InputError
from mzsr_tf.kernels import (
    blind_offset,
    compose_x4,
    gaussian_from_covariance,
    gaussian_kernel,
    kernel_moments,
    load_kernel,
    sample_blind_kernel,
)


def test_blind_kernels_are_seeded_normalised_and_block_centred():
    a = sample_blind_kernel(tf.constant([3, 4]), 11).numpy()
    b = sample_blind_kernel(tf.constant([3, 4]), 11).numpy()
    c = sample_blind_kernel(tf.constant([3, 5]), 11).numpy()
    assert np.array_equal(a, b) and not np.allclose(a, c)
    assert a.shape == (11, 11) and a.min() >= 0 and abs(a.sum() - 1) < 1e-6
    means = [kernel_moments(sample_blind_kernel(tf.constant([0, n]), 11, (0.6, 1.0), 0.0))[0].numpy() for n in range(5)]
    np.testing.assert_allclose(means, 0.5, atol=0.02)  # narrow kernels: the mean is the offset


def test_x4_kernel_is_two_x2_steps_with_5x_covariance_and_3x_offset():
    k = sample_blind_kernel(tf.constant([1, 2]), 11)
    k4 = compose_x4(k)
    assert k4.shape == (31, 31)
    hr = tf.random.stateless_uniform([1, 96, 96, 3], [0, 1])
    twice, once = degrade(degrade(hr, k, 2), k, 2), degrade(hr, k4, 4)
    np.testing.assert_allclose(twice[:, 6:-6, 6:-6], once[:, 6:-6, 6:-6], atol=1e-5)
    (m2, c2), (m4, c4) = kernel_moments(k), kernel_moments(k4)
    np.testing.assert_allclose(m4, 3 * m2, atol=1e-6)
    np.testing.assert_allclose(c4, 5 * c2, atol=1e-6)


def test_gaussian_from_covariance_has_that_covariance_and_offset():
    cov = np.array([[2.0, 0.7], [0.7, 1.2]])
    k = gaussian_from_covariance(cov, 31, offset=0.5)
    mean, got = kernel_moments(k)
    np.testing.assert_allclose(mean, [0.5, 0.5], atol=1e-6)
    np.testing.assert_allclose(got, cov, atol=1e-4)
    np.testing.assert_allclose(gaussian_kernel(2.0, 2.0, 0.0, 21), gaussian_from_covariance(2 * np.eye(2), 21))


@pytest.mark.parametrize("scale", [2, 4])
def test_estimated_kernels_hold_their_gaussian_and_sit_at_the_block_centre(scale):
    cov = np.array([[5.0, -1.0], [-1.0, 3.0]]) * (5 if scale == 4 else 1)
    k = ke.kernel_from_covariance(cov, scale).numpy()
    mean, got = kernel_moments(k)
    np.testing.assert_allclose(mean, blind_offset(scale), atol=0.05)
    np.testing.assert_allclose(got, cov, rtol=0.08, atol=0.05)
    assert k.shape == (ke.blind_kernel_size(scale),) * 2 and k.shape[0] % 2 == 1


def test_estimate_eigen_decomposition_gives_the_paper_parameters():
    cov = gaussian_kernel(4.0, 1.0, -0.5, 41)
    _, c = kernel_moments(cov)
    est = ke.KernelEstimate(cov.numpy(), c.numpy(), 2)
    l1, l2, theta = est.eigen()
    assert l1 == pytest.approx(4.0, rel=1e-3) and l2 == pytest.approx(1.0, rel=1e-3)
    assert theta == pytest.approx(math.pi - 0.5, abs=1e-3)  # θ = -0.5 modulo π


def test_covariance_is_positive_definite_and_pooling_ignores_tile_order():
    params = ke.init_estimator(8, seed=1)
    tiles = tf.random.stateless_uniform([6, 24, 24, 1], [2, 3])
    cov = ke.estimate_covariance(params, tiles, groups=6)
    assert cov.shape == (1, 2, 2)
    assert np.all(np.linalg.eigvalsh(cov.numpy()) > 0)
    shuffled = ke.estimate_covariance(params, tf.gather(tiles, [5, 3, 1, 0, 2, 4]), groups=6)
    np.testing.assert_allclose(cov, shuffled, rtol=1e-5)
    per_tile = ke.estimate_covariance(params, tiles)
    assert per_tile.shape == (6, 2, 2)


def test_floor_raises_only_the_smallest_eigenvalue_to_the_floor():
    cov = tf.constant([[0.0015, 0.137], [0.137, 12.67]], tf.float64)  # nearly singular
    floored = ke.floor_covariance(cov, 0.2).numpy()
    low, high = np.linalg.eigvalsh(cov.numpy())
    np.testing.assert_allclose(np.linalg.eigvalsh(floored), [0.2, high + 0.2 - low], rtol=1e-9)
    wide = tf.constant([[2.0, 0.5], [0.5, 1.0]], tf.float64)
    np.testing.assert_array_equal(ke.floor_covariance(wide, 0.2), wide)  # already above: unchanged


@pytest.mark.parametrize("scale", [2, 4])
def test_a_degenerate_estimate_still_gives_a_finite_kernel(scale):
    """An estimator output far sharper than any training kernel along one axis (as aliased, unblurred photos gave)
    is floored to the narrowest training kernel, not turned into a kernel of NaNs."""
    params = ke.init_estimator(8, seed=0)
    params[14] = tf.zeros_like(params[14])
    params[15] = tf.constant([-6.0, 0.5, 0.0])  # Cholesky head: Σ_LR ≈ diag(6e-6, 2.7)
    lr = tf.random.stateless_uniform([40, 40, 3], [1, 2])
    kernel, cov = ke.estimate_graph(params, lr, scale)
    assert np.all(np.isfinite(kernel.numpy())) and abs(float(tf.reduce_sum(kernel)) - 1) < 1e-5
    assert np.linalg.eigvalsh(cov.numpy())[0] == pytest.approx(ke.narrowest_variance(scale), rel=1e-6)


def test_a_few_adam_steps_fit_one_batch():
    """The loss reaches the weights: fitting a fixed batch lowers it."""
    params = [tf.Variable(p) for p in ke.init_estimator(8, seed=0)]
    x = tf.random.stateless_uniform([4, 24, 24, 1], [0, 0])
    x = tf.nn.avg_pool2d(x, [1, 2, 2, 1], 1, "SAME") * tf.constant([1.0, 1.0, 0.5, 0.5])[:, None, None, None]
    true = tf.constant([[[0.5, 0.1], [0.1, 0.3]], [[1.0, 0.0], [0.0, 1.0]], [[0.2, 0.0], [0.0, 0.6]],
                        [[0.8, -0.2], [-0.2, 0.4]]])  # fmt: skip
    opt = tf.keras.optimizers.Adam(3e-3)
    losses = []
    for _ in range(60):
        with tf.GradientTape() as tape:
            loss = ke.covariance_loss(ke.estimate_covariance(params, x), true)
        opt.apply_gradients(zip(tape.gradient(loss, params), params))
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]


def test_log_eigen_loss_is_the_affine_invariant_l1_of_the_covariance_error():
    """|log μ1| + |log μ2| of Σ_true⁻¹ Σ_pred: zero at the truth, the same for any rotation of both, and an error
    on the narrow axis of an anisotropic kernel counts as much as the same relative error on the wide one."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 2)), rng.normal(size=(2, 2))
    true, pred = a @ a.T + 0.1 * np.eye(2), b @ b.T + 0.1 * np.eye(2)
    mu = np.linalg.eigvals(np.linalg.solve(true, pred)).real
    loss = ke.log_eigen_loss(tf.constant([pred], tf.float32), tf.constant([true], tf.float32))
    assert float(loss) == pytest.approx(np.abs(np.log(mu)).sum(), rel=1e-4)
    rot = np.array([[math.cos(0.7), -math.sin(0.7)], [math.sin(0.7), math.cos(0.7)]])
    turned = ke.log_eigen_loss(
        tf.constant([rot @ pred @ rot.T], tf.float32), tf.constant([rot @ true @ rot.T], tf.float32)
    )
    assert float(turned) == pytest.approx(float(loss), rel=1e-4)
    narrow = tf.constant([[[4.0, 0.0], [0.0, 0.6]]])
    assert float(ke.log_eigen_loss(narrow, narrow)) == pytest.approx(0.0, abs=1e-5)
    wide_off = ke.log_eigen_loss(tf.constant([[[8.0, 0.0], [0.0, 0.6]]]), narrow)
    narrow_off = ke.log_eigen_loss(tf.constant([[[4.0, 0.0], [0.0, 1.2]]]), narrow)
    assert float(wide_off) == pytest.approx(float(narrow_off), rel=1e-5) == pytest.approx(math.log(2), rel=1e-5)
    # where the trace-relative L1 hardly sees the narrow axis's error
    narrow_relative = ke.covariance_loss(tf.constant([[[4.0, 0.0], [0.0, 1.2]]]), narrow)
    assert float(narrow_relative) < 0.2 * float(ke.covariance_loss(tf.constant([[[8.0, 0.0], [0.0, 0.6]]]), narrow))
    with tf.GradientTape() as tape:  # finite at the truth, where μ1 = μ2
        x = tf.Variable(narrow)
        at_truth = ke.log_eigen_loss(x, narrow)
    assert np.all(np.isfinite(tape.gradient(at_truth, x).numpy()))


def test_kernel_psnr_aligns_grid_centres():
    k = gaussian_kernel(2.0, 2.0, 0.0, 11).numpy()
    assert ke.kernel_psnr(k, k) == float("inf")
    padded = np.pad(k, 5)  # the same kernel on a larger grid
    assert ke.kernel_psnr(padded, k) == float("inf")
    assert ke.kernel_psnr(gaussian_kernel(1.0, 1.0, 0.0, 11).numpy(), k) < 60


def test_kernel_files_round_trip_and_never_overwrite(tmp_path):
    k = gaussian_kernel(3.0, 1.0, 0.3, 15).numpy()
    npy, png = ke.save_kernel_files(k, tmp_path / "k.npy", tmp_path / "k.png")
    np.testing.assert_allclose(load_kernel(npy), k / k.sum())
    assert png.stat().st_size > 0
    with pytest.raises(InputError, match="exists"):
        ke.save_kernel_files(k, tmp_path / "k.npy", tmp_path / "k2.png")


def test_estimator_weights_round_trip_and_refuse_other_files(tmp_path):
    params = ke.init_estimator(8, seed=2)
    path = ke.save_estimator(params, tmp_path / "e.npz")
    for a, b in zip(ke.load_estimator(path), params):
        np.testing.assert_array_equal(a, b)
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(InputError, match="not kernel estimator weights"):
        ke.load_estimator(tmp_path / "other.npz")
    with pytest.raises(InputError, match="cannot read"):
        ke.load_estimator(tmp_path / "missing.npz")


def test_photo_tiles_cover_the_photo_in_order_and_cap_their_number():
    y = tf.reshape(tf.range(96 * 144, dtype=tf.float32), [96, 144, 1])
    tiles = ke.photo_tiles(y, 48)
    assert tiles.shape == (6, 48, 48, 1)
    np.testing.assert_array_equal(tiles[4], y[48:96, 48:96])
    assert ke.photo_tiles(y, 48, max_tiles=2).shape[0] == 2
    assert ke.photo_tiles(y[:20, :30], 48).shape == (1, 20, 20, 1)  # smaller than a tile: one smaller tile


def test_the_estimate_reads_the_most_textured_share_of_tiles_in_order():
    rng = np.random.default_rng(0)
    flat = [np.full((8, 8, 1), 0.5) + rng.normal(0, 0.002, (8, 8, 1)) for _ in range(4)]
    textured = [rng.uniform(0, 1, (8, 8, 1)), np.kron(rng.uniform(0, 1, (4, 4, 1)), np.ones((2, 2, 1)))]
    tiles = tf.constant(np.stack([flat[0], textured[0], flat[1], flat[2], textured[1], flat[3]]), tf.float32)
    np.testing.assert_array_equal(ke.textured_tiles(tiles, 1 / 3), tf.gather(tiles, [1, 4]))
    np.testing.assert_array_equal(ke.textured_tiles(tiles, 0.01), tiles[1:2])  # at least one: the most textured
    np.testing.assert_array_equal(ke.textured_tiles(tiles, 1.0), tiles)
    # a photo's flat part (a wall, sky) leaves the estimate of its textured part unchanged
    params = ke.init_estimator(8, seed=3)
    photo = tf.random.stateless_uniform([96, 96, 3], [4, 5])
    wall = tf.round((0.5 + tf.random.stateless_normal([192, 96, 3], [6, 7], stddev=0.002)) * 255) / 255
    alone = ke.estimate_covariance(params, ke.photo_tiles(ke.luminance(photo)), groups=4)[0] * 4  # its 4 tiles
    np.testing.assert_allclose(ke.estimate_graph(params, tf.concat([photo, wall], 0), 2)[1], alone, rtol=1e-5)


def test_estimate_kernel_runs_on_any_photo_size(astronaut64):
    params = ke.init_estimator(8, seed=3)
    for shape in [(20, 30), (64, 128)]:
        est = ke.estimate_kernel(astronaut64[: shape[0], : shape[1]].astype(np.float32), 2, params)
        assert est.kernel.ndim == 2 and abs(est.kernel.sum() - 1) < 1e-9
        assert np.all(np.linalg.eigvalsh(est.covariance) > 0)
    with pytest.raises(InputError, match="H x W x 3"):
        ke.estimate_kernel(np.zeros((8, 8)), 2, params)


def test_blind_estimator_picks_the_method_and_reads_weights_from_a_path(astronaut64, tmp_path):
    params = ke.init_estimator(8, seed=3)
    lr = astronaut64.astype(np.float32)
    path = ke.save_estimator(params, tmp_path / "e.npz")
    found = ke.blind_estimator("estimator", path)(lr, 2)
    np.testing.assert_allclose(found.covariance, ke.estimate_kernel(lr, 2, params).covariance, rtol=1e-6)
    assert found.degradation.subsample == "direct" and found.degradation.name == "estimated"
    np.testing.assert_array_equal(found.degradation.kernel, found.kernel)
    with pytest.raises(InputError, match="unknown blind method 'gan'"):
        ke.blind_estimator("gan")


def test_shipped_estimator_tells_sharp_from_blurred(astronaut_uint8):
    """The shipped weights order blurs and land near the true covariance (photo from scikit-image, not training)."""
    import skimage.data

    hr = skimage.data.astronaut().astype(np.float32) / 255.0
    params = ke.load_estimator(ke.default_estimator())
    found = {}
    for lam in (0.5, 2.0, 4.5):
        k = gaussian_kernel(lam, lam, 0.0, 21, offset=0.5)
        lr = np.round(degrade(hr, k, 2).numpy() * 255) / 255
        found[lam] = np.trace(ke.estimate_kernel(lr, 2, params).covariance) / 2
    assert found[0.5] < found[2.0] < found[4.5]
    assert found[2.0] == pytest.approx(2.0, rel=0.35) and found[4.5] == pytest.approx(4.5, rel=0.35)


@pytest.mark.parametrize("damage", ["jpeg75", "noise5"])
def test_shipped_estimator_gives_a_sensible_kernel_for_compressed_or_noisy_photos(damage):
    """Real photos (issue 17): a JPEG at quality 75 or an LR with noise σ = 5/255 still gives a blur near the true
    one, not a delta (the floor) or a blow-up (scikit-image photo, not a training one)."""
    import io

    import skimage.data
    from PIL import Image

    hr = skimage.data.coffee().astype(np.float32) / 255.0
    k = gaussian_kernel(2.5, 1.2, 0.6, 21, offset=0.5)
    lr = np.round(degrade(hr, k, 2).numpy() * 255) / 255
    if damage == "jpeg75":
        buffer = io.BytesIO()
        Image.fromarray(np.round(lr * 255).astype(np.uint8)).save(buffer, "JPEG", quality=75)
        lr = np.asarray(Image.open(buffer), np.float32) / 255
    else:
        lr = np.clip(np.round((lr + np.random.default_rng(0).normal(0, 5 / 255, lr.shape)) * 255) / 255, 0, 1)
    est = ke.estimate_kernel(lr.astype(np.float32), 2)
    small, large = np.linalg.eigvalsh(est.covariance)
    assert 1.2 / 2 < small < 1.2 * 2 and 2.5 / 2 < large < 2.5 * 2  # within a factor 2 of the true eigenvalues
    assert abs(est.kernel.sum() - 1) < 1e-9 and np.all(np.isfinite(est.kernel))
