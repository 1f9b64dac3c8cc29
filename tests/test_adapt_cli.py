"""adapt.py end to end: outputs, JSON report, GT pairing, and one-line errors with nothing written."""

import json

import numpy as np
import pytest
import scipy.io
from PIL import Image

from mzsr_tf.commands import adapt
from mzsr_tf.degradation import degrade
from mzsr_tf.kernels import gaussian_kernel
from mzsr_tf.model import init_params
from mzsr_tf.weights import save_params

KERNEL = gaussian_kernel(2.0, 2.0, 0.0, 9).numpy()
KERNEL_NAME = "g_d_2.0"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, astronaut64):
    root = tmp_path_factory.mktemp("adapt")
    (root / "lr").mkdir()
    (root / "gt").mkdir()
    for name, (top, left) in {"face": (0, 0), "suit": (64, 64)}.items():
        hr = astronaut64[top : top + 64, left : left + 48]
        lr = degrade(hr, KERNEL, 2).numpy()
        Image.fromarray(np.round(lr * 255).astype(np.uint8)).save(root / "lr" / f"{name}.png")
        Image.fromarray(np.round(hr * 255).astype(np.uint8)).save(root / "gt" / f"{name}_GT.png")
    scipy.io.savemat(root / "kernel.mat", {"Kernel": KERNEL})
    save_params(init_params(0), root / "w.weights.h5")
    return root


def run(argv, capsys):
    code = adapt.cli.run(adapt.main, [str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.err


def test_folder_with_gt_and_json(workspace, tmp_path, capsys):
    out = tmp_path / "sr"
    code, err = run(
        [
            workspace / "lr",
            "--kernel",
            workspace / "kernel.mat",
            "--weights",
            workspace / "w.weights.h5",
            "--steps",
            "2",
            "--out",
            out,
            "--gt",
            workspace / "gt",
            "--json",
            tmp_path / "r.json",
        ],
        capsys,
    )
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["face_x2.png", "suit_x2.png"]
    assert Image.open(out / "face_x2.png").size == (48, 64)
    report = json.loads((tmp_path / "r.json").read_text())["images"]
    assert [r["steps"] for r in report] == [2, 2]
    from mzsr_tf.zero_shot import AdaptConfig

    assert {(r["precision"], r["optimizer"]) for r in report} == {(AdaptConfig().compute_precision, "adam")}
    for r in report:
        assert len(r["losses"]) == 2 and r["size"] == [32, 24]
        assert {"psnr_y_before", "ssim_y_before", "psnr_y", "ssim_y", "seconds_adapt"} <= set(r)
        assert 10 < r["psnr_y"] < 60


def test_single_file_to_file_and_no_overwrite(workspace, tmp_path, capsys):
    out = tmp_path / "one.png"
    argv = [
        workspace / "lr" / "face.png",
        "--kernel",
        "g_d_2.0",
        "--weights",
        workspace / "w.weights.h5",
        "--steps",
        "1",
        "--out",
        out,
    ]
    assert run(argv, capsys)[0] == 0
    stamp = out.read_bytes()
    code, err = run(argv, capsys)
    assert code == 2 and "exists" in err and err.count("\n") == 1
    assert out.read_bytes() == stamp
    assert run(argv + ["--overwrite"], capsys)[0] == 0


def test_precision_and_crop_flags_reach_the_adaptation(workspace, tmp_path, capsys):
    """--precision / --crop set AdaptConfig's precision and crop window: the PNG equals the library's."""
    from mzsr_tf.io import read_image
    from mzsr_tf.kernels import resolve_degradation
    from mzsr_tf.metrics import to_uint8
    from mzsr_tf.zero_shot import AdaptConfig, zero_shot_sr

    lr = read_image(workspace / "lr" / "face.png").rgb
    deg = resolve_degradation("g_d_2.0")
    outputs = {}
    for name, flags, config in [
        (
            "float32",
            ["--precision", "float32", "--crop", "16"],
            AdaptConfig(steps=2, precision="float32", max_pixels=256, crop_size=16),
        ),
        ("bfloat16", ["--precision", "bfloat16"], AdaptConfig(steps=2, precision="bfloat16")),
        ("official", ["--optimizer", "sgd"], AdaptConfig.official(steps=2)),  # the official test.py, float32
    ]:
        out = tmp_path / f"{name}.png"
        argv = [workspace / "lr" / "face.png", "--kernel", "g_d_2.0", "--weights", workspace / "w.weights.h5"]
        code, err = run(argv + ["--steps", "2", "--out", out, *flags], capsys)
        assert code == 0, err
        expected = to_uint8(zero_shot_sr(init_params(0), lr, deg, 2, config).sr).numpy()
        outputs[name] = np.asarray(Image.open(out))
        np.testing.assert_array_equal(outputs[name], expected)
    assert not np.array_equal(outputs["float32"], outputs["bfloat16"])


def test_shipped_weights_follow_the_kernels_subsampling(workspace, tmp_path, capsys):
    """Without --weights, a g^b kernel takes the shipped bicubic-subsampling θ_M, a g^d one the direct θ_M (with its
    kernel-conditioned start, when the file carries one)."""
    from mzsr_tf.io import read_image
    from mzsr_tf.kernels import resolve_degradation
    from mzsr_tf.metrics import to_uint8
    from mzsr_tf.weights import default_weights, load_params, load_start_basis
    from mzsr_tf.zero_shot import AdaptConfig, zero_shot_sr

    lr = read_image(workspace / "lr" / "face.png").rgb
    for kernel, subsample in (("g_b_1.3", "bicubic"), ("g_d_2.0", "direct")):
        out = tmp_path / f"{subsample}.png"
        code, err = run([workspace / "lr" / "face.png", "--kernel", kernel, "--steps", "0", "--out", out], capsys)
        assert code == 0, err
        weights = default_weights(2, subsample)
        basis = load_start_basis(weights)
        degradation = resolve_degradation(kernel)
        expected = zero_shot_sr(load_params(weights), lr, degradation, 2, AdaptConfig(steps=0), start_basis=basis).sr
        np.testing.assert_array_equal(np.asarray(Image.open(out)), to_uint8(expected).numpy())


def test_sgd_takes_the_official_rates_of_the_kernels_model(workspace, tmp_path, capsys):
    """--optimizer sgd: the official test.py's rates for the released model (Bicubic×2 differs from Direct×2)."""
    from mzsr_tf.io import read_image
    from mzsr_tf.kernels import resolve_degradation
    from mzsr_tf.metrics import to_uint8
    from mzsr_tf.zero_shot import AdaptConfig, zero_shot_sr

    lr = read_image(workspace / "lr" / "face.png").rgb
    for kernel, subsample in (("g_b_1.3", "bicubic"), ("g_d_2.0", "direct")):
        out = tmp_path / f"{subsample}.png"
        argv = [workspace / "lr" / "face.png", "--kernel", kernel, "--weights", workspace / "w.weights.h5"]
        code, err = run(argv + ["--optimizer", "sgd", "--steps", "2", "--out", out], capsys)
        assert code == 0, err
        config = AdaptConfig.official(2, subsample, steps=2)
        expected = zero_shot_sr(init_params(0), lr, resolve_degradation(kernel), 2, config).sr
        np.testing.assert_array_equal(np.asarray(Image.open(out)), to_uint8(expected).numpy())
    assert AdaptConfig.official(2, "bicubic").schedule != AdaptConfig.official(2, "direct").schedule


def test_grayscale_and_alpha_are_kept(workspace, tmp_path, capsys):
    rgb = np.asarray(Image.open(workspace / "lr" / "face.png"))
    Image.fromarray(rgb[..., 0]).save(tmp_path / "gray.png")
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])).save(tmp_path / "rgba.png")
    for name, mode in (("gray", "L"), ("rgba", "RGBA")):
        out = tmp_path / f"{name}_sr.png"
        code, err = run(
            [
                tmp_path / f"{name}.png",
                "--kernel",
                "g_d_2.0",
                "--weights",
                workspace / "w.weights.h5",
                "--steps",
                "0",
                "--out",
                out,
            ],
            capsys,
        )
        assert code == 0, err
        assert Image.open(out).mode == mode and Image.open(out).size == (48, 64)
    alpha = np.asarray(Image.open(tmp_path / "rgba_sr.png"))[..., 3]
    assert np.all(alpha == 128)


def _bad_weights(tmp_path):
    junk = tmp_path / "junk.weights.h5"
    junk.write_bytes(b"\x89HDF garbage")
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, **{f"conv{i}/kernel": np.zeros((1,)) for i in range(1, 9)})
    return junk, wrong


@pytest.mark.parametrize(
    "case,match",
    [
        ("unknown_kernel", "unknown kernel"),
        ("scale_one", "scale must be an integer > 1"),
        ("tiny_image", "too small"),
        ("kernel_bigger", "smaller than the"),
        ("corrupt_weights", "cannot read weights"),
        ("mismatched_weights", "missing arrays"),
        ("missing_gt", "no GT named"),
        ("missing_input", "no such file"),
        ("nan_kernel", "NaN"),
        ("bad_flag", "unrecognized arguments"),
        ("bad_precision", "invalid choice"),
        ("infinite_lr", "positive and finite"),
        ("bad_son_noise", "expected 'auto' or a number"),
        ("other_scale", "weights trained for x2, not x4"),
        ("too_many_steps", "must be <= 10000"),
        ("pixel_limit", "more than 100 pixels"),
        ("out_is_input", "is an input"),
        ("json_is_gt", "is an input"),
        ("out_under_a_file", "is not a folder"),
    ],
)
def test_bad_inputs_fail_with_one_line_and_write_nothing(workspace, tmp_path, capsys, case, match):
    out = tmp_path / "out"
    weights = workspace / "w.weights.h5"
    kernel = "g_d_2.0"
    inputs = [workspace / "lr" / "face.png"]
    extra = []
    junk, wrong = _bad_weights(tmp_path)
    if case == "unknown_kernel":
        kernel = "g_d_9.9"
    elif case == "scale_one":
        extra = ["--scale", "1"]
    elif case == "tiny_image":
        Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "tiny.png")
        inputs = [tmp_path / "tiny.png"]
    elif case == "kernel_bigger":
        Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(tmp_path / "small.png")
        inputs = [tmp_path / "small.png"]
    elif case == "corrupt_weights":
        weights = junk
    elif case == "mismatched_weights":
        weights = wrong
    elif case == "missing_gt":
        (tmp_path / "gt").mkdir()
        extra = ["--gt", tmp_path / "gt"]
    elif case == "missing_input":
        inputs = [tmp_path / "nope.png"]
    elif case == "nan_kernel":
        np.save(tmp_path / "nan.npy", np.full((3, 3), np.nan))
        kernel = tmp_path / "nan.npy"
    elif case == "bad_flag":
        extra = ["--no-such-flag"]
    elif case == "bad_precision":
        extra = ["--precision", "float16"]
    elif case == "infinite_lr":
        extra = ["--lr", "inf"]
    elif case == "bad_son_noise":
        extra = ["--son-noise", "loud"]
    elif case == "other_scale":
        weights = save_params(init_params(0), tmp_path / "x2.weights.h5", scale=2)
        extra = ["--scale", "4"]
    elif case == "too_many_steps":
        extra = ["--steps", "10001"]
    elif case == "pixel_limit":
        extra = ["--max-image-pixels", "100"]
    elif case == "out_is_input":
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "in.png")
        inputs, out = [tmp_path / "in.png"], tmp_path / "in.png"
        extra = ["--overwrite"]
    elif case == "json_is_gt":
        gt = workspace / "gt" / "face_GT.png"
        extra = ["--gt", gt, "--json", gt, "--overwrite"]
    elif case == "out_under_a_file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "sub" / "sr.png"
    before = {p: p.read_bytes() for p in [*tmp_path.rglob("*"), *workspace.rglob("*")] if p.is_file()}
    code, err = run([*inputs, "--kernel", kernel, "--weights", weights, "--steps", "1", "--out", out, *extra], capsys)
    assert code == 2
    assert match in err
    assert err.count("\n") == 1, err
    assert not out.exists() or out.is_file() or not any(out.iterdir())
    after = {p: p.read_bytes() for p in [*tmp_path.rglob("*"), *workspace.rglob("*")] if p.is_file()}
    assert after == before  # nothing written, nothing changed


def test_a_folder_is_all_or_nothing_and_names_every_bad_file(workspace, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a_good.png", "c_good.png"):
        (folder / name).write_bytes((workspace / "lr" / "face.png").read_bytes())
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(folder / "b_tiny.png")
    (folder / "d_junk.png").write_text("not an image")
    out = tmp_path / "out"
    argv = [folder, "--kernel", KERNEL_NAME, "--weights", workspace / "w.weights.h5", "--steps", 1, "--out", out]
    code, err = run([*argv, "--json", tmp_path / "r.json"], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "2 of 4 inputs" in err and "b_tiny.png" in err and "d_junk.png" in err and "a_good" not in err
    assert not out.exists() and not (tmp_path / "r.json").exists()


def test_divergence_keeps_the_last_finite_weights_and_says_so(workspace, tmp_path, capsys):
    weights, face = workspace / "w.weights.h5", workspace / "lr" / "face.png"
    common = [face, "--kernel", KERNEL_NAME, "--weights", weights, "--optimizer", "sgd"]
    code, err = run([*common, "--steps", 0, "--out", tmp_path / "plain.png"], capsys)
    assert code == 0, err
    code, err = run(
        [*common, "--steps", 3, "--lr", "1e30", "--out", tmp_path / "sr.png", "--json", tmp_path / "r.json"], capsys
    )
    assert code == 0, err
    assert "diverged" in err and "kept the weights after update 0" in err
    entry = json.loads((tmp_path / "r.json").read_text())["images"][0]
    assert entry["diverged_at_update"] == 1 and entry["losses"] == []
    sr = np.asarray(Image.open(tmp_path / "sr.png"))
    assert sr.max() > 0  # not a black picture: the SR of θ itself
    np.testing.assert_array_equal(sr, np.asarray(Image.open(tmp_path / "plain.png")))


def test_weights_with_learned_rates_adapt_with_them_by_default(workspace, tmp_path, capsys):
    rates = np.full([5, 16], 1e-2, np.float32)
    weights = save_params(init_params(0), tmp_path / "lslr.weights.h5", inner_lr=rates)
    face = workspace / "lr" / "face.png"
    reports = {}
    variants = {
        "default": [],
        "adam": ["--optimizer", "adam"],
        "learned": ["--optimizer", "learned"],
        "unguarded": ["--no-keep-best"],
        "backtracked": ["--backtrack"],
    }
    for name, extra in variants.items():
        argv = [face, "--kernel", KERNEL_NAME, "--weights", weights, "--steps", 2, *extra]
        code, err = run([*argv, "--out", tmp_path / f"{name}.png", "--json", tmp_path / f"{name}.json"], capsys)
        assert code == 0, err
        reports[name] = json.loads((tmp_path / f"{name}.json").read_text())["images"][0]
    assert reports["default"]["optimizer"] == reports["learned"]["optimizer"] == "learned"
    assert reports["adam"]["optimizer"] == "adam" and reports["adam"]["son_noise"] == "auto"
    assert reports["default"]["losses"] == reports["learned"]["losses"] != reports["adam"]["losses"]
    assert [reports[n]["keep_best"] for n in variants] == [True, False, True, False, True]  # the guard: on for learned
    assert [reports[n]["backtrack"] for n in variants] == [False, False, False, False, True]
    assert reports["unguarded"]["updates_kept"] == 2 >= reports["default"]["updates_kept"]
    before = sorted(face.parent.iterdir())
    code, err = run([face, "--kernel", KERNEL_NAME, "--weights", weights, "--optimizer", "adam", "--backtrack"], capsys)
    assert code == 2 and "backtrack" in err and err.count("\n") == 1  # one line ...
    assert sorted(face.parent.iterdir()) == before  # ... and nothing written
    code, err = run(
        [face, "--kernel", KERNEL_NAME, "--weights", workspace / "w.weights.h5", "--optimizer", "learned"], capsys
    )
    assert code == 2 and "needs weights with learned rates" in err


@pytest.fixture
def python_sigint():
    """Python's own SIGINT handler for the test: a runner started in the background (nohup, ``&``) inherits SIGINT
    ignored, and ``_thread.interrupt_main`` then does nothing."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_stops_a_long_adaptation_within_a_second(workspace, tmp_path, capsys, python_sigint):
    """The updates run in short graph calls, so an interrupt is seen between them (not after all 10,000)."""
    import _thread
    import threading
    import time

    out, photo = tmp_path / "sr.png", tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (160, 160, 3), dtype=np.uint8)).save(photo)
    argv = [photo, "--kernel", KERNEL_NAME, "--weights", workspace / "w.weights.h5", "--steps", 10000, "--out", out]
    run([*argv[:-3], "2", "--out", tmp_path / "warm.png"], capsys)  # trace the graphs first
    sent = []
    timer = threading.Timer(3.0, lambda: (sent.append(time.perf_counter()), _thread.interrupt_main()))
    timer.start()
    code, err = run(argv, capsys)
    returned = time.perf_counter()
    timer.cancel()
    assert sent, "finished before the interrupt: make the run longer"
    assert code == 130 and "interrupted" in err
    assert returned - sent[0] < 1.5
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["photo.png", "warm.png"]


def test_demo_runs_end_to_end(workspace, tmp_path, capsys):
    code = adapt.cli.run(
        adapt.main,
        ["--demo", "--steps", "1", "--weights", str(workspace / "w.weights.h5"), "--out", str(tmp_path / "demo")],
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "bicubic" in out and "no adaptation" in out and "MZSR(1)" in out
    assert (tmp_path / "demo" / "astronaut_x2_mzsr1.png").is_file()


@pytest.fixture(scope="module")
def estimator(workspace):
    from mzsr_tf.kernel_estimation import init_estimator, save_estimator

    return save_estimator(init_estimator(8, seed=0), workspace / "estimator.npz", overwrite=True)


def test_blind_sr_estimates_writes_and_reports_the_kernel(workspace, estimator, tmp_path, capsys):
    from mzsr_tf.kernels import load_kernel

    out, report = tmp_path / "out", tmp_path / "r.json"
    argv = [workspace / "lr", "--weights", workspace / "w.weights.h5", "--kernel-estimator", estimator, "--steps", 1]
    code, err = run([*argv, "--out", out, "--json", report], capsys)
    assert code == 0, err
    assert "face.png: estimated kernel" in err
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"{n}_x2{s}" for n in ("face", "suit") for s in (".png", "_kernel.npy", "_kernel.png"))
    entry = json.loads(report.read_text())["images"][0]
    assert entry["kernel"]["estimated"] and entry["kernel"]["centre_offset"] == 0.5
    kernel = load_kernel(entry["kernel"]["npy"])
    assert kernel.shape == tuple(entry["kernel"]["size"])
    # --kernel with the written kernel reproduces the blind run's SR exactly
    again = tmp_path / "again.png"
    code, err = run([workspace / "lr" / "face.png", "--kernel", entry["kernel"]["npy"], *argv[1:-4], "--steps", 1,
                     "--out", again], capsys)  # fmt: skip
    assert code == 0, err
    assert np.array_equal(np.asarray(Image.open(again)), np.asarray(Image.open(out / "face_x2.png")))
    # blind ZSSR: the same estimate, then ZSSR with it
    zssr = tmp_path / "zssr.png"
    code, err = run([workspace / "lr" / "face.png", "--method", "zssr", "--max-iters", 2, "--kernel-estimator",
                     estimator, "--out", zssr], capsys)  # fmt: skip
    assert code == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "zssr_kernel.npy"), np.load(out / "face_x2_kernel.npy"))


def test_blind_sr_checks_the_kernel_files_before_any_work(workspace, estimator, tmp_path, capsys):
    out = tmp_path / "sr.png"
    (tmp_path / "sr_kernel.npy").write_bytes(b"mine")
    argv = [workspace / "lr" / "face.png", "--weights", workspace / "w.weights.h5", "--kernel-estimator", estimator]
    code, err = run([*argv, "--out", out], capsys)
    assert code == 2 and "sr_kernel.npy: exists" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and (tmp_path / "sr_kernel.npy").read_bytes() == b"mine"
    for extra, match in [(["--subsample", "bicubic"], "direct subsampling"), (["--scale", "3"], "x2 and x4")]:
        code, err = run([*argv, "--out", tmp_path / "x.png", *extra], capsys)
        assert code == 2 and match in err
    code, err = run([*argv[:1], "--kernel", "g_d_2.0", "--kernel-estimator", estimator, "--out", tmp_path / "y.png"],
                    capsys)  # fmt: skip
    assert code == 2 and "applies to blind SR" in err


def test_kernelgan_blind_sr_writes_and_reports_its_kernel(workspace, tmp_path, capsys, monkeypatch):
    import dataclasses

    from mzsr_tf import kernelgan

    monkeypatch.setattr(kernelgan, "DEFAULT", dataclasses.replace(kernelgan.DEFAULT, iterations=3))
    photo, out, report = tmp_path / "photo.png", tmp_path / "sr.png", tmp_path / "r.json"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (90, 100, 3), dtype=np.uint8)).save(photo)
    weights = ["--weights", workspace / "w.weights.h5", "--steps", 1]
    code, err = run([photo, "--kernel", "kernelgan", *weights, "--out", out, "--json", report], capsys)
    assert code == 0, err
    assert "photo.png: estimated kernel" in err
    entry = json.loads(report.read_text())["images"][0]
    assert entry["kernel"]["method"] == "kernelgan" and entry["kernel"]["size"][0] % 2 == 1
    assert np.load(tmp_path / "sr_kernel.npy").sum() == pytest.approx(1.0)
    code, err = run([workspace / "lr" / "face.png", "--kernel", "kernelgan", *weights, "--out", tmp_path / "f.png"],
                    capsys)  # fmt: skip
    assert code == 2 and "at least 84 px" in err and len(err.strip().splitlines()) == 1
    code, err = run([photo, "--kernel", "kernelgan", "--kernel-estimator", "e.npz", "--out", tmp_path / "g"], capsys)
    assert code == 2 and "applies to blind SR by the estimator" in err
