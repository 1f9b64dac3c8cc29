"""The one optimizer: SGD, Adam (Kingma & Ba, and Keras/TF1's ε̂ form) and the while-loop inner loop."""

import keras
import numpy as np
import tensorflow as tf

from mzsr_tf.optim import Adam, adam, descend, sgd, zero_moments

RNG = np.random.default_rng(0)
PARAMS = [RNG.standard_normal(s).astype(np.float32) for s in [(3, 3, 2, 4), (4,)]]


def grads_at(step: int) -> list[np.ndarray]:
    rng = np.random.default_rng(step + 1)
    return [rng.standard_normal(p.shape).astype(np.float32) * 10.0 ** (-step) for p in PARAMS]


def test_sgd_takes_one_rate_or_one_per_tensor():
    g = grads_at(0)
    for got, p, q in zip(sgd(PARAMS, g, 0.5), PARAMS, g):
        np.testing.assert_allclose(got, p - 0.5 * q, rtol=1e-6)
    got = sgd(PARAMS, g, tf.constant([0.1, 2.0]))
    np.testing.assert_allclose(got[0], PARAMS[0] - 0.1 * g[0], rtol=1e-6)
    np.testing.assert_allclose(got[1], PARAMS[1] - 2.0 * g[1], rtol=1e-6)


def test_adam_is_kingma_and_ba_algorithm_1():
    params, moments, rule = list(PARAMS), zero_moments(PARAMS), Adam(epsilon=1e-3)
    m, v, ref = [np.zeros_like(p) for p in PARAMS], [np.zeros_like(p) for p in PARAMS], list(PARAMS)
    for t in range(1, 5):
        g = grads_at(t)
        params, moments = adam(params, g, moments, t, 0.01, rule)
        m = [0.9 * a + 0.1 * b for a, b in zip(m, g)]
        v = [0.999 * a + 0.001 * b * b for a, b in zip(v, g)]
        ref = [p - 0.01 * (a / (1 - 0.9**t)) / (np.sqrt(b / (1 - 0.999**t)) + 1e-3) for p, a, b in zip(ref, m, v)]
        for got, want in zip(params, ref):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_adam_epsilon_hat_is_keras_adam():
    """The ε̂ form (ZSSR's TF1 AdamOptimizer) is what Keras' Adam computes, step for step."""
    variables = [tf.Variable(p) for p in PARAMS]
    optimizer = keras.optimizers.Adam(0.01, epsilon=1e-3)
    params, moments = list(PARAMS), zero_moments(PARAMS)
    for t in range(1, 5):
        g = grads_at(t)
        optimizer.apply([tf.constant(a) for a in g], variables)
        rule = Adam(epsilon=1e-3, epsilon_hat=True)
        params, moments = adam(params, g, moments, tf.constant(float(t)), tf.constant(0.01), rule)
        for got, want in zip(params, variables):
            np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-7)


def test_the_two_forms_differ_only_in_where_epsilon_sits():
    def first_update(grads, epsilon, epsilon_hat):
        return adam(PARAMS, grads, zero_moments(PARAMS), 1, 0.01, Adam(epsilon=epsilon, epsilon_hat=epsilon_hat))[0][0]

    np.testing.assert_allclose(first_update(grads_at(0), 1e-30, False), first_update(grads_at(0), 1e-30, True))
    near_epsilon = grads_at(6)  # gradients near ε: the forms part
    assert np.abs(first_update(near_epsilon, 1e-6, False) - first_update(near_epsilon, 1e-6, True)).max() > 1e-4


def test_descend_equals_the_same_updates_one_by_one():
    def update(i, params, state):
        g = [tf.gather(tf.constant(np.stack([grads_at(k)[j] for k in range(3)])), i) for j in range(len(params))]
        loss = tf.add_n([tf.reduce_sum(tf.abs(p)) for p in params])
        params, moments = adam(params, g, state[0], state[1] + 1, 0.1)
        return loss, params, (moments, state[1] + 1)

    got, (moments, t), losses = tf.function(lambda: descend(update, PARAMS, (zero_moments(PARAMS), 0.0), 3))()
    params, state, want = list(PARAMS), (zero_moments(PARAMS), 0.0), []
    for i in range(3):
        loss, params, state = update(tf.constant(i), params, state)
        want.append(loss)
    assert float(t) == 3.0 and losses.shape == (3,)
    np.testing.assert_allclose(losses, want, rtol=1e-6)
    for a, b in zip(got, params):
        np.testing.assert_allclose(a, b, rtol=1e-6)
