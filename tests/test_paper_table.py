"""``benchmarks/paper_table.py`` on a temporary set of two small scikit-image pictures."""

import json
import math

import matlab_reference as ref
import numpy as np
import pytest
from PIL import Image

from benchmarks import paper_table
from mzsr_tf import cli
from mzsr_tf.kernels import NAMED_DEGRADATIONS
from mzsr_tf.metrics import psnr_y
from mzsr_tf.zero_shot import AdaptConfig

RESULT_KEYS = {
    "set", "kernel", "method", "scale", "psnr_y", "ssim_y", "seconds_per_image", "per_image", "noise", "settings",
    "kernel_psnr",
}  # fmt: skip


@pytest.fixture
def hr_folder(tmp_path, astronaut_uint8, chelsea_uint8):
    """``MySet/HR`` with a 48x40 and an odd-sized 45x37 picture (modcrop has work to do)."""
    folder = tmp_path / "MySet" / "HR"
    folder.mkdir(parents=True)
    Image.fromarray(astronaut_uint8[:48, :40]).save(folder / "astronaut.png")
    Image.fromarray(chelsea_uint8[:45, :37]).save(folder / "chelsea.png")
    return folder


def _run(capsys, *argv):
    code = cli.run(paper_table.main, [str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_schema_and_values(hr_folder, tmp_path, capsys):
    out_json = tmp_path / "table.json"
    code, out, err = _run(capsys, "--hr", hr_folder, "--kernels", "g_d_ani", "--methods", "bicubic", "--json", out_json)
    assert code == 0, err
    (row,) = json.loads(out_json.read_text())["results"]
    assert set(row) == RESULT_KEYS
    assert (row["set"], row["kernel"], row["method"], row["scale"]) == ("MySet", "g_d_ani", "bicubic", 2)
    assert set(row["per_image"]) == {"astronaut.png", "chelsea.png"}
    assert row["psnr_y"] == pytest.approx(np.mean(list(row["per_image"].values())), abs=1e-9)
    assert 15 < row["psnr_y"] < 45 and 0 < row["ssim_y"] < 1 and row["seconds_per_image"] > 0
    assert "MySet" in out and "g_d_ani" in out and f"{row['psnr_y']:.2f}" in out and f"{row['ssim_y']:.4f}" in out
    assert not [p for p in out_json.parent.iterdir() if p.name.startswith(".")]  # no temp files left


def test_pipeline_matches_an_independent_computation(hr_folder, tmp_path, capsys, chelsea_uint8):
    """modcrop -> uint8(numeric_kernel) -> MATLAB bicubic x2 -> PSNR on Y, shaving 2 px (float64 NumPy oracle)."""
    out_json = tmp_path / "t.json"
    assert _run(capsys, "--hr", hr_folder, "--kernels", "g_d_ani", "--json", out_json)[0] == 0
    hr = chelsea_uint8[:44, :36]
    kernel = NAMED_DEGRADATIONS["g_d_ani"]().kernel
    lr = np.round(ref.degrade_direct(hr / 255.0, kernel, 2) * 255.0)
    sr = ref.imresize(lr / 255.0, 2, output_shape=hr.shape[:2])
    expected = psnr_y(sr, hr, border=2)
    (row,) = json.loads(out_json.read_text())["results"]
    assert row["per_image"]["chelsea.png"] == pytest.approx(expected, abs=0.01)


def test_noise_rows_add_seeded_gaussian_noise_to_the_lr(hr_folder, tmp_path, capsys, astronaut_uint8):
    out_json = tmp_path / "t.json"
    argv = ["--hr", hr_folder, "--kernels", "g_d_2.0", "--noise", "0,5", "--json", out_json]
    code, out, err = _run(capsys, *argv)
    assert code == 0, err
    clean, noisy = json.loads(out_json.read_text())["results"]
    assert (clean["noise"], noisy["noise"]) == (0.0, 5.0) and noisy["psnr_y"] < clean["psnr_y"]
    assert "g_d_2.0 σ=5" in out
    # the LR is uint8(degrade(HR) + N(0, σ/255)) with a per-image seed: the same on every call, per image different
    hr = paper_table.load_hr(hr_folder / "astronaut.png", 2)
    deg = NAMED_DEGRADATIONS["g_d_2.0"]()
    a, b = (paper_table.make_lr(hr, deg, 2, 5.0, "astronaut.png") for _ in range(2))
    np.testing.assert_array_equal(a, b)
    residual = a.astype(float) - paper_table.make_lr(hr, deg, 2).astype(float)
    assert 4.0 < residual.std() < 6.0 and not np.array_equal(a, paper_table.make_lr(hr, deg, 2, 5.0, "other.png"))
    table = paper_table.markdown_table(json.loads(out_json.read_text())["results"])
    assert "| MySet, g_d_2.0 σ=5 |" in table
    for bad in ("-1", "x", "inf"):
        assert _run(capsys, "--hr", hr_folder, "--noise", bad)[0] == 2
    argv = ["--hr", hr_folder, "--kernels", "bicubic", "--methods", "mzsr1", "--son-noise", "2.55", "--json"]
    assert _run(capsys, *argv, tmp_path / "son.json")[0] == 0
    (row,) = json.loads((tmp_path / "son.json").read_text())["results"]
    assert row["settings"]["son_noise"] == pytest.approx(0.01)


def test_set_name_is_the_folder_unless_it_is_called_hr(tmp_path, astronaut_uint8, capsys):
    folder = tmp_path / "Plain"
    folder.mkdir()
    Image.fromarray(astronaut_uint8[:32, :32]).save(folder / "a.png")
    assert paper_table.set_name(folder) == "Plain"
    assert paper_table.set_name(tmp_path / "Set5" / "HR") == "Set5"
    out_json = tmp_path / "p.json"
    assert _run(capsys, "--hr", folder, "--kernels", "bicubic", "--json", out_json)[0] == 0
    assert json.loads(out_json.read_text())["results"][0]["set"] == "Plain"


def test_several_sets_kernels_and_limit(hr_folder, tmp_path, capsys):
    out_json = tmp_path / "t.json"
    code, _, err = _run(capsys, "--hr", hr_folder, "--kernels", "g_b_1.3, bicubic", "--limit", "1", "--json", out_json)
    assert code == 0, err
    rows = json.loads(out_json.read_text())["results"]
    assert [r["kernel"] for r in rows] == ["g_b_1.3", "bicubic"]
    assert all(list(r["per_image"]) == ["astronaut.png"] for r in rows)


def test_registered_pattern_receives_its_groups_and_the_degradation(hr_folder, monkeypatch, capsys):
    calls = []

    def make_fake(args, steps):
        def fake(lr, degradation, scale, *, output_shape):
            calls.append((int(steps), args.scale, degradation.name, lr.dtype, tuple(output_shape)))
            return np.zeros((*output_shape, 3), np.float32)

        return fake

    monkeypatch.setitem(paper_table.METHODS, r"fake(?P<steps>\d+)", make_fake)
    code, out, err = _run(
        capsys, "--hr", hr_folder, "--kernels", "g_d_2.0", "--methods", "bicubic,fake7", "--limit", "1"
    )
    assert code == 0, err
    assert calls == [(7, 2, "g_d_2.0", np.float32, (48, 40))]
    assert "fake7" in out


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--methods", "bicubic,nosuch"], "unknown method 'nosuch'"),
        (["--methods", "fake"], "unknown method 'fake'"),
        (["--kernels", "g_d_ani,g_x"], "unknown kernel 'g_x'"),
        (["--kernels", "missing.mat"], "not found"),
    ],
)
def test_unknown_method_or_kernel_exits_2(hr_folder, capsys, flags, message):
    code, out, err = _run(capsys, "--hr", hr_folder, *flags)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert out == ""  # fails before any work


def test_missing_or_empty_folder_exits_2(tmp_path, capsys):
    code, _, err = _run(capsys, "--hr", tmp_path / "nowhere")
    assert code == 2 and "does not exist" in err and str(tmp_path / "nowhere") in err
    (tmp_path / "empty").mkdir()
    code, _, err = _run(capsys, "--hr", tmp_path / "empty")
    assert code == 2 and "no .png" in err


def test_existing_json_needs_overwrite(hr_folder, tmp_path, capsys):
    out_json = tmp_path / "t.json"
    out_json.write_text("keep me")
    code, _, err = _run(capsys, "--hr", hr_folder, "--kernels", "g_d_0.2", "--json", out_json)
    assert code == 2 and "exists" in err and out_json.read_text() == "keep me"
    assert _run(capsys, "--hr", hr_folder, "--kernels", "g_d_0.2", "--json", out_json, "--overwrite")[0] == 0
    assert len(json.loads(out_json.read_text())["results"]) == 1


def test_infinite_psnr_is_written_as_null(tmp_path):
    result = paper_table.Result("S", "k", "m", 2, math.inf, 1.0, 0.1, {"a.png": math.inf, "b.png": 40.0})
    paper_table.write_json(tmp_path / "r.json", [result], overwrite=False)
    (row,) = json.loads((tmp_path / "r.json").read_text())["results"]
    assert row["psnr_y"] is None and row["per_image"] == {"a.png": None, "b.png": 40.0}


def test_adaptation_curve_writes_json_and_png_and_replots(tmp_path, astronaut_uint8):
    from benchmarks import adaptation_curve
    from mzsr_tf.model import init_params
    from mzsr_tf.weights import save_params

    hr_folder = tmp_path / "HR"
    hr_folder.mkdir()
    Image.fromarray(astronaut_uint8[:64, :56]).save(hr_folder / "crop.png")  # LR 32x28 > the 21² kernel
    weights = save_params(init_params(0), tmp_path / "w.weights.h5")
    rates = np.full((2, 16), 1e-3, np.float32)
    learned = save_params(init_params(0), tmp_path / "lslr.weights.h5", inner_lr=rates)
    out = tmp_path / "curve.json"
    argv = ["--hr", hr_folder, "--weights", weights, "--weights", learned, "--at", "0,1,3", "--json", out]
    results = adaptation_curve.main([str(a) for a in argv + ["--png", tmp_path / "a.png"]])
    assert results["optimizer"] == {"w.weights": "adam", "lslr.weights": "learned"}  # each file's own rule
    rows = json.loads(out.read_text())["curves"]["w.weights"]
    assert [r["steps"] for r in rows] == [0, 1, 3] and rows == results["curves"]["w.weights"]
    assert rows[0]["seconds"] == 0 < rows[1]["seconds"] < rows[2]["seconds"]
    assert all(math.isfinite(r["psnr_y"]) for r in rows) and len({r["psnr_y"] for r in rows}) == 3
    adaptation_curve.main(["--replot", str(out), "--png", str(tmp_path / "b.png")])
    assert (tmp_path / "a.png").stat().st_size > 1000 and (tmp_path / "b.png").stat().st_size > 1000


def test_table_merges_runs_beside_the_paper(tmp_path, capsys):
    """``--table`` joins several JSON runs into one Markdown table; a later run's cell replaces an earlier one."""

    def row(set_label, kernel, method, psnr):
        return {"set": set_label, "kernel": kernel, "method": method, "psnr_y": psnr, "ssim_y": 0.9}

    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(
        json.dumps({"results": [row("Set5", "g_d_2.0", "mzsr10", 30.0), row("Set5", "g_d_2.0", "bicubic", 28.7)]})
    )
    second.write_text(
        json.dumps({"results": [row("Set5", "g_d_2.0", "mzsr10", 31.5), row("Mine", "g_d_0.2", "zssr", None)]})
    )
    code, out, err = _run(capsys, "--table", first, second)
    assert code == 0, err
    head, _, set5, mine = out.strip().splitlines()
    assert head.split(" | ")[1:3] == ["ours: Bicubic", "ours: MZSR(10)"] and "paper: MZSR(10)" in head
    cells = [c.strip() for c in set5.strip("|").split("|")]
    assert cells[:3] == ["Set5, g_d_2.0", "28.70 / 0.9000", "31.50 / 0.9000"]  # the later run wins
    assert "36.05 / 0.9439" in cells  # the paper's MZSR(10)
    assert "inf / 0.9000" in mine and "34.29" not in mine  # no paper figures for an unknown set
    for bad in ("[]", '{"results": 5}', '{"results": [{"set": "Set5"}]}'):
        (tmp_path / "bad.json").write_text(bad)
        assert _run(capsys, "--table", tmp_path / "bad.json")[0] == 2
    assert _run(capsys, "--table", first, "--hr", tmp_path)[0] == 2
    x4 = tmp_path / "x4.json"
    x4.write_text(json.dumps({"results": [{**row("Set5", "g_d_2.0", "mzsr10", 29.0), "scale": 4}]}))
    code, out, _ = _run(capsys, "--table", first, x4)
    x4_line = next(line for line in out.splitlines() if "x4" in line)
    assert "29.00" in x4_line and "36.05" not in x4_line  # its own row, no x2 paper figure ...
    assert "30.50 / 0.8704" in x4_line  # ... but the paper's x4 MZSR(10)
    assert _run(capsys, "--kernels", "g_d_2.0")[0] == 2  # neither --hr nor --table
    code, out, err = _run(capsys, "--table", first, second, "--by-file")  # the same cell of two runs, two rows
    assert code == 0, err
    lines = out.strip().splitlines()[2:]
    labels = [line.split(" | ")[0] for line in lines]
    assert labels == ["| a: Set5, g_d_2.0", "| b: Set5, g_d_2.0", "| b: Mine, g_d_0.2"]
    assert "30.00 / 0.9000" in lines[0] and "31.50 / 0.9000" in lines[1] and "36.05 / 0.9439" in lines[0]
    assert _run(capsys, "--hr", tmp_path, "--by-file")[0] == 2  # labels rows of --table only


def test_json_is_written_after_every_row(hr_folder, tmp_path, monkeypatch, capsys):
    """A run that dies in its second row leaves the first row's results on disk."""

    def make_crash(args):
        def crash(lr, degradation, scale, *, output_shape):
            raise KeyboardInterrupt

        return crash

    monkeypatch.setitem(paper_table.METHODS, "crash", make_crash)
    out_json = tmp_path / "partial.json"
    with pytest.raises(KeyboardInterrupt):
        paper_table.main(["--hr", str(hr_folder), "--kernels", "g_d_2.0", "--methods", "bicubic,crash",
                          "--json", str(out_json)])  # fmt: skip
    (row,) = json.loads(out_json.read_text())["results"]
    assert row["method"] == "bicubic"


def test_adaptation_sweep_compares_settings_on_held_out_photos(tmp_path, capsys):
    """One photo, one kernel, two settings: JSON rows per setting, a Markdown table, bad settings refused."""
    from benchmarks import adaptation_sweep
    from mzsr_tf.errors import InputError
    from mzsr_tf.weights import default_weights, fingerprint

    out = tmp_path / "sweep.json"
    argv = ["--limit", "1", "--kernels", "g_d_2.0", "--steps", "1", "--settings", "sgd:default;adam:2e-4", "--json"]
    adaptation_sweep.main([*argv, str(out)])
    saved = json.loads(out.read_text())
    rows = saved["rows"]
    assert saved["weights"] == "shipped" and saved["weights_sha1"] == fingerprint(default_weights(2, "direct"))
    assert [(r["setting"], r["steps"], list(r["per_image"])) for r in rows] == [
        ("sgd:default", 1, ["astronaut"]),
        ("adam:2e-4", 1, ["astronaut"]),
    ]
    assert rows[0]["psnr_y"] != rows[1]["psnr_y"] and all(25 < r["psnr_y"] < 45 for r in rows)
    assert "| sgd:default |" in capsys.readouterr().out
    with pytest.raises(InputError, match="exists"):
        adaptation_sweep.main([*argv, str(out)])
    assert all(r["seconds_adapt_median"] > 0 for r in rows)
    for bad in ("adam:fast", "rmsprop:1e-3", "adam:default/crop=0", "adam:default/speed=2", "adam:1e-4/precision=fp8"):
        with pytest.raises(InputError):
            adaptation_sweep.parse_setting(bad, 1)
    assert adaptation_sweep.parse_setting("sgd:2e-2,1e-2", 3).schedule == (2e-2, 1e-2)
    config = adaptation_sweep.parse_setting("adam:default/precision=bfloat16/crop=128/seed=3/eps=1e-5", 10)
    assert (config.precision, config.max_pixels, config.crop_size, config.seed) == ("bfloat16", 128 * 128, 128, 3)
    assert config.adam_epsilon == 1e-5
    with pytest.raises(InputError, match="no learned rates"):
        adaptation_sweep.parse_setting("learned", 1)
    rates = np.full([5, 16], 1e-2, np.float32)
    np.testing.assert_array_equal(adaptation_sweep.parse_setting("learned", 7, rates).layer_rates, rates)
    assert adaptation_sweep.parse_setting("learned", 7, rates).keep_best
    assert not adaptation_sweep.parse_setting("learned/guard=0", 7, rates).keep_best
    assert adaptation_sweep.parse_setting("learned/son=2.55", 7, rates).noise_sigma == pytest.approx(0.01)
    assert adaptation_sweep.parse_setting("adam:default/son=auto", 7).noise_sigma == "auto"
    with pytest.raises(InputError, match="son"):
        adaptation_sweep.parse_setting("learned/son=loud", 7, rates)
    assert adaptation_sweep.parse_setting("learned/bp=2", 7, rates).back_projection_iters == 2
    assert adaptation_sweep.parse_setting("adam:default/bp=3", 7).back_projection_iters == 3
    assert adaptation_sweep.parse_setting("learned", 7, rates).back_projection_iters == 0
    for bad in ("learned/bp=x", "learned/bp=-1", "adam:default/bp=-1"):
        with pytest.raises(InputError, match="bp"):
            adaptation_sweep.parse_setting(bad, 7, rates)
    # --unconditioned: the ablation starts from θ_M, not θ(k, σ̂), and its JSON does not claim the conditioned start
    runs = {}
    for flag in ([], ["--unconditioned"]):
        path = tmp_path / f"start{len(flag)}.json"
        adaptation_sweep.main(["--limit", "1", "--kernels", "g_d_2.0", "--steps", "0", "--settings", "learned",
                               *flag, "--json", str(path)])  # fmt: skip
        runs[bool(flag)] = json.loads(path.read_text())
    assert runs[False]["conditioned_start"] and "conditioned_start" not in runs[True]
    assert abs(runs[False]["rows"][0]["psnr_y"] - runs[True]["rows"][0]["psnr_y"]) > 0.01
    backtracked = adaptation_sweep.parse_setting("learned/backtrack=1/guard=0", 7, rates)
    assert backtracked.backtrack and not backtracked.keep_best
    assert not adaptation_sweep.parse_setting("learned", 7, rates).backtrack
    assert adaptation_sweep.parse_setting("sgd:default/backtrack=1", 3).backtrack
    assert adaptation_sweep.parse_setting("adam:default/crop=64/guard=1", 3).keep_best
    assert adaptation_sweep.parse_setting("adam:default/guard=1/crop=64", 3).crop_size == 64
    with pytest.raises(InputError, match="guard"):
        adaptation_sweep.parse_setting("learned/crop=64", 7, rates)
    conditioned = np.concatenate([rates, np.full([5, 2], 1e-3, np.float32)], 1)
    half = np.asarray(adaptation_sweep.parse_setting("learned*0.5/guard=0", 7, conditioned).layer_rates)
    np.testing.assert_allclose(half, np.concatenate([rates / 2, conditioned[:, 16:]], 1))  # the rates, not slopes
    for bad in ("learned*x", "adam*2:1e-4"):
        with pytest.raises(InputError, match="factor|number"):
            adaptation_sweep.parse_setting(bad, 1, rates)


def test_adaptation_sweep_defaults_to_the_weights_of_its_kernels_subsampling():
    """Without --weights, a sweep of g^b kernels only adapts with the bicubic weights (as paper_table); a mix (the
    paper's four kernels) keeps the direct ones."""
    from benchmarks import adaptation_sweep

    assert adaptation_sweep.shipped_subsample(["g_b_1.3", "bicubic"]) == "bicubic"
    assert adaptation_sweep.shipped_subsample(["g_d_2.0", "div2krk:estimated"]) == "direct"
    assert adaptation_sweep.shipped_subsample(adaptation_sweep.PAPER_KERNELS.split(",")) == "direct"


def test_adaptation_sweep_takes_learned_rates_step_lists_and_noise(tmp_path, capsys):
    from benchmarks import adaptation_sweep
    from mzsr_tf.model import init_params
    from mzsr_tf.weights import save_params

    weights = save_params(init_params(0), tmp_path / "w.weights.h5", inner_lr=np.full([5, 16], 1e-2, np.float32))
    out = tmp_path / "sweep.json"
    argv = ["--limit", "1", "--kernels", "g_d_2.0", "--steps", "0,2", "--settings", "learned;sgd:1e-2"]
    adaptation_sweep.main([*argv, "--weights", str(weights), "--noise", "2.55", "--json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [(r["setting"], r["steps"], r["noise"]) for r in rows] == [
        ("learned", 0, 2.55), ("sgd:1e-2", 0, 2.55), ("learned", 2, 2.55), ("sgd:1e-2", 2, 2.55)
    ]  # fmt: skip
    assert rows[0]["psnr_y"] == rows[1]["psnr_y"] and rows[2]["psnr_y"] == pytest.approx(rows[3]["psnr_y"], abs=1e-3)
    assert "| learned (2) |" in capsys.readouterr().out


def test_adaptation_sweep_adapts_with_kernelgans_kernel(tmp_path, capsys, monkeypatch):
    import dataclasses

    from benchmarks import adaptation_sweep
    from mzsr_tf import kernelgan

    monkeypatch.setattr(kernelgan, "DEFAULT", dataclasses.replace(kernelgan.DEFAULT, iterations=3))
    out = tmp_path / "sweep.json"
    kernels = "div2krk,div2krk:kernelgan"
    adaptation_sweep.main(["--photos", "camera", "--kernels", kernels, "--steps", "1", "--settings", "learned",
                           "--json", str(out)])  # fmt: skip
    rows = {r["kernel"]: r["psnr_y"] for r in json.loads(out.read_text())["rows"]}
    assert list(rows) == kernels.split(",") and rows["div2krk:kernelgan"] != rows["div2krk"]
    assert "kernelgan 256x256" in capsys.readouterr().err


def test_adaptation_sweep_adapts_blind_with_the_estimated_kernel(tmp_path, capsys):
    """``K:estimated``: the LR made under K, the adaptation under the kernel estimated from it; ``*F`` scales the
    estimate's covariance; grey photos come as RGB; bad kernels and photos refused."""
    from benchmarks import adaptation_sweep
    from mzsr_tf.errors import InputError

    out = tmp_path / "sweep.json"
    kernels = "div2krk,div2krk:estimated,div2krk:estimated*0.5"
    argv = ["--photos", "camera", "--kernels", kernels, "--steps", "1", "--settings", "learned", "--json", str(out)]
    adaptation_sweep.main(argv)
    rows = {r["kernel"]: r["psnr_y"] for r in json.loads(out.read_text())["rows"]}
    assert list(rows) == kernels.split(",") and len(set(rows.values())) == 3  # the son: each its own kernel
    assert rows["div2krk:estimated*0.5"] < rows["div2krk:estimated"]  # half the blur: a worse son
    assert "| learned |" in capsys.readouterr().out
    assert adaptation_sweep.parse_kernel("g_d_2.0:estimated*1.5") == ("g_d_2.0", 1.5)
    assert adaptation_sweep.parse_kernel("div2krk") == ("div2krk", None)
    assert adaptation_sweep.parse_kernel("div2krk:kernelgan") == ("div2krk", "kernelgan")
    for bad in ("g_b_1.3:estimated", "div2krk:guessed", "div2krk:estimated*x", "div2krk:kernelgan*2"):
        with pytest.raises(InputError):
            adaptation_sweep.parse_kernel(bad)
    with pytest.raises(InputError, match="not a scikit-image photo"):
        adaptation_sweep.main(["--photos", "nosuchphoto", "--steps", "0"])


def test_speed_benchmark_times_every_precision(tmp_path, monkeypatch, capsys):
    from benchmarks import speed
    from mzsr_tf.zero_shot import native_bfloat16

    monkeypatch.setattr(speed, "SET5_LR", tmp_path / "absent")  # the Set5 part needs ../shared

    result = speed.main(["--sizes", "24", "--steps", "1", "--repeats", "1"])
    rows = result["rows"]
    assert [r["precision"] for r in rows] == ["float32"] + (["bfloat16"] if native_bfloat16() else [])
    assert all(r["adapt_seconds"] > 0 and set(r["gradient_seconds"]) == {"handwritten", "native", "tape"} for r in rows)
    assert "MZSR( 1) float32" in capsys.readouterr().out
    labels = list(speed.set5_settings())
    assert labels[0].startswith("official") and speed.set5_settings()[labels[0]] == AdaptConfig.official(steps=10)


def test_mzsr_takes_the_shipped_weights_of_each_kernels_subsampling(tmp_path):
    """Without --weights, g^b kernels run the bicubic-subsampling θ_M and g^d kernels the direct one; weights with
    learned rates adapt with them (and the guard), as adapt.py."""
    import argparse

    from mzsr_tf.model import init_params
    from mzsr_tf.weights import default_weights, load_params, save_params

    model_for = paper_table._weights(argparse.Namespace(weights=None, scale=2, unconditioned=False))
    for subsample in ("direct", "bicubic"):
        for a, b in zip(model_for(subsample).params, load_params(default_weights(2, subsample))):
            np.testing.assert_array_equal(a, b)
        assert model_for(subsample).start_basis is not None  # the shipped weights carry V
    plain = paper_table._weights(argparse.Namespace(weights=None, scale=2, unconditioned=True))("direct")
    assert plain.start_basis is None  # --unconditioned: the ablation adapts from θ_M
    np.testing.assert_array_equal(plain.params[3], model_for("direct").params[3])
    rates = np.full([2, 16], 1e-2, np.float32)
    given = save_params(init_params(0), tmp_path / "w.weights.h5", inner_lr=rates)
    args = argparse.Namespace(
        weights=given,
        scale=2,
        precision="float32",
        son_noise=0.0,
        optimizer="default",
        backtrack=False,
        unconditioned=False,
    )
    model_for = paper_table._weights(args)
    np.testing.assert_array_equal(model_for("bicubic").params[0], init_params(0)[0])
    config = model_for("direct").adapt_config(3)
    assert config.keep_best and np.array_equal(np.asarray(config.layer_rates), rates)
    assert paper_table.method_settings(paper_table.make_mzsr(args, "3"))["optimizer"] == "learned"
    assert "backtrack" not in paper_table.method_settings(paper_table.make_mzsr(args, "3"))
    args.backtrack = True  # --backtrack
    assert paper_table.method_settings(paper_table.make_mzsr(args, "3"))["backtrack"] is True


def test_precision_flag_reaches_mzsr_but_not_the_official_schedule(hr_folder, tmp_path, capsys):
    """--precision float32 / bfloat16: different MZSR(1) rows; the official schedule is float32 either way.

    Rows record what ran, 'auto' resolved for this machine, and which weights file."""
    from mzsr_tf.weights import default_weights, fingerprint
    from mzsr_tf.zero_shot import AdaptConfig

    rows = {}
    for precision in ("float32", "bfloat16", "auto"):
        out = tmp_path / f"{precision}.json"
        argv = ["--hr", hr_folder, "--kernels", "bicubic", "--methods", "mzsr1,mzsr1_official", "--limit", "1"]
        argv += ["--son-noise", "0"]  # a clean son: the small test photo's aliasing reads as noise
        assert _run(capsys, *argv, "--precision", precision, "--json", out)[0] == 0
        results = json.loads(out.read_text())["results"]
        rows[precision] = {r["method"]: r["psnr_y"] for r in results}
        settings = {r["method"]: r["settings"] for r in results}  # what ran, resolved
        resolved = AdaptConfig(precision=precision).compute_precision
        sha1 = fingerprint(default_weights(2, "bicubic"))  # which file "shipped" was
        assert settings["mzsr1"] == {  # the shipped bicubic weights carry learned rates: their rule, guarded (a
            # plain bicubic LR and a clean son, whose first update gains, so the guard keeps it), from their start
            "weights": "shipped",
            "weights_sha1": sha1,
            "conditioned_start": True,
            "optimizer": "learned",
            "keep_best": True,
            "precision": resolved,
            "son_noise": 0.0,
        }
        official = {
            "weights": "shipped",
            "weights_sha1": sha1,
            "conditioned_start": True,
            "optimizer": "sgd",
            "keep_best": False,
            "precision": "float32",
            "son_noise": 0.0,
        }
        assert settings["mzsr1_official"] == official
    assert rows["float32"]["mzsr1"] != rows["bfloat16"]["mzsr1"]
    assert rows["float32"]["mzsr1_official"] == rows["bfloat16"]["mzsr1_official"]
    code, _, err = _run(capsys, "--hr", hr_folder, "--precision", "float16")
    assert code == 2 and "invalid choice" in err


def test_optimizer_flag_puts_adam_in_place_of_learned_rates(tmp_path, hr_folder, capsys):
    from mzsr_tf.model import init_params
    from mzsr_tf.weights import save_params

    learned = save_params(init_params(0), tmp_path / "lslr.weights.h5", inner_lr=np.full((5, 16), 1e-3, np.float32))
    plain = save_params(init_params(0), tmp_path / "plain.weights.h5")
    rows = {}
    for weights, optimizer in ((learned, "default"), (learned, "adam"), (plain, "default")):
        out = tmp_path / f"{weights.stem}_{optimizer}.json"
        argv = ["--hr", hr_folder, "--kernels", "g_d_ani", "--methods", "mzsr2", "--limit", "1", "--weights", weights]
        code, _, err = _run(capsys, *argv, "--optimizer", optimizer, "--json", out)
        assert code == 0, err
        row = json.loads(out.read_text())["results"][0]
        rows[(weights.stem, optimizer)] = (row["settings"]["optimizer"], row["psnr_y"])
    assert rows[("lslr.weights", "default")][0] == "learned" and rows[("lslr.weights", "adam")][0] == "adam"
    assert rows[("lslr.weights", "adam")] == rows[("plain.weights", "default")]  # the same θ, the same Adam steps
    assert rows[("lslr.weights", "default")][1] != rows[("lslr.weights", "adam")][1]


def test_official_methods_take_the_rates_of_the_kernels_model(hr_folder, tmp_path, capsys, astronaut_uint8):
    """mzsrN_official under a g^b kernel: the Bicubic×2 model with its own official rates, from its conditioned start,
    as adapt.py."""
    from mzsr_tf.kernels import resolve_degradation
    from mzsr_tf.weights import default_weights, load_params, load_start_basis
    from mzsr_tf.zero_shot import AdaptConfig, zero_shot_sr

    out = tmp_path / "official.json"
    argv = ["--hr", hr_folder, "--kernels", "g_b_1.3", "--methods", "mzsr2_official", "--limit", "1", "--json", out]
    assert _run(capsys, *argv)[0] == 0
    (row,) = json.loads(out.read_text())["results"]
    hr = astronaut_uint8[:48, :40]
    degradation = resolve_degradation("g_b_1.3")
    lr = paper_table.make_lr(hr, degradation, 2).astype(np.float32) / 255.0
    params, basis = load_params(default_weights(2, "bicubic")), load_start_basis(default_weights(2, "bicubic"))
    expected = {
        subsample: psnr_y(
            zero_shot_sr(params, lr, degradation, 2, AdaptConfig.official(2, subsample, steps=2), None, basis).sr, hr, 2
        )
        for subsample in ("bicubic", "direct")
    }
    assert expected["bicubic"] != expected["direct"]  # the two schedules differ here
    assert row["per_image"]["astronaut.png"] == pytest.approx(expected["bicubic"], abs=1e-6)


def test_blind_rows_draw_a_kernel_per_image_and_score_the_estimates(hr_folder, tmp_path, capsys):
    from benchmarks.blind_set import blind_degradation
    from mzsr_tf.kernel_estimation import init_estimator, save_estimator
    from mzsr_tf.model import init_params
    from mzsr_tf.weights import save_params

    a, b = blind_degradation("astronaut.png", 2), blind_degradation("chelsea.png", 2)
    assert a.kernel.shape == (11, 11) and not np.allclose(a.kernel, b.kernel)
    np.testing.assert_array_equal(a.kernel, blind_degradation("astronaut.png", 2).kernel)
    assert blind_degradation("astronaut.png", 4).kernel.shape == (31, 31)
    estimator = save_estimator(init_estimator(8), tmp_path / "e.npz")
    weights = save_params(init_params(0), tmp_path / "w.weights.h5")
    out_json = tmp_path / "blind.json"
    code, out, err = _run(capsys, "--hr", hr_folder, "--kernels", "div2krk", "--methods",
                          "mzsr1,blind_mzsr1,fixed2_mzsr1,gaussian_mzsr1", "--kernel-estimator", estimator,
                          "--weights", weights, "--json", out_json)  # fmt: skip
    assert code == 0, err
    rows = {r["method"]: r for r in json.loads(out_json.read_text())["results"]}
    assert rows["mzsr1"]["kernel_psnr"] is None
    assert 10 < rows["blind_mzsr1"]["kernel_psnr"] < 100 and 10 < rows["fixed2_mzsr1"]["kernel_psnr"] < 100
    assert rows["blind_mzsr1"]["settings"]["estimator"] == str(estimator)
    assert 45 < rows["gaussian_mzsr1"]["kernel_psnr"] < 100  # the true covariance: close, but not the noisy shape
    assert rows["gaussian_mzsr1"]["kernel_psnr"] > max(rows[m]["kernel_psnr"] for m in ("blind_mzsr1", "fixed2_mzsr1"))
    assert len({rows[m]["psnr_y"] for m in rows}) == 4  # four different kernels, four results
    table = paper_table.markdown_table(list(rows.values()))
    assert "| paper: KernelGAN + ZSSR, DIV2KRK (published) |" in table  # the published anchor beside blind rows
    assert "30.36 / 0.8669" in table and "(kernel " in table and "MZSR(1), true Σ as a Gaussian" in table


def test_blind_set_writes_lr_hr_and_kernels_and_refuses_an_existing_folder(hr_folder, tmp_path, capsys):
    import scipy.io

    from benchmarks import blind_set

    out = tmp_path / "blind"
    assert cli.run(blind_set.main, ["--hr", str(hr_folder), "--scale", "2", "--out", str(out)]) == 0
    lr = np.asarray(Image.open(out / "lr" / "astronaut.png"))
    hr = np.asarray(Image.open(out / "hr" / "astronaut.png"))
    kernel = np.load(out / "kernels" / "astronaut.npy")
    assert lr.shape == (24, 20, 3) and hr.shape == (48, 40, 3)
    np.testing.assert_array_equal(lr, paper_table.make_lr(hr, blind_set.blind_degradation("astronaut.png", 2), 2))
    np.testing.assert_allclose(scipy.io.loadmat(out / "kernels" / "astronaut.mat")["Kernel"], kernel)
    assert cli.run(blind_set.main, ["--hr", str(hr_folder), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err


def test_blind_set_writes_nothing_when_an_image_is_bad(hr_folder, tmp_path, capsys):
    """An unreadable HR image stops the set with one line and exit 2, leaving no half-written folder."""
    from benchmarks import blind_set

    (hr_folder / "zz_broken.png").write_bytes(b"not a png")
    out = tmp_path / "blind"
    assert cli.run(blind_set.main, ["--hr", str(hr_folder), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "zz_broken.png" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".blind")] == []


def test_adaptation_sweep_draws_several_kernels_per_photo_and_takes_an_estimator(tmp_path):
    """--kernel-draws N: each photo under N DIV2KRK-style kernels (name@seed), given kernels once; the first draw is
    the one-draw sweep's; --kernel-estimator is the estimator the :estimated kernels come from."""
    from benchmarks import adaptation_sweep
    from mzsr_tf.kernel_estimation import ESTIMATOR_FILE, init_estimator, save_estimator
    from mzsr_tf.weights import WEIGHTS_DIR

    argv = ["--photos", "camera", "--steps", "0", "--settings", "learned", "--json"]
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    adaptation_sweep.main(["--kernels", "div2krk", *argv, str(one)])
    adaptation_sweep.main(["--kernels", "div2krk,g_d_2.0", "--kernel-draws", "2", *argv, str(two)])
    (single,) = json.loads(one.read_text())["rows"]
    drawn, given = json.loads(two.read_text())["rows"]
    assert list(drawn["per_image"]) == ["camera@1", "camera@2"] and list(given["per_image"]) == ["camera"]
    assert drawn["per_image"]["camera@1"] == single["per_image"]["camera"] != drawn["per_image"]["camera@2"]
    assert json.loads(two.read_text())["kernel_draws"] == 2
    untrained = save_estimator(init_estimator(), tmp_path / "untrained.npz")  # the prior's guess for every photo
    runs = {}
    for name, estimator in (("shipped", WEIGHTS_DIR / ESTIMATOR_FILE), ("untrained", untrained)):
        path = tmp_path / f"{name}.json"
        adaptation_sweep.main(
            ["--kernels", "div2krk:estimated", "--kernel-estimator", str(estimator), *argv, str(path)]
        )
        runs[name] = json.loads(path.read_text())
    assert runs["untrained"]["kernel_estimator"] == str(untrained)
    assert runs["shipped"]["rows"][0]["psnr_y"] != runs["untrained"]["rows"][0]["psnr_y"]
