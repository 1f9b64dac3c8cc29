"""MZSR meta-test: the son/father pair, the official schedule, no retracing, tiling, bad input."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from mzsr_tf import zero_shot
from mzsr_tf.degradation import degrade
from mzsr_tf.errors import InputError
from mzsr_tf.imresize import upscale
from mzsr_tf.kernels import Degradation, gaussian_kernel, resolve_degradation
from mzsr_tf.model import forward, init_params, super_resolve
from mzsr_tf.noise import NoiseLevels
from mzsr_tf.zero_shot import (
    BACKTRACK_SHRINK,
    TRACES,
    AdaptConfig,
    adapt,
    adapt_graph,
    guard_loss,
    learning_rates,
    rate_matrix,
    super_resolve_tiled,
    zero_shot_sr,
)

KERNEL = Degradation(gaussian_kernel(2.0, 1.0, 0.3, 7).numpy(), "direct", "test")


@pytest.fixture(scope="module")
def lr_image(astronaut_uint8):
    return astronaut_uint8[:48, :40].astype(np.float32) / 255.0


def test_official_learning_rate_schedule():
    official = AdaptConfig.official(steps=7)
    assert official.optimizer == "sgd"
    np.testing.assert_allclose(learning_rates(official), [2e-2, 1e-2, 1e-2, 1e-2, 5e-3, 5e-3, 5e-3], rtol=1e-6)
    assert learning_rates(AdaptConfig(steps=0)).shape == (0,)
    # the released Bicubicx2 and Directx4 models have their own test.py rates
    bicubic, x4 = AdaptConfig.official(2, "bicubic", steps=5), AdaptConfig.official(4, "direct", steps=7)
    np.testing.assert_allclose(learning_rates(bicubic), [1e-2, 1e-2, 1e-2, 1e-3, 1e-3], rtol=1e-6)
    np.testing.assert_allclose(learning_rates(x4), [1e-2, 5e-3, 5e-3, 5e-3, 5e-3, 1e-3, 1e-3], rtol=1e-6)
    assert AdaptConfig.official(3, steps=7) == official and x4.precision == "float32"


def test_default_rates_follow_the_optimizer():
    """Adam with ADAM_RATES by default; SGD without rates is the official schedule; given rates win."""
    assert AdaptConfig().optimizer == "adam"
    rates = [1e-4, 1.5e-4, 2e-4, 2e-4, 2e-4, 1.5e-4, 1.5e-4, 1.5e-4]
    np.testing.assert_allclose(learning_rates(AdaptConfig(steps=8)), rates)
    np.testing.assert_allclose(learning_rates(AdaptConfig(steps=2, optimizer="sgd")), [2e-2, 1e-2])
    np.testing.assert_allclose(learning_rates(AdaptConfig(steps=2, learning_rates=(1e-3,))), [1e-3, 1e-3])
    with pytest.raises(InputError, match="optimizer must be"):
        AdaptConfig(optimizer="rmsprop")


def test_one_step_is_sgd_on_son_to_father(lr_image):
    """θ' = θ − 0.02 ∇ L1(net(bicubic↑(degrade(LR))), LR): the paper's Algorithm 2 update."""
    params = init_params(0)
    fast, losses, _ = adapt(params, lr_image, KERNEL, 2, AdaptConfig.official(steps=1))
    father = tf.constant(lr_image[None])
    son_up = upscale(degrade(father, KERNEL.kernel, 2), 2, lr_image.shape[:2])
    with tf.GradientTape() as tape:
        tape.watch(params)
        loss = tf.reduce_mean(tf.abs(forward(params, son_up) - father))
    grads = tape.gradient(loss, params)
    np.testing.assert_allclose(losses, [loss.numpy()], rtol=1e-5)
    for f, p, g in zip(fast, params, grads):
        np.testing.assert_allclose(f, p - 0.02 * g, atol=1e-6)


@pytest.mark.parametrize("epsilon", [None, 1e-5])
def test_default_steps_are_adam_on_son_to_father(lr_image, epsilon):
    """Two default updates == Adam steps of 1e-4, 1.5e-4 (Kingma & Ba, Alg. 1: ε=1e-8 on √v̂) on the pair's L1."""
    params = init_params(0)
    config = AdaptConfig(
        steps=2, precision="float32", noise_sigma=0.0, **({"adam_epsilon": epsilon} if epsilon else {})
    )
    fast, _, _ = adapt(params, lr_image, KERNEL, 2, config)
    eps = epsilon or 1e-8
    father = tf.constant(lr_image[None])
    son_up = upscale(degrade(father, KERNEL.kernel, 2), 2, lr_image.shape[:2])
    weights = [p.numpy() for p in params]
    m, v = [0.0] * len(weights), [0.0] * len(weights)
    for t, rate in ((1, 1e-4), (2, 1.5e-4)):
        with tf.GradientTape() as tape:
            variables = [tf.constant(w) for w in weights]
            tape.watch(variables)
            loss = tf.reduce_mean(tf.abs(forward(variables, son_up) - father))
        for i, g in enumerate(tape.gradient(loss, variables)):
            m[i] = 0.9 * m[i] + 0.1 * g.numpy()
            v[i] = 0.999 * v[i] + 0.001 * g.numpy() ** 2
            weights[i] = weights[i] - rate * (m[i] / (1 - 0.9**t)) / (np.sqrt(v[i] / (1 - 0.999**t)) + eps)
    for f, w, p in zip(fast, weights, params):
        assert np.abs(f - p).max() > 1e-4  # it moved ...
        np.testing.assert_allclose(f, w, atol=3e-6)  # ... as Adam moves it (a step is ~1e-4)


def test_precision_auto_follows_the_hardware(monkeypatch):
    monkeypatch.setattr(zero_shot, "native_bfloat16", lambda: True)
    assert AdaptConfig().compute_precision == "bfloat16"
    assert AdaptConfig(precision="float32").compute_precision == "float32"
    assert AdaptConfig.official().compute_precision == "float32"  # the port check stays exact
    monkeypatch.setattr(zero_shot, "native_bfloat16", lambda: False)
    assert AdaptConfig().compute_precision == "float32"
    assert AdaptConfig(precision="bfloat16").compute_precision == "bfloat16"
    with pytest.raises(InputError, match="precision"):
        AdaptConfig(precision="float16")
    with pytest.raises(InputError, match="adam_epsilon"):
        AdaptConfig(adam_epsilon=0.0)


@pytest.mark.parametrize(
    "gpus,details,cpuinfo,expected",
    [
        ([], None, "flags : fpu avx512f avx512_bf16 avx512_vnni", True),
        ([], None, "flags : fpu avx2 avx512f", False),
        ([], None, None, False),  # no /proc/cpuinfo (not Linux)
        (["gpu0"], {"compute_capability": (8, 6)}, "flags : avx2", True),
        (["gpu0"], {"compute_capability": (7, 5)}, "flags : avx512_bf16", False),  # a GPU decides, not the CPU
        (["gpu0"], {}, "flags : avx512_bf16", False),
    ],
)
def test_native_bfloat16_detection(monkeypatch, gpus, details, cpuinfo, expected):
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: gpus)
    monkeypatch.setattr(tf.config.experimental, "get_device_details", lambda device: details)

    class FakePath:
        def __init__(self, path):
            assert path == "/proc/cpuinfo"

        def read_text(self):
            if cpuinfo is None:
                raise FileNotFoundError
            return cpuinfo

    monkeypatch.setattr(zero_shot, "Path", FakePath)
    assert zero_shot.native_bfloat16.__wrapped__() is expected


def test_bfloat16_updates_follow_float32(lr_image):
    """Mixed-precision updates move θ like float32 ones (Adam's steps are ~rate, so compare per step)."""
    params = init_params(0)
    configs = {p: AdaptConfig(steps=3, precision=p) for p in ("float32", "bfloat16")}
    (f32, loss32, _), (f16, loss16, _) = (adapt(params, lr_image, KERNEL, 2, c) for c in configs.values())
    np.testing.assert_allclose(loss16, loss32, rtol=2e-2)
    d32 = np.concatenate([(f - p).numpy().ravel() for f, p in zip(f32, params)])
    d16 = np.concatenate([(f - p).numpy().ravel() for f, p in zip(f16, params)])
    assert d32 @ d16 / (np.linalg.norm(d32) * np.linalg.norm(d16)) > 0.95
    assert not np.array_equal(d32, d16)  # really computed in bfloat16


def test_adaptation_lowers_the_son_loss(lr_image):
    for config in (AdaptConfig(steps=8, learning_rates=(2e-3,), noise_sigma=0.0), AdaptConfig.official(steps=8)):
        _, losses, _ = adapt(init_params(1), lr_image, KERNEL, 2, config)
        assert losses[-1] < losses[0] * 0.97, config.optimizer


def test_zero_steps_is_plain_super_resolution(lr_image):
    params = init_params(2)
    result = zero_shot_sr(params, lr_image, KERNEL, 2, AdaptConfig(steps=0))
    expected = tf.clip_by_value(super_resolve(params, lr_image[None], 2), 0, 1)[0]
    np.testing.assert_allclose(result.sr, expected, atol=1e-6)
    assert result.losses == []


def test_no_retracing_across_sizes_kernels_and_steps(astronaut_uint8):
    params = init_params(3)
    adapt(params, astronaut_uint8[:20, :24] / np.float32(255), KERNEL, 2, AdaptConfig(steps=1))
    before = TRACES["adapt"]
    for size, steps, k in [((30, 26), 2, 5), ((33, 41), 3, 9), ((24, 24), 1, 3)]:
        image = astronaut_uint8[: size[0], : size[1]] / np.float32(255)
        deg = Degradation(gaussian_kernel(1.5, 1.0, 0.0, k).numpy(), "direct")
        adapt(params, image, deg, 2, AdaptConfig(steps=steps))
    assert TRACES["adapt"] == before


def test_random_crops_above_the_pixel_limit(lr_image):
    config = AdaptConfig(steps=2, max_pixels=100, crop_size=16)
    fast, losses, _ = adapt(init_params(4), lr_image, KERNEL, 2, config)
    assert losses.shape == (2,) and np.all(np.isfinite(losses))
    whole, _, _ = adapt(init_params(4), lr_image, KERNEL, 2, dataclasses.replace(config, max_pixels=10**9))
    assert not np.allclose(fast[0], whole[0])


def test_tiled_inference_equals_untiled(astronaut_uint8):
    params = [p + 0.05 * tf.random.normal(p.shape, seed=i) for i, p in enumerate(init_params(5))]
    lr = tf.constant(astronaut_uint8[None, :50, :45] / np.float32(255))
    whole = super_resolve(params, lr, 2)
    tiled = super_resolve_tiled(params, lr, 2, tile=32)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_ensemble_and_back_projection_options_run(lr_image):
    config = AdaptConfig(steps=1, self_ensemble=True, back_projection_iters=2)
    result = zero_shot_sr(init_params(6), lr_image, resolve_degradation("g_b_1.3"), 2, config)
    assert result.sr.shape == (96, 80, 3)
    assert 0.0 <= result.sr.min() and result.sr.max() <= 1.0


@pytest.mark.parametrize(
    "shape,scale,kernel,match",
    [
        ((10, 10), 2, 15, "smaller than the 15x15 kernel"),
        ((32, 32), 1, 3, "integer > 1"),
        ((32, 32), 0.5, 3, "integer > 1"),
        ((1, 1), 2, 1, "too small"),
        ((2, 2), 2, 1, "too small"),
    ],
)
def test_bad_inputs(shape, scale, kernel, match):
    image = np.zeros(shape + (3,), np.float32)
    deg = Degradation(np.full((kernel, kernel), 1.0 / kernel**2), "direct")
    with pytest.raises(InputError, match=match):
        zero_shot_sr(init_params(0), image, deg, scale, AdaptConfig(steps=1))


@pytest.mark.parametrize("chunk_seconds", [0.0, 1e9])  # one update per call / calls of 1, 2, 4, ... updates
def test_adaptation_split_into_calls_equals_one_graph_loop(lr_image, monkeypatch, chunk_seconds):
    params = init_params(5)
    config = AdaptConfig(steps=7, precision="float32", max_pixels=100, crop_size=16, noise_sigma=0.0)
    rates = tf.constant(learning_rates(config))
    whole, whole_losses = adapt_graph(params, lr_image, KERNEL.kernel, rates, 2, config)
    monkeypatch.setattr(zero_shot, "CHUNK_SECONDS", chunk_seconds)
    fast, losses, _ = adapt(params, lr_image, KERNEL, 2, config)
    np.testing.assert_allclose(losses, whole_losses, rtol=1e-5)
    for a, b in zip(fast, whole):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("keep_best", [False, True])
@pytest.mark.parametrize("chunk_seconds", [0.0, 1e9])
def test_a_diverging_update_is_dropped(lr_image, monkeypatch, chunk_seconds, keep_best):
    """SGD at sane rates for two updates then an absurd one: the weights after the two sane updates come back
    (with the guard too: they have the lowest loss)."""
    monkeypatch.setattr(zero_shot, "CHUNK_SECONDS", chunk_seconds)
    params = init_params(6)
    sane = AdaptConfig.official(steps=2, keep_best=keep_best)
    two, two_losses, _ = adapt(params, lr_image, KERNEL, 2, sane)
    for steps in (3, 5):  # the absurd update last, or followed by more
        config = dataclasses.replace(sane, steps=steps, learning_rates=(2e-2, 1e-2, 1e6))
        fast, losses, _ = adapt(params, lr_image, KERNEL, 2, config)
        np.testing.assert_allclose(losses, two_losses, rtol=1e-6)
        for a, b in zip(fast, two):
            np.testing.assert_array_equal(a, b)
    result = zero_shot_sr(params, lr_image, KERNEL, 2, dataclasses.replace(sane, steps=4, learning_rates=(1e30,)))
    assert result.diverged and result.losses == [] and np.isfinite(result.sr).all()


def test_learned_rates_run_sgd_per_tensor_and_step(lr_image):
    """AdaptConfig.learned: row i of the learned rates is step i's SGD rate per tensor; later steps reuse the last."""
    params = init_params(7)
    same = np.full([2, 16], 1e-2, np.float32)
    fast, losses, _ = adapt(
        params, lr_image, KERNEL, 2, AdaptConfig.learned(same, steps=3, precision="float32", noise_sigma=0.0)
    )
    sgd = AdaptConfig.official(steps=3, learning_rates=(1e-2,))
    fast_sgd, losses_sgd, _ = adapt(params, lr_image, KERNEL, 2, sgd)
    np.testing.assert_allclose(losses, losses_sgd, rtol=1e-6)
    for a, b in zip(fast, fast_sgd):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
    frozen = same.copy()
    frozen[:, 14:] = 0.0  # the last layer never moves
    fast, _, _ = adapt(
        params, lr_image, KERNEL, 2, AdaptConfig.learned(frozen, steps=3, precision="float32", keep_best=False)
    )
    np.testing.assert_array_equal(fast[14], params[14])
    assert not np.array_equal(fast[0], params[0])
    with pytest.raises(InputError, match="layer_rates"):
        AdaptConfig(layer_rates=((1e-2,) * 16,))  # adam


def test_kernel_conditioned_rates_adapt_with_the_photos_kernel(lr_image):
    """Rows of 16 rates and 2 kernel slopes (``meta.kernel_rates``) run the rates scaled for the photo's kernel."""
    from mzsr_tf.kernels import kernel_features
    from mzsr_tf.meta import kernel_rates

    params = init_params(7)
    table = np.concatenate([np.full([2, 16], 1e-2), [[0.0, 0.0], [-0.004, 0.003]]], 1).astype(np.float32)
    config = AdaptConfig.learned(table, steps=3, precision="float32", noise_sigma=0.0, keep_best=False)
    scaled = kernel_rates(table, kernel_features(KERNEL.kernel)).numpy()
    np.testing.assert_allclose(rate_matrix(config, KERNEL.kernel), scaled[[0, 1, 1]], rtol=1e-6)
    assert not np.allclose(scaled[1], 1e-2, rtol=1e-2)
    fast, losses, _ = adapt(params, lr_image, KERNEL, 2, config)
    plain = AdaptConfig.learned(scaled, steps=3, precision="float32", noise_sigma=0.0, keep_best=False)
    fast_plain, losses_plain, _ = adapt(params, lr_image, KERNEL, 2, plain)
    np.testing.assert_allclose(losses, losses_plain, rtol=1e-6)
    for a, b in zip(fast, fast_plain):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9)
    with pytest.raises(InputError, match="need the kernel"):
        rate_matrix(config)
    with pytest.raises(InputError, match="16 or 18"):
        AdaptConfig(optimizer="sgd", layer_rates=((1e-2,) * 17,))


def test_a_noisy_son_equals_the_one_graph_loop_and_auto_estimates_the_images_noise(lr_image, monkeypatch):
    """noise_sigma on the son as ``degrade(..., noise_sigma, seed)``; 'auto' takes ``noise_levels(image).son``."""
    params, config = init_params(8), AdaptConfig(steps=2, precision="float32", noise_sigma=0.02)
    rates = tf.constant(learning_rates(config))
    whole, _ = adapt_graph(params, lr_image, KERNEL.kernel, rates, 2, config, "direct", 0.02)
    fast, _, _ = adapt(params, lr_image, KERNEL, 2, config)
    for a, b in zip(fast, whole):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    monkeypatch.setattr(zero_shot, "noise_levels", lambda image: NoiseLevels(feature=0.0, son=0.02))
    auto, _, _ = adapt(params, lr_image, KERNEL, 2, dataclasses.replace(config, noise_sigma="auto"))
    for a, b in zip(auto, fast):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(InputError, match="noise_sigma"):
        AdaptConfig(noise_sigma=-1.0)


OVERSHOOT = (2e-2, 1e-2, 0.2, 1e-3)  # SGD: update 3 overshoots, so the weights after update 2 have the lowest loss


@pytest.mark.parametrize("chunk_seconds", [0.0, 1e9])
def test_the_guard_returns_the_weights_of_the_lowest_loss(lr_image, monkeypatch, chunk_seconds):
    """keep_best: of θ_M and the weights after each update, those with the lowest L1 on the pair (whole image)."""
    monkeypatch.setattr(zero_shot, "CHUNK_SECONDS", chunk_seconds)
    params = init_params(6)
    plain = AdaptConfig.official(steps=4, learning_rates=OVERSHOOT)
    runs = [adapt(params, lr_image, KERNEL, 2, dataclasses.replace(plain, steps=n)) for n in (2, 5)]
    losses = runs[1].losses  # losses[n]: the loss of the weights after n updates
    assert np.argmin(losses) == 2 and losses[3] > losses[2]
    kept = adapt(params, lr_image, KERNEL, 2, dataclasses.replace(plain, keep_best=True))
    assert kept.updates == 2 and len(kept.losses) == 4
    for a, b in zip(kept.params, runs[0].params):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
    assert adapt(params, lr_image, KERNEL, 2, dataclasses.replace(plain, steps=2, keep_best=True)).updates == 2
    assert zero_shot_sr(params, lr_image, KERNEL, 2, dataclasses.replace(plain, keep_best=True)).updates == 2
    assert AdaptConfig.learned(np.full([1, 16], 1e-2)).keep_best and not AdaptConfig().keep_best


def test_the_guard_compares_cropped_updates_on_one_window_as_the_graph_does(lr_image):
    """Above max_pixels each update trains on its own window; the guard compares every weights on update 0's."""
    params = init_params(6)
    plain = AdaptConfig.official(steps=4, learning_rates=OVERSHOOT, max_pixels=100, crop_size=24)
    pair = tf.concat(zero_shot.training_pair(lr_image[None], KERNEL.kernel, 2), -1)
    limits, seed = tf.constant([100, 24]), tf.constant([0, 0])
    checked = [
        float(
            guard_loss(
                adapt(params, lr_image, KERNEL, 2, dataclasses.replace(plain, steps=n)).params, pair, limits, seed
            )
        )
        for n in range(5)
    ]
    kept = adapt(params, lr_image, KERNEL, 2, dataclasses.replace(plain, keep_best=True))
    assert kept.updates == np.argmin(checked) < 4
    graph, _ = adapt_graph(
        params, lr_image, KERNEL.kernel, tf.constant(OVERSHOOT), 2, dataclasses.replace(plain, keep_best=True)
    )
    for a, b in zip(kept.params, graph):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("chunk_seconds", [0.0, 1e9])
def test_backtracking_undoes_an_update_that_raised_the_loss(lr_image, monkeypatch, chunk_seconds):
    """backtrack: update 3 overshoots (OVERSHOOT), so update 4 starts again from the weights after update 2, at
    BACKTRACK_SHRINK times its rate; the losses never rise, and the graph loop (the exporters') agrees."""
    monkeypatch.setattr(zero_shot, "CHUNK_SECONDS", chunk_seconds)
    params = init_params(6)
    plain = AdaptConfig.official(steps=4, learning_rates=OVERSHOOT)
    back = dataclasses.replace(plain, backtrack=True)
    unchecked, checked = adapt(params, lr_image, KERNEL, 2, plain), adapt(params, lr_image, KERNEL, 2, back)
    assert unchecked.losses[3] > unchecked.losses[2]  # the loss after update 3 (before update 4) rose
    np.testing.assert_allclose(checked.losses[:3], unchecked.losses[:3], rtol=1e-6)
    assert checked.losses[3] == checked.losses[2]  # update 4 started from the weights before update 3
    retried = dataclasses.replace(plain, steps=3, learning_rates=(2e-2, 1e-2, OVERSHOOT[3] * BACKTRACK_SHRINK))
    for a, b in zip(checked.params, adapt(params, lr_image, KERNEL, 2, retried).params):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)
    longer = adapt(params, lr_image, KERNEL, 2, dataclasses.replace(back, steps=8))
    assert np.all(np.diff(longer.losses) <= 0)
    rates = tf.constant(OVERSHOOT + OVERSHOOT[3:] * 4)  # steps past the schedule reuse its last rate
    graph, graph_losses = adapt_graph(params, lr_image, KERNEL.kernel, rates, 2, back)
    np.testing.assert_allclose(graph_losses, longer.losses, rtol=1e-5)
    for a, b in zip(graph, longer.params):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    with pytest.raises(InputError, match="backtrack"):
        AdaptConfig(backtrack=True)  # adam


def test_backtracking_compares_cropped_updates_on_the_same_window(lr_image):
    """Above max_pixels each update has its own window: the loss before the last update is measured again on the
    new one before they are compared; adapt and the graph loop agree."""
    params = init_params(6)
    back = AdaptConfig.official(steps=6, learning_rates=OVERSHOOT, max_pixels=100, crop_size=24, backtrack=True)
    fast, losses, _ = adapt(params, lr_image, KERNEL, 2, back)
    rates = tf.constant([OVERSHOOT[min(i, 3)] for i in range(6)])
    graph, graph_losses = adapt_graph(params, lr_image, KERNEL.kernel, rates, 2, back)
    np.testing.assert_allclose(losses, graph_losses, rtol=1e-5)
    for a, b in zip(fast, graph):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    pair = tf.concat(zero_shot.training_pair(lr_image[None], KERNEL.kernel, 2), -1)
    limits, seed = tf.constant([100, 24]), tf.constant([0, 0])
    before = adapt(params, lr_image, KERNEL, 2, dataclasses.replace(back, steps=2, backtrack=False)).params
    window = zero_shot.training_window(pair, limits, seed, 3)
    after = adapt(params, lr_image, KERNEL, 2, dataclasses.replace(back, steps=3, backtrack=False)).params
    on_window = [float(tf.reduce_mean(tf.abs(forward(w, window[..., :3]) - window[..., 3:]))) for w in (before, after)]
    assert on_window[1] > on_window[0]  # update 3 raised the loss on update 4's window ...
    np.testing.assert_allclose(losses[3], on_window[0], rtol=1e-5)  # ... so update 4 starts from before it
