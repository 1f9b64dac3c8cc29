"""mzsr-tf: zero-shot super-resolution (MZSR, Soh et al. CVPR 2020; ZSSR, Shocher et al. CVPR 2018).

``mzsr_tf.super_resolve(image, kernel, steps, scale)`` and ``mzsr_tf.from_preset(name)`` are the Python
API (:mod:`mzsr_tf.api`); they load TensorFlow on first use, so ``import mzsr_tf`` stays light.
"""

__all__ = ["PRESETS", "ZeroShotSR", "from_preset", "super_resolve"]


def __getattr__(name):
    if name in __all__:
        from mzsr_tf import api

        return getattr(api, name)
    raise AttributeError(f"module 'mzsr_tf' has no attribute {name!r}")
