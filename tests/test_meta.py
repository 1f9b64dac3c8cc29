"""MAML: second-order meta-gradient vs finite differences, first order differs, annealed weights."""

import numpy as np
import pytest
import tensorflow as tf

from mzsr_tf.conv_ops import BUILTIN, NATIVE
from mzsr_tf.errors import InputError
from mzsr_tf.meta import MetaConfig, fast_adapt, kernel_rates, l1, loss_weights, meta_objective, monotone_penalty
from mzsr_tf.model import forward


def tiny_params(seed, width=3):
    """An 8-layer net like the real one but `width` channels, in float64."""
    rng = np.random.default_rng(seed)
    chans = [3] + [width] * 7 + [3]
    params = []
    for a, b in zip(chans[:-1], chans[1:]):
        params += [tf.constant(rng.normal(0, 1.0 / np.sqrt(9 * a), (3, 3, a, b))), tf.constant(rng.normal(0, 0.1, b))]
    return params


@pytest.fixture(scope="module")
def task():
    rng = np.random.default_rng(1)
    return [tf.constant(rng.random((2, 6, 6, 3))) for _ in range(4)]


def query_loss(params, task, first_order, native=False):
    ops = NATIVE if native else BUILTIN
    _, losses = fast_adapt(params, *task, steps=2, inner_lr=0.5, first_order=first_order, ops=ops)
    return losses[-1]


def meta_gradient(params, task, first_order, native=False):
    with tf.GradientTape() as tape:
        tape.watch(params)
        loss = query_loss(params, task, first_order, native)
    return tape.gradient(loss, params)


def directional(grads, direction):
    return sum(float(tf.reduce_sum(g * d)) for g, d in zip(grads, direction))


@pytest.mark.parametrize("native", [False, True], ids=["builtin", "native"])
def test_second_order_meta_gradient_matches_finite_differences(task, native):
    """Through the hand-written backward and through TF's conv-backprop kernels (train.py without --jit)."""
    params = tiny_params(0)
    second = meta_gradient(params, task, False, native)
    first = meta_gradient(params, task, True, native)
    rng = np.random.default_rng(2)
    eps, gaps = 1e-6, []
    for _ in range(3):
        direction = [tf.constant(rng.normal(size=p.shape)) for p in params]
        plus = query_loss([p + eps * d for p, d in zip(params, direction)], task, False, native)
        minus = query_loss([p - eps * d for p, d in zip(params, direction)], task, False, native)
        numeric = float(plus - minus) / (2 * eps)
        assert directional(second, direction) == pytest.approx(numeric, rel=1e-5, abs=1e-9)
        gaps.append(abs(directional(first, direction) - numeric) / abs(numeric))
    assert max(gaps) > 1e-3  # first-order MAML drops the Hessian terms: a different gradient


def test_loss_weights_anneal_towards_the_last_step():
    w0 = loss_weights(0, 5, 100).numpy()
    np.testing.assert_allclose(w0, [0.2] * 5, rtol=1e-6)
    mid = loss_weights(50, 5, 100).numpy()
    assert mid[0] == pytest.approx(0.1) and mid[-1] == pytest.approx(0.6)
    end = loss_weights(10_000, 5, 100).numpy()
    np.testing.assert_allclose(end, [0.006] * 4 + [0.976], rtol=1e-5)
    for step in (0, 37, 50, 99, 100, 5000):
        assert loss_weights(step, 5, 100).numpy().sum() == pytest.approx(1.0, abs=1e-6)


def test_fixed_step_weights_replace_the_annealing_and_may_weigh_theta_itself(task):
    tasks, params = [t[None] for t in task], tiny_params(0)
    config = MetaConfig(inner_steps=2, inner_lr=0.5, step_weights=(0, 3, 1))
    objective, per_step = meta_objective(params, tasks, 10**6, config, False)
    assert float(objective) == pytest.approx(float(0.75 * per_step[0] + 0.25 * per_step[1]), rel=1e-12)
    annealed, _ = meta_objective(params, tasks, 10**6, MetaConfig(inner_steps=2, inner_lr=0.5), False)
    assert float(annealed) != pytest.approx(float(objective), rel=1e-6)
    with_theta, _ = meta_objective(
        params, tasks, 0, MetaConfig(inner_steps=2, inner_lr=0.5, step_weights=(2, 1, 1)), False
    )
    unadapted = float(l1(forward(params, task[2]), task[3]))
    assert float(with_theta) == pytest.approx(0.5 * unadapted + 0.25 * float(per_step[0] + per_step[1]), rel=1e-6)
    for bad in ((1.0, 1.0), (1.0, -1.0, 1.0), (0.0, 0.0, 0.0)):
        with pytest.raises(InputError, match="step_weights"):
            MetaConfig(inner_steps=2, step_weights=bad)
    assert MetaConfig(inner_steps=2, step_weights=[0, 1, 2]).step_weights == (0.0, 1.0, 2.0)  # from JSON: a tuple


def test_monotone_penalty_sums_each_tasks_rises_not_the_mean_rise(task):
    assert float(monotone_penalty(tf.constant([3.0, 2.0, 2.5, 2.4, 3.0]))) == pytest.approx(1.1, rel=1e-6)
    assert float(monotone_penalty(tf.constant([3.0, 2.0, 2.0, 1.0]))) == 0.0
    tasks = tuple(tf.stack([t, t[..., ::-1]]) for t in task)  # two tasks: the second mirrored in colour
    params = tiny_params(0)
    plain = MetaConfig(inner_steps=2, inner_lr=5.0, step_weights=(0, 1, 1))  # a rate that overshoots
    base, _ = meta_objective(params, tasks, 0, plain, False)
    penalised, _ = meta_objective(params, tasks, 0, MetaConfig(**{**plain.__dict__, "monotone": 2.0}), False)
    rises = []
    for t in range(2):
        _, losses = fast_adapt(params, tasks[0][t], tasks[1][t], tasks[2][t], tasks[3][t], 2, 5.0)
        unadapted = l1(forward(params, tasks[2][t]), tasks[3][t])
        rises.append(float(monotone_penalty(tf.concat([unadapted[None], losses], 0))))
    assert max(rises) > 0
    assert float(penalised) == pytest.approx(float(base) + 2.0 * np.mean(rises), rel=1e-6)
    with pytest.raises(InputError, match="monotone"):
        MetaConfig(monotone=-1.0)


def test_a_meta_step_lowers_the_query_loss():
    """Adam on the meta-objective improves post-adaptation loss on the same fixed tasks."""
    rng = np.random.default_rng(3)
    params = [tf.Variable(tf.cast(p, tf.float32)) for p in tiny_params(4, width=4)]
    hr = rng.random((2, 4, 8, 8, 3)).astype(np.float32)
    x = hr + rng.normal(0, 0.1, hr.shape).astype(np.float32)  # "degraded" inputs
    tasks = (x[:, :2], hr[:, :2], x[:, 2:], hr[:, 2:])
    config = MetaConfig(inner_steps=2, inner_lr=0.01)
    optimizer = tf.keras.optimizers.Adam(1e-2)
    before = float(meta_objective(params, tasks, 0, config, False)[0])
    for step in range(5):
        with tf.GradientTape() as tape:
            objective, _ = meta_objective(params, tasks, step, config, False)
        optimizer.apply_gradients(zip(tape.gradient(objective, params), params))
    after = float(meta_objective(params, tasks, 0, config, False)[0])
    assert after < 0.9 * before


def test_fast_weights_are_new_tensors_and_gradient_reaches_theta(task):
    params = [tf.Variable(p) for p in tiny_params(5)]
    with tf.GradientTape() as tape:
        fast, losses = fast_adapt(params, *task, steps=1, inner_lr=0.1)
        loss = l1(forward(fast, task[2]), task[3])
    assert all(not isinstance(f, tf.Variable) for f in fast)
    grads = tape.gradient(loss, params)
    assert all(g is not None for g in grads)
    np.testing.assert_allclose(losses[-1], loss)


def test_bfloat16_meta_gradient_is_close_to_float32():
    """Mixed precision through the second-order meta-gradient (casts are differentiable)."""
    rng = np.random.default_rng(6)
    params = [tf.Variable(tf.cast(p, tf.float32)) for p in tiny_params(7, width=16)]
    hr = rng.random((2, 2, 12, 12, 3)).astype(np.float32)
    x = np.clip(hr + rng.normal(0, 0.1, hr.shape), 0, 1).astype(np.float32)
    tasks = (x[:, :1], hr[:, :1], x[:, 1:], hr[:, 1:])
    grads = {}
    for precision in ("float32", "bfloat16"):
        config = MetaConfig(inner_steps=2, inner_lr=0.1, precision=precision)
        with tf.GradientTape() as tape:
            objective, _ = meta_objective(params, tasks, 0, config, False)
        grads[precision] = np.concatenate([g.numpy().ravel() for g in tape.gradient(objective, params)])
    a, b = grads["float32"], grads["bfloat16"]
    assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.99
    assert not np.array_equal(a, b)


# === Learned inner rates (MAML++ LSLR) ===


def test_constant_learned_rates_equal_one_alpha(task):
    params = tiny_params(0)
    rates = tf.fill([2, len(params)], tf.constant(0.3, tf.float64))
    fast_a, losses_a = fast_adapt(params, *task, steps=3, inner_lr=0.3)
    fast_b, losses_b = fast_adapt(params, *task, steps=3, inner_lr=rates)  # step 3 reuses the last row
    np.testing.assert_allclose(losses_a, losses_b, rtol=1e-6)
    for a, b in zip(fast_a, fast_b):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)


def test_each_row_and_column_is_its_steps_and_tensors_rate(task):
    params = tiny_params(0)
    rates = np.full([2, len(params)], 0.1)
    rates[1, 3] = 0.0  # tensor 3 frozen at step 2
    rates[0, :] = 0.0  # nothing moves at step 1
    fast, _ = fast_adapt(params, *task, steps=1, inner_lr=tf.constant(rates))
    for a, b in zip(fast, params):
        np.testing.assert_array_equal(a, b)
    two, _ = fast_adapt(params, *task, steps=2, inner_lr=tf.constant(rates))
    np.testing.assert_array_equal(two[3], params[3])
    assert not np.array_equal(two[2], params[2])


@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradient_reaches_the_learned_rates(task, first_order):
    params = tiny_params(0)
    rates = tf.Variable(tf.fill([2, len(params)], tf.constant(0.05, tf.float64)))
    tasks = tuple(t[None] for t in task)
    config = MetaConfig(inner_steps=2, learn_inner_lr=True)
    with tf.GradientTape() as tape:
        objective, _ = meta_objective(params, tasks, 0, config, first_order, inner_lr=rates)
    grad = tape.gradient(objective, rates).numpy()
    assert np.all(np.isfinite(grad)) and np.count_nonzero(grad) > len(params)  # most rates of both steps move
    # the directional derivative along all rates, by central differences (second order is exact)
    eps = 1e-4

    def objective_at(delta):
        return float(meta_objective(params, tasks, 0, config, first_order, inner_lr=rates + delta)[0])

    numeric = (objective_at(eps) - objective_at(-eps)) / (2 * eps)
    if not first_order:
        np.testing.assert_allclose(grad.sum(), numeric, rtol=1e-2)


def test_kernel_rates_scale_each_steps_rates_by_the_kernels_features():
    from mzsr_tf.meta import SLOPE_UNIT

    rng = np.random.default_rng(0)
    alpha = rng.uniform(0.005, 0.02, (3, 16)).astype(np.float32)
    slopes = np.float32([[0.0, 0.0], [-0.01, 0.0], [0.002, 0.005]])
    features = np.float32([0.7, 1.4])
    np.testing.assert_array_equal(kernel_rates(alpha, features), alpha)  # plain rates: the same for every kernel
    got = kernel_rates(np.concatenate([alpha, slopes], 1), features).numpy()
    expected = alpha * np.exp(SLOPE_UNIT * slopes @ features)[:, None]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_allclose(got[0], alpha[0], rtol=1e-6)  # zero slopes: the rates as they were
    assert got[1, 0] < alpha[1, 0] / 2 < got[2, 0]


def test_kernel_conditioned_meta_objective_takes_each_tasks_features_and_trains_the_slopes(task):
    tasks = tuple(tf.cast(tf.stack([t, t[..., ::-1]]), tf.float32) for t in task)
    params = [tf.cast(p, tf.float32) for p in tiny_params(0)]
    config = MetaConfig(inner_steps=2, learn_inner_lr=True, kernel_rates=True, step_weights=(0, 1, 1))
    table = tf.Variable(np.concatenate([np.full((2, 16), 0.5), [[0.0, 0.004], [0.003, 0.0]]], 1).astype(np.float32))
    features = tf.constant([[0.7, 0.0], [-1.6, 1.2]])
    with tf.GradientTape() as tape:
        objective, _ = meta_objective(params, (*tasks, features), 0, config, False, inner_lr=table)
    per_task = []
    for t in range(2):
        rates = kernel_rates(table, features[t])
        _, losses = fast_adapt(params, tasks[0][t], tasks[1][t], tasks[2][t], tasks[3][t], 2, rates)
        per_task.append(float(tf.reduce_mean(losses)))
    assert float(objective) == pytest.approx(np.mean(per_task), rel=1e-5)
    grads = tape.gradient(objective, table).numpy()
    assert np.abs(grads[:, 16:]).min() > 0  # the slopes learn
    plain = MetaConfig(inner_steps=2, learn_inner_lr=True, step_weights=(0, 1, 1))
    unconditioned, _ = meta_objective(params, tasks, 0, plain, False, inner_lr=table[:, :16])
    assert float(unconditioned) != pytest.approx(float(objective), rel=1e-4)
    with pytest.raises(InputError, match="learn_inner_lr"):
        MetaConfig(kernel_rates=True)
