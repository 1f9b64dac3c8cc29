"""ZSSR's traced graphs: a chunk of training iterations (augment → son → Adam step) in one ``tf.while_loop``,
and the reconstruction test; traced once per ``GraphKey`` (stage scale, subsampling, augmentation settings)."""

from __future__ import annotations

import collections
from dataclasses import dataclass

import tensorflow as tf

from mzsr_tf.backward import l1_loss_and_grads
from mzsr_tf.imresize import imresize, output_length
from mzsr_tf.model import PARAM_SPECS, forward
from mzsr_tf.optim import Adam, adam, descend
from mzsr_tf.zssr.augmentation import augmentation_matrix, random_augmentation, warp_cubic
from mzsr_tf.zssr.config import ZSSRConfig
from mzsr_tf.zssr.sons import father_to_son, scale_pair

__all__ = ["TRACES", "GraphKey", "graph_key", "graph"]

TRACES: collections.Counter = collections.Counter()  # graph traces per function (tests count them)


@dataclass(frozen=True)
class GraphKey:
    """Everything a traced training/test graph depends on besides its tensor arguments."""

    scale: tuple[float, float]
    subsample: str
    blurred: bool  # a kernel is given (else plain bicubic)
    config: ZSSRConfig  # graph-relevant fields only (see ``_graph_key``)


def graph_key(scale, subsample, kernel, config: ZSSRConfig) -> GraphKey:
    graph_config = ZSSRConfig(
        crop_size=config.crop_size,
        noise_std=config.noise_std,
        augment_leave_as_is_probability=config.augment_leave_as_is_probability,
        augment_no_interpolate_probability=config.augment_no_interpolate_probability,
        augment_min_scale=config.augment_min_scale,
        augment_scale_diff_sigma=config.augment_scale_diff_sigma,
        augment_shear_sigma=config.augment_shear_sigma,
        augment_allow_rotation=config.augment_allow_rotation,
    )
    return GraphKey(scale_pair(scale), subsample, kernel is not None, graph_config)


def _make_train_fn(key: GraphKey):
    """``iterations`` ZSSR updates (augment → son → Adam step) in one ``tf.while_loop``; any image size."""
    config, crop = key.config, key.config.crop_size
    son_size = [output_length(crop, 1 / s) for s in key.scale]

    @tf.function(
        input_signature=[
            PARAM_SPECS,
            [*PARAM_SPECS, *PARAM_SPECS],  # Adam moments m, v
            tf.TensorSpec([], tf.float32),  # Adam step count so far
            tf.TensorSpec([None, None, None, 3], tf.float32),  # father sources, zero-padded to one size
            tf.TensorSpec([None, 2], tf.int32),  # their true sizes
            tf.TensorSpec([None], tf.float32),  # their base scales (input = 1)
            tf.TensorSpec([None, None], tf.float32),  # blur kernel ([[1]] when none)
            tf.TensorSpec([], tf.float32),  # learning rate
            tf.TensorSpec([2], tf.int32),  # seed
            tf.TensorSpec([], tf.int32),  # index of the first iteration
            tf.TensorSpec([], tf.int32),  # iterations to run
        ],
        autograph=False,
    )
    def train_fn(params, moments, t, sources, sizes, base_scales, kernel, learning_rate, seed, start, iterations):
        TRACES["zssr_train"] += 1
        kernel = kernel if key.blurred else None
        rule = Adam(epsilon_hat=True)  # Adam as TF1's AdamOptimizer (ZSSR)

        def update(i, params, state):
            moments, t = state
            seeds = tf.random.experimental.stateless_split(tf.random.experimental.stateless_fold_in(seed, start + i), 2)
            aug = random_augmentation(seeds[0], base_scales, base_scales[-1], config)
            matrix = augmentation_matrix(aug, sizes[aug.source], base_scales[aug.source], crop)
            hr_father = warp_cubic(sources[aug.source], sizes[aug.source], matrix, crop)[None]
            lr_son = father_to_son(hr_father, kernel, key.scale, key.subsample, config.noise_std, seeds[1])
            lr_son = tf.ensure_shape(lr_son, [1, *son_size, 3])  # static: the resize picks its conv path
            loss, grads = l1_loss_and_grads(params, imresize(lr_son, key.scale, (crop, crop)), hr_father)
            params, moments = adam(params, grads, moments, t + 1, learning_rate, rule)
            return loss, params, (moments, t + 1)

        params, (moments, t), losses = descend(update, params, (list(moments), t), iterations)
        return params, moments, t, losses

    return train_fn


def _make_test_fn(key: GraphKey):
    """Reconstruction MSE of ``clip(net(bicubic↑(son(input))))`` vs the input (official ``quick_test``)."""

    @tf.function(
        input_signature=[
            PARAM_SPECS,
            tf.TensorSpec([None, None, 3], tf.float32),
            tf.TensorSpec([None, None], tf.float32),
            tf.TensorSpec([2], tf.int32),
        ],
        autograph=False,
    )
    def test_fn(params, image, kernel, seed):
        TRACES["zssr_test"] += 1
        father = image[None]
        son = father_to_son(
            father, kernel if key.blurred else None, key.scale, key.subsample, key.config.noise_std, seed
        )
        out = tf.clip_by_value(forward(params, imresize(son, key.scale, tf.shape(father)[1:3])), 0.0, 1.0)
        return tf.reduce_mean(tf.square(father - out))

    return test_fn


_GRAPHS: dict = {}


def graph(kind: str, key: GraphKey):
    if (kind, key) not in _GRAPHS:
        _GRAPHS[kind, key] = (_make_train_fn if kind == "train" else _make_test_fn)(key)
    return _GRAPHS[kind, key]
