"""Train θ_T (pretraining), θ_M (meta-transfer learning, paper Algorithm 1) or the blind-SR kernel estimator.

  python train.py --stage pretrain --data ../shared/datasets/train --out runs/pretrain --steps 100000
  python train.py --stage meta --init runs/pretrain/final.weights.h5 --data ../shared/datasets/train \\
      --out runs/meta --steps 100000
  python train.py --stage kernel --data ../shared/datasets/train --out runs/kernel --steps 20000
  (add --resume to continue a run up to --steps)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mzsr_tf import cli


def _flag(field: str) -> str:
    """The command-line spelling of a config field: ``lr_floor`` -> ``--lr-floor``."""
    return "--" + field.replace("_", "-")


REQUIRED = ("stage", "data", "out", "steps")  # as flags or from --config


def build_parser(only_given: bool = False):
    """The flags; ``only_given``: a parser whose namespace holds only the flags actually given."""
    p = cli.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--config",
        type=Path,
        help="a run's config.json (or a JSON of the same shape): its settings, flags given override them; "
        "in a run folder it also sets --out",
    )
    p.add_argument("--stage", choices=("pretrain", "meta", "kernel"))
    p.add_argument("--data", nargs="+", type=Path, help="folders of HR training images")
    p.add_argument("--out", type=Path, help="run folder (checkpoints, logs, final.weights.h5)")
    p.add_argument("--steps", type=int, help="total steps (with --resume: continue up to this)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    p.add_argument("--init", type=Path, help="initial weights (.weights.h5, .npz, TF1 checkpoint)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=cli.scale_type, default=2)
    p.add_argument("--patch", type=int, help="HR patch size (pretrain 96, meta 64)")
    p.add_argument(
        "--min-variance",
        type=float,
        help="smallest kernel eigenvalue of p(k) (1; pretrain: with --degradation kernels/mixed)",
    )
    p.add_argument("--strategy", choices=("default", "mirrored", "multiworker"), default="default")
    p.add_argument("--jit", action="store_true", help="XLA-compile the training step")
    p.add_argument(
        "--precision",
        choices=("float32", "bfloat16"),
        help="compute type of the convolutions (float32); bfloat16 keeps float32 weights, loss and gradients",
    )
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--val-every", type=int, default=250)
    p.add_argument("--val-batches", type=int, default=1, help="validation averages this many fixed batches")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument(
        "--sample-every",
        type=int,
        default=1000,
        help="TensorBoard image samples every this many steps, in logs/samples",
    )
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    pre = p.add_argument_group("pretrain")
    pre.add_argument("--batch-size", type=int, help="patches per step (32)")
    pre.add_argument("--lr", type=float, help="Adam learning rate (4e-4)")
    pre.add_argument("--lr-decay-steps", type=int, help="halve the learning rate every this many steps (100000)")
    pre.add_argument("--lr-floor", type=float, help="... down to this (1e-4)")
    pre.add_argument(
        "--degradation",
        choices=("bicubic", "kernels", "mixed"),
        help="bicubic pairs (paper), random-kernel pairs, or half each",
    )
    pre.add_argument(
        "--kernel",
        help="with --degradation kernels: every pair under this one kernel (a paper kernel's name or a .mat/.npy), "
        "not p(k): a non-blind network for it",
    )
    meta = p.add_argument_group("meta")
    meta.add_argument("--subsample", choices=("direct", "bicubic"))
    meta.add_argument("--inner-steps", type=int, help="inner SGD steps (5)")
    meta.add_argument("--inner-lr", type=float, help="inner learning rate alpha (0.01)")
    meta.add_argument(
        "--meta-lr", type=float, help="Adam learning rate beta (1e-4); 0 freezes theta and learns only the inner rates"
    )
    meta.add_argument("--meta-batch", type=int, help="tasks per meta-batch (5)")
    meta.add_argument("--task-batch", type=int, help="patches per task in each of D_tr and D_te (4)")
    meta.add_argument("--noise", type=float, help="std of Gaussian noise on the LR (0)")
    meta.add_argument(
        "--task-noise", type=float, help="half the tasks get LR noise of std ~ U[0, this] (0; 0-1 units, 5/255: 0.0196)"
    )
    meta.add_argument(
        "--blind-tasks", type=int, help="tasks per meta-batch under DIV2KRK-style kernels, as blind SR sees (0)"
    )
    meta.add_argument(
        "--blind-context", type=int, nargs="+", metavar="H [W]",
        help="run the blind tasks blind: the shipped estimator reads each one's kernel off an H x W HR crop's LR "
        "(H alone: H x H), and only the conditioned start's rows for estimated kernels learn (default: off)",
    )  # fmt: skip
    meta.add_argument(
        "--bicubic-tasks", type=int, help="tasks per meta-batch under plain bicubic, no blur (0; --subsample bicubic)"
    )
    meta.add_argument(
        "--support",
        choices=("external", "son"),
        help="inner-loop pairs: external HR patch pairs (official) or each LR's son -> LR, as the meta-test adapts",
    )
    meta.add_argument(
        "--learn-inner-lr",
        action="store_true",
        default=None,
        help="learn the inner rate per tensor and inner step (MAML++ LSLR), shipped with the weights",
    )
    meta.add_argument("--inner-lr-meta-lr", type=float, help="with --learn-inner-lr: Adam rate of the rates (meta-lr)")
    meta.add_argument(
        "--kernel-rates",
        action="store_true",
        default=None,
        help="with --learn-inner-lr: scale each step's rates by the task's kernel (size, anisotropy), learned too",
    )
    meta.add_argument(
        "--conditioned-start",
        action="store_true",
        default=None,
        help="each task starts from theta(k) = theta + sum_i phi_i(k) V_i, the basis V learned and shipped (MMAML); "
        "with --inner-steps 0 --meta-lr 0: supervised training of V, theta frozen",
    )
    meta.add_argument(
        "--start-lr", type=float, help="with --conditioned-start: Adam rate of the basis V (meta-lr; 0 freezes V)"
    )
    meta.add_argument("--first-order", action="store_true", default=None, help="first-order MAML throughout")
    meta.add_argument("--first-order-steps", type=int, help="first-order warm-up steps (0)")
    meta.add_argument("--anneal-steps", type=int, help="MAML++ loss-weight annealing length (3333)")
    est = p.add_argument_group("kernel")
    est.add_argument(
        "--zooms", type=float, nargs="+", help="train on the photos shrunk by these factors (1: as they are; default 1)"
    )
    est.add_argument(
        "--group",
        type=int,
        help="patches of one photo under one kernel, pooled into one estimate as a photo's tiles (1)",
    )
    est.add_argument(
        "--loss", help="covariance error: relative to the trace (relative_l1, default) or per direction (log_eigen)"
    )
    est.add_argument(
        "--soften",
        type=float,
        help="HR patches first blurred by an isotropic Gaussian of variance ~ U[0, this] HR px², the target still "
        "the kernel: photos' own softness (0)",
    )
    if only_given:  # no defaults at all, explicit ones included: what is in the namespace was typed
        for action in p._actions:
            action.default = argparse.SUPPRESS
    return p


RUN_FIELDS = ("stage", "data", "out", "steps", "seed", "init", "strategy", "jit", "checkpoint_every", "log_every")
RUN_FIELDS += ("val_every", "val_batches", "sample_every")


def _apply_config(args, argv):
    """Fill the flags not given from ``--config``; returns the config's stage settings (flags given win)."""
    import json

    from mzsr_tf.errors import InputError

    try:
        record = json.loads(args.config.read_text())
        run, stage = record.get("run", {}), record.get("stage_config", {})
        if not isinstance(run, dict) or not isinstance(stage, dict):
            raise ValueError("'run' and 'stage_config' must be objects")
    except (OSError, ValueError) as e:
        raise InputError(f"{args.config}: not a readable run config ({e})") from None
    given = vars(build_parser(only_given=True).parse_args(argv))
    for key in RUN_FIELDS:
        if key in run and key not in given and run[key] is not None:
            value = run[key]
            value = [Path(d) for d in value] if key == "data" else Path(value) if key in ("out", "init") else value
            setattr(args, key, value)
    if "out" not in given and (args.config.parent / "ckpt").is_dir():  # the run folder the config belongs to
        args.out = args.config.parent
    from mzsr_tf.training import stage_defaults

    defaults = stage_defaults(args.stage) if args.stage else {}
    rest = {}  # settings with no flag of their own
    for key, value in stage.items():
        if key in given or defaults.get(key) == value:  # a flag given wins; a default needs no setting
            continue
        if hasattr(args, key):
            setattr(args, key, value)
        else:
            rest[key] = value
    return rest


def main(argv=None):
    args = build_parser().parse_args(argv)
    from mzsr_tf.errors import InputError
    from mzsr_tf.kernels import resolve_degradation
    from mzsr_tf.training import RunConfig, set_seed, stage_config, train

    from_config = _apply_config(args, argv) if args.config else {}
    missing = [_flag(name) for name in REQUIRED if getattr(args, name) is None]
    if missing:
        raise InputError(f"{', '.join(missing)} required (as flags or from --config)")

    for name in (
        "steps",
        "batch_size",
        "patch",
        "meta_batch",
        "task_batch",
        "checkpoint_every",
        "val_every",
        "lr_decay_steps",
        "val_batches",
        "sample_every",
    ):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InputError(f"{_flag(name)} must be positive, got {value}")
    for name in ("lr", "lr_floor", "inner_lr", "meta_lr", "inner_lr_meta_lr", "start_lr", "min_variance"):
        value = getattr(args, name)
        if name in ("meta_lr", "inner_lr_meta_lr", "start_lr") and value == 0:  # θ, the rates or V frozen (MetaConfig)
            continue
        if value is not None and not value > 0:
            raise InputError(f"{_flag(name)} must be positive, got {value}")
    if args.stage == "pretrain" and args.degradation in (None, "bicubic"):
        for name in ("min_variance", "subsample"):
            if getattr(args, name) is not None:
                raise InputError(f"{_flag(name)} needs --degradation kernels or mixed")
    if args.kernel is not None:
        if args.stage != "pretrain" or args.degradation != "kernels":
            raise InputError("--kernel needs --stage pretrain --degradation kernels")
        own = resolve_degradation(args.kernel).subsample
        if own != (args.subsample or "direct"):
            raise InputError(f"--kernel {args.kernel} subsamples {own}: add --subsample {own}")
    for d in args.data:
        if not d.is_dir():
            raise InputError(f"{d}: no such data folder")
    config = stage_config(
        args.stage,
        **from_config,  # settings without a flag
        scale=None if args.stage == "kernel" else args.scale,  # the estimator trains on x2 and x4 at once
        patch=args.patch,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_decay_steps=args.lr_decay_steps,
        lr_floor=args.lr_floor,
        degradation=args.degradation,
        precision=args.precision,
        min_variance=args.min_variance,
        kernel=args.kernel,
        subsample=args.subsample,
        inner_steps=args.inner_steps,
        inner_lr=args.inner_lr,
        meta_lr=args.meta_lr,
        meta_batch=args.meta_batch,
        task_batch=args.task_batch,
        noise=args.noise,
        task_noise=args.task_noise,
        blind_tasks=args.blind_tasks,
        blind_context=args.blind_context,
        bicubic_tasks=args.bicubic_tasks,
        support=args.support,
        learn_inner_lr=args.learn_inner_lr,
        inner_lr_meta_lr=args.inner_lr_meta_lr,
        kernel_rates=args.kernel_rates,
        conditioned_start=args.conditioned_start,
        start_lr=args.start_lr,
        first_order=args.first_order,
        first_order_steps=args.first_order_steps,
        anneal_steps=args.anneal_steps,
        zooms=tuple(args.zooms) if args.zooms else None,
        group=args.group,
        loss=args.loss,
        soften=args.soften,
    )
    run = RunConfig(
        stage=args.stage,
        data=tuple(str(d) for d in args.data),
        out=str(args.out),
        steps=args.steps,
        seed=args.seed,
        init=str(args.init) if args.init else None,
        resume=args.resume,
        strategy=args.strategy,
        jit=args.jit,
        checkpoint_every=args.checkpoint_every,
        log_every=args.log_every,
        val_every=args.val_every,
        val_batches=args.val_batches,
        sample_every=args.sample_every,
        progress=not args.no_progress,
    )
    set_seed(args.seed)
    final = train(run, config, log=lambda m: print(m, file=sys.stderr))
    print(final)
    return 0


def run() -> None:
    """Console entry point ``mzsr-train``: one-line errors, exit codes 0 / 2 (bad input) / 130 (Ctrl-C)."""
    sys.exit(cli.run(main))


if __name__ == "__main__":
    run()
