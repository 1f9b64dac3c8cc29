"""ZSSR settings (official ``configs.Config``) and the official scenarios as named presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from mzsr_tf.errors import InputError

__all__ = ["ZSSRConfig", "PRESETS"]


@dataclass(frozen=True)
class ZSSRConfig:
    """ZSSR settings; defaults are the official ``configs.Config`` (X2 one jump, ideal case)."""

    scale_factors: tuple[tuple[float, float], ...] | None = None  # gradual (h, w) stages; None = one jump
    max_iters: int = 3000  # stop after this many iterations per stage
    min_iters: int = 256  # iterations between learning-rate changes
    min_learning_rate: float = 9e-6  # stop once the rate falls below this
    learning_rate: float = 1e-3  # Adam, batch 1
    learning_rate_change_ratio: float = 1.5  # drop when -ratio * slope < std of the slope
    learning_rate_policy_check_every: int = 60  # test the policy when (iter + 1) % this == 0
    learning_rate_slope_range: int = 256  # fit the line to the last int(range / run_test_every) points
    run_test_every: int = 50  # reconstruction error of net(son(input)) vs input every this many iterations
    init_variance: float = 1.0  # weights ~ N(0, init_variance / (3·3·cin)), biases 0 (official 0.1: module doc)
    crop_size: int = 128  # HR fathers are crop_size x crop_size (smaller images are zero-padded)
    noise_std: float = 0.0  # Gaussian noise added to the LR sons (0.0125 for real images)
    augment_leave_as_is_probability: float = 0.05  # integer crop only
    augment_no_interpolate_probability: float = 0.45  # one of the 8 rotations/mirrors + integer crop
    augment_min_scale: float = 0.5  # affine: scale ~ U[min_scale, max source scale]
    augment_scale_diff_sigma: float = 0.25  # affine: x/y scale difference ~ N(0, sigma)
    augment_shear_sigma: float = 0.1  # affine: shear ~ N(0, sigma) per axis
    augment_allow_rotation: bool = True  # False: no rotations or mirrors (non-symmetric kernels)
    output_flip: bool = True  # 8-way geometric median self-ensemble at test time
    back_projection_iters: tuple[int, ...] = (10,)  # per stage (the last value repeats)
    tile: int = 1024  # test-time inference in tiles of this many HR pixels (bounded memory)
    seed: int = 0  # augmentation, noise and initialisation

    def __post_init__(self):
        ints = ("max_iters", "min_iters", "learning_rate_policy_check_every", "run_test_every", "crop_size")
        for name in ints:
            if int(getattr(self, name)) != getattr(self, name) or getattr(self, name) < 0:
                raise InputError(f"ZSSRConfig.{name} must be a non-negative integer, got {getattr(self, name)}")
        if self.crop_size < 8 or self.run_test_every < 1 or self.learning_rate_policy_check_every < 1:
            raise InputError("ZSSRConfig: crop_size must be >= 8, run_test_every and the check period >= 1")
        points = self.learning_rate_slope_range // self.run_test_every
        if points < 5 or self.min_iters // self.run_test_every + 1 < points:
            raise InputError(
                "ZSSRConfig: the slope fit needs >= 5 reconstruction points (slope_range // run_test_every), "
                "all recorded before the first policy check (min_iters // run_test_every + 1)"
            )
        p_leave, p_dihedral = self.augment_leave_as_is_probability, self.augment_no_interpolate_probability
        if min(p_leave, p_dihedral) < 0 or p_leave + p_dihedral > 1:
            raise InputError(f"ZSSRConfig: augmentation probabilities {p_leave}, {p_dihedral} must sum to <= 1")
        if not 0 < self.augment_min_scale <= 1:
            raise InputError(f"ZSSRConfig.augment_min_scale must be in (0, 1], got {self.augment_min_scale}")
        if not self.back_projection_iters or min(self.back_projection_iters) < 0:
            raise InputError(f"ZSSRConfig.back_projection_iters must be >= 0, got {self.back_projection_iters}")
        if not (self.learning_rate > 0 and self.noise_std >= 0 and self.init_variance >= 0 and self.tile >= 64):
            raise InputError("ZSSRConfig: learning_rate must be > 0, noise/init variance >= 0, tile >= 64")


_X2 = ZSSRConfig()

PRESETS: dict[str, ZSSRConfig] = {
    # X2_ONE_JUMP_IDEAL_CONF: bicubic-like kernels, all augmentations, 8-way ensemble, 10 BP iterations.
    "x2_ideal": _X2,
    # X2_GRADUAL_IDEAL_CONF: six stages to x2, each output becomes an extra HR-father source (slower, slightly better).
    "x2_gradual_ideal": dataclasses.replace(
        _X2,
        scale_factors=((1.0, 1.5), (1.5, 1.0), (1.5, 1.5), (1.5, 2.0), (2.0, 1.5), (2.0, 2.0)),
        back_projection_iters=(6, 6, 8, 10, 10, 12),
    ),
    # X2_GIVEN_KERNEL_CONF: the kernel may be non-symmetric, so no rotations/mirrors (train or test).
    "x2_given_kernel": dataclasses.replace(
        _X2, output_flip=False, augment_allow_rotation=False, back_projection_iters=(2,)
    ),
    # X2_REAL_CONF: given kernel plus mild unknown noise; back-projection would amplify the noise.
    "x2_real": dataclasses.replace(
        _X2,
        output_flip=False,
        augment_allow_rotation=False,
        back_projection_iters=(0,),
        noise_std=0.0125,
        augment_scale_diff_sigma=0.0,
        augment_shear_sigma=0.0,
        augment_min_scale=0.75,
    ),
}
