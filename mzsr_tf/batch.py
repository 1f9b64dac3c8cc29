"""Super-resolving image files: what ``adapt.py`` does around each image, as a library.

Inputs are expanded (files and folders), paired with ground truth (``stem``, ``stem_GT`` or ``stem_HR``) and
with output names (``<stem>_x<s>.png``); every input is read and checked and every destination checked before
the first output is written (all or nothing, never an input overwritten). Each image's SR keeps its alpha
channel (bicubic-upscaled), bit depth and grey/colour; with ground truth the report holds PSNR/SSIM-Y
(MATLAB ``rgb2ycbcr``, shave = scale) before and after.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mzsr_tf.errors import InputError
from mzsr_tf.imresize import upscale
from mzsr_tf.io import IMAGE_SUFFIXES, MAX_IMAGE_PIXELS, ImageData, atomic_write, list_images, read_image, write_image
from mzsr_tf.kernel_estimation import blind_estimator, save_kernel_files
from mzsr_tf.metrics import modcrop, psnr_y, ssim_y
from mzsr_tf.zero_shot import zero_shot_sr
from mzsr_tf.zssr import train_zssr

__all__ = ["Job", "mzsr_runner", "zssr_runner", "run_images"]


@dataclass(frozen=True)
class Job:
    """Which files to super-resolve, where to, and how they are checked (``adapt.py``'s file flags)."""

    inputs: tuple[Path, ...]  # LR images and/or folders of them
    scale: int = 2
    out: Path | None = None  # a file (one input) or a folder; None: ./results
    gt: Path | None = None  # an HR file or folder, for PSNR/SSIM
    json: Path | None = None  # the per-image report
    overwrite: bool = False
    max_image_pixels: int = MAX_IMAGE_PIXELS  # inputs above this are refused from their header (GT: times scale²)
    kernel_estimator: Path | None = None  # blind SR: estimator weights (None: the shipped one)
    blind_method: str = "estimator"  # blind SR: 'estimator' (kernel_estimation) or 'kernelgan'

    @property
    def max_gt_pixels(self) -> int:
        return self.max_image_pixels * self.scale**2


def expand_inputs(inputs) -> list[Path]:
    """The image files of ``inputs``: files as given, folders expanded (sorted)."""
    files = []
    for path in inputs:
        if path.is_dir():
            found = list_images(path)
            if not found:
                raise InputError(f"{path}: no images (.png/.jpg/.jpeg/.bmp/.tif/.tiff) in folder")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(f"{path}: no such file or folder")
    return files


def pair_gt(files, gt):
    """GT for each input: the file itself, or in a folder the one named ``stem``, ``stem_GT`` or ``stem_HR``."""
    if gt is None:
        return [None] * len(files)
    if gt.is_file():
        if len(files) != 1:
            raise InputError(f"--gt {gt} is one file but there are {len(files)} inputs; give a folder")
        return [gt]
    if not gt.is_dir():
        raise InputError(f"{gt}: no such GT file or folder")
    by_stem = {p.stem: p for p in list_images(gt)}
    pairs = []
    for f in files:
        match = next((by_stem[s] for s in (f.stem, f"{f.stem}_GT", f"{f.stem}_HR") if s in by_stem), None)
        if match is None:
            raise InputError(f"{f}: no GT named {f.stem}, {f.stem}_GT or {f.stem}_HR in {gt}")
        pairs.append(match)
    return pairs


def output_paths(files, out, scale) -> list[Path]:
    """Each input's SR file: ``out`` itself (one input, an image name) or ``out/<stem>_x<scale>.png``."""
    out = out or Path("results")
    if out.suffix.lower() in IMAGE_SUFFIXES and not out.is_dir():
        if len(files) != 1:
            raise InputError(f"--out {out} is a file but there are {len(files)} inputs; give a folder")
        return [out]
    names = [f"{f.stem}_x{scale}.png" for f in files]
    if len(set(names)) != len(names):
        raise InputError("two inputs share a name; process them separately")
    return [out / n for n in names]


def load_gt(gt_path, scale, max_pixels):
    """The HR ground truth as float RGB, cropped to a multiple of ``scale`` (MATLAB ``modcrop``)."""
    return modcrop(read_image(gt_path, max_pixels).rgb, scale)


def score(entry, baseline: str, before, after, hr, gt_path, scale):
    """Fill ``psnr_y_<baseline>``/``ssim_y_<baseline>`` (``before``) and ``psnr_y``/``ssim_y`` (``after``)."""
    for suffix, sr in ((f"_{baseline}", before), ("", after)):
        if hr.shape != sr.shape:
            raise InputError(
                f"{gt_path}: GT is {hr.shape[1]}x{hr.shape[0]} after modcrop, SR is {sr.shape[1]}x{sr.shape[0]}"
            )
        entry[f"psnr_y{suffix}"], entry[f"ssim_y{suffix}"] = psnr_y(sr, hr, scale), ssim_y(sr, hr, scale)


def mzsr_runner(job: Job, config, params, start_basis=None):
    """``run(rgb, shape, gt_path, name, degradation) -> (sr, report fields)`` for MZSR(n) from the meta-weights
    (``start_basis``: their kernel-conditioned start's, ``zero_shot.zero_shot_sr``)."""

    def run(rgb, shape, gt_path, name, degradation):
        result = zero_shot_sr(params, rgb, degradation, job.scale, config, shape, start_basis)
        if result.diverged:
            print(
                f"warning: {name}: update {len(result.losses) + 1} of {config.steps} diverged (non-finite); "
                f"kept the weights after update {len(result.losses)} (lower --lr)",
                file=sys.stderr,
            )
        entry = {
            "method": "mzsr",
            "steps": config.steps,
            "optimizer": config.rule,
            "precision": config.compute_precision,  # 'auto' resolved on this machine
            "son_noise": config.noise_sigma,
            "keep_best": config.keep_best,
            "backtrack": config.backtrack,
            "losses": result.losses,
            "updates_kept": result.updates,  # the guard (keep_best) may keep the weights of fewer updates
            **({"diverged_at_update": len(result.losses) + 1} if result.diverged else {}),
            "seconds_adapt": round(result.seconds_adapt, 4),
            "seconds_sr": round(result.seconds_sr, 4),
        }
        if gt_path is not None:
            no_updates = dataclasses.replace(config, steps=0)
            before = zero_shot_sr(params, rgb, degradation, job.scale, no_updates, shape, start_basis)
            hr = load_gt(gt_path, job.scale, job.max_gt_pixels)
            score(entry, "before", before.sr, result.sr, hr, gt_path, job.scale)
            print(
                f"{name}: PSNR-Y {entry['psnr_y_before']:.2f} -> {entry['psnr_y']:.2f} dB "
                f"after {config.steps} steps ({result.seconds_adapt:.2f} s)",
                file=sys.stderr,
            )
        return result.sr, entry

    return run


def zssr_runner(job: Job, config, init, preset: str):
    """``run(rgb, shape, gt_path, name, degradation) -> (sr, report fields)`` for ZSSR trained on each image."""

    def run(rgb, shape, gt_path, name, degradation):

        gt = None if gt_path is None else load_gt(gt_path, job.scale, job.max_gt_pixels)
        with tqdm(desc=f"ZSSR {name}", unit="it", dynamic_ncols=True, leave=False) as bar:

            def progress(stage, stages, iteration, max_iters, loss, learning_rate):
                bar.total = max_iters
                bar.n = iteration
                bar.set_postfix_str(f"stage {stage + 1}/{stages}, loss {loss:.4f}, lr {learning_rate:.0e}")

            result = train_zssr(rgb, degradation, job.scale, config, init, gt, shape, progress)
        entry = {
            "method": "zssr",
            "preset": preset,
            "iterations": result.iterations,
            "learning_rate_drops": [i for stage in result.log for i in stage.learning_rate_drops],
            "stages": [stage.as_dict() for stage in result.log],
            "seconds_train": round(sum(stage.seconds_train for stage in result.log), 4),
            "seconds_sr": round(sum(stage.seconds_test for stage in result.log), 4),
        }
        if gt_path is not None:
            bicubic = upscale(rgb, job.scale, result.sr.shape[:2]).numpy().clip(0, 1)
            score(entry, "bicubic", bicubic, result.sr, gt, gt_path, job.scale)
            print(
                f"{name}: PSNR-Y bicubic {entry['psnr_y_bicubic']:.2f} -> ZSSR {entry['psnr_y']:.2f} dB "
                f"after {result.iterations} iterations ({entry['seconds_train']:.1f} s)",
                file=sys.stderr,
            )
        return result.sr, entry

    return run


def check_destinations(job: Job, files, gts, outs):
    """Every destination is writable and replaces no input, checked before any work."""
    inputs = {f.resolve() for f in [*files, *(g for g in gts if g is not None)]}
    destinations = outs + ([job.json] if job.json else [])
    for dest in destinations:
        if dest.resolve() in inputs:
            raise InputError(f"{dest}: is an input; choose another output")
        if dest.exists() and not job.overwrite:
            raise InputError(f"{dest}: exists (pass --overwrite to replace it)")
        if dest.is_dir():
            raise InputError(f"{dest}: is a folder")
        parent = dest.parent
        while not parent.exists():  # the nearest existing ancestor must be a writable folder
            parent = parent.parent
        if not parent.is_dir():
            raise InputError(f"{dest}: cannot be written, {parent} is not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise InputError(f"{dest}: cannot be written, {parent} is not writable")


def load_inputs(job: Job, files, gts, check, kernel_for):
    """Read every input (and its GT), find its kernel and check it can be processed; one error naming every bad
    file. Returns (image, SR shape, degradation, estimate or None) per input."""

    loaded, bad = [], []
    for f, gt in zip(files, gts):
        try:
            img = read_image(f, job.max_image_pixels)
            shape = None
            if gt is not None:
                gt_shape = read_image(gt, job.max_gt_pixels).rgb.shape
                shape = tuple(n - n % job.scale for n in gt_shape[:2])
            degradation, estimate = kernel_for(img.rgb)
            check(img.rgb, shape, degradation)
            loaded.append((img, shape, degradation, estimate))
        except InputError as e:
            message = str(e).splitlines()[0]
            bad.append(message if str(f) in message or (gt and str(gt) in message) else f"{f}: {message}")
    if len(bad) == 1 and len(files) == 1:
        raise InputError(bad[0])
    if bad:
        raise InputError(f"{len(bad)} of {len(files)} inputs cannot be processed, nothing written: " + "; ".join(bad))
    return loaded


def kernel_paths(out: Path) -> tuple[Path, Path]:
    """Where an estimated kernel is written beside the SR output: ``<out>_kernel.npy`` and ``<out>_kernel.png``."""
    return out.with_name(f"{out.stem}_kernel.npy"), out.with_name(f"{out.stem}_kernel.png")


def kernel_source(job: Job, degradation):
    """``kernel_for(rgb) -> (degradation, estimate or None)``: the given kernel, or a blind estimate per photo."""
    if degradation is not None:
        return lambda rgb: (degradation, None)

    estimate = blind_estimator(job.blind_method, job.kernel_estimator, progress=True)

    def kernel_for(rgb):
        found = estimate(rgb, job.scale)
        return found.degradation, found

    return kernel_for


def run_images(job: Job, run, check, degradation=None):
    """All or nothing: every input is read and checked and every destination checked before the first output.

    ``degradation`` None: blind SR, each photo's kernel is estimated (and written beside its output)."""

    files = expand_inputs(job.inputs)
    gts = pair_gt(files, job.gt)
    outs = output_paths(files, job.out, job.scale)
    blind = degradation is None
    kernel_outs = [kernel_paths(o) for o in outs] if blind else []
    check_destinations(job, files, gts, outs + [p for pair in kernel_outs for p in pair])
    loaded = load_inputs(job, files, gts, check, kernel_source(job, degradation))
    if outs and outs[0].parent != Path("."):
        outs[0].parent.mkdir(parents=True, exist_ok=True)
    report = []
    bar = tqdm(list(zip(files, loaded, gts, outs)), unit="img", disable=len(files) < 2)
    for i, (f, (img, shape, deg, estimate), gt, out) in enumerate(bar):
        kernel_fields = {}
        if estimate is not None:
            npy, png = save_kernel_files(estimate.kernel, *kernel_outs[i], overwrite=job.overwrite)
            kernel_fields = {"kernel": {"estimated": True, "npy": str(npy), "png": str(png), **estimate.as_dict()}}
            print(f"{f.name}: estimated kernel {estimate.describe()} ({estimate.seconds:.2f} s), wrote {npy}",
                  file=sys.stderr)  # fmt: skip
        sr, fields = run(img.rgb, shape, gt, f.name, deg)
        fields = {**kernel_fields, **fields}
        alpha = None
        if img.alpha is not None:
            alpha = np.clip(upscale(img.alpha[..., None], job.scale, sr.shape[:2]).numpy()[..., 0], 0, 1)
        write_image(out, ImageData(sr, alpha, img.gray, img.bit_depth), overwrite=job.overwrite)
        report.append({"input": str(f), "output": str(out), "size": list(img.rgb.shape[:2]), **fields})
    if job.json:
        with atomic_write(job.json, job.overwrite) as tmp:
            tmp.write_text(json.dumps({"images": report}, indent=2))
    if len(files) == 1:
        print(f"wrote {outs[0]}" + (f" and {job.json}" if job.json else ""), file=sys.stderr)
    return report
