"""Training loops for both stages of paper Algorithm 1, as one resumable runner.

* ``pretrain``: large-scale training θ_T — L1 on bicubic pairs, Adam 4e-4 halved every 100k steps
  down to 1e-4, batch 32 of 96² HR patches (MZSR ``Large-Scale_Training``).
* ``meta``: meta-transfer learning θ_M from θ_T — see :mod:`mzsr_tf.meta`.
* ``kernel``: the blind-SR kernel estimator — see :mod:`mzsr_tf.kernel_estimation`.

A run folder holds ``config.json``, ``ckpt/`` (model, optimizer, step, data seed — batches are a
function of (seed, step), so resuming is exact), TensorBoard ``logs/`` and ``final.weights.h5``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from mzsr_tf import data as data_lib
from mzsr_tf.backward import l1_loss_and_grads
from mzsr_tf.conditioning import GIVEN_FEATURES, START_FEATURES
from mzsr_tf.conv_ops import BUILTIN, NATIVE, ConvOps
from mzsr_tf.errors import InputError, TrainingStopped
from mzsr_tf.kernel_estimation import (
    COVARIANCE_LOSSES,
    EstimatorConfig,
    KernelEstimator,
    covariance_loss,
    default_estimator,
    estimate_covariance,
    load_estimator,
    log_eigen_loss,
    luminance,
    save_estimator,
)
from mzsr_tf.kernels import KERNEL_FEATURES, resolve_degradation
from mzsr_tf.meta import MetaConfig, fast_adapt, meta_objective, task_rates, task_start
from mzsr_tf.model import PARAM_NAMES, MZSRNet, forward
from mzsr_tf.weights import fingerprint, load_inner_lr, load_params, load_start_basis, save_params

__all__ = ["PretrainConfig", "RunConfig", "StepDecay", "make_strategy", "is_chief", "train"]

MAX_NONFINITE = 5  # stop after this many non-finite steps in a row


@dataclass(frozen=True)
class PretrainConfig:
    """Large-scale training settings (official ``Large-Scale_Training``)."""

    scale: int = 2
    batch_size: int = 32
    patch: int = 96  # HR patch, 48 * scale
    lr: float = 4e-4
    lr_decay_steps: int = 100_000  # halve every this many steps ...
    lr_floor: float = 1e-4  # ... down to this
    degradation: str = "bicubic"  # 'bicubic' pairs (paper), 'kernels': p(k) of meta-training, 'mixed': half each
    subsample: str = "direct"  # for 'kernels'
    kernel_size: int = 15  # for 'kernels'
    min_variance: float = 1.0  # for 'kernels': p(k) eigenvalues from this (paper 1; < 1 adds sharp kernels)
    kernel: str | None = None  # for 'kernels': one kernel (a paper name or .mat/.npy) instead of p(k): non-blind
    precision: str = "float32"  # or 'bfloat16': mixed-precision convolutions (backward.l1_loss_and_grads)


@dataclass(frozen=True)
class RunConfig:
    """What to run and where; the stage's own config is separate."""

    stage: str  # 'pretrain', 'meta' or 'kernel'
    data: tuple[str, ...]
    out: str
    steps: int
    seed: int = 0
    init: str | None = None
    resume: bool = False
    strategy: str = "default"
    jit: bool = False
    checkpoint_every: int = 500
    log_every: int = 10
    val_every: int = 250
    val_batches: int = 1  # validation averages this many fixed batches (more: less noise in model selection)
    sample_every: int = 1000
    progress: bool = True


@keras.saving.register_keras_serializable(package="mzsr_tf")
class StepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """lr = max(lr0 · rate^floor(step / every), floor) (official pretraining schedule)."""

    def __init__(self, initial: float, every: int, floor: float, rate: float = 0.5):
        self.initial, self.every, self.floor, self.rate = initial, every, floor, rate

    def __call__(self, step):
        k = tf.floor(tf.cast(step, tf.float32) / self.every)
        return tf.maximum(self.initial * tf.pow(self.rate, k), self.floor)

    def get_config(self):
        return {"initial": self.initial, "every": self.every, "floor": self.floor, "rate": self.rate}


def make_strategy(name: str) -> tf.distribute.Strategy:
    """'default' (one device), 'mirrored' (all local GPUs, or CPUs) or 'multiworker' (TF_CONFIG)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.MirroredStrategy([d.name for d in gpus or tf.config.list_logical_devices("CPU")])
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise InputError(f"unknown strategy {name!r} (default, mirrored, multiworker)")


def is_chief(strategy) -> bool:
    """Whether this process writes the run's files: yes, except on a multi-worker cluster's other workers (TF's
    convention: the 'chief' task, or worker 0 when the cluster has none)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    if not task_type or task_type == "chief":
        return True
    return task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()


def _psnr(a, b):
    mse = tf.reduce_mean(tf.square(tf.clip_by_value(a, 0, 1) - b), axis=[1, 2, 3])
    return tf.reduce_mean(10.0 * tf.math.log(1.0 / tf.maximum(mse, 1e-12)) / math.log(10.0))


def _split(batch, replica: int, replicas: int):
    """This replica's share of a host batch (leading axis split evenly)."""

    def take(x):
        n = x.shape[0] // replicas
        return x[replica * n : (replica + 1) * n]

    return tf.nest.map_structure(take, batch)


class Stage:
    """What a training stage defines: its data, per-replica loss and gradient, validation, net and result file."""

    learns_rates = False  # the learned inner rates are trained with θ (MAML++ LSLR)
    learns_basis = False  # the conditioned start's basis V is trained with θ (``conditioning``)

    def __init__(self, run: RunConfig, config, images=None):
        self.run, self.config, self.images = run, config, images

    @property
    def conv_ops(self) -> ConvOps:
        """TF's conv-backprop kernels (oneDNN/cuDNN: faster second-order meta-steps) unless XLA, which lowers them
        slowly on CPU; the hand-written matmul backward then."""
        return BUILTIN if self.run.jit else NATIVE

    def learning_rate(self):
        c = self.config
        return StepDecay(c.lr, c.lr_decay_steps, c.lr_floor)

    def first_order(self, step: int) -> bool:
        """Whether meta-iteration ``step`` stops the inner gradients (always, outside meta-training)."""
        return True

    def prepare_images(self, images: list) -> list:
        """The training photos as this stage samples them (read once; the validation stage shares them)."""
        return images

    def make_net(self):
        return MZSRNet(scale=self.config.scale)

    def load_init(self, path) -> list:
        return load_params(path)

    def sample_input(self, val_batch):
        """The network input of the validation batch, for the TensorBoard samples (None: no images)."""
        return None

    def split(self, variables) -> tuple[list, object, list | None]:
        """(θ, learned inner rates or None, the start's basis V or None), in the order of ``_TrainState.variables``."""
        variables = list(variables)
        n = len(PARAM_NAMES)
        inner_lr = variables[n] if self.learns_rates else None
        basis = variables[len(variables) - n :] if self.learns_basis else None
        return variables[:n], inner_lr, basis

    def save(self, values, out: Path) -> Path:
        final = out / "final.weights.h5"
        params, inner_lr, basis = self.split(values)
        if inner_lr is None and self.run.init and self.run.stage == "meta":  # rates not trained: --init's travel on
            inner_lr = load_inner_lr(self.run.init)
        return save_params(params, final, overwrite=True, inner_lr=inner_lr, scale=self.config.scale, start_basis=basis)


class PretrainStage(Stage):
    """Large-scale training θ_T: L1 on (bicubic or blurred-kernel) LR/HR patch pairs."""

    @property
    def min_image_size(self) -> int:
        return self.config.patch

    def dataset(self, start_step):
        c = self.config
        if c.degradation in ("kernels", "mixed"):
            bicubic = c.batch_size // 2 if c.degradation == "mixed" else 0
            fixed = None if c.kernel is None else resolve_degradation(c.kernel).kernel
            return data_lib.kernel_pairs(
                self.images, c.batch_size, c.patch, c.scale, c.subsample, c.kernel_size, 0.0, self.run.seed, start_step,
                bicubic, c.min_variance, fixed,
            )  # fmt: skip
        return data_lib.bicubic_pairs(self.images, c.batch_size, c.patch, c.scale, self.run.seed, start_step)

    def global_size(self):
        return self.config.batch_size

    def loss_and_grads(self, variables, batch, step, first_order, global_size):
        x, y = batch
        loss, grads = l1_loss_and_grads(list(variables), x, y, self.config.precision, self.conv_ops)
        share = x.shape[0] / global_size
        return loss * share, [g * share for g in grads], tf.zeros([0])

    def validate(self, variables, batch):
        """PSNR (RGB, no shave) on a fixed batch, and the bicubic input's."""
        x, y = batch
        return {"val/psnr": _psnr(forward(variables, x), y), "val/psnr_bicubic": _psnr(x, y)}

    def sample_input(self, val_batch):
        return val_batch[0]


class MetaStage(Stage):
    """Meta-transfer learning θ_M (``meta``): second-order MAML over blur-kernel tasks."""

    @property
    def learns_rates(self) -> bool:
        return self.config.learn_inner_lr

    @property
    def learns_basis(self) -> bool:
        return self.config.conditioned_start

    @property
    def min_image_size(self) -> int:
        return self.config.patch

    def dataset(self, start_step):
        c = self.config
        return data_lib.kernel_tasks(
            self.images, c.meta_batch, c.task_batch, c.patch, c.scale, c.subsample, c.kernel_size, c.noise,
            self.run.seed, start_step, c.min_variance, c.blind_tasks, c.support, c.bicubic_tasks, c.task_noise,
            c.blind_context, load_estimator(default_estimator()) if c.blind_context else None,
        )  # fmt: skip

    def global_size(self):
        return self.config.meta_batch

    def loss_and_grads(self, variables, batch, step, first_order, global_size):
        params, inner_lr, basis = self.split(variables)
        with tf.GradientTape() as tape:
            objective, per_step = meta_objective(
                params, batch, step, self.config, first_order, global_size, self.conv_ops, inner_lr, basis
            )
        trains = self.config.trains  # a frozen group takes no gradient: zeros, and its Adam does not move it
        groups = [(params, trains["theta"]), ([inner_lr] if inner_lr is not None else [], trains.get("rates", False))]
        groups.append((basis or [], trains.get("basis", False)))
        trained = [v for group, learns in groups if learns for v in group]
        grads = iter(tape.gradient(objective, trained))
        grads = [next(grads) if learns else tf.zeros_like(v) for group, learns in groups for v in group]
        if self.config.blind_context and basis:  # only the rows for estimated kernels learn (``conditioning``)
            rows = tf.range(START_FEATURES) >= GIVEN_FEATURES
            n = len(grads) - len(basis)
            grads[n:] = [g * tf.cast(tf.reshape(rows, [-1] + [1] * (g.shape.rank - 1)), g.dtype) for g in grads[n:]]
        return objective, grads, per_step

    def validate(self, variables, batch):
        """PSNR (RGB, no shave) of the query patches at the (conditioned) start and after the inner loop."""
        params, inner_lr, basis = self.split(variables)
        x_tr, y_tr, x_te, y_te = batch[:4]
        before, after = [], []
        for t in range(x_tr.shape[0]):
            start = task_start(params, basis, batch, t)
            fast, _ = fast_adapt(
                start, x_tr[t], y_tr[t], x_te[t], y_te[t], self.config.inner_steps,
                task_rates(self.config, inner_lr, batch, t), True, ops=self.conv_ops,
            )  # fmt: skip
            before.append(_psnr(forward(start, x_te[t]), y_te[t]))
            after.append(_psnr(forward(fast, x_te[t]), y_te[t]))
        return {"val/psnr_before": tf.reduce_mean(before), "val/psnr_after": tf.reduce_mean(after)}

    def learning_rate(self):
        return self.config.meta_lr

    def first_order(self, step: int) -> bool:
        return self.config.first_order or step < self.config.first_order_steps

    def sample_input(self, val_batch):
        return val_batch[2][0]


class KernelStage(Stage):
    """The kernel estimator: relative L1 on the covariance of each patch's kernel (``kernel_estimation``)."""

    @property
    def min_image_size(self) -> int:
        return self.config.patch * max(self.config.scales)

    def prepare_images(self, images: list) -> list:
        return data_lib.zoomed(images, self.config.zooms)

    def dataset(self, start_step):
        c = self.config
        return data_lib.blind_pairs(
            self.images, c.batch_size, c.patch, c.scales, self.run.seed, start_step, c.kernel_size,
            (c.lambda_min, c.lambda_max), c.kernel_noise, c.image_noise, c.group, c.soften,
        )  # fmt: skip

    def global_size(self):
        return self.config.batch_size // self.config.group  # estimates per step: one per group

    def _estimate(self, variables, lr):
        """Σ of each group of LR patches [n, group, p, p, 3], pooled as a photo's tiles are."""
        tiles = tf.reshape(lr, [-1, *lr.shape[2:]])
        return estimate_covariance(variables, luminance(tiles), groups=lr.shape[1])

    def loss_and_grads(self, variables, batch, step, first_order, global_size):
        lr, cov = batch
        with tf.GradientTape() as tape:
            loss = COVARIANCE_LOSSES[self.config.loss](self._estimate(variables, lr), cov) * (lr.shape[0] / global_size)
        return loss, tape.gradient(loss, variables), tf.zeros([0])

    def validate(self, variables, batch):
        lr, cov = batch
        pred = self._estimate(variables, lr)
        return {"val/covariance_error": covariance_loss(pred, cov), "val/log_eigen_error": log_eigen_loss(pred, cov)}

    def make_net(self):
        return KernelEstimator(self.config.width, self.run.seed)

    def load_init(self, path) -> list:
        return load_estimator(path)

    def save(self, values, out: Path) -> Path:
        return save_estimator(values, out / "final.npz", overwrite=True)


STAGES = {"pretrain": PretrainStage, "meta": MetaStage, "kernel": KernelStage}


def make_stage(run: RunConfig, config, images=None) -> Stage:
    """The :class:`Stage` of ``run.stage`` ('pretrain', 'meta' or 'kernel')."""
    if run.stage not in STAGES:
        raise InputError(f"unknown stage {run.stage!r} ({', '.join(STAGES)})")
    return STAGES[run.stage](run, config, images)


def make_step_fn(stage: Stage, variables, optimizers, strategy, first_order: bool, jit: bool = False):
    """The training step as one tf.function: per-replica loss and gradients, all-reduce, guarded update.

    The host batch is split evenly over the replicas; the update is skipped when the loss or any
    gradient is not finite. ``optimizers``: one optimizer for all ``variables``, or a list of
    (optimizer, count) taking the variables in order (θ, then the learned inner rates).
    Returns ``step_fn(batch, step) -> (loss, per-inner-step losses, finite)``.
    """
    if not isinstance(optimizers, (list, tuple)):
        optimizers = [(optimizers, len(variables))]
    replicas = strategy.num_replicas_in_sync
    global_size = stage.global_size()

    def replica_fn(batch, step):
        return stage.loss_and_grads(variables, batch, step, first_order, global_size)

    @tf.function(jit_compile=jit or None)
    def step_fn(batch, step):
        values = strategy.experimental_distribute_values_from_function(
            lambda ctx: _split(batch, ctx.replica_id_in_sync_group, replicas)
        )
        loss, grads, per_step = strategy.run(replica_fn, (values, step))
        loss = strategy.reduce("SUM", loss, axis=None)
        grads = [strategy.reduce("SUM", g, axis=None) for g in grads]
        per_step = strategy.reduce("MEAN", per_step, axis=None)
        finite = tf.math.is_finite(loss)
        for g in grads:
            finite = finite & tf.reduce_all(tf.math.is_finite(g))
        if finite:
            start = 0
            for optimizer, count in optimizers:
                if optimizer is not None:  # None: a frozen group
                    optimizer.apply_gradients(zip(grads[start : start + count], variables[start : start + count]))
                start += count
        return loss, per_step, finite

    return step_fn


LR_FIELDS = ("lr", "lr_decay_steps", "lr_floor", "meta_lr", "inner_lr_meta_lr", "start_lr")
# A resume may change these (recorded in config.json's history): the schedule, the task mix (batches stay a pure
# function of the seed, the step and the recipe), and ``precision``, the convolutions' compute type (weights and
# optimizer state are float32 either way), so a run moves to a CPU without native bfloat16.
RESUME_FIELDS = (*LR_FIELDS, "step_weights", "monotone", "blind_tasks", "bicubic_tasks", "precision")


def _checkpoints(ckpt: Path) -> list[str]:
    """Checkpoint prefixes in ``ckpt``, newest first, from their ``.index`` files (not the state file)."""
    steps = []
    for index in ckpt.glob("ckpt-*.index"):
        tail = index.name[len("ckpt-") : -len(".index")]
        if tail.isdigit():
            steps.append(int(tail))
    return [str(ckpt / f"ckpt-{n}") for n in sorted(steps, reverse=True)]


def data_fingerprint(dirs) -> str:
    """A digest of the training files (paths relative to their folder, sizes): a resume must see the same data."""
    digest = hashlib.sha1()
    for d in dirs:
        for p in sorted(Path(d).rglob("*")):
            if p.suffix.lower() in data_lib.IMAGE_SUFFIXES:
                digest.update(f"{p.relative_to(d)}\0{p.stat().st_size}\n".encode())
    return digest.hexdigest()


def _check_run_dir(run: RunConfig, config) -> tuple[dict, list[str]]:
    """Refuse a run folder that holds another run (unless resuming it with the same settings and data).

    Returns the record to write to ``config.json`` once the run has started, and the learning-rate
    fields a resume changes on purpose.
    """
    out = Path(run.out)
    saved = out / "config.json"
    if _checkpoints(out / "ckpt") and not run.resume:
        raise InputError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    record = {
        "run": dataclasses.asdict(run),
        "stage_config": _as_json(dataclasses.asdict(config)),
        "data_fingerprint": data_fingerprint(run.data),
        "frozen": frozen_groups(config),
    }
    if run.init and record["frozen"]:  # the frozen groups are reloaded from --init on every resume
        record["init_fingerprint"] = fingerprint(run.init)  # a resume reloads frozen groups from it
    changed_recipe: list[str] = []
    if run.resume and saved.exists():
        try:
            previous = json.loads(saved.read_text())
        except (OSError, ValueError) as e:
            raise InputError(f"{saved}: unreadable ({e}); cannot check the run's settings") from None
        for key in ("stage", "seed"):
            if previous["run"][key] != record["run"][key]:
                raise InputError(
                    f"--resume with {key}={record['run'][key]!r} but the run used {previous['run'][key]!r}"
                )
        if previous.get("data_fingerprint", record["data_fingerprint"]) != record["data_fingerprint"]:
            raise InputError(f"--resume with other training data (--data) than the run in {out}")
        if "frozen" not in previous or previous.get("frozen_in_checkpoint"):
            # a run from before frozen groups were left out of checkpoints: its checkpoint holds them, and its
            # --init file may have changed since (the shipped weights do), so they keep coming from the checkpoint
            record["frozen_in_checkpoint"] = True
            record.pop("init_fingerprint", None)
            previous.setdefault("frozen", record["frozen"])
        if previous.get("frozen", record["frozen"]) != record["frozen"]:
            raise InputError(
                f"--resume cannot freeze or unfreeze θ, the rates or V (a learning rate to or from 0): {out} "
                f"froze {previous['frozen'] or 'nothing'}; start a new run with --init from its final weights"
            )
        if previous.get("init_fingerprint", record.get("init_fingerprint")) != record.get("init_fingerprint"):
            raise InputError(
                f"--resume with another --init than the run in {out} started from (or that file changed): its frozen "
                f"{', '.join(record['frozen'])} come from it"
            )
        defaults = _as_json(dataclasses.asdict(type(config)()))
        # settings added since the run started count with their defaults
        before = {k: previous["stage_config"].get(k, defaults[k]) for k in record["stage_config"]}
        changed = [k for k, v in record["stage_config"].items() if before[k] != v]
        changed_recipe = [k for k in changed if k in RESUME_FIELDS]
        others = [k for k in changed if k not in RESUME_FIELDS]
        if others:
            raise InputError(f"--resume with different settings ({', '.join(others)}) than the run in {out}")
        record["history"] = previous.get("history", [])
        if changed_recipe:
            record["history"].append({k: [before[k], record["stage_config"][k]] for k in changed_recipe})
    return record, changed_recipe


def _as_json(value):
    """``value`` as it reads back from JSON (tuples become lists), so a record compares equal to its file."""
    return json.loads(json.dumps(value))


def _write_record(out: Path, record: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "config.json"
    tmp = saved.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(saved)


def _restore_newest(checkpoint, ckpt: Path, log) -> str:
    """Restore the newest readable checkpoint (an unreadable one is skipped and said so); refuse if none is."""
    for prefix in _checkpoints(ckpt):
        try:
            checkpoint.restore(prefix).assert_existing_objects_matched()
            return prefix
        except Exception as e:  # corrupt or truncated data/index files raise many types
            log(f"{prefix}: unreadable ({type(e).__name__}), trying the one before")
    raise InputError(f"{ckpt}: no readable checkpoint to resume; refusing to start over")


@contextlib.contextmanager
def _save_dir(chief: bool, ckpt_dir: Path):
    """The chief's checkpoints go to the run folder, another worker's to a temporary folder removed afterwards."""
    if chief:
        yield ckpt_dir
        return
    folder = Path(tempfile.mkdtemp(prefix="mzsr-worker-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class _TrainState:
    """What a run checkpoints: the net, the learned inner rates and the start's basis (if any), their optimizers and
    the step."""

    net: object
    rates: list  # [the inner_lr variable] with learn_inner_lr, else []
    optimizer: keras.optimizers.Optimizer
    rates_optimizer: keras.optimizers.Optimizer | None
    step: tf.Variable
    checkpoint: tf.train.Checkpoint
    basis: list = dataclasses.field(default_factory=list)  # V, one variable per θ tensor, with conditioned_start
    basis_optimizer: keras.optimizers.Optimizer | None = None
    from_init: set = dataclasses.field(default_factory=set)  # frozen groups left out of the checkpoint

    @property
    def variables(self) -> list:
        return self.net.params + self.rates + self.basis

    @property
    def optimizers(self) -> list:
        """(optimizer, how many of ``variables`` it updates), in order; None for a frozen group."""
        pairs = [(self.optimizer, len(self.net.params))]
        pairs += [(self.rates_optimizer, 1)] if self.rates else []
        return pairs + ([(self.basis_optimizer, len(self.basis))] if self.basis else [])


def initial_rates(config, n: int):
    """The learned rates' starting table: ``inner_lr`` for each of the ``n`` tensors and inner steps, and with
    ``kernel_rates`` slopes of 0 (the same rates for every kernel; ``meta.kernel_rates``)."""
    slopes = KERNEL_FEATURES if config.kernel_rates else 0
    return tf.concat([tf.fill([config.inner_steps, n], config.inner_lr), tf.zeros([config.inner_steps, slopes])], 1)


def frozen_groups(config) -> list[str]:
    """What a meta run holds but does not train (its learning rate 0): of 'theta', 'rates' and 'basis'."""
    if not isinstance(config, MetaConfig):
        return []
    return [name for name, trained in config.trains.items() if not trained]


def _adam(learning_rate, variables):
    optimizer = keras.optimizers.Adam(learning_rate, epsilon=1e-8)
    optimizer.build(variables)
    return optimizer


def _build_state(stage: Stage, run: RunConfig, config, strategy, frozen_in_checkpoint: bool = False) -> _TrainState:
    """The net, θ's Adam and, with learned inner rates or a conditioned start, those and their own Adams, under
    ``strategy``. A frozen group (``frozen_groups``) gets no Adam, and the checkpoint leaves it out when ``--init``
    holds it: a resume reloads it from there (``_check_run_dir`` checks that file is unchanged), so the state to
    keep is what the run trains."""
    frozen = set(frozen_groups(config))
    from_init = frozen if run.init and not frozen_in_checkpoint else set()
    with strategy.scope():
        net = stage.make_net()
        rates, rates_optimizer, basis, basis_optimizer = [], None, [], None
        if stage.learns_rates:
            rates = [tf.Variable(initial_rates(config, len(net.params)), name="inner_lr")]
        if stage.learns_basis:  # V starts at 0: θ(k) = θ for every kernel
            basis = [tf.Variable(tf.zeros([START_FEATURES, *p.shape]), name=f"start_basis_{i}") for i, p in
                     enumerate(net.params)]  # fmt: skip
        optimizer = None if "theta" in frozen else _adam(stage.learning_rate(), net.params)
        if rates and "rates" not in frozen:  # the rates have an Adam of their own (their rate may differ from θ's)
            rates_optimizer = _adam(config.rates_lr, rates)
        if basis and "basis" not in frozen:
            basis_optimizer = _adam(config.basis_lr, basis)
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    kept = {"step": step, "seed": tf.Variable(run.seed)}
    kept.update({} if "theta" in from_init else {"model": net})
    kept.update({} if optimizer is None else {"optimizer": optimizer})
    kept.update({} if not rates or "rates" in from_init else {"inner_lr": rates[0]})
    kept.update({} if rates_optimizer is None else {"rates_optimizer": rates_optimizer})
    kept.update({} if not basis or "basis" in from_init else {"start_basis": basis})
    kept.update({} if basis_optimizer is None else {"basis_optimizer": basis_optimizer})
    checkpoint = tf.train.Checkpoint(**kept)
    return _TrainState(net, rates, optimizer, rates_optimizer, step, checkpoint, basis, basis_optimizer, from_init)


def _restore_or_init(state: _TrainState, stage: Stage, run: RunConfig, config, ckpt_dir: Path, changed, log):
    """Resume from the newest checkpoint (the recipe's learning rates win over the restored ones; the frozen groups
    it leaves out come from ``run.init``), or start from ``run.init``."""
    if run.resume and _checkpoints(ckpt_dir):
        restored = _restore_newest(state.checkpoint, ckpt_dir, log)
        log(f"resumed {restored} at step {int(state.step.numpy())}")
        if changed:  # on purpose: the restored optimizer holds the old rate
            log("changed on resume: " + ", ".join(f"{k} -> {getattr(config, k)}" for k in changed))
        if state.optimizer is not None and not isinstance(
            state.optimizer.learning_rate, keras.optimizers.schedules.LearningRateSchedule
        ):
            state.optimizer.learning_rate = stage.learning_rate()
        if state.rates_optimizer is not None:
            state.rates_optimizer.learning_rate = config.rates_lr
        if state.basis_optimizer is not None:
            state.basis_optimizer.learning_rate = config.basis_lr
        _load_init(state, stage, run, state.from_init)
        return
    if run.resume:
        log(f"no checkpoint in {ckpt_dir}: starting at step 0")
    if run.init:
        _load_init(state, stage, run, {"theta", "rates", "basis"})


def _load_init(state: _TrainState, stage: Stage, run: RunConfig, groups) -> None:
    """Set ``groups`` of the state (of 'theta', 'rates', 'basis') from ``run.init``, as far as it holds them."""
    if "theta" in groups:
        state.net.set_params(stage.load_init(run.init))
    init_rates = load_inner_lr(run.init) if state.rates and "rates" in groups else None
    if init_rates is not None and init_rates.shape[0] == state.rates[0].shape[0]:
        # kernel slopes start at 0 beside plain rates (the rates as they were); a run without kernel_rates
        # takes a kernel-conditioned table's rates and leaves its slopes
        if init_rates.shape[1] < state.rates[0].shape[1]:
            init_rates = np.pad(init_rates, [(0, 0), (0, state.rates[0].shape[1] - init_rates.shape[1])])
        state.rates[0].assign(init_rates[:, : state.rates[0].shape[1]])
    init_basis = load_start_basis(run.init) if state.basis and "basis" in groups else None
    if init_basis is not None:  # a conditioned θ_M goes on from its own start
        for v, b in zip(state.basis, init_basis):
            v.assign(b)


def _log_train_step(state: _TrainState, loss, per_step, seconds_per_step: float) -> None:
    """TensorBoard scalars of one training step (inside the writer's default step)."""
    tf.summary.scalar("train/loss", loss)
    if state.optimizer is not None:  # θ trained
        tf.summary.scalar("train/learning_rate", state.optimizer.learning_rate)
    tf.summary.scalar("train/seconds_per_step", seconds_per_step)
    for j in range(int(per_step.shape[0])):
        tf.summary.scalar(f"train/query_loss_step{j + 1}", per_step[j])


def _stop_after_nonfinite(nonfinite: int, step: int, ckpt_dir: Path):
    """The error that ends a run after ``MAX_NONFINITE`` non-finite steps in a row (nothing is saved: the last
    checkpoint holds the last finite state)."""
    last = _checkpoints(ckpt_dir)
    where = f"its last checkpoint, {Path(last[0]).name}," if last else "no checkpoint yet; it"
    return TrainingStopped(
        f"stopping: {nonfinite} non-finite steps in a row at step {step}; the run keeps {where} "
        "from before: --resume with a lower --lr/--meta-lr (a resume may change the learning rate)"
    )


def _first_batches(stage: Stage, count: int, config) -> list:
    """The stage's first ``count`` batches; a data pipeline that cannot make them is an :class:`InputError`."""
    try:
        return list(stage.dataset(0).take(count))
    except tf.errors.InvalidArgumentError:
        scale = getattr(config, "scale", None)
        at = f" at x{scale}" if scale else ""
        raise InputError(f"--patch {config.patch} is too small for the kernels{at}: use a larger --patch") from None


def train(run: RunConfig, config, log=print) -> Path:
    """Run (or resume) a training stage up to ``run.steps``; returns ``RUN_DIR/final.weights.h5``."""
    stage = make_stage(run, config)
    if run.steps < 1:
        raise InputError(f"--steps must be positive, got {run.steps}")
    strategy = make_strategy(run.strategy)
    replicas = strategy.num_replicas_in_sync
    if stage.global_size() % replicas:
        raise InputError(f"batch of {stage.global_size()} does not split over {replicas} replicas")
    chief = is_chief(strategy)
    if not chief:  # the other workers of a cluster compute, the chief reports and writes

        def log(message):
            return None

    record, changed_recipe = _check_run_dir(run, config)
    ckpt_dir = Path(run.out) / "ckpt"
    stage.images = stage.prepare_images(data_lib.load_images(run.data, stage.min_image_size))
    # Fixed validation batches from their own seed, not batches of the training stream; drawn before anything is
    # written, so settings the data pipeline cannot make (a patch too small for its kernels) fail cleanly.
    val_stage = make_stage(dataclasses.replace(run, seed=run.seed + 10_007), config, stage.images)
    val_batches = _first_batches(val_stage, run.val_batches, config)
    val_batch = val_batches[0]
    # Every worker saves (saving may need collectives); the others into a folder of their own, removed at the end.
    with _save_dir(chief, ckpt_dir) as save_dir:
        state = _build_state(stage, run, config, strategy, record.get("frozen_in_checkpoint", False))
        _restore_or_init(state, stage, run, config, ckpt_dir, changed_recipe, log)
        # An unreadable state file: TF logs it and starts anew (the checkpoints were found from their .index files).
        manager = tf.train.CheckpointManager(state.checkpoint, str(save_dir), max_to_keep=3)
        if changed_recipe:
            record["history"][-1]["step"] = int(state.step.numpy())
        if chief:
            _write_record(Path(run.out), record)  # the run has started: record its settings

        def finish() -> Path:
            final = stage.save([v.numpy() for v in state.variables], Path(run.out) if chief else save_dir)
            return Path(run.out) / final.name

        start = int(state.step.numpy())
        if start >= run.steps:
            log(f"already at step {start} >= {run.steps}")
            return finish()

        variables, optimizers = state.variables, state.optimizers
        first_order_step = make_step_fn(stage, variables, optimizers, strategy, True, run.jit)
        second_order_step = None
        if not all(stage.first_order(step) for step in range(start, run.steps)):
            second_order_step = make_step_fn(stage, variables, optimizers, strategy, False, run.jit)
        validate = tf.function(stage.validate)
        writer = _summary_writer(chief, Path(run.out) / "logs")
        samples_writer = None  # opened at the first sample: a run that writes none leaves no folder
        from tqdm import tqdm

        bar = tqdm(
            total=run.steps, initial=start, disable=not (run.progress and chief), unit="step", dynamic_ncols=True
        )
        nonfinite, t_last = 0, time.perf_counter()

        def run_validation(at_step):
            per_batch = [validate(variables, batch) for batch in val_batches]
            metrics = {k: tf.reduce_mean([m[k] for m in per_batch]) for k in per_batch[0]}
            for k, v in metrics.items():
                tf.summary.scalar(k, v, step=at_step)
            log(f"step {at_step}: " + ", ".join(f"{k} {float(v):.3f}" for k, v in metrics.items()))

        if start == 0:  # the starting point's validation: where the learning curve begins
            with writer.as_default():
                run_validation(0)
        dataset = iter(stage.dataset(start))
        for step in range(start, run.steps):
            batch = next(dataset)
            loss, per_step, finite = (first_order_step if stage.first_order(step) else second_order_step)(
                batch, tf.constant(step, tf.int64)
            )
            state.step.assign(step + 1)
            if not bool(finite):
                nonfinite += 1
                log(f"step {step}: non-finite loss or gradient, update skipped ({nonfinite} in a row)")
                if nonfinite >= MAX_NONFINITE:
                    raise _stop_after_nonfinite(nonfinite, step, ckpt_dir)
                continue
            nonfinite = 0
            bar.update(1)
            with writer.as_default(step=step + 1):
                if (step + 1) % run.log_every == 0 or step == start:
                    now = time.perf_counter()
                    _log_train_step(state, loss, per_step, (now - t_last) / (1 if step == start else run.log_every))
                    t_last = now
                    bar.set_postfix(loss=f"{float(loss):.4f}")
                if (step + 1) % run.val_every == 0 or step + 1 == run.steps:
                    run_validation(step + 1)
            if (step + 1) % run.sample_every == 0 and (x := stage.sample_input(val_batch)) is not None:
                samples_writer = samples_writer or _summary_writer(chief, Path(run.out) / SAMPLES_LOGS)
                with samples_writer.as_default(step=step + 1):
                    tf.summary.image(
                        "samples/input_output",
                        tf.concat([x, tf.clip_by_value(forward(state.net.params, x), 0, 1)], 2),
                        max_outputs=2,
                    )
            if (step + 1) % run.checkpoint_every == 0:
                manager.save(checkpoint_number=step + 1)
        bar.close()
        manager.save(checkpoint_number=run.steps)
        return finish()


SAMPLES_LOGS = "logs/samples"
"""Where a run's image samples go: pictures of its training data, apart from the scalars (``logs/``) that a
campaign commits and the learning curve reads."""


def _summary_writer(chief: bool, folder: Path):
    """TensorBoard writer into ``folder``; workers other than the chief write nothing."""
    return tf.summary.create_file_writer(str(folder)) if chief else tf.summary.create_noop_writer()


def stage_config(stage: str, **overrides):
    """The stage's config dataclass with the given (non-None) overrides; one the stage lacks is an error."""
    cls = _CONFIGS.get(stage, MetaConfig)
    given = {k: v for k, v in overrides.items() if v is not None}
    foreign = sorted(set(given) - {f.name for f in dataclasses.fields(cls)})
    if foreign:
        raise InputError(f"--{foreign[0].replace('_', '-')} does not apply to --stage {stage}")
    return cls(**given)


def stage_defaults(stage: str) -> dict:
    """The default settings of ``stage`` ('pretrain' or 'meta')."""
    return dataclasses.asdict(_CONFIGS.get(stage, MetaConfig)())


_CONFIGS = {"pretrain": PretrainConfig, "meta": MetaConfig, "kernel": EstimatorConfig}


def set_seed(seed: int):
    keras.utils.set_random_seed(seed)
    np.random.seed(seed)
