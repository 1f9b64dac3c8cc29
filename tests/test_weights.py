"""Weights files: reading and writing θ (formats, learned rates, scale, TF1 checkpoints, bad files) and the shipped
weights (present, loadable, finite, within their budget: 1 MB for θ, 4.5 MB more for a conditioned start's basis in
float16; trained, better than bicubic)."""

import numpy as np
import pytest
import tensorflow as tf

from mzsr_tf.errors import InputError
from mzsr_tf.model import PARAM_NAMES, init_params, param_shapes
from mzsr_tf.weights import WEIGHTS_DIR, default_weights, load_params, save_params


@pytest.mark.parametrize("scale,subsample", [(2, "direct"), (2, "bicubic"), (4, "direct")])
def test_shipped_meta_weights_load_and_fit_the_budget(scale, subsample):
    from mzsr_tf.conditioning import START_FEATURES
    from mzsr_tf.weights import load_start_basis

    path = default_weights(scale, subsample)
    basis_bytes = 0 if load_start_basis(path) is None else START_FEATURES * 225_091 // 2  # 4-bit codes
    assert path.stat().st_size <= 1_000_000 + basis_bytes
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
        ("g_d_2.0", 10, 2.5, 4),  # the paper's x4 kernel, with the x4 θ_M
    ],
)
def test_shipped_meta_weights_beat_bicubic_on_a_photo(astronaut_uint8, kernel, steps, gain, scale):
    """MZSR(steps) with the shipped θ_M and its default meta-test on an LR photo made with a paper kernel: PSNR-Y
    gain over bicubic (dB)."""
    from benchmarks.paper_table import make_lr
    from mzsr_tf.api import ZeroShotSR
    from mzsr_tf.imresize import upscale
    from mzsr_tf.kernels import resolve_degradation
    from mzsr_tf.metrics import psnr_y
    from mzsr_tf.zero_shot import zero_shot_sr

    hr = astronaut_uint8
    degradation = resolve_degradation(kernel)
    lr = make_lr(hr, degradation, scale).astype(np.float32) / 255  # as the benchmark tables make it
    bicubic = psnr_y(upscale(lr[None], scale, hr.shape[:2])[0].numpy(), hr, border=scale)
    model = ZeroShotSR.from_weights(default_weights(scale), scale)
    config = model.adapt_config(steps)
    result = zero_shot_sr(model.params, lr, degradation, scale, config, hr.shape[:2], model.start_basis)
    assert psnr_y(result.sr, hr, border=scale) > bicubic + gain


@pytest.mark.parametrize("kernel,gain", [("g_d_0.2", -0.05), ("g_d_ani", -0.05)])
def test_default_adaptation_is_not_below_the_official_schedule(astronaut_uint8, kernel, gain):
    """Ten updates of the shipped ×2 direct weights with the learned rule calibrated for their conditioned start are
    not below ten official SGD ones from the same start on a held-out photo (dB; float32 on every machine: from θ(k)
    the two end level)."""
    from benchmarks.paper_table import make_lr
    from mzsr_tf.api import ZeroShotSR
    from mzsr_tf.kernels import resolve_degradation
    from mzsr_tf.metrics import psnr_y
    from mzsr_tf.zero_shot import AdaptConfig, zero_shot_sr

    hr = astronaut_uint8
    degradation = resolve_degradation(kernel)
    lr = make_lr(hr, degradation, 2).astype(np.float32) / 255
    model = ZeroShotSR.from_weights(default_weights(2))
    configs = {"default": model.adapt_config(precision="float32"), "official": AdaptConfig.official(2)}
    psnr = {
        k: psnr_y(zero_shot_sr(model.params, lr, degradation, 2, c, start_basis=model.start_basis).sr, hr, border=2)
        for k, c in configs.items()
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


# === Reading and writing ===


@pytest.mark.parametrize("suffix", [".weights.h5", ".npz"])
def test_weights_round_trip(tmp_path, suffix):
    params = init_params(7)
    path = save_params(params, tmp_path / f"w{suffix}")
    loaded = load_params(path)
    for a, b in zip(params, loaded):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(InputError, match="exists"):
        save_params(params, path)


@pytest.mark.parametrize("suffix", [".weights.h5", ".npz"])
def test_learned_inner_rates_travel_with_the_weights(tmp_path, suffix):
    from mzsr_tf.weights import load_inner_lr

    params = init_params(1)
    rates = np.random.default_rng(0).uniform(0.001, 0.02, (5, len(params))).astype(np.float32)
    save_params(params, tmp_path / f"lslr{suffix}", inner_lr=rates)
    save_params(params, tmp_path / f"plain{suffix}")
    np.testing.assert_array_equal(load_inner_lr(tmp_path / f"lslr{suffix}"), rates)
    assert load_inner_lr(tmp_path / f"plain{suffix}") is None
    for a, b in zip(load_params(tmp_path / f"lslr{suffix}"), params):  # the weights load as before
        np.testing.assert_array_equal(a, b)
    with pytest.raises(InputError, match="inner_lr has shape"):
        save_params(params, tmp_path / f"bad{suffix}", inner_lr=rates[:, :3])
    with pytest.raises(InputError, match="NaN or Inf"):
        save_params(params, tmp_path / f"bad{suffix}", inner_lr=rates * np.inf)
    assert not (tmp_path / f"bad{suffix}").exists()


@pytest.mark.parametrize("suffix", [".weights.h5", ".npz"])
def test_weights_record_their_scale(tmp_path, suffix):
    from mzsr_tf.weights import check_scale, load_scale

    save_params(init_params(1), tmp_path / f"x4{suffix}", scale=4)
    save_params(init_params(1), tmp_path / f"plain{suffix}")
    assert load_scale(tmp_path / f"x4{suffix}") == 4 and load_scale(tmp_path / f"plain{suffix}") is None
    check_scale(tmp_path / f"x4{suffix}", 4)
    check_scale(tmp_path / f"plain{suffix}", 3)  # unknown: no check
    with pytest.raises(InputError, match="trained for x4, not x2"):
        check_scale(tmp_path / f"x4{suffix}", 2)


def test_tf1_checkpoint_import(tmp_path):
    """The official layout: variables MODEL/convN/kernel|bias saved by a TF1 Saver."""
    params = init_params(8)
    with tf.Graph().as_default():
        variables = []
        for name, value in zip(PARAM_NAMES, params):
            layer, kind = name.split("/")
            with tf.compat.v1.variable_scope(f"MODEL/{layer}"):
                variables.append(tf.compat.v1.get_variable(kind, initializer=value.numpy()))
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            prefix = tf.compat.v1.train.Saver(variables).save(sess, str(tmp_path / "Pretrained"))
    for spec in (prefix, prefix + ".index", tmp_path):
        loaded = load_params(spec)
        for a, b in zip(params, loaded):
            np.testing.assert_array_equal(a, b)


def test_bad_weight_files(tmp_path):
    junk = tmp_path / "junk.weights.h5"
    junk.write_bytes(b"not an hdf5 file")
    with pytest.raises(InputError, match="junk.weights.h5"):
        load_params(junk)
    wrong = dict(zip(PARAM_NAMES, [np.zeros(s, np.float32) for s in param_shapes()]))
    wrong["conv1/kernel"] = np.zeros((3, 3, 1, 64), np.float32)
    np.savez(tmp_path / "wrong.npz", **wrong)
    with pytest.raises(InputError, match="conv1/kernel has shape"):
        load_params(tmp_path / "wrong.npz")
    with pytest.raises(InputError, match="not found"):
        load_params(tmp_path / "missing.weights.h5")
    with pytest.raises(InputError, match="not a .weights.h5"):
        load_params(tmp_path / "whatever.bin")


def test_the_start_basis_is_stored_in_4_bits_with_a_scale_per_channel(tmp_path):
    """save_params stores V as 4-bit codes, two a byte, with a float32 scale per output channel: each entry within
    half a step of its channel's scale, zeros exact, and an earlier file's float16 V still reads."""
    import h5py

    from mzsr_tf.conditioning import START_FEATURES
    from mzsr_tf.weights import START_BASIS, START_CODES, START_SCALES, load_start_basis
    from mzsr_tf.weights.quantisation import LEVELS

    rng = np.random.default_rng(5)
    basis = [rng.standard_normal((START_FEATURES, *s)).astype(np.float32) * 10.0 ** rng.uniform(-4, -2, s[-1])
             for s in param_shapes()]  # fmt: skip
    basis[2][..., 7] = 0.0  # a channel of zeros
    path = save_params(init_params(0), tmp_path / "q.weights.h5", start_basis=basis)
    with h5py.File(path, "r") as f:
        assert f[START_CODES].dtype == np.uint8 and f[START_CODES].shape == (START_FEATURES, (225_091 + 1) // 2)
        assert f[START_SCALES].dtype == np.float32 and START_BASIS not in f
    for b, q in zip(basis, load_start_basis(path)):
        step = np.abs(b).reshape(START_FEATURES, -1, b.shape[-1]).max(axis=1) / LEVELS  # [features, channels]
        error = np.abs(q.numpy() - b).reshape(START_FEATURES, -1, b.shape[-1])
        assert np.all(error <= 0.5 * step[:, None] * (1 + 1e-5) + 1e-12)
    assert np.all(load_start_basis(path)[2].numpy()[..., 7] == 0.0)
    npz = save_params(init_params(0), tmp_path / "q.npz", start_basis=basis)
    for a, b in zip(load_start_basis(path), load_start_basis(npz)):
        np.testing.assert_array_equal(a, b)
    earlier = save_params(init_params(0), tmp_path / "f16.weights.h5")
    flat = np.concatenate([b.reshape(START_FEATURES, -1) for b in basis], axis=1).astype(np.float16)
    with h5py.File(earlier, "a") as f:
        f.create_dataset(START_BASIS, data=flat)
    for b, v in zip(basis, load_start_basis(earlier)):
        np.testing.assert_allclose(v, b, rtol=1e-3, atol=1e-7)
    with h5py.File(path, "a") as f:
        del f[START_SCALES]
    with pytest.raises(InputError, match="do not make a basis"):
        load_start_basis(path)
