"""Export MZSR meta-weights: Keras/npz weights, a TF Serving SavedModel and a LiteRT adaptation graph.

python -m export --out exported                       # the shipped x2 meta-weights
python -m export --weights runs/meta_x2/final.weights.h5 --out exported --max-steps 10 --overwrite
"""

from __future__ import annotations

import sys
from pathlib import Path

from mzsr_tf import cli


def build_parser():
    p = cli.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, help="meta-weights: .weights.h5, .npz or TF1 checkpoint (default: shipped)")
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output folder (new, or existing: only the exported files are written there)",
    )
    p.add_argument("--scale", type=cli.scale_type, default=2, help="SR factor of the weights (default 2)")
    p.add_argument(
        "--kernel-size",
        type=cli.bounded_int(1),
        default=21,
        help="TFLite train_step kernel input is k x k (default 21)",
    )
    p.add_argument(
        "--max-pixels",
        type=cli.bounded_int(9),
        default=512 * 512,
        help="serving: largest LR image, H*W (default 262144)",
    )
    p.add_argument(
        "--max-steps", type=cli.bounded_int(0), default=20, help="serving: most adaptation steps (default 20)"
    )
    p.add_argument(
        "--kernel-estimator",
        type=Path,
        help="serving: estimator weights for the blind signature (default: the shipped ones at x2/x4; 'none': no "
        "blind signature)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace earlier exported files in --out (nothing else there)"
    )
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    from mzsr_tf.errors import InputError
    from mzsr_tf.export import ExportConfig, check_output_folder, export_all
    from mzsr_tf.weights import check_scale, default_weights, load_inner_lr, load_params, load_start_basis

    inputs = [args.weights] if args.weights else []
    check_output_folder(args.out, args.overwrite, inputs)  # fail before the slow part
    weights = args.weights or default_weights(args.scale, "direct")
    check_scale(weights, args.scale)
    params, inner_lr = load_params(weights), load_inner_lr(weights)
    estimator = None
    if str(args.kernel_estimator) != "none" and (args.kernel_estimator or args.scale in (2, 4)):
        if args.scale not in (2, 4):
            raise InputError(f"--kernel-estimator: the estimator knows x2 and x4, not x{args.scale}")
        from mzsr_tf.kernel_estimation import default_estimator, load_estimator

        estimator = load_estimator(args.kernel_estimator or default_estimator())
    config = ExportConfig(args.scale, args.kernel_size, args.max_pixels, args.max_steps)
    basis = load_start_basis(weights)
    exported = export_all(params, args.out, config, args.overwrite, inputs, inner_lr, estimator, basis)
    for kind, path in exported.items():
        print(f"{kind:<12} {path}")
    return 0


def run() -> None:
    """Console entry point ``mzsr-export``: one-line errors, exit codes 0 / 2 (bad input) / 130 (Ctrl-C)."""
    sys.exit(cli.run(main))


if __name__ == "__main__":
    run()
