"""ZSSR: "Zero-Shot" Super-Resolution using Deep Internal Learning (Shocher et al., CVPR 2018).

An image-specific network is trained from scratch (or from given weights) on pairs made from the
test image alone: an **HR father** is a 128x128 augmented crop of the image (or of a downscaled
version of it, or, in gradual mode, of an earlier stage's output), its **LR son** is
``father_to_son(father) = (father ⊛ k)↓s + n``, and the net learns ``net(bicubic↑(son)) ≈ father``
with Adam and an L1 loss. The learning rate drops by 10 when the reconstruction error stops
falling (``lr_should_drop``); training stops below 9e-6 or at 3000 iterations. The result is the
8-way geometric median self-ensemble with back-projection of every member and of the median.

Follows the official code (``assafshocher/ZSSR``: ``ZSSR.py``, ``configs.py``, ``utils.py``), including its
quirks: fathers are picked uniformly in scale, crops rotate about (w/2, h/2) rather than the pixel centre,
small images are zero-padded, and the slope test uses 2018 NumPy's ``polyfit`` covariance. The augmentation
warp reproduces ``cv2.warpPerspective(INTER_CUBIC)`` (A = -0.75, 1/32-pixel positions, constant-0 border) with
TF gathers (OpenCV is not a dependency). Differences: our network has biases (initialised to 0); the son is
our ``degrade`` (reflect border, pixels 0, s, 2s, ... kept) without ZSSR's ``kernel_shift``; random numbers
come from TF's stateless generators, so runs are reproducible but not NumPy-identical; the weights start at
variance 1/fan-in (MZSR's initialiser) instead of ZSSR's 0.1/fan-in — from 0.1, the first gradients sit below
Adam's ε and on a bicubic-downscaled image the net did not move before the first learning-rate drops (all of
the gain then came from back-projection and the ensemble; docs/results.md; ``init_variance=0.1`` restores it);
``base_change_sfs`` is not implemented (no official preset uses it); in gradual mode only stages at the target
scale use the given kernel, earlier ones plain bicubic (the official code takes one kernel file per stage).

Son making, augmentation and the Adam update of a chunk of iterations (up to the next test or
learning-rate check, at most 50) run in one ``tf.function`` (``tf.while_loop``) with dynamic image
sizes, traced once per (stage scale, subsampling, augmentation settings).

Example:
  >>> result = train_zssr(lr_image, resolve_degradation("bicubic"), 2, PRESETS["x2_ideal"])
  >>> result.sr.shape, result.log[-1].iterations, result.log[-1].learning_rate_drops
"""

from mzsr_tf.ensemble import back_projection
from mzsr_tf.zssr.augmentation import (
    AFFINE,
    LEAVE_AS_IS,
    NO_INTERP,
    Augmentation,
    augmentation_matrix,
    random_augmentation,
    select_father,
    warp_cubic,
)
from mzsr_tf.zssr.config import PRESETS, ZSSRConfig
from mzsr_tf.zssr.graphs import TRACES
from mzsr_tf.zssr.policy import lr_should_drop
from mzsr_tf.zssr.results import StageLog, ZSSRResult
from mzsr_tf.zssr.sons import father_to_son
from mzsr_tf.zssr.training import check_input, final_test, init_zssr_params, train_zssr

__all__ = [
    "ZSSRConfig",
    "PRESETS",
    "TRACES",
    "init_zssr_params",
    "lr_should_drop",
    "select_father",
    "AFFINE",
    "LEAVE_AS_IS",
    "NO_INTERP",
    "Augmentation",
    "random_augmentation",
    "augmentation_matrix",
    "warp_cubic",
    "father_to_son",
    "back_projection",
    "final_test",
    "StageLog",
    "ZSSRResult",
    "check_input",
    "train_zssr",
]
