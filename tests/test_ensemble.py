"""Test-time refinements: dihedral transforms, self-ensemble, back-projection."""

import numpy as np
import pytest
import tensorflow as tf

from mzsr_tf.degradation import degrade
from mzsr_tf.ensemble import back_projection, dihedral, geometric_self_ensemble, undo_dihedral
from mzsr_tf.imresize import upscale
from mzsr_tf.kernels import gaussian_kernel


@pytest.mark.parametrize("k", range(8))
def test_dihedral_round_trip_and_distinct(k):
    x = tf.reshape(tf.range(2 * 3 * 5 * 1, dtype=tf.float32), [2, 3, 5, 1])
    np.testing.assert_array_equal(undo_dihedral(dihedral(x, k), k), x)
    others = [dihedral(x, j) for j in range(8) if j != k]
    assert all(o.shape != dihedral(x, k).shape or not np.array_equal(o, dihedral(x, k)) for o in others)


def test_self_ensemble_of_an_equivariant_map_is_the_map(astronaut64):
    lr = tf.constant(astronaut64[None, :20, :20].astype(np.float32))

    def up(x):
        return upscale(x, 2)

    for reduce in ("median", "mean"):
        np.testing.assert_allclose(geometric_self_ensemble(up, lr, reduce), up(lr), atol=1e-5)


def test_median_rejects_an_outlier_member():
    lr = tf.zeros([1, 4, 4, 1])
    calls = []

    def sr(x):
        calls.append(1)
        return x + (10.0 if len(calls) == 1 else 1.0)

    np.testing.assert_allclose(geometric_self_ensemble(sr, lr, "median"), tf.ones([1, 4, 4, 1]))
    assert len(calls) == 8


def test_back_projection_makes_the_sr_consistent_with_the_lr(astronaut64):
    kernel = gaussian_kernel(2.0, 2.0, 0.0, 9).numpy()
    hr = tf.constant(astronaut64[None, :64, :64])
    lr = degrade(hr, kernel, 2)
    sr = upscale(lr, 2)
    err_before = float(tf.reduce_mean(tf.abs(degrade(sr, kernel, 2) - lr)))
    refined = back_projection(sr, lr, kernel, 2, "direct", iters=5)
    err_after = float(tf.reduce_mean(tf.abs(degrade(refined, kernel, 2) - lr)))
    assert err_after < 0.5 * err_before


def test_refine_sees_each_member_in_the_original_orientation():
    lr = tf.random.uniform([1, 4, 6, 3], seed=3)
    seen = []

    def refine(sr, lr_seen):
        seen.append((tuple(sr.shape), tuple(lr_seen.shape), bool(tf.reduce_all(lr_seen == lr))))
        return sr

    geometric_self_ensemble(lambda x: upscale(x, 2), lr, refine=refine)
    assert seen == [((1, 8, 12, 3), (1, 4, 6, 3), True)] * 8
