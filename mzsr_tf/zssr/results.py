"""What a ZSSR run returns: the SR image, the trained weights and a log per scale stage."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

__all__ = ["StageLog", "ZSSRResult"]


@dataclass
class StageLog:
    """What training one scale stage did."""

    scale: tuple[float, float]
    iterations: int = 0  # updates run
    learning_rate_drops: list = field(default_factory=list)  # iterations after which the rate was divided by 10
    final_learning_rate: float = 0.0
    test_iterations: list = field(default_factory=list)  # iterations after which the errors below were measured
    reconstruction_mse: list = field(default_factory=list)  # MSE of net(son(input)) vs input
    true_mse: list = field(default_factory=list)  # MSE of net(input) vs ground truth (only with ``gt``)
    losses: list = field(default_factory=list)  # L1 of every update
    seconds_train: float = 0.0
    seconds_test: float = 0.0

    def as_dict(self) -> dict:
        """JSON-friendly summary (without the per-update losses)."""
        summary = dataclasses.asdict(self)
        del summary["losses"]
        summary["scale"] = list(self.scale)
        return summary


@dataclass
class ZSSRResult:
    """The super-resolved image, the trained weights and one log per scale stage."""

    sr: np.ndarray  # float32 [H_out, W_out, 3] in [0, 1]
    params: list
    log: list[StageLog]
    stage_outputs: list[np.ndarray] = field(default_factory=list)  # each stage's SR (the last is ``sr``)

    @property
    def iterations(self) -> int:
        return sum(stage.iterations for stage in self.log)

    @property
    def seconds(self) -> float:
        return sum(stage.seconds_train + stage.seconds_test for stage in self.log)
