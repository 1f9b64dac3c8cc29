"""The network: parameter count, residual, hand-written backward == GradientTape, weights IO."""

import functools

import numpy as np
import pytest
import tensorflow as tf

from mzsr_tf.backward import l1_loss_and_grads
from mzsr_tf.conv_ops import BUILTIN, NATIVE, TAPS
from mzsr_tf.errors import InputError
from mzsr_tf.model import PARAM_NAMES, MZSRNet, forward, init_params, param_shapes, super_resolve
from mzsr_tf.weights import load_params, save_params


def test_parameter_count_matches_paper():
    assert sum(int(np.prod(s)) for s in param_shapes()) == 225_091
    assert len(init_params(0)) == len(PARAM_NAMES) == 16


def test_global_residual_over_input():
    params = init_params(0)
    params[-2] = tf.zeros_like(params[-2])  # conv8 kernel
    params[-1] = tf.zeros_like(params[-1])
    x = tf.random.uniform([1, 9, 7, 3], seed=1)
    np.testing.assert_allclose(forward(params, x), x, atol=0)


def test_super_resolve_upsamples_then_refines():
    params = init_params(0)
    lr = tf.random.uniform([1, 8, 6, 3], seed=2)
    out = super_resolve(params, lr, 2)
    assert out.shape == (1, 16, 12, 3)
    assert super_resolve(params, lr, 2, (15, 11)).shape == (1, 15, 11, 3)
    np.testing.assert_allclose(super_resolve(params, lr, 2, ops=TAPS), out, atol=1e-5)  # the LiteRT formulation


@pytest.mark.parametrize("ops", [BUILTIN, NATIVE, TAPS], ids=["builtin", "native", "taps"])
@pytest.mark.parametrize(
    "batch,height,width,dynamic", [(1, 12, 10, False), (2, 7, 9, False), (3, 1, 2, False), (2, 5, 3, True)]
)
def test_hand_written_backward_matches_gradient_tape(batch, height, width, dynamic, ops):
    params = [p + 0.01 * tf.random.normal(p.shape, seed=i) for i, p in enumerate(init_params(3))]
    x = tf.random.uniform([batch, height, width, 3], seed=4)
    y = tf.random.uniform([batch, height, width, 3], seed=5)
    with tf.GradientTape() as tape:
        tape.watch(params)
        loss = tf.reduce_mean(tf.abs(forward(params, x) - y))
    expected = tape.gradient(loss, params)
    grads_fn = functools.partial(l1_loss_and_grads, ops=ops)
    if dynamic:  # unknown batch and spatial sizes at trace time, as in the serving and TFLite graphs
        spec = tf.TensorSpec([None, None, None, 3])
        grads_fn = tf.function(lambda p, a, b: l1_loss_and_grads(p, a, b, ops=ops)).get_concrete_function(
            [tf.TensorSpec(p.shape) for p in params], spec, spec
        )
    got_loss, got = grads_fn(params, x, y)
    np.testing.assert_allclose(got_loss, loss, rtol=1e-6)
    for name, g, e in zip(PARAM_NAMES, got, expected):
        scale = float(tf.reduce_max(tf.abs(e))) + 1e-12
        assert float(tf.reduce_max(tf.abs(g - e))) / scale < 1e-4, name


def test_bfloat16_backward_is_mixed_precision_and_close_to_float32():
    params = [p + 0.01 * tf.random.normal(p.shape, seed=i) for i, p in enumerate(init_params(3))]
    x = tf.random.uniform([2, 24, 20, 3], seed=4)
    y = tf.clip_by_value(x + 0.05 * tf.random.normal(x.shape, seed=5), 0, 1)
    loss32, g32 = l1_loss_and_grads(params, x, y)
    loss16, g16 = l1_loss_and_grads(params, x, y, tf.bfloat16)
    assert loss16.dtype == tf.float32 and all(g.dtype == tf.float32 for g in g16)
    loss_f32, g_f32 = l1_loss_and_grads(params, x, y, "float32")  # the default path, bit for bit
    assert float(loss_f32) == float(loss32) and all(np.array_equal(a, b) for a, b in zip(g_f32, g32))
    np.testing.assert_array_equal(forward(params, x, "float32"), forward(params, x))
    np.testing.assert_allclose(loss16, loss32, rtol=1e-2)
    for name, a, b in zip(PARAM_NAMES, g32, g16):
        a, b = a.numpy().ravel(), b.numpy().ravel()
        assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.99, name  # same direction
        assert not np.array_equal(a, b), name  # really computed in bfloat16
    _, native16 = l1_loss_and_grads(params, x, y, tf.bfloat16, NATIVE)  # the meta-test's route
    for name, a, b in zip(PARAM_NAMES, g16, native16):
        a, b = a.numpy().ravel(), b.numpy().ravel()
        assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.99, name


def test_keras_model_equals_functional_forward():
    net = MZSRNet(scale=2)
    lr = tf.random.uniform([1, 6, 5, 3], seed=6)
    np.testing.assert_allclose(net(lr), super_resolve(net.params, lr, 2), atol=1e-6)
    clone = MZSRNet.from_config(net.get_config())
    assert clone.scale == 2.0


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
