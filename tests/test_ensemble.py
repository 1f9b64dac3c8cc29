"""Test-time refinements: dihedral transforms, self-ensemble, back-projection."""

import numpy as np
import pytest
import tensorflow as tf

from mzsr_tf.degradation import degrade
from mzsr_tf.ensemble import back_projection, dihedral, dihedral_shift, geometric_self_ensemble, undo_dihedral
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

    def up(x, k):
        return upscale(x, 2)

    for reduce in ("median", "mean"):
        np.testing.assert_allclose(geometric_self_ensemble(up, lr, reduce), up(lr, 0), atol=1e-5)


@pytest.mark.parametrize("shift", [(0.0, 0.0), (0.5, 0.5), (0.3, 0.9)])
def test_dihedral_shift_is_where_the_transformed_samples_sit(astronaut64, shift):
    # up-sampling that puts each LR sample where it sits (s·i + δ, not MATLAB's s·i + (s - 1)/2 + δ) commutes
    # with the dihedral transforms once each member gets its transform's δ
    lr = tf.constant(astronaut64[None, :20, :22].astype(np.float32))

    def members(shift_of):
        outs = []
        geometric_self_ensemble(
            lambda x, k: upscale(x, 2, shift=shift_of(k)), lr, refine=lambda sr, _: outs.append(sr) or sr
        )
        return [out[:, 4:-4, 4:-4] for out in outs]

    exact = upscale(lr, 2, shift=np.subtract(shift, 0.5))[:, 4:-4, 4:-4]
    for out in members(lambda k: dihedral_shift(shift, k, 2) - 0.5):
        np.testing.assert_allclose(out, exact, atol=1e-5)
    if shift == (0.0, 0.0):  # one δ for all members puts the mirrored ones a pixel off
        assert not np.allclose(members(lambda k: np.subtract(shift, 0.5))[4], exact, atol=1e-3)


def test_median_rejects_an_outlier_member():
    lr = tf.zeros([1, 4, 4, 1])
    calls = []

    def sr(x, k):
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

    geometric_self_ensemble(lambda x, k: upscale(x, 2), lr, refine=refine)
    assert seen == [((1, 8, 12, 3), (1, 4, 6, 3), True)] * 8
