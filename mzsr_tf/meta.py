"""Meta-transfer learning (paper Algorithm 1): MAML over blur-kernel tasks from θ_T.

Inner loop (per task, on D_tr): θ' ← θ' − α ∇L_tr(θ'), ``inner_steps`` times, fast weights as new
tensors (never assignments), using the differentiable hand-written backward of ``model``.
Outer loop: Adam on Σ_j w_j · L_te(θ'_j) averaged over tasks, with second-order gradients by
default (the inner gradients stay on the outer tape) or first-order (they are stopped).

The step weights w_j are MAML++'s multi-step loss weights (Antoniou et al. 2019), annealed
towards the last step over ``anneal_steps`` meta-iterations. The official MZSR code has the same
formula but its step counter never advanced, so it trained with uniform weights; here they anneal,
or stay at given ``step_weights`` w_0..w_N, where w_0 weighs the query loss of θ itself (no update): weight
on θ keeps the un-adapted net a good one, weight on step 1 serves MZSR(1), the paper's headline.
``monotone`` adds, per task, the rise of the query loss at each update over the one before it
(Σ_j max(0, L_te(θ'_j) − L_te(θ'_{j−1})), θ'_0 = θ): a user may stop after any number of updates, so no update
should make a task worse, where the weighted mean alone lets gains on some tasks pay for losses on others.

The inner loop's pairs (D_tr) are external LR → HR pairs of other patches under the task's kernel (official), or
with ``support='son'`` each query LR's own (LR son → LR) pair, the pair the meta-test adapts on (MLSR, Park et al.
2020; ``data.kernel_tasks``).

With ``learn_inner_lr`` the inner learning rate is learned per tensor and per inner step (MAML++'s
LSLR, after Meta-SGD, Li et al. 2017): α becomes a [inner_steps, 16] array, trained by the outer loop
with θ and shipped with θ_M, so the meta-test can run exactly the update rule θ_M was trained for.
``kernel_rates`` conditions that rule on the task's kernel, which the meta-test knows too: per step a slope
vector beside the rates scales them by exp(w_j · φ(k)), φ the kernel's log size and log anisotropy
(:func:`kernel_rates`), since one rate per tensor and step cannot serve at once a sharp kernel, whose first update
wants a large step, and one that θ already serves, whose first update wants almost none.

With ``conditioned_start`` each task's inner loop starts from θ(k) = θ + Σ_i φ_i(k) V_i instead of θ (MMAML's
modulated initialisation, Vuorio et al. 2019; ``conditioning``), the basis V meta-learned with θ by its own Adam at
``start_lr``. With ``inner_steps`` 0 and ``meta_lr`` 0 that is plain supervised training of V over p(k), θ frozen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from mzsr_tf.backward import l1_loss_and_grads
from mzsr_tf.conditioning import conditioned_start
from mzsr_tf.conv_ops import BUILTIN, ConvOps
from mzsr_tf.errors import InputError
from mzsr_tf.model import PARAM_SPECS, forward
from mzsr_tf.optim import sgd

__all__ = [
    "MetaConfig",
    "loss_weights",
    "monotone_penalty",
    "kernel_rates",
    "task_rates",
    "task_start",
    "step_rates",
    "fast_adapt",
    "meta_objective",
    "l1",
]

SLOPE_UNIT = 100.0  # kernel slopes are stored in hundredths: the rates' Adam moves them as fast, relative to their
# scale (about 1), as it moves the rates (about 0.01)


@dataclass(frozen=True)
class MetaConfig:
    """Meta-training settings; defaults from the paper and the released Directx2 model."""

    scale: int = 2
    subsample: str = "direct"  # 'direct' (Directx2) or 'bicubic' (Bicubicx2)
    inner_steps: int = 5  # TASK_ITER
    inner_lr: float = 1e-2  # α, TASK_LR
    meta_lr: float = 1e-4  # β, META_LR; 0 freezes θ and meta-learns only the inner rates (needs learn_inner_lr)
    meta_batch: int = 5  # tasks per meta-batch (released Directx2: 5)
    task_batch: int = 4  # patches in each of D_tr and D_te (released Directx2: 4)
    patch: int = 64  # HR patch size
    kernel_size: int = 15
    min_variance: float = 1.0  # p(k) eigenvalues from this (paper 1; < 1 adds sharp kernels)
    noise: float = 0.0  # std of Gaussian noise on the LR (official train.py: 0)
    task_noise: float = 0.0  # half the tasks get LR noise of std σ ~ U[0, task_noise] (``data.kernel_tasks``)
    blind_tasks: int = 0  # tasks per meta-batch under DIV2KRK-style kernels (block-centred, noisy: blind SR's)
    blind_context: tuple[int, ...] = ()  # (h, w): blind tasks run blind, the kernel read off an HR crop this size
    bicubic_tasks: int = 0  # tasks per meta-batch under plain bicubic (no blur; needs subsample 'bicubic')
    support: str = "external"  # D_tr: 'external' HR patch pairs (official) or 'son': LR son → LR, as the meta-test
    learn_inner_lr: bool = False  # MAML++ LSLR: α per tensor and inner step, learned (initialised to inner_lr)
    inner_lr_meta_lr: float | None = None  # Adam rate of the learned α (None: meta_lr; 0 freezes them)
    first_order: bool = False  # FOMAML throughout
    first_order_steps: int = 0  # first-order warm-up for this many meta-iterations
    anneal_steps: int = 3333  # MAML++ annealing length: (1/N)/d with the official d = 6e-5
    step_weights: tuple[float, ...] | None = None  # fixed loss weights of steps 0..N (0: θ itself); None: annealed
    monotone: float = 0.0  # weight of each task's query-loss rises from one update to the next
    kernel_rates: bool = False  # learned rates scaled per step by the task's kernel (:func:`kernel_rates`)
    conditioned_start: bool = False  # each task starts from θ(k) = θ + Σ φ_i(k) V_i, V learned (``conditioning``)
    start_lr: float | None = None  # Adam rate of the basis V (None: meta_lr; 0 freezes V)
    precision: str = "float32"  # or 'bfloat16': mixed-precision convolutions in the inner and outer loops

    @property
    def rates_lr(self) -> float:
        """The learned inner rates' Adam rate: ``inner_lr_meta_lr``, or ``meta_lr`` when it is None (0 freezes them)."""
        return self.meta_lr if self.inner_lr_meta_lr is None else self.inner_lr_meta_lr

    @property
    def learns_rates(self) -> bool:
        """Whether the outer loop moves the learned inner rates (a positive rate for their Adam)."""
        return self.learn_inner_lr and self.rates_lr > 0

    @property
    def basis_lr(self) -> float:
        """The basis V's Adam rate: ``start_lr``, or ``meta_lr`` when it is None (0 freezes V)."""
        return self.meta_lr if self.start_lr is None else self.start_lr

    @property
    def learns_basis(self) -> bool:
        """Whether the outer loop moves the conditioned start's basis V."""
        return self.conditioned_start and self.basis_lr > 0

    @property
    def trains(self) -> dict[str, bool]:
        """Which of the groups a run holds it trains: 'theta' always held, 'rates' with learned inner rates,
        'basis' with a conditioned start; False is a frozen group (its learning rate 0)."""
        held = {"theta": self.meta_lr > 0}
        if self.learn_inner_lr:
            held["rates"] = self.learns_rates
        if self.conditioned_start:
            held["basis"] = self.learns_basis
        return held

    def __post_init__(self):
        if self.meta_lr == 0 and not (self.learns_rates or self.learns_basis):
            raise InputError(
                "meta_lr 0 (θ frozen) needs learned inner rates with a positive inner_lr_meta_lr, or a "
                "conditioned start with a positive start_lr"
            )
        if self.inner_steps < 0 or (self.inner_steps == 0 and not self.conditioned_start):
            raise InputError(f"inner_steps must be >= 1 (0 only with conditioned_start), got {self.inner_steps}")
        if self.inner_steps == 0 and self.learn_inner_lr:
            raise InputError("inner_steps 0 has no inner rates to learn")
        if self.inner_steps == 0 and self.step_weights is None:  # the start's own query loss is all there is
            object.__setattr__(self, "step_weights", (1.0,))
        if self.noise < 0 or self.task_noise < 0:
            raise InputError(f"noise and task_noise must be >= 0, got {self.noise} and {self.task_noise}")
        if not 0 <= self.blind_tasks <= self.meta_batch:
            raise InputError(f"blind_tasks must be 0..meta_batch ({self.meta_batch}), got {self.blind_tasks}")
        if not 0 <= self.bicubic_tasks <= self.meta_batch - self.blind_tasks:
            raise InputError(
                f"bicubic_tasks must be 0..meta_batch - blind_tasks ({self.meta_batch - self.blind_tasks}), "
                f"got {self.bicubic_tasks}"
            )
        if self.bicubic_tasks and self.subsample != "bicubic":
            raise InputError("bicubic_tasks are plain bicubic subsampling: they need --subsample bicubic")
        if self.support not in ("external", "son"):
            raise InputError(f"support must be 'external' or 'son', got {self.support!r}")
        if self.support == "son" and self.patch % (self.scale * self.scale):
            raise InputError(f"support 'son' needs a patch divisible by scale² ({self.scale**2}), got {self.patch}")
        context = tuple(int(c) for c in np.ravel(self.blind_context or ()))
        context = context * 2 if len(context) == 1 else context  # s alone: s²
        object.__setattr__(self, "blind_context", context)
        if len(context) not in (0, 2):
            raise InputError(f"blind_context is an HR crop size, h and w, got {context}")
        if self.blind_context and not (self.blind_tasks and self.conditioned_start):
            raise InputError("blind_context trains the start's rows for estimated kernels: it needs blind_tasks and "
                             "conditioned_start")  # fmt: skip
        if any(c < self.patch or c % self.scale for c in context):
            raise InputError(f"blind_context must be >= patch ({self.patch}) and divisible by the scale, got {context}")
        if self.blind_tasks and self.subsample != "direct":
            raise InputError("blind_tasks use direct subsampling (the DIV2KRK recipe), not --subsample bicubic")
        if self.step_weights is not None:
            w = tuple(float(x) for x in self.step_weights)
            if len(w) != self.inner_steps + 1 or min(w) < 0 or not sum(w) > 0:
                raise InputError(f"step_weights must be {self.inner_steps + 1} weights >= 0 (steps 0..N), got {w}")
            object.__setattr__(self, "step_weights", w)
        if not self.monotone >= 0:
            raise InputError(f"monotone must be >= 0, got {self.monotone}")
        if self.kernel_rates and not self.learn_inner_lr:
            raise InputError("kernel_rates scale learned inner rates: it needs learn_inner_lr")


def l1(a, b):
    """Mean absolute error (``tf.losses.absolute_difference``)."""
    return tf.reduce_mean(tf.abs(a - b))


def loss_weights(step, inner_steps: int, anneal_steps: int):
    """MAML++ multi-step loss weights at meta-iteration ``step`` (MZSR ``get_loss_weights``).

    Start uniform (1/N); the first N-1 decay linearly to 0.03/N, the last grows to
    1 − (N−1)·0.03/N, reaching their bounds after ``anneal_steps`` iterations. Sum stays 1.
    """
    n = inner_steps
    step = tf.cast(step, tf.float32)
    decay = (1.0 / n) / float(max(anneal_steps, 1))
    early = tf.maximum(1.0 / n - step * decay, 0.03 / n)
    last = tf.minimum(1.0 / n + step * (n - 1) * decay, 1.0 - (n - 1) * 0.03 / n)
    return tf.concat([tf.fill([n - 1], early), [last]], axis=0)


def monotone_penalty(losses):
    """Σ_j max(0, L_j − L_{j−1}) over one task's query losses L_0 (θ itself), L_1 … L_N: how much its updates hurt."""
    return tf.reduce_sum(tf.nn.relu(losses[1:] - losses[:-1]))


def kernel_rates(table, features):
    """The per-tensor rates [rows, 16] of a learned table for one kernel.

    A table [rows, 16] is the same for every kernel (MAML++ LSLR). A kernel-conditioned table [rows, 16 + F] holds
    per step j rates α_j and slopes w_j: α_j · exp(SLOPE_UNIT · w_j · φ(k)), φ = ``kernels.kernel_features``, so
    one update rule may take a large first step for a sharp kernel and almost none for one θ already serves.
    """
    table = tf.convert_to_tensor(table, tf.float32)
    n = len(PARAM_SPECS)
    if table.shape[-1] == n:
        return table
    features = tf.cast(features, tf.float32)
    return table[:, :n] * tf.exp(SLOPE_UNIT * tf.linalg.matvec(table[:, n:], features))[:, None]


def step_rates(inner_lr, step: int, n: int) -> list:
    """α of each of the ``n`` tensors at inner step ``step``: one α (paper Algorithm 1), or row
    ``min(step, rows - 1)`` of a learned [rows, n] array (MAML++ LSLR; steps past it reuse its last row)."""
    if isinstance(inner_lr, (int, float)):
        return [float(inner_lr)] * n
    return tf.unstack(inner_lr[min(step, int(inner_lr.shape[0]) - 1)], n)


def fast_adapt(
    params,
    x_tr,
    y_tr,
    x_te,
    y_te,
    steps: int,
    inner_lr: float,
    first_order: bool = False,
    compute_dtype=None,
    ops: ConvOps = BUILTIN,
):
    """One task's inner loop; returns the fast weights and the query loss after each step.

    Args:
      params: θ (list of tensors/variables), the point the meta-gradient is taken at.
      x_tr, y_tr: support pairs (network input, target), NHWC.
      x_te, y_te: query pairs.
      inner_lr: α, a number or a learned [steps, 16] array (:func:`step_rates`).
      compute_dtype: e.g. ``tf.bfloat16`` for mixed-precision convolutions (``backward.l1_loss_and_grads``).
      ops: how the inner gradients' convolutions are computed (``backward.l1_loss_and_grads``).
    """
    fast, query_losses = list(params), []
    for j in range(steps):
        _, grads = l1_loss_and_grads(fast, x_tr, y_tr, compute_dtype, ops)
        if first_order:
            grads = [tf.stop_gradient(g) for g in grads]
        fast = sgd(fast, grads, step_rates(inner_lr, j, len(fast)))
        query_losses.append(l1(forward(fast, x_te, compute_dtype), y_te))
    return fast, tf.stack(query_losses) if query_losses else tf.zeros([0], y_te.dtype)


def task_rates(config: MetaConfig, inner_lr, tasks, t: int):
    """The inner rates of task ``t`` of a meta-batch: ``config.inner_lr``, the learned table, or the table under
    the task's kernel (its features ``tasks[4][t]``)."""
    if inner_lr is None:
        return config.inner_lr
    return kernel_rates(inner_lr, tasks[4][t]) if config.kernel_rates else inner_lr


def task_start(params, basis, tasks, t: int) -> list:
    """Where task ``t``'s inner loop starts: θ, or θ(k) = θ + Σ φ_i(k) V_i with a ``basis`` (its features
    ``tasks[5][t]``)."""
    return list(params) if basis is None else conditioned_start(params, basis, tasks[5][t])


def meta_objective(
    params,
    tasks,
    step,
    config: MetaConfig,
    first_order: bool,
    global_tasks: int | None = None,
    ops: ConvOps = BUILTIN,
    inner_lr=None,
    basis=None,
):
    """Σ_j w_j · mean_tasks L_te(θ'_j) for a meta-batch ``tasks = (x_tr, y_tr, x_te, y_te[, φ, φ_start])``.

    Each tensor is [tasks, task_batch, P, P, 3], φ [tasks, F] the tasks' ``kernel_features``, φ_start [tasks, 10]
    their ``conditioning.start_features``, by which ``basis`` (with ``config.conditioned_start``) moves each task's
    start θ(k) (:func:`task_start`). Under a distribution
    strategy each replica holds some tasks; dividing by ``global_tasks`` makes the replicas' sum the global mean.
    ``inner_lr``: the learned [inner_steps, 16] rates with ``config.learn_inner_lr``, [inner_steps, 16 + F] with
    ``config.kernel_rates`` (:func:`kernel_rates`; default: ``config.inner_lr``).
    Returns (objective, per-step query losses averaged over this replica's tasks).
    """
    x_tr, y_tr, x_te, y_te = tasks[:4]
    local = x_tr.shape[0]
    per_step, unadapted, rises = [], [], []
    for t in range(local):
        start = task_start(params, basis, tasks, t)
        _, losses = fast_adapt(
            start, x_tr[t], y_tr[t], x_te[t], y_te[t], config.inner_steps,
            task_rates(config, inner_lr, tasks, t), first_order, config.precision, ops,
        )  # fmt: skip
        per_step.append(losses)
        if (config.step_weights and config.step_weights[0]) or config.monotone:
            unadapted.append(l1(forward(start, x_te[t], config.precision), y_te[t]))
        if config.monotone:
            rises.append(monotone_penalty(tf.concat([unadapted[-1][None], losses], axis=0)))
    per_step = tf.reduce_mean(tf.stack(per_step), axis=0)
    if config.step_weights is None:
        weights = tf.cast(loss_weights(step, config.inner_steps, config.anneal_steps), per_step.dtype)
        objective = tf.reduce_sum(weights * per_step)
    else:
        w = tf.constant(config.step_weights, per_step.dtype) / sum(config.step_weights)
        objective = tf.reduce_sum(w[1:] * per_step)
        if w[0] > 0:
            objective += w[0] * tf.reduce_mean(tf.stack(unadapted))
    if config.monotone:
        objective += config.monotone * tf.cast(tf.reduce_mean(tf.stack(rises)), objective.dtype)
    objective = objective * (local / float(global_tasks or local))
    return objective, per_step
