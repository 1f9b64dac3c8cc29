"""KernelGAN: G's collapse into one kernel, the priors, the official schedule and post-processing, a short run."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from mzsr_tf import kernelgan as kg
from mzsr_tf.errors import InputError
from mzsr_tf.imresize import downscale
from mzsr_tf.kernel_estimation import blind_estimator
from mzsr_tf.kernels import blind_offset, gaussian_kernel, kernel_moments


def test_generator_is_one_correlation_with_its_kernel_then_every_second_pixel():
    g = [w * 30 for w in kg.init_generator(seed=3)]  # larger than the init, so the check is not near zero
    x = tf.random.stateless_normal([3, 64, 64, 1], [0, 1])
    k = kg.generator_kernel(g)
    assert k.shape == (kg.kernel_size(), kg.kernel_size()) == (13, 13)
    out = kg.generate(g, x)
    assert out.shape == (3, 26, 26, 1)
    np.testing.assert_allclose(out, tf.nn.conv2d(x, k[:, :, None, None], 2, "VALID"), rtol=1e-4, atol=1e-3)
    assert not np.allclose(k, tf.reverse(k, [0, 1]), atol=1e-3)  # not symmetric: a flipped readout would fail


def test_initial_weights_are_what_the_official_networks_train_from():
    g = kg.init_generator()
    np.testing.assert_allclose(np.std(g[1]), 0.1 * np.sqrt(2 / (25 * 128)), rtol=0.05)  # xavier_normal_, gain 0.1
    d, us = kg.init_discriminator()
    for w in (d[0], d[2], d[-2]):  # spectral-norm convolutions keep PyTorch's default U(±1/√fan_in)
        bound = 1 / np.sqrt(np.prod(w.shape[:3]))
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
    assert len(us) == 7 and all(abs(np.linalg.norm(u) - 1) < 1e-6 for u in us)


def test_bicubic_prior_is_matlabs_half_bicubic_of_each_channel():
    rgb = tf.random.stateless_uniform([64, 64, 3], [2, 3])
    g_in = tf.transpose(rgb, [2, 0, 1])[..., None]
    matlab = tf.transpose(downscale(rgb, 2), [2, 0, 1])[..., None]  # 32², per channel
    assert kg.bicubic_prior(g_in, matlab[:, 3:29, 3:29]) < 1e-10
    assert kg.bicubic_prior(g_in, matlab[::-1, 3:29, 3:29]) > 1e-3  # channels are not mixed or swapped


def test_priors_vanish_for_a_normalised_central_kernel_and_not_otherwise():
    k = gaussian_kernel(1.5, 1.0, 0.3, 13, offset=blind_offset(2))  # mean half a pixel past the centre
    sum2one, boundaries, centralized, _ = kg.constraint_losses(tf.cast(k, tf.float32)).numpy()
    assert sum2one < 1e-5 and boundaries < 1e-3 and centralized < 1e-6
    moved = kg.constraint_losses(tf.roll(tf.cast(k, tf.float32), 3, 1)).numpy()
    assert moved[1] > 10 * boundaries and moved[2] > 1.0
    assert kg.constraint_losses(tf.cast(k, tf.float32) * 2).numpy()[0] == pytest.approx(1.0, abs=1e-5)


def test_post_processing_cuts_small_values_and_centres_like_kernel_shift():
    rng = np.random.default_rng(0)
    k = np.asarray(gaussian_kernel(2.0, 2.0, 0.0, 13, offset=-1.0)) + rng.uniform(0, 2e-3, (13, 13))
    out = kg.post_process(k, n=40)
    assert out.shape[0] % 2 == 1 and abs(out.sum() - 1) < 1e-3
    mean = kernel_moments(out)[0].numpy()
    np.testing.assert_allclose(mean, blind_offset(2), atol=0.02)
    c = out.shape[0] // 2
    assert np.abs(out).sum() - np.abs(out[c - 4 : c + 6, c - 4 : c + 6]).sum() < 0.01  # the floor (~0.1 there) is cut


def test_schedule_follows_the_official_learner():
    s = kg.Schedule(kg.KernelGANConfig())
    for it in range(3):  # iteration 0 is not counted
        s.update(it, 0.1)
    assert not s.close
    s.update(3, 0.1)
    assert s.close and s.lambda_bicubic == 5.0
    for it in range(4, 801):
        s.update(it, 0.1)
        if it == 200:
            assert s.lambda_bicubic == pytest.approx(0.05) and not s.constraints_on
        if it == 400:
            assert s.lambda_bicubic == pytest.approx(5e-4) and s.constraints_on
    assert s.lambda_bicubic == pytest.approx(5e-6) and s.learning_rate == pytest.approx(2e-5)
    assert s.weights() == pytest.approx([5e-6, 0.5, 0.5, 1.0, 5.0])
    t = kg.Schedule(kg.KernelGANConfig())
    for it in range(1, 10):
        t.update(it, 0.1 if it % 3 else 0.9)  # never three in a row below 0.4
    assert not t.close


def test_crops_follow_the_gradients():
    img = np.zeros((120, 160, 3))
    img[:, 120:] = np.random.default_rng(1).uniform(size=(120, 40, 3))  # texture only on the right
    g, d = kg.crop_centres(img, 200, 64, 26, np.random.default_rng(0))
    assert np.mean(d % 160 >= 100) > 0.95 and np.mean(g % 160 >= 90) > 0.95


@pytest.mark.parametrize("scale", [2, 4])
def test_a_short_run_gives_a_normalised_block_centred_kernel(scale, monkeypatch):
    short = dataclasses.replace(kg.DEFAULT, iterations=4)
    monkeypatch.setattr(kg, "DEFAULT", short)
    img = downscale(tf.random.stateless_uniform([200, 200, 3], [4, 5]), 2).numpy().clip(0, 1)
    est = kg.run_kernelgan(img, scale)
    assert est.method == "kernelgan" and est.scale == scale
    assert np.isfinite(est.kernel).all() and abs(est.kernel.sum() - 1) < 1e-6 and est.kernel.shape[0] % 2 == 1
    np.testing.assert_allclose(kernel_moments(est.kernel)[0], blind_offset(scale), atol=0.05)
    assert est.as_dict()["method"] == "kernelgan"
    by_name = blind_estimator("kernelgan")(img, scale)  # the blind-method switch runs the same (seeded) GAN
    np.testing.assert_allclose(by_name.kernel, est.kernel, atol=1e-6)
    assert by_name.degradation.name == "kernelgan" and by_name.degradation.subsample == "direct"


def test_bad_inputs_are_refused():
    with pytest.raises(InputError, match="at least 84"):
        kg.run_kernelgan(np.zeros((80, 200, 3)))
    with pytest.raises(InputError, match="x3"):
        kg.run_kernelgan(np.zeros((100, 100, 3)), 3)
    with pytest.raises(InputError, match="H x W x 3"):
        kg.run_kernelgan(np.zeros((100, 100)))
