"""ZSSR: the learning-rate rule, HR fathers and augmentation, training, test-time refinement, the CLIs."""

import dataclasses
import json

import keras
import numpy as np
import pytest
import skimage.data
import tensorflow as tf
from PIL import Image

from benchmarks import paper_table
from mzsr_tf import cli
from mzsr_tf.commands import adapt
from mzsr_tf.degradation import degrade
from mzsr_tf.errors import InputError
from mzsr_tf.imresize import imresize
from mzsr_tf.kernels import Degradation, gaussian_kernel
from mzsr_tf.model import forward
from mzsr_tf.zssr import (
    AFFINE,
    LEAVE_AS_IS,
    NO_INTERP,
    PRESETS,
    TRACES,
    ZSSRConfig,
    augmentation_matrix,
    back_projection,
    final_test,
    graphs,
    init_zssr_params,
    lr_should_drop,
    random_augmentation,
    select_father,
    sons,
    train_zssr,
    training,
    warp_cubic,
)

KERNEL = Degradation(gaussian_kernel(1.5, 1.5, 0.0, 7).numpy(), "direct", "test")
BICUBIC = Degradation(None, "bicubic", "bicubic")
# 16x16 crops and a 10-iteration slope window (5 points every 2 iterations, checks every 5 after 8).
# Every training test below shares this graph (same scale, subsampling and augmentation), so it is traced once.
TINY = ZSSRConfig(
    crop_size=16,
    max_iters=30,
    run_test_every=2,
    learning_rate_slope_range=10,
    min_iters=8,
    learning_rate_policy_check_every=5,
    output_flip=False,
    back_projection_iters=(0,),
)


@pytest.fixture(scope="module")
def image(astronaut_uint8):
    return astronaut_uint8[40:64, 40:64].astype(np.float32) / 255.0


# === Learning-rate policy ===

STEPS = np.array([0, 50, 100, 150, 200])


def test_rate_drops_on_a_flat_curve_and_keeps_on_a_falling_one():
    wiggle = 1e-6 * np.array([1, -1, 1, -1, 1])
    assert lr_should_drop(STEPS, 0.01 + wiggle)  # slope 0 < its noise
    assert lr_should_drop(STEPS, 0.01 + 1e-7 * STEPS + wiggle)  # rising
    assert not lr_should_drop(STEPS, 0.01 - 1e-5 * STEPS + wiggle)  # falling far faster than the noise
    assert not lr_should_drop(STEPS, np.full(5, 0.01))  # exactly flat: 0 < 0 is false, as in the official code
    with pytest.raises(ValueError, match=">= 5"):
        lr_should_drop(STEPS[:4], np.zeros(4))


def test_rate_rule_uses_the_2018_polyfit_covariance_scaling():
    """Residuals orthogonal to the line: slope is exact, resid = 10 eps^2, std(old) = sqrt(3) std(new)."""
    eps = 1e-3
    errors = 0.5 - 0.01 * eps * STEPS + eps * np.array([1, -2, 0, 2, -1])
    (slope, _), cov = np.polyfit(STEPS, errors, 1, cov=True)  # today's NumPy: resid / (M - order)
    assert np.sqrt(cov[0, 0]) < -1.5 * slope < np.sqrt(3 * cov[0, 0])  # the two scalings disagree here
    assert lr_should_drop(STEPS, errors)  # old scaling: std is sqrt(3) larger, so the rate drops


def test_policy_timing_and_stop_at_official_numbers(image, monkeypatch):
    """Defaults: checks at (i+1) % 60 == 0 more than 256 iterations after a change; 3 drops stop at 900."""
    chunks, slopes = [], []

    def fake_train(params, moments, t, sources, sizes, scales, kernel, rate, seed, start, count):
        chunks.append((int(start), int(count), float(rate)))
        return params, moments, t, tf.zeros([count])

    def fake_graph(kind, key):
        return fake_train if kind == "train" else (lambda *args: tf.constant(0.01))

    def always(steps, errors, ratio):
        slopes.append(list(steps))
        return True

    monkeypatch.setattr(training, "graph", fake_graph)
    monkeypatch.setattr(training, "lr_should_drop", always)
    log = train_zssr(image, KERNEL, 2, dataclasses.replace(ZSSRConfig(), output_flip=False)).log[0]
    assert log.learning_rate_drops == [299, 599, 899] and log.iterations == 900
    assert log.final_learning_rate == pytest.approx(1e-6)
    assert slopes[0] == [50, 100, 150, 200, 250]  # int(256 / 50) = 5 points
    assert log.test_iterations == list(range(0, 900, 50))
    starts = [c[0] for c in chunks]
    assert starts == sorted(starts) and all(a + n == b for (a, n, _), b in zip(chunks, starts[1:]))
    assert max(n for _, n, _ in chunks) <= 50
    np.testing.assert_allclose([rate for start, _, rate in chunks if 300 <= start < 600], 1e-4, rtol=1e-6)


def test_policy_in_a_real_run(image, monkeypatch):
    monkeypatch.setattr(training, "lr_should_drop", lambda steps, errors, ratio: True)
    log = train_zssr(image, KERNEL, 2, dataclasses.replace(TINY, max_iters=100)).log[0]
    assert log.learning_rate_drops == [9, 19, 29] and log.iterations == 30 and len(log.losses) == 30


# === HR fathers and augmentation ===


@tf.function(autograph=False)
def _draws(seeds, base_scales, max_scale):
    def draw(seed):
        aug = random_augmentation(seed, base_scales, max_scale, ZSSRConfig())
        return tf.stack([aug.mode, aug.source])

    return tf.map_fn(draw, seeds, fn_output_signature=tf.int32)


def test_mode_probabilities_and_father_selection():
    n = 3000
    seeds = tf.stack([tf.fill([n], 11), tf.range(n)], axis=1)
    draws = _draws(seeds, tf.constant([1.0, 1.0, 1.0, 1.5]), tf.constant(1.5)).numpy()
    np.testing.assert_allclose(np.bincount(draws[:, 0], minlength=3) / n, [0.05, 0.45, 0.5], atol=0.025)
    # scale ~ U[0.5, 1.5]: above 1 (half the non-leave draws) takes the x1.5 source, never the equal-base ones
    assert set(draws[:, 1]) == {0, 3}
    assert np.mean(draws[:, 1] == 3) == pytest.approx(0.95 * 0.5, abs=0.03)
    assert [int(select_father(s, [1.0, 1.0, 1.0, 1.5])) for s in (0.5, 0.999, 1.0, 1.0001, 1.5)] == [0, 0, 0, 3, 3]


def _augment(seed, img, config, crop):
    aug = random_augmentation(tf.constant([seed, 0]), tf.constant([1.0]), 1.0, config)
    hw = tf.constant(img.shape[:2])
    matrix = augmentation_matrix(aug, hw, 1.0, crop)
    return aug, matrix.numpy(), warp_cubic(tf.constant(img), hw, matrix, crop).numpy()


def test_leave_as_is_is_an_integer_crop(image):
    config = dataclasses.replace(
        ZSSRConfig(), augment_leave_as_is_probability=1.0, augment_no_interpolate_probability=0.0
    )
    aug, matrix, out = _augment(0, image, config, 24)
    assert int(aug.mode) == LEAVE_AS_IS
    np.testing.assert_array_equal(matrix, np.eye(3))
    np.testing.assert_array_equal(out, image)  # same size: the identity
    for seed in range(3):
        _, matrix, out = _augment(seed, image, config, 16)
        x, y = -matrix[:2, 2].astype(int)
        np.testing.assert_array_equal(matrix[:2, :2], np.eye(2))
        np.testing.assert_array_equal(out, image[y : y + 16, x : x + 16])


def test_presets_without_rotation_never_rotate_or_mirror():
    for name in ("x2_given_kernel", "x2_real"):
        for seed in range(40):
            aug = random_augmentation(tf.constant([seed, 1]), tf.constant([1.0]), 1.0, PRESETS[name])
            assert (float(aug.theta), float(aug.reflect)) == (0.0, 1.0)
            if name == "x2_real":
                assert float(aug.diff) == 0 and not np.any(aug.shear) and float(aug.scale) >= 0.75


def test_rotations_and_mirrors_copy_pixels_exactly():
    img = (np.arange(20 * 22 * 3, dtype=np.float32).reshape(20, 22, 3) + 1) / (20 * 22 * 3 + 1)
    config = dataclasses.replace(
        ZSSRConfig(), augment_leave_as_is_probability=0.0, augment_no_interpolate_probability=1.0
    )
    seen = set()
    for seed in range(24):
        aug, matrix, out = _augment(seed, img, config, 16)
        assert int(aug.mode) == NO_INTERP
        linear = np.round(matrix[:2, :2], 12)
        assert set(np.abs(linear).ravel()) == {0.0, 1.0} and np.allclose(matrix[:2, 2], np.round(matrix[:2, 2]))
        seen.add(tuple(linear.ravel()))
        # Each crop pixel is exactly the source pixel the inverse map lands on (0 outside: constant border).
        yy, xx = np.mgrid[:16, :16]
        sx, sy, _ = np.rint(np.linalg.inv(matrix) @ np.stack([xx, yy, np.ones_like(xx)]).reshape(3, -1))
        inside = (sx >= 0) & (sx < 22) & (sy >= 0) & (sy < 20)
        expected = np.zeros((256, 3), np.float32)
        expected[inside] = img[sy[inside].astype(int), sx[inside].astype(int)]
        np.testing.assert_array_equal(out.reshape(-1, 3), expected)
    assert len(seen) == 8  # all 4 rotations x 2 mirrors


def test_affine_crops_are_fixed_size_and_in_range(image):
    config = dataclasses.replace(
        ZSSRConfig(), augment_leave_as_is_probability=0.0, augment_no_interpolate_probability=0.0
    )
    aug, matrix, out = _augment(5, image, config, 32)
    assert int(aug.mode) == AFFINE and out.shape == (32, 32, 3)
    assert out.min() >= 0 and out.max() <= 1 and out.max() > 0  # zero border where the warp leaves the image


# === Training ===


def test_reconstruction_error_falls(image):
    """From its own (default) initialisation the error falls within a few updates."""
    result = train_zssr(image, KERNEL, 2, dataclasses.replace(TINY, max_iters=12))
    log = result.log[0]
    assert log.test_iterations == list(range(0, 12, 2)) and len(log.reconstruction_mse) == 6
    assert np.mean(log.reconstruction_mse[-2:]) < 0.7 * log.reconstruction_mse[0]
    assert result.sr.shape == (48, 48, 3) and result.iterations == log.iterations == 12


@pytest.mark.slow
def test_from_scratch_on_a_bicubic_image_the_net_learns():
    """The bicubic case, where the residual to learn is small: the net beats bicubic reconstruction.

    With the official ZSSR initial variance (0.1 / fan-in) the first gradients sit below Adam's ε and the
    network does not move (reconstruction error = bicubic's); that is why the default is 1.0 / fan-in.
    """
    hr = skimage.data.astronaut()[:160, 160:320]
    lr = imresize(tf.constant(hr, tf.float32)[None] / 255.0, 0.5)
    son_up = imresize(imresize(lr, 0.5), 2.0, lr.shape[1:3])
    bicubic_mse = float(tf.reduce_mean(tf.square(tf.clip_by_value(son_up, 0, 1) - lr)))
    config = ZSSRConfig(crop_size=64, max_iters=151, min_iters=1000, output_flip=False, back_projection_iters=(0,))
    ratios = {}
    for variance in (config.init_variance, 0.1):
        result = train_zssr(lr[0].numpy(), BICUBIC, 2, dataclasses.replace(config, init_variance=variance))
        ratios[variance] = result.log[0].reconstruction_mse[-1] / bicubic_mse
    assert ratios[1.0] < 0.85  # measured 0.69
    assert abs(ratios[0.1] - 1) < 0.02  # stuck at the zero residual


def test_one_iteration_is_an_adam_step_on_father_and_son(image):
    """The traced loop equals: augment → son → L1(net(bicubic↑son), father) → Keras Adam (eps 1e-8) step."""
    key = graphs.graph_key((2.0, 2.0), "direct", KERNEL.kernel, TINY)
    params = init_zssr_params(1)
    sources, sizes = training.pad_sources([image])
    bases, kernel, seed = tf.constant([1.0]), tf.constant(KERNEL.kernel, tf.float32), tf.constant([4, 0])
    moments = [tf.zeros_like(p) for p in params] * 2
    args = (sources, sizes, bases, kernel, tf.constant(1e-3), seed, tf.constant(7), tf.constant(1))
    new, _, t, losses = graphs.graph("train", key)(params, moments, tf.constant(0.0), *args)
    seeds = tf.random.experimental.stateless_split(tf.random.experimental.stateless_fold_in(seed, 7), 2)
    aug = random_augmentation(seeds[0], bases, 1.0, TINY)
    father = warp_cubic(sources[0], sizes[0], augmentation_matrix(aug, sizes[0], 1.0, 16), 16)[None]
    son_up = imresize(sons.father_to_son(father, kernel, 2, "direct", 0.0, seeds[1]), 2, (16, 16))
    variables = [tf.Variable(p) for p in params]
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.abs(forward(variables, son_up) - father))
    keras.optimizers.Adam(1e-3, epsilon=1e-8).apply_gradients(zip(tape.gradient(loss, variables), variables))
    assert float(t) == 1 and float(losses[0]) == pytest.approx(float(loss), rel=1e-5)
    for a, b in zip(new, variables):
        np.testing.assert_allclose(a, b, atol=1e-6)  # the step itself is ~1e-3


def test_training_traces_once_across_image_sizes(astronaut_uint8):
    config = dataclasses.replace(TINY, max_iters=3)
    before = TRACES.copy()
    train_zssr(astronaut_uint8[:24, :20] / np.float32(255), KERNEL, 2, config)
    after_first = TRACES.copy()
    assert after_first["zssr_train"] - before["zssr_train"] <= 1
    other_kernel = Degradation(gaussian_kernel(2.0, 1.0, 0.3, 9).numpy(), "direct")
    train_zssr(astronaut_uint8[:30, :37] / np.float32(255), other_kernel, 2, config)
    assert TRACES == after_first


def test_gradual_stages_feed_their_outputs_as_fathers(image, monkeypatch):
    sources = []
    pad = training.pad_sources
    monkeypatch.setattr(training, "pad_sources", lambda s: sources.append(list(s)) or pad(s))
    config = dataclasses.replace(
        TINY, max_iters=2, scale_factors=((1.0, 1.5), (2.0, 2.0)), back_projection_iters=(1, 2)
    )
    result = train_zssr(image, KERNEL, 2, config, init_params=init_zssr_params(3))
    assert [stage.scale for stage in result.log] == [(1.0, 1.5), (2.0, 2.0)]
    assert [o.shape for o in result.stage_outputs] == [(24, 36, 3), (48, 48, 3)]
    np.testing.assert_array_equal(result.stage_outputs[-1], result.sr)
    assert [len(s) for s in sources] == [1, 2]
    np.testing.assert_array_equal(sources[1][1], result.stage_outputs[0])


def test_init_is_fan_in_variance_with_zero_biases():
    params = init_zssr_params(0)
    np.testing.assert_allclose(np.std(params[2]), np.sqrt(1.0 / (9 * 64)), rtol=0.02)
    assert all(not np.any(b) for b in params[1::2])
    official = init_zssr_params(0, init_variance=0.1)
    np.testing.assert_allclose(np.std(official[2]), np.sqrt(0.1 / (9 * 64)), rtol=0.02)


# === Test time ===


def test_back_projection_makes_degrade_of_sr_closer_to_lr(image):
    params = [p + 0.02 * tf.random.stateless_normal(p.shape, [1, i]) for i, p in enumerate(init_zssr_params(0))]
    for flip in (False, True):
        errors = []
        for iters in (0, 10):
            sr = final_test(params, image, KERNEL.kernel, 2, "direct", flip=flip, bp_iters=iters)
            errors.append(float(tf.reduce_mean(tf.abs(degrade(sr, KERNEL.kernel, 2) - image[None]))))
        assert errors[1] < 0.5 * errors[0], (flip, errors)


def test_back_projection_matches_an_independent_numpy_loop(image):
    """sr ← clip(sr + bicubic↑(lr − (sr ⊛ k)↓s)), three times, against the float64 NumPy MATLAB oracle."""
    import matlab_reference as ref

    sr0 = tf.image.resize(image[None], [48, 48]).numpy()[0].astype(np.float64)
    lr = np.asarray(image, np.float64)
    for kernel, subsample in ((KERNEL.kernel, "direct"), (None, "bicubic")):
        expected = sr0
        for _ in range(3):
            down = ref.degrade_direct(expected, kernel, 2) if kernel is not None else ref.imresize(expected, 0.5)
            expected = np.clip(expected + ref.imresize(lr - down, 2, output_shape=expected.shape[:2]), 0, 1)
        ours = back_projection(tf.constant(sr0[None], tf.float32), image[None], kernel, 2, subsample, 3)
        np.testing.assert_allclose(ours[0], expected, atol=2e-5)


# === Config and inputs ===


def test_presets_differ_as_the_official_configs():
    ideal = PRESETS["x2_ideal"]
    assert ideal == ZSSRConfig()
    assert (ideal.max_iters, ideal.learning_rate, ideal.crop_size, ideal.back_projection_iters) == (
        3000,
        1e-3,
        128,
        (10,),
    )
    assert (ideal.augment_leave_as_is_probability, ideal.augment_no_interpolate_probability) == (0.05, 0.45)
    fields = [f.name for f in dataclasses.fields(ZSSRConfig)]
    changed = {
        name: {f: getattr(c, f) for f in fields if getattr(c, f) != getattr(ideal, f)} for name, c in PRESETS.items()
    }
    assert changed == {
        "x2_ideal": {},
        "x2_gradual_ideal": {
            "scale_factors": ((1.0, 1.5), (1.5, 1.0), (1.5, 1.5), (1.5, 2.0), (2.0, 1.5), (2.0, 2.0)),
            "back_projection_iters": (6, 6, 8, 10, 10, 12),
        },
        "x2_given_kernel": {"output_flip": False, "augment_allow_rotation": False, "back_projection_iters": (2,)},
        "x2_real": {
            "output_flip": False,
            "augment_allow_rotation": False,
            "back_projection_iters": (0,),
            "noise_std": 0.0125,
            "augment_scale_diff_sigma": 0.0,
            "augment_shear_sigma": 0.0,
            "augment_min_scale": 0.75,
        },
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        ideal.max_iters = 1


@pytest.mark.parametrize(
    "shape,scale,kernel,config,match",
    [
        ((10, 10), 2, 15, TINY, "smaller than the 15x15 kernel"),
        ((24, 24), 1, 3, TINY, "scale must be > 1"),
        ((24, 24), 0.5, 3, TINY, "scale must be > 1"),
        ((24, 24), 2.5, 3, TINY, "integer scale"),
        ((6, 6), 2, 3, TINY, "too small"),
        ((24, 24), 2, 17, TINY, "larger than the 16x16 crops"),
        ((24, 24), 3, 3, PRESETS["x2_gradual_ideal"], "not at the requested x3"),
    ],
)
def test_bad_inputs_raise(shape, scale, kernel, config, match):
    deg = Degradation(np.full((kernel, kernel), 1.0 / kernel**2), "direct")
    with pytest.raises(InputError, match=match):
        train_zssr(np.zeros(shape + (3,), np.float32), deg, scale, config)


def test_bad_configs_raise():
    with pytest.raises(InputError, match="crop_size"):
        ZSSRConfig(crop_size=4)
    with pytest.raises(InputError, match="5 reconstruction points"):
        ZSSRConfig(run_test_every=100)
    with pytest.raises(InputError, match="probabilities"):
        ZSSRConfig(augment_no_interpolate_probability=0.99)


# === CLIs ===


@pytest.fixture
def tiny_presets(monkeypatch):
    """The CLIs' presets with TINY's crops and policy window (same traced graph as the tests above)."""
    for name, preset in PRESETS.items():
        small = {f: getattr(TINY, f) for f in ("crop_size", "run_test_every", "learning_rate_slope_range", "min_iters")}
        monkeypatch.setitem(PRESETS, name, dataclasses.replace(preset, **small, learning_rate_policy_check_every=5))


def test_adapt_cli_zssr_end_to_end(tiny_presets, astronaut_uint8, tmp_path, capsys):
    hr = astronaut_uint8[:48, :40] / 255.0
    (tmp_path / "gt").mkdir()
    Image.fromarray(np.round(degrade(hr, KERNEL.kernel, 2).numpy() * 255).astype(np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.round(hr * 255).astype(np.uint8)).save(tmp_path / "gt" / "a.png")
    np.save(tmp_path / "k.npy", KERNEL.kernel)
    args = [tmp_path / "a.png", "--kernel", tmp_path / "k.npy", "--method", "zssr", "--max-iters", "4"]
    args += ["--out", tmp_path / "sr.png", "--json", tmp_path / "r.json", "--gt", tmp_path / "gt"]
    code = adapt.cli.run(adapt.main, [str(a) for a in args])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "ZSSR a.png" in err and "stage 1/1, loss" in err  # the progress bar
    assert Image.open(tmp_path / "sr.png").size == (40, 48)
    (entry,) = json.loads((tmp_path / "r.json").read_text())["images"]
    assert (entry["method"], entry["preset"], entry["iterations"], entry["learning_rate_drops"]) == (
        "zssr",
        "x2_ideal",
        4,
        [],
    )
    assert entry["stages"][0]["test_iterations"] == [0, 2] and len(entry["stages"][0]["true_mse"]) == 2
    assert {"psnr_y", "ssim_y", "psnr_y_bicubic", "seconds_train"} <= set(entry)
    for extra, match in (
        (["--steps", "3"], "--steps does not apply"),
        (["--precision", "float32"], "--precision does not apply"),
        (["--crop", "64"], "--crop does not apply"),
        (["--preset", "x9"], "unknown --preset"),
    ):
        code = adapt.cli.run(adapt.main, [str(a) for a in args[:7] + extra + ["--out", tmp_path / "o.png"]])
        err = capsys.readouterr().err
        assert code == 2 and match in err and err.count("\n") == 1
    code = adapt.cli.run(adapt.main, [str(a) for a in args[:3] + ["--max-iters", "3", "--out", tmp_path / "m.png"]])
    assert code == 2 and "--max-iters does not apply to --method mzsr" in capsys.readouterr().err


def test_paper_table_registers_zssr(tiny_presets, astronaut_uint8, tmp_path, capsys):
    folder = tmp_path / "Tiny" / "HR"
    folder.mkdir(parents=True)
    Image.fromarray(astronaut_uint8[:40, :40]).save(folder / "a.png")
    np.save(tmp_path / "k.npy", KERNEL.kernel)
    argv = ["--hr", folder, "--kernels", tmp_path / "k.npy", "--methods", "zssr_fast", "--zssr-max-iters", "2"]
    code = cli.run(paper_table.main, [str(a) for a in argv + ["--json", tmp_path / "t.json"]])
    out, err = capsys.readouterr()
    assert code == 0, err
    (row,) = json.loads((tmp_path / "t.json").read_text())["results"]
    assert row["method"] == "zssr_fast" and 15 < row["psnr_y"] < 50
    assert "2 iterations" in err
    assert cli.run(paper_table.main, [str(a) for a in argv[:4] + ["--methods", "zssr", "--zssr-preset", "nope"]]) == 2
