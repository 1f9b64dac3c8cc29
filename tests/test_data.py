"""Training data: pairs are what their docstrings say, and every batch is a pure function of (seed, step)."""

import numpy as np
import pytest
import tensorflow as tf

from mzsr_tf.data import bicubic_pairs, blind_pairs, kernel_pairs, kernel_tasks, zoomed
from mzsr_tf.errors import InputError
from mzsr_tf.imresize import downscale, upscale
from mzsr_tf.kernel_estimation import EstimatorConfig


def _first(ds, n=1):
    return [tuple(t.numpy() for t in b) for b in ds.take(n)]


def test_bicubic_pairs_are_uint8_quantised_matlab_bicubic(astronaut_uint8, chelsea_uint8):
    ((x, y),) = _first(bicubic_pairs([astronaut_uint8, chelsea_uint8], 3, 16, 2, seed=1))
    assert x.shape == y.shape == (3, 16, 16, 3)
    lr = tf.round(tf.clip_by_value(downscale(y, 2), 0, 1) * 255) / 255
    np.testing.assert_allclose(x, upscale(lr, 2, (16, 16)), atol=1e-6)
    np.testing.assert_array_equal(np.round(y * 255) / 255, y)  # HR patches are uint8 levels


def test_batches_are_a_pure_function_of_seed_and_step(astronaut_uint8):
    images = [astronaut_uint8]
    from_zero = _first(kernel_pairs(images, 2, 16, 2, seed=3), 3)[2]
    resumed = _first(kernel_pairs(images, 2, 16, 2, seed=3, start_step=2))[0]
    for a, b in zip(from_zero, resumed):
        np.testing.assert_array_equal(a, b)
    other_seed = _first(kernel_pairs(images, 2, 16, 2, seed=4, start_step=2))[0]
    assert not np.array_equal(other_seed[1], resumed[1])


def test_mixed_pairs_are_half_bicubic_half_random_kernels(astronaut_uint8, chelsea_uint8):
    images = [astronaut_uint8, chelsea_uint8]
    ((xm, ym),) = _first(kernel_pairs(images, 4, 16, 2, seed=2, bicubic=2))
    ((xb, yb),) = _first(bicubic_pairs(images, 4, 16, 2, seed=2))
    ((xk, yk),) = _first(kernel_pairs(images, 4, 16, 2, seed=2))
    np.testing.assert_array_equal(ym, yb)
    np.testing.assert_array_equal(ym, yk)
    np.testing.assert_allclose(xm[:2], xb[:2], atol=1e-6)
    np.testing.assert_allclose(xm[2:], xk[2:], atol=1e-6)
    assert np.abs(xm[2:] - xb[2:]).max() > 1e-2  # the kernel half really is blurred differently


def test_kernel_tasks_have_support_and_query_sets_per_task(astronaut_uint8):
    ((x_tr, y_tr, x_te, y_te, _, _),) = _first(kernel_tasks([astronaut_uint8], 3, 2, 16, 2, seed=0))
    assert x_tr.shape == y_tr.shape == x_te.shape == y_te.shape == (3, 2, 16, 16, 3)
    assert not np.array_equal(y_tr, y_te)


def test_kernel_tasks_min_variance_widens_p_k_towards_sharp_kernels(astronaut_uint8):
    def tasks(**kw):
        ((x_tr, y_tr, _, _, _, _),) = _first(kernel_tasks([astronaut_uint8], 4, 2, 32, 2, seed=1, **kw))
        return x_tr, y_tr

    x1, y = tasks()
    np.testing.assert_array_equal(tasks(min_variance=1.0)[0], x1)
    x02, y02 = tasks(min_variance=0.2)
    np.testing.assert_array_equal(y02, y)  # same patches, same uniforms: only the eigenvalues' range moved
    assert np.abs(x02 - y).mean() < 0.97 * np.abs(x1 - y).mean()  # sharper kernels: inputs closer to HR


def test_task_noise_makes_some_tasks_noisy_and_the_start_reads_it(astronaut_uint8):
    """``task_noise``: about half the tasks get LR noise σ ~ U[0, max]; the rest, the kernels and the HR patches are
    as without it, and the start's noise feature s (``conditioning.start_features``) rises on the noisy ones."""
    from mzsr_tf.conditioning import NOISE_UNIT

    def batches(**kw):
        return _first(kernel_tasks([astronaut_uint8], 4, 2, 32, 2, seed=3, **kw), n=3)

    noisy_tasks = 0
    for clean, noisy in zip(batches(), batches(task_noise=5 / 255)):
        np.testing.assert_array_equal(noisy[3], clean[3])  # HR
        np.testing.assert_array_equal(noisy[4], clean[4])  # the kernels' features
        np.testing.assert_array_equal(noisy[5][:, :10], clean[5][:, :10])  # the start's kernel features
        for t in range(4):
            if np.array_equal(noisy[0][t], clean[0][t]):
                assert noisy[5][t, 10] == clean[5][t, 10]
                continue
            noisy_tasks += 1
            assert noisy[5][t, 10] > clean[5][t, 10] and noisy[5][t, 10] < 1.5 * (5 / 255) / NOISE_UNIT
            lr = noisy[0][t]  # the input is bicubic↑ of a noisy LR on uint8 levels
            assert np.abs(lr - clean[0][t]).max() > 1.5 / 255
    assert 2 <= noisy_tasks <= 10  # of 12, each noisy with probability 1/2


def test_kernel_pairs_with_a_fixed_kernel_blur_every_patch_with_it(astronaut_uint8):
    """``kernel``: a non-blind pair set, every LR = bicubic↑(uint8((HR ⊛ k)↓s)) for the one k."""
    from mzsr_tf.degradation import degrade
    from mzsr_tf.kernels import resolve_degradation

    k = resolve_degradation("g_d_2.0").kernel
    ((x, y),) = _first(kernel_pairs([astronaut_uint8], 3, 16, 2, seed=5, kernel=k))
    ((x_random, y_random),) = _first(kernel_pairs([astronaut_uint8], 3, 16, 2, seed=5))
    np.testing.assert_array_equal(y, y_random)
    lr = tf.round(tf.clip_by_value(degrade(y, k, 2, "direct"), 0, 1) * 255) / 255
    np.testing.assert_allclose(x, upscale(lr, 2, (16, 16)), atol=1e-6)
    assert np.abs(x - x_random).max() > 1e-2


def test_blind_tasks_take_div2krk_style_kernels_and_leave_the_rest(astronaut_uint8):
    """``blind_tasks``: the first tasks' LR = bicubic↑(uint8((HR ⊛ k)↓2)) with k a block-centred DIV2KRK kernel
    (what blind SR estimates), up-sampled with k's phase as at meta-test; the other tasks are those of a batch
    without blind tasks."""
    from mzsr_tf.data import BLIND_KERNEL_NOISE, BLIND_KERNEL_SIZE, BLIND_LAMBDAS
    from mzsr_tf.degradation import degrade
    from mzsr_tf.kernels import blind_offset, kernel_offset, sample_blind_kernel

    ((x, y, xq, yq, _, _),) = _first(kernel_tasks([astronaut_uint8], 3, 2, 24, 2, seed=0, blind_tasks=2))
    ((x0, y0, _, _, _, _),) = _first(kernel_tasks([astronaut_uint8], 3, 2, 24, 2, seed=0))
    np.testing.assert_array_equal(y, y0)
    np.testing.assert_array_equal(x[2], x0[2])
    for t in range(2):
        seed = tf.constant([700 + t, 0], tf.int32)  # stream seed * 1000 + 700 + t, step 0
        k = sample_blind_kernel(seed, BLIND_KERNEL_SIZE, BLIND_LAMBDAS, BLIND_KERNEL_NOISE, blind_offset(2))
        for inputs, hr in ((x[t], y[t]), (xq[t], yq[t])):  # support and query share the task's kernel
            lr = tf.round(tf.clip_by_value(degrade(hr, k, 2, "direct"), 0, 1) * 255) / 255
            np.testing.assert_allclose(inputs, upscale(lr, 2, (24, 24), kernel_offset(k)), atol=1e-5)
            assert np.abs(kernel_offset(k) - 0.5).max() < 0.1
        assert np.abs(x[t] - x0[t]).max() > 1e-2


@pytest.mark.parametrize("support", ["external", "son"])
def test_bicubic_tasks_are_plain_bicubic_and_leave_the_rest(astronaut_uint8, support):
    """``bicubic_tasks``: the last tasks' LR = uint8(MATLAB-bicubic↓2(HR)), no blur (the meta-test's kernel
    'bicubic'), in the query and, for 'son' support, the son made the same way; the other tasks are unchanged."""
    from mzsr_tf.kernels import LAMBDA_FLOOR

    kw = dict(seed=0, subsample="bicubic", support=support)
    ((x, y, xq, yq, features, _),) = _first(kernel_tasks([astronaut_uint8], 3, 2, 24, 2, bicubic_tasks=1, **kw))
    ((x0, y0, _, yq0, _, _),) = _first(kernel_tasks([astronaut_uint8], 3, 2, 24, 2, **kw))
    np.testing.assert_array_equal(yq, yq0)
    np.testing.assert_array_equal(y[:2], y0[:2])
    np.testing.assert_array_equal(x[:2], x0[:2])
    assert np.abs(x[2] - x0[2]).max() > 1e-2
    np.testing.assert_allclose(features[2], [np.log(LAMBDA_FLOOR), 0.0], atol=1e-6)  # no blur: the floor
    lr = tf.round(tf.clip_by_value(downscale(yq[2], 2), 0, 1) * 255) / 255
    np.testing.assert_allclose(xq[2], upscale(lr, 2, (24, 24)), atol=1e-5)
    if support == "son":
        np.testing.assert_allclose(y[2], lr, atol=1e-6)
        np.testing.assert_allclose(x[2], _son(lr, np.ones((1, 1), np.float32), "bicubic", 2), atol=1e-5)
    else:
        lr_support = tf.round(tf.clip_by_value(downscale(y[2], 2), 0, 1) * 255) / 255
        np.testing.assert_allclose(x[2], upscale(lr_support, 2, (24, 24)), atol=1e-5)


@pytest.mark.parametrize("blind_tasks", [0, 1])
def test_son_support_trains_the_inner_loop_on_the_pairs_the_meta_test_makes(astronaut_uint8, blind_tasks):
    """``support='son'``: D_te is (bicubic↑(LR), HR) of the task's patches, D_tr is each of those LRs' own training
    pair (``zero_shot.training_pair``: bicubic↑(LR son) → LR, the son as noisy as σ̂ reads the LR), under the task's
    kernel, as the meta-test adapts; the start's features are the kernel's and σ̂'s."""
    from mzsr_tf.conditioning import start_features
    from mzsr_tf.kernels import kernel_features, kernel_offset
    from mzsr_tf.noise import noise_levels_graph

    ((x_tr, y_tr, x_te, y_te, features, start),) = _first(
        kernel_tasks([astronaut_uint8], 2, 3, 24, 2, seed=0, blind_tasks=blind_tasks, support="son")
    )
    assert x_tr.shape == y_tr.shape == (2, 3, 12, 12, 3) and x_te.shape == y_te.shape == (2, 3, 24, 24, 3)
    for t in range(2):
        # the query's LR is on uint8 levels and its own up-sampling is the query input
        lr = y_tr[t]
        np.testing.assert_allclose(lr * 255, np.round(lr * 255), atol=1e-4)
        offset = kernel_offset(_task_kernel(t, blind_tasks)) if t < blind_tasks else None
        np.testing.assert_allclose(x_te[t], upscale(lr, 2, (24, 24), offset), atol=1e-5)
        np.testing.assert_allclose(x_tr[t], _son(lr, _task_kernel(t, blind_tasks), "direct", t), atol=1e-5)
        sigma = noise_levels_graph(tf.concat(tf.unstack(lr), axis=1)).feature
        np.testing.assert_allclose(features[t], kernel_features(_task_kernel(t, blind_tasks)), atol=1e-6)
        np.testing.assert_allclose(start[t], start_features(_task_kernel(t, blind_tasks), sigma), atol=1e-6)
    ((_, _, x_ext, _, _, _),) = _first(kernel_tasks([astronaut_uint8], 2, 3, 24, 2, seed=0, blind_tasks=blind_tasks))
    assert x_ext.shape == (2, 3, 24, 24, 3)  # external support: twice the patches, half of them the query


def _son(lr, kernel, subsample: str, t: int):
    """The LR son of task ``t`` in the first batch of seed 0: ``zero_shot.training_pair``'s, as noisy as
    ``noise.noise_levels_graph(...).son`` reads the task's LR patches side by side."""
    from mzsr_tf.data import _blind_seed
    from mzsr_tf.noise import noise_levels_graph
    from mzsr_tf.zero_shot import training_pair

    sigma = noise_levels_graph(tf.concat(tf.unstack(lr), axis=1)).son
    return training_pair(lr, kernel, 2, subsample, sigma, _blind_seed(950 + t, 0))[0]


def _task_kernel(t: int, blind_tasks: int):
    """The kernel of task ``t`` in the first batch of seed 0 (streams as in ``data.kernel_tasks``)."""
    from mzsr_tf.data import BLIND_KERNEL_NOISE, BLIND_KERNEL_SIZE, BLIND_LAMBDAS
    from mzsr_tf.kernels import blind_offset, sample_blind_kernel, sample_kernel

    if t < blind_tasks:
        seed = tf.constant([700 + t, 0], tf.int32)
        return sample_blind_kernel(seed, BLIND_KERNEL_SIZE, BLIND_LAMBDAS, BLIND_KERNEL_NOISE, blind_offset(2))
    return sample_kernel(tf.constant([t, 0], tf.int32), 2, 15)


def test_zoomed_adds_shrunk_copies_and_patches_come_only_from_large_enough_ones(astronaut_uint8):
    """Scale augmentation: each zoom z > 1 adds the photo shrunk by z (antialiased MATLAB bicubic, uint8);
    a patch stream draws from the photos at least its size, so large patches still come from the full photo."""
    small = astronaut_uint8[:40, :60]
    out = zoomed([astronaut_uint8, small], (1, 2, 1.5))
    shapes = [astronaut_uint8.shape, small.shape, (86, 86, 3), (27, 40, 3), (64, 64, 3), (20, 30, 3)]
    assert [a.shape for a in out] == shapes  # factors in increasing order; MATLAB's ceil(size / z)
    np.testing.assert_array_equal(out[5], np.round(np.clip(downscale(small.astype(np.float32), 2), 0, 255)))
    assert out[4].dtype == np.uint8 and out[4].std() > 0
    for bad in (0.5, float("nan")):
        with pytest.raises(InputError, match="factors are >= 1"):
            zoomed([small], (bad,))
    # ×4 patches of 16 LR pixels need 64² HR: the ×3-shrunk copy (43²) serves only the ×2 stream
    ((lr, cov),) = _first(blind_pairs(zoomed([astronaut_uint8], (1, 3)), 4, 16, (2, 4)))
    assert lr.shape == (4, 1, 16, 16, 3) and cov.shape == (4, 2, 2)
    ((only_x2, _),) = _first(blind_pairs(zoomed([astronaut_uint8], (3,)), 2, 16, (2,)))
    assert only_x2.shape == (2, 1, 16, 16, 3)
    with pytest.raises(InputError, match="at least 64x64"):
        blind_pairs([small], 4, 16, (2, 4))


def test_blind_pairs_groups_are_patches_of_one_photo_under_one_kernel(astronaut_uint8):
    """``group``: each group's patches come from one photo and share one kernel (one Σ per group)."""
    grey = np.repeat(astronaut_uint8.mean(-1, keepdims=True).astype(np.uint8), 3, -1)  # R = G = B, blurred or not
    batches = _first(blind_pairs([grey, astronaut_uint8], 16, 16, (2,), group=4), 3)
    kinds = set()
    for lr, cov in batches:
        assert lr.shape == (4, 4, 16, 16, 3) and cov.shape == (4, 2, 2)
        for patches in lr:
            is_grey = [np.array_equal(p[..., 0], p[..., 1]) and np.array_equal(p[..., 1], p[..., 2]) for p in patches]
            assert len(set(is_grey)) == 1  # one photo per group
            kinds.add(is_grey[0])
    assert kinds == {True, False}  # both photos are drawn
    with pytest.raises(InputError, match="do not make groups of 3"):
        blind_pairs([astronaut_uint8], 8, 16, (2,), group=3)


def test_soften_blurs_the_photo_but_not_the_target(astronaut_uint8):
    """``soften``: the same patches and kernels, the HR first blurred (a photo's own softness): every LR is softer,
    and the covariance to estimate is the kernel's alone."""

    def energy(lr):  # mean squared horizontal difference per patch
        return np.mean(np.diff(np.asarray(lr, np.float64), axis=-2) ** 2, axis=(1, 2, 3, 4))

    ((sharp, cov),) = _first(blind_pairs([astronaut_uint8], 8, 16, (2, 4)))
    ((soft, soft_cov),) = _first(blind_pairs([astronaut_uint8], 8, 16, (2, 4), soften=3.0))
    np.testing.assert_array_equal(cov, soft_cov)
    assert np.all(energy(soft) < energy(sharp))
    with pytest.raises(InputError, match="soften"):
        EstimatorConfig(soften=-1.0)


def test_blind_context_runs_blind_tasks_as_blind_sr_on_a_crop(astronaut_uint8):
    """``blind_context``: a blind task degrades one larger crop, its patches are cut from the crop and its LR at
    aligned corners (direct subsampling keeps HR pixel s·i), and the estimator's reading of the crop's whole LR
    stands for the kernel everywhere (the son, the phase, the features, flagged estimated); σ̂ is read off the crop's
    LR too. The given-kernel task is unchanged."""
    from mzsr_tf.conditioning import GIVEN_FEATURES, start_features
    from mzsr_tf.data import _blind_kernel_lr, _blind_seed, _patch_dataset, _task_noise
    from mzsr_tf.kernel_estimation import default_estimator, estimate_graph, load_estimator
    from mzsr_tf.kernels import kernel_features, kernel_offset
    from mzsr_tf.noise import noise_levels_graph

    estimator = load_estimator(default_estimator())
    kw = dict(seed=0, blind_tasks=1, support="son", task_noise=0.02)
    ((x_tr, y_tr, x_te, y_te, features, start),) = _first(
        kernel_tasks([astronaut_uint8], 2, 3, 24, 2, blind_context=(96, 128), estimator=estimator, **kw)
    )
    ((_, _, x_te0, _, _, start0),) = _first(kernel_tasks([astronaut_uint8], 2, 3, 24, 2, **kw))
    np.testing.assert_array_equal(x_te[1], x_te0[1])  # the given-kernel task is as it was
    np.testing.assert_array_equal(start[1], start0[1])
    # the blind task, remade step by step (streams as in ``data.kernel_tasks``, seed 0, step 0)
    ((_, crop),) = _first(_patch_dataset([astronaut_uint8], 1, (96, 128), 1, 0))
    assert crop.shape == (1, 96, 128, 3)
    lr, _ = _blind_kernel_lr(tf.constant(crop), 700, tf.constant(0, tf.int64), 2, 0.0)
    lr = _task_noise(lr, _blind_seed(900, tf.constant(0, tf.int64)), 0.02)[0]
    k, _ = estimate_graph([tf.constant(p) for p in estimator], lr, 2)
    seed = _blind_seed(800, tf.constant(0, tf.int64))
    corners = np.stack([tf.random.stateless_uniform([3], seed + i, 0, n, tf.int32) for i, n in enumerate((37, 53))], 1)
    np.testing.assert_allclose(start[0], start_features(k, noise_levels_graph(lr).feature, True), atol=1e-5)
    np.testing.assert_allclose(features[0], kernel_features(k), atol=1e-5)
    assert start[0, GIVEN_FEATURES] == 1 and start[1, GIVEN_FEATURES] == 0
    for i, (r, c) in enumerate(corners):
        np.testing.assert_array_equal(y_te[0, i], crop[0, 2 * r : 2 * r + 24, 2 * c : 2 * c + 24])
        np.testing.assert_allclose(y_tr[0, i], lr[r : r + 12, c : c + 12], atol=1e-6)
        np.testing.assert_allclose(x_te[0, i], upscale(y_tr[0, i], 2, (24, 24), kernel_offset(k)), atol=1e-5)
    from mzsr_tf.zero_shot import training_pair

    sigma = noise_levels_graph(lr).son
    son = training_pair(y_tr[0], k, 2, "direct", sigma, _blind_seed(950, tf.constant(0, tf.int64)))[0]
    np.testing.assert_allclose(x_tr[0], son, atol=1e-5)  # the son too is made with the estimate
    assert len({(r, c) for r, c in corners}) > 1  # patches from different places of the crop
    from mzsr_tf.meta import MetaConfig

    with pytest.raises(InputError, match="blind_context"):
        MetaConfig(blind_tasks=1, blind_context=96, conditioned_start=False)
    with pytest.raises(InputError, match="blind_context"):
        MetaConfig(blind_tasks=1, blind_context=63, conditioned_start=True)


def test_rectangular_crops_come_from_images_upright_or_turned(astronaut_uint8):
    """``sample_patches`` with ``(h, w)``: h×w crops, from an image turned a quarter when only that way fits (a
    portrait photo gives landscape crops), under the transforms that keep the shape; ``s`` stays s² as before."""
    from mzsr_tf.data import sample_patches

    portrait = np.ascontiguousarray(astronaut_uint8[:, :100])  # 512 x 100: fits 96 x 128 only turned
    crops = sample_patches([portrait], 6, (96, 128), np.random.default_rng(0))
    assert crops.shape == (6, 96, 128, 3)
    turned = np.swapaxes(portrait, 0, 1)
    for c in crops:  # each is a window of the turned photo, up to a half turn and a mirror
        found = any(
            np.array_equal(t, turned[r : r + 96, q : q + 128])
            for t in (c, c[::-1, ::-1], c[:, ::-1], c[::-1])
            for r in range(turned.shape[0] - 95)
            for q in range(0, turned.shape[1] - 127)
        )
        assert found
    square = sample_patches([astronaut_uint8], 2, 32, np.random.default_rng(1))
    np.testing.assert_array_equal(square, sample_patches([astronaut_uint8], 2, (32, 32), np.random.default_rng(1)))
    with pytest.raises(InputError, match="at least 600x600"):
        kernel_tasks([astronaut_uint8], 1, 1, 600, 2)


def test_flat_crops_are_rejected_as_mzsr_does():
    """A photo half flat (sky) and half textured: every crop comes from the textured half (``FLAT_THRESHOLD``, MZSR
    ``MainSR``), unless no try in ``_MAX_TRIES`` finds texture."""
    from mzsr_tf.data import sample_patches

    photo = np.full((64, 128, 3), 128, np.uint8)
    photo[:, 64:] = np.random.default_rng(0).integers(0, 256, (64, 64, 3))
    crops = sample_patches([photo], 8, 16, np.random.default_rng(0))
    assert all((c != 128).any() for c in crops)  # none wholly in the sky (without the test, about 4 in 10 would be)
    flat_only = sample_patches([photo[:, :64]], 2, 16, np.random.default_rng(0))
    assert (flat_only == 128).all()  # nothing textured to find: the last try is kept
