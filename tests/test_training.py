"""train.py: exact resume, MirroredStrategy == one device, run-folder safety, non-finite guard."""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from mzsr_tf.commands import train
from mzsr_tf.errors import InputError
from mzsr_tf.training import PretrainConfig
from mzsr_tf.weights import load_params

ROOT = Path(__file__).resolve().parents[1]

TINY_META = ["--stage", "meta", "--patch", "16", "--meta-batch", "2", "--task-batch", "1", "--inner-steps", "2"]
TINY_PRE = ["--stage", "pretrain", "--patch", "16", "--batch-size", "4"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, astronaut_uint8, chelsea_uint8):
    root = tmp_path_factory.mktemp("train_data")
    Image.fromarray(astronaut_uint8).save(root / "a.png")
    Image.fromarray(chelsea_uint8).save(root / "b.jpg")
    return root


def run(argv, capsys=None):
    code = train.cli.run(train.main, [str(a) for a in argv] + ["--no-progress"])
    err = capsys.readouterr().err if capsys else ""
    return code, err


SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    tf.config.experimental.enable_op_determinism()
    sys.path.insert(0, sys.argv[1])
    from mzsr_tf.commands import train
    from mzsr_tf.weights import load_params
    data, out = sys.argv[2], sys.argv[3]
    tiny = ["--stage", "meta", "--patch", "16", "--meta-batch", "2", "--task-batch", "1", "--inner-steps", "2",
            "--first-order", "--data", data, "--no-progress", "--val-every", "100"]
    def weights(run, steps, *extra):
        assert train.main(tiny + ["--out", f"{out}/{run}", "--steps", str(steps), *extra]) == 0
        return [p.numpy() for p in load_params(f"{out}/{run}/final.weights.h5")]
    straight = weights("straight", 4)
    weights("resumed", 2)
    resumed = weights("resumed", 4, "--resume")
    one = weights("one_device", 3)
    mirrored = weights("mirrored", 3, "--strategy", "mirrored")
    diff = lambda a, b: max(float(np.abs(x - y).max()) for x, y in zip(a, b))
    print(json.dumps({"resume": diff(straight, resumed), "mirrored": diff(one, mirrored),
                      "moved": diff(straight, one), "replicas": len(tf.config.list_logical_devices("CPU"))}))
    """
)


@pytest.mark.slow
def test_resume_is_exact_and_mirrored_equals_one_device(data_dir, tmp_path):
    """k steps + stop + resume k steps == 2k steps; 2 logical CPUs (MirroredStrategy) == 1 device."""
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(ROOT), str(data_dir), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert result["moved"] > 1e-6  # the runs really train
    assert result["resume"] < 1e-6
    assert result["mirrored"] < 1e-5


WORKER = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, sys.argv[1])
    cluster = {"worker": sys.argv[2].split(",")}
    os.environ["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": int(sys.argv[3])}})
    from mzsr_tf.commands import train
    sys.exit(train.cli.run(train.main, json.loads(sys.argv[4])))
    """
)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_local_workers_train_as_one_device_and_only_the_chief_writes(data_dir, tmp_path, capsys):
    """MultiWorkerMirroredStrategy over two processes (TF_CONFIG on localhost): the same weights as one device;
    checkpoints, logs, config.json and the final weights written once, by worker 0; nothing left by worker 1."""
    import tempfile

    hosts = ",".join(f"localhost:{free_port()}" for _ in range(2))
    out = tmp_path / "cluster"
    steps = 3
    argv = TINY_PRE + ["--data", data_dir, "--out", out, "--steps", steps, "--checkpoint-every", "1"]
    argv = [str(a) for a in argv + ["--val-every", "2", "--no-progress"]]
    leftovers = set(Path(tempfile.gettempdir()).glob("mzsr-worker-*"))
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(ROOT), hosts, str(i), json.dumps(argv + ["--strategy", "multiworker"])],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    logs = [w.communicate(timeout=600)[1] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], logs[0][-2000:] + logs[1][-2000:]
    assert "step 2: val/psnr" in logs[0] and "step 2: val/psnr" not in logs[1]  # the chief reports
    assert sorted(p.name for p in (out / "ckpt").glob("*.index")) == ["ckpt-1.index", "ckpt-2.index", "ckpt-3.index"]
    assert len(list((out / "logs").iterdir())) == 1 and (out / "config.json").is_file()
    assert set(Path(tempfile.gettempdir()).glob("mzsr-worker-*")) == leftovers
    one = tmp_path / "one"
    assert run([a.replace(str(out), str(one)) for a in argv], capsys)[0] == 0
    # The all-reduce sums the replicas' gradients in another order than one device does, and Adam divides by √v, so a
    # weight whose gradient is near zero may land up to its steps elsewhere (CPUs differ in this); a wrong gradient (a
    # replica left out, not averaged) moves most weights by a good part of their steps of at most lr each.
    bound = steps * PretrainConfig().lr
    for a, b in zip(load_params(out / "final.weights.h5"), load_params(one / "final.weights.h5")):
        np.testing.assert_allclose(a, b, atol=bound)
        assert np.abs(a - b).mean() < 1e-2 * bound, np.abs(a - b).mean()


def test_pretrain_writes_checkpoints_logs_and_final_weights(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code, err = run(
        TINY_PRE
        + [
            "--data",
            data_dir,
            "--out",
            out,
            "--steps",
            "3",
            "--checkpoint-every",
            "2",
            "--val-every",
            "2",
            "--log-every",
            "1",
        ],
        capsys,
    )
    assert code == 0, err
    assert (out / "final.weights.h5").is_file() and len(load_params(out / "final.weights.h5")) == 16
    from mzsr_tf.weights import load_scale

    assert load_scale(out / "final.weights.h5") == 2  # the file says what scale it was trained for
    assert (out / "ckpt" / "checkpoint").is_file()
    # --weights accepts a run's checkpoint: its folder means the latest, which is the final model.
    for got, want in zip(load_params(out / "ckpt"), load_params(out / "final.weights.h5")):
        np.testing.assert_array_equal(got, want)
    assert not np.array_equal(load_params(out / "ckpt" / "ckpt-2")[0], load_params(out / "ckpt")[0])
    assert any((out / "logs").iterdir())
    assert json.loads((out / "config.json").read_text())["stage_config"]["batch_size"] == 4
    assert "val/psnr" in err
    from benchmarks.learning_curve import main as learning_curve
    from benchmarks.learning_curve import read_chain, read_scalars

    curves = read_scalars(out)
    assert [step for step, _ in curves["val/psnr"]] == [0, 2, 3] and set(curves) == {"val/psnr", "val/psnr_bicubic"}
    chained = read_chain(f"{out}+{out}")["val/psnr"]
    assert [step for step, _ in chained] == [0, 2, 3, 5, 6] and chained[3][1] == curves["val/psnr"][1][1]

    learning_curve([str(out), "--json", str(tmp_path / "curve.json")])
    replotted = learning_curve(["--include", str(tmp_path / "curve.json"), "--only", str(out)])  # run folder gone
    assert replotted[str(out)]["val/psnr"] == [list(p) for p in curves["val/psnr"]]
    for bad in ([], [str(out), "--only", str(out)]):  # nothing to draw; --only without --include
        with pytest.raises(SystemExit):
            learning_curve(bad)
    # An existing run is never silently overwritten, and resume refuses changed settings.
    code, err = run(TINY_PRE + ["--data", data_dir, "--out", out, "--steps", "4"], capsys)
    assert code == 2 and "--resume" in err
    code, err = run(TINY_PRE[:-1] + ["8", "--data", data_dir, "--out", out, "--steps", "4", "--resume"], capsys)
    assert code == 2 and "batch_size" in err


def test_non_finite_losses_stop_the_run_and_a_resume_may_lower_the_rate(data_dir, tmp_path, capsys):
    out = tmp_path / "nan"
    base = TINY_PRE + ["--data", data_dir, "--out", out, "--checkpoint-every", "2", "--val-every", "100"]
    assert run(base + ["--steps", "2"], capsys)[0] == 0
    good = [p.numpy() for p in load_params(out / "ckpt")]
    code, err = run(base + ["--steps", "20", "--lr", "1e30", "--resume"], capsys)
    assert code != 0 and "non-finite" in err and "stopping" in err and "ckpt-2" in err
    for a, b in zip(load_params(out / "ckpt"), good):  # nothing blown up was saved
        np.testing.assert_array_equal(a, b)
    code, err = run(base + ["--steps", "4", "--lr", "1e-4", "--resume"], capsys)
    assert code == 0, err
    assert "changed on resume: lr -> 0.0001" in err
    record = json.loads((out / "config.json").read_text())
    assert record["stage_config"]["lr"] == 1e-4 and record["history"] == [
        {"step": 2, "lr": [4e-4, 1e30]},
        {"step": 2, "lr": [1e30, 1e-4]},
    ]
    assert all(np.isfinite(p).all() for p in load_params(out / "final.weights.h5"))


def test_resume_takes_the_newest_readable_checkpoint_and_never_starts_over(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    base = TINY_PRE + ["--data", data_dir, "--out", out, "--checkpoint-every", "2", "--val-every", "100"]
    assert run(base + ["--steps", "4"], capsys)[0] == 0
    final = (out / "final.weights.h5").read_bytes()
    (out / "ckpt" / "checkpoint").write_text("garbage {{{")  # the state file unreadable
    (out / "ckpt" / "ckpt-4.data-00000-of-00001").write_bytes(b"truncated")  # the newest data corrupt
    code, err = run(base + ["--steps", "6", "--resume"], capsys)
    assert code == 0, err
    assert "ckpt-4: unreadable" in err and "resumed" in err and "at step 2" in err
    # every checkpoint unreadable: refuse, and final.weights.h5 stays as it was
    for data in (out / "ckpt").glob("ckpt-*.data-*"):
        data.write_bytes(b"x")
    (out / "final.weights.h5").write_bytes(final)
    code, err = run(base + ["--steps", "8", "--resume"], capsys)
    assert code == 2 and "no readable checkpoint" in err and "refusing to start over" in err
    assert (out / "final.weights.h5").read_bytes() == final


def test_resume_refuses_other_data_and_a_failed_start_leaves_no_record(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    base = TINY_PRE + ["--out", out, "--val-every", "100"]
    assert run(base + ["--data", data_dir, "--steps", "1"], capsys)[0] == 0
    other = tmp_path / "other"
    other.mkdir()
    Image.open(data_dir / "a.png").save(other / "a.png")
    code, err = run(base + ["--data", other, "--steps", "2", "--resume"], capsys)
    assert code == 2 and "other training data" in err
    fresh = tmp_path / "fresh"
    code, err = run(
        TINY_PRE + ["--data", data_dir, "--out", fresh, "--steps", "1", "--init", tmp_path / "no.weights.h5"]
    )
    assert code == 2 and not (fresh / "config.json").exists()


@pytest.mark.parametrize(
    "argv,match",
    [
        (["--steps", "0"], "--steps must be positive"),
        (["--steps", "2", "--inner-lr", "-1"], "--inner-lr must be positive"),
        (["--steps", "2", "--scale", "1"], "integer > 1"),
        (["--steps", "2", "--strategy", "tpu"], "invalid choice"),
        (["--steps", "2", "--lr-decay-steps", "0"], "--lr-decay-steps must be positive"),
        (["--steps", "2", "--lr-floor", "nan"], "--lr-floor must be positive"),
        (["--steps", "2", "--batch-size", "8"], "--batch-size does not apply to --stage meta"),
        (["--steps", "2", "--degradation", "kernels"], "--degradation does not apply to --stage meta"),
        (["--steps", "2", "--blind-tasks", "9"], "blind_tasks must be 0..meta_batch"),
        (["--steps", "2", "--blind-tasks", "1", "--subsample", "bicubic"], "blind_tasks use direct subsampling"),
        (["--steps", "2", "--bicubic-tasks", "1"], "bicubic_tasks are plain bicubic subsampling"),
        (["--steps", "2", "--bicubic-tasks", "9", "--subsample", "bicubic"], "bicubic_tasks must be 0..meta_batch"),
        (["--steps", "2", "--support", "son", "--patch", "18"], "patch divisible by scale² (4)"),
        (["--steps", "2", "--support", "self"], "invalid choice"),
        (["--steps", "2", "--meta-lr", "0"], "meta_lr 0 (θ frozen) needs learned inner rates"),
        (["--steps", "2", "--meta-lr", "0", "--learn-inner-lr"], "meta_lr 0 (θ frozen) needs learned inner rates"),
        (["--steps", "2", "--meta-lr", "-1"], "--meta-lr must be positive"),
        (["--steps", "2", "--task-noise", "-0.1"], "noise and task_noise must be >= 0"),
        (["--steps", "2", "--support", "son", "--patch", "4"], "--patch 4 is too small for the kernels at x2"),
        (["--steps", "2", "--scale", "4", "--support", "son"], "--patch 16 is too small for the kernels at x4"),
    ],
)
def test_bad_flags(data_dir, tmp_path, capsys, argv, match):
    code, err = run(TINY_META + ["--data", data_dir, "--out", tmp_path / "x"] + argv, capsys)
    assert code == 2 and match in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()  # nothing written


def test_min_variance_on_bicubic_pretraining_is_an_error(data_dir, tmp_path, capsys):
    argv = TINY_PRE + ["--data", data_dir, "--out", tmp_path / "x", "--steps", "1", "--min-variance", "0.2"]
    code, err = run(argv, capsys)
    assert code == 2 and "--min-variance needs --degradation kernels or mixed" in err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "extra,match",
    [
        (["--kernel", "g_d_2.0"], "--kernel needs --stage pretrain --degradation kernels"),
        (["--degradation", "kernels", "--kernel", "g_b_1.3"], "subsamples bicubic: add --subsample bicubic"),
        (["--degradation", "kernels", "--kernel", "g_x"], "unknown kernel 'g_x'"),
    ],
)
def test_bad_fixed_kernel(data_dir, tmp_path, capsys, extra, match):
    code, err = run(TINY_PRE + ["--data", data_dir, "--out", tmp_path / "x", "--steps", "1"] + extra, capsys)
    assert code == 2 and match in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_meta_tasks_take_min_variance(data_dir, tmp_path, capsys):
    out = tmp_path / "meta"
    code, err = run(TINY_META + ["--data", data_dir, "--out", out, "--steps", "1", "--min-variance", "0.2"], capsys)
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["stage_config"]["min_variance"] == 0.2


def test_meta_training_on_son_support_runs_and_is_recorded(data_dir, tmp_path, capsys):
    """``--support son``: the inner loop on LR son → LR pairs (half the query's size), validation included."""
    out = tmp_path / "son"
    argv = TINY_META + ["--data", data_dir, "--out", out, "--steps", "2", "--support", "son", "--blind-tasks", "1",
                        "--val-every", "2", "--val-batches", "1"]  # fmt: skip
    code, err = run(argv, capsys)
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["stage_config"]["support"] == "son"
    assert (out / "final.weights.h5").exists()


def test_missing_data_folder(tmp_path, capsys):
    code, err = run(TINY_PRE + ["--data", tmp_path / "none", "--out", tmp_path / "x", "--steps", "1"], capsys)
    assert code == 2 and "no such data folder" in err
    assert not (tmp_path / "x").exists()


def test_init_from_weights(data_dir, tmp_path, capsys):
    from mzsr_tf.model import init_params
    from mzsr_tf.weights import save_params

    init = save_params(init_params(9), tmp_path / "init.weights.h5")
    out = tmp_path / "meta"
    code, err = run(TINY_META + ["--data", data_dir, "--out", out, "--steps", "1", "--init", init], capsys)
    assert code == 0, err
    moved = [np.abs(a - b).max() for a, b in zip(load_params(init), load_params(out / "final.weights.h5"))]
    assert 0 < max(moved) < 1e-2  # one Adam step of 1e-4 from the given start


@pytest.mark.slow
def test_learned_inner_rates_train_resume_and_ship_with_the_weights(data_dir, tmp_path, capsys):
    from mzsr_tf.weights import load_inner_lr

    out = tmp_path / "lslr"
    argv = TINY_META + ["--data", data_dir, "--out", out, "--learn-inner-lr", "--meta-lr", "1e-3"]
    assert run(argv + ["--steps", "2"], capsys)[0] == 0
    two = load_inner_lr(out / "final.weights.h5")
    assert two.shape == (2, 16) and not np.allclose(two, 0.01)  # trained from α = 0.01
    np.testing.assert_array_equal(load_inner_lr(out / "ckpt"), two)  # in the checkpoint too
    code, err = run(argv + ["--steps", "3", "--resume"], capsys)
    assert code == 0, err
    assert not np.array_equal(load_inner_lr(out / "final.weights.h5"), two)
    # a later run starts from the shipped rates (--init), not from α again
    again = tmp_path / "again"
    argv2 = TINY_META + ["--data", data_dir, "--out", again, "--learn-inner-lr", "--meta-lr", "1e-12"]
    assert run(argv2 + ["--steps", "1", "--init", out / "final.weights.h5"], capsys)[0] == 0
    np.testing.assert_allclose(
        load_inner_lr(again / "final.weights.h5"), load_inner_lr(out / "final.weights.h5"), atol=1e-9
    )
    # kernel-conditioned rates from those: slopes from 0 beside them, learned, shipped with them
    conditioned = tmp_path / "conditioned"
    argv3 = TINY_META + ["--data", data_dir, "--out", conditioned, "--learn-inner-lr", "--kernel-rates"]
    code, err = run(argv3 + ["--steps", "2", "--init", out / "final.weights.h5", "--meta-lr", "1e-3"], capsys)
    assert code == 0, err
    table = load_inner_lr(conditioned / "final.weights.h5")
    assert table.shape == (2, 18) and np.abs(table[:, 16:]).min() > 0
    assert np.abs(table[:, :16] - load_inner_lr(out / "final.weights.h5")).max() < 1e-2  # two Adam steps away


@pytest.mark.slow
def test_meta_lr_0_calibrates_the_inner_rates_and_leaves_theta_as_it_was(data_dir, tmp_path, capsys):
    from mzsr_tf.weights import load_inner_lr, load_params

    start = tmp_path / "start"
    argv = TINY_META + ["--data", data_dir, "--learn-inner-lr"]
    assert run(argv + ["--out", start, "--meta-lr", "1e-3", "--steps", "1"], capsys)[0] == 0
    init = start / "final.weights.h5"
    out = tmp_path / "rates"
    frozen = ["--out", out, "--init", init, "--meta-lr", "0", "--inner-lr-meta-lr", "1e-3", "--steps", "2"]
    code, err = run(argv + frozen, capsys)
    assert code == 0, err
    for a, b in zip(load_params(out / "final.weights.h5"), load_params(init)):
        np.testing.assert_array_equal(a, b)  # θ bit for bit
    assert np.abs(load_inner_lr(out / "final.weights.h5") - load_inner_lr(init)).max() > 1e-4


@pytest.mark.slow
def test_a_runs_config_json_is_a_recipe_and_resumes_its_run(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    argv = TINY_META + ["--data", data_dir, "--out", out, "--steps", "2", "--meta-lr", "3e-4", "--val-every", "100"]
    argv += ["--learn-inner-lr", "--first-order", "--checkpoint-every", "1", "--seed", "3"]  # flags with defaults
    assert run(argv, capsys)[0] == 0
    record = json.loads((out / "config.json").read_text())
    # the record as a recipe: a new run with the same settings (flags given win over it)
    again = tmp_path / "again"
    code, err = run(["--config", out / "config.json", "--out", again, "--steps", "1", "--task-batch", "1"], capsys)
    assert code == 0, err
    copied = json.loads((again / "config.json").read_text())
    assert copied["stage_config"] == {**record["stage_config"], "task_batch": 1} and copied["run"]["steps"] == 1
    assert (copied["run"]["checkpoint_every"], copied["run"]["seed"]) == (1, 3)
    # in its run folder it resumes that run: --out from the config's folder, the settings from the record
    code, err = run(["--config", out / "config.json", "--steps", "3", "--resume"], capsys)
    assert code == 0 and "resumed" in err and "at step 2" in err, err
    code, err = run(["--config", out / "config.json", "--steps", "4", "--resume", "--inner-steps", "3"], capsys)
    assert code == 2 and "inner_steps" in err
    # a recipe change a resume may make: fixed multi-step loss weights, recorded in the run's history
    changed = {**record, "stage_config": {**record["stage_config"], "step_weights": [1, 2, 1]}}
    (tmp_path / "weights.json").write_text(json.dumps(changed))
    code, err = run(["--config", tmp_path / "weights.json", "--out", out, "--steps", "4", "--resume"], capsys)
    assert code == 0 and "changed on resume: step_weights -> (1.0, 2.0, 1.0)" in err, err
    history = json.loads((out / "config.json").read_text())["history"]
    assert history == [{"step": 3, "step_weights": [None, [1.0, 2.0, 1.0]]}]
    # and the convolutions' compute type, for a machine without native bfloat16
    code, err = run(["--config", out / "config.json", "--steps", "5", "--resume", "--precision", "bfloat16"], capsys)
    assert code == 0 and "changed on resume: precision -> bfloat16" in err, err
    history = json.loads((out / "config.json").read_text())["history"]
    assert history[-1] == {"step": 4, "precision": ["float32", "bfloat16"]}
    # and the task mix, from a run older than the setting (its default is the value before)
    older = json.loads((out / "config.json").read_text())
    del older["stage_config"]["blind_tasks"]
    (out / "config.json").write_text(json.dumps(older))
    code, err = run(["--config", out / "config.json", "--steps", "6", "--resume", "--blind-tasks", "1"], capsys)
    assert code == 0 and "changed on resume: blind_tasks -> 1" in err, err
    assert json.loads((out / "config.json").read_text())["history"][-1] == {"step": 5, "blind_tasks": [0, 1]}
    (tmp_path / "bad.json").write_text("{not json")
    assert run(["--config", tmp_path / "bad.json"], capsys)[0] == 2
    code, err = run(["--stage", "meta", "--steps", "1"], capsys)
    assert code == 2 and "--data, --out required" in err


@pytest.mark.parametrize(
    "extra,recorded",
    [
        (["--degradation", "mixed", "--min-variance", "0.2"], {"degradation": "mixed", "min_variance": 0.2}),
        (["--degradation", "kernels", "--kernel", "g_d_2.0"], {"degradation": "kernels", "kernel": "g_d_2.0"}),
    ],
)
def test_pretrain_records_its_degradation(data_dir, tmp_path, capsys, extra, recorded):
    out = tmp_path / "pre"
    code, err = run(TINY_PRE + ["--data", data_dir, "--out", out, "--steps", "1"] + extra, capsys)
    assert code == 0, err
    stage_config = json.loads((out / "config.json").read_text())["stage_config"]
    assert {k: stage_config[k] for k in recorded} == recorded


def test_bfloat16_pretraining_lowers_the_loss(data_dir, tmp_path, capsys):
    out = tmp_path / "bf16"
    argv = TINY_PRE + ["--data", data_dir, "--out", out, "--steps", "30", "--precision", "bfloat16", "--lr", "1e-3"]
    code, err = run(argv + ["--log-every", "1", "--val-every", "30"], capsys)
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["stage_config"]["precision"] == "bfloat16"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "logs"), size_guidance={"tensors": 0}).Reload()
    losses = [float(tf.make_ndarray(e.tensor_proto)) for e in events.Tensors("train/loss")]
    assert len(losses) == 30 and np.mean(losses[-5:]) < np.mean(losses[:5])
    assert all(p.dtype == np.float32 for p in load_params(out / "final.weights.h5"))


def test_image_samples_go_apart_from_the_scalars_a_campaign_commits(data_dir, tmp_path, capsys):
    """Samples are pictures of the training photos: logs/ (the scalars) holds none, logs/samples holds them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "samples"
    code, err = run(TINY_PRE + ["--data", data_dir, "--out", out, "--steps", "2", "--sample-every", "1"], capsys)
    assert code == 0, err
    scalars = EventAccumulator(str(out / "logs"), size_guidance={"tensors": 0}).Reload()
    samples = EventAccumulator(str(out / "logs" / "samples"), size_guidance={"tensors": 0}).Reload()
    assert "val/psnr" in scalars.Tags()["tensors"] and not any(
        t.startswith("samples/") for t in scalars.Tags()["tensors"]
    )
    assert samples.Tags()["tensors"] == ["samples/input_output"]
    assert [e.step for e in samples.Tensors("samples/input_output")] == [1, 2]
    assert json.loads((out / "config.json").read_text())["run"]["sample_every"] == 1
    assert run(TINY_PRE + ["--data", data_dir, "--out", tmp_path / "x", "--steps", "1", "--sample-every", "0"])[0] == 2


def test_validation_averages_several_fixed_batches(data_dir, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def val_psnr(batches):
        out = tmp_path / f"val{batches}"
        argv = TINY_PRE + ["--data", data_dir, "--out", out, "--steps", "2", "--val-batches", str(batches)]
        code, err = run(argv, capsys)
        assert code == 0, err
        events = EventAccumulator(str(out / "logs"), size_guidance={"tensors": 0}).Reload()
        return [float(tf.make_ndarray(e.tensor_proto)) for e in events.Tensors("val/psnr")]

    one, three = val_psnr(1), val_psnr(3)
    assert len(one) == len(three) == 2 and one[0] != three[0]  # steps 0 and 2; more batches in the mean
    assert run(TINY_PRE + ["--data", data_dir, "--out", tmp_path / "x", "--steps", "1", "--val-batches", "0"])[0] == 2


def test_kernel_estimator_stage_trains_resumes_exactly_and_saves_npz(data_dir, tmp_path, capsys):
    from mzsr_tf.kernel_estimation import load_estimator

    tiny = ["--stage", "kernel", "--patch", "16", "--batch-size", "4", "--data", data_dir, "--val-every", "2"]
    tiny += ["--zooms", "1", "2.5"]
    code, err = run([*tiny, "--out", tmp_path / "straight", "--steps", "4"], capsys)
    assert code == 0, err
    assert "val/covariance_error" in err
    straight = load_estimator(tmp_path / "straight" / "final.npz")
    assert run([*tiny, "--out", tmp_path / "resumed", "--steps", "2"], capsys)[0] == 0
    assert run([*tiny, "--out", tmp_path / "resumed", "--steps", "4", "--resume"], capsys)[0] == 0
    resumed = load_estimator(tmp_path / "resumed" / "final.npz")
    for a, b in zip(straight, resumed):
        np.testing.assert_array_equal(a, b)
    from_ckpt = load_estimator(tmp_path / "straight" / "ckpt")  # a run's checkpoint serves as estimator weights
    for a, b in zip(straight, from_ckpt):
        np.testing.assert_array_equal(a, b)
    config = json.loads((tmp_path / "straight" / "config.json").read_text())
    assert config["stage_config"]["scales"] == [2, 4] and config["stage_config"]["patch"] == 16
    assert config["stage_config"]["zooms"] == [1.0, 2.5]
    # groups of patches pooled into one estimate, under the affine-invariant loss
    code, err = run(
        [*tiny, "--out", tmp_path / "grouped", "--steps", "2", "--group", "2", "--loss", "log_eigen", "--soften", "1"],
        capsys,
    )
    assert code == 0 and "val/log_eigen_error" in err
    config = json.loads((tmp_path / "grouped" / "config.json").read_text())["stage_config"]
    assert config["group"] == 2 and config["loss"] == "log_eigen" and config["soften"] == 1.0
    code, err = run([*tiny, "--out", tmp_path / "odd", "--steps", "1", "--soften", "-1"], capsys)
    assert code == 2 and "--soften is a variance" in err and not (tmp_path / "odd").exists()
    code, err = run([*tiny, "--out", tmp_path / "odd", "--steps", "1", "--group", "3"], capsys)
    assert code == 2 and "do not make groups of 3" in err and not (tmp_path / "odd").exists()
    code, err = run([*tiny, "--out", tmp_path / "odd", "--steps", "1", "--loss", "l2"], capsys)
    assert code == 2 and "unknown estimator loss 'l2'" in err and not (tmp_path / "odd").exists()
    code, err = run([*tiny[:-3], "--out", tmp_path / "bad", "--steps", "1", "--zooms", "0.5"], capsys)
    assert code == 2 and "--zooms shrink the photos" in err and not (tmp_path / "bad").exists()


def test_conditioned_start_learns_its_basis_resumes_exactly_and_ships_it(data_dir, tmp_path, capsys):
    """--conditioned-start --inner-steps 0 --meta-lr 0: supervised training of V with θ frozen, noisy tasks among
    them; the init's learned rates travel on; a resume continues V exactly; an inner loop from θ(k) trains too;
    --blind-context trains only the rows for estimated kernels."""
    from mzsr_tf.conditioning import GIVEN_FEATURES, START_FEATURES
    from mzsr_tf.weights import load_inner_lr, load_start_basis, save_params

    start = tmp_path / "start"
    argv = TINY_META + ["--data", data_dir, "--learn-inner-lr", "--meta-lr", "1e-3", "--out", start, "--steps", "1"]
    assert run(argv, capsys)[0] == 0
    init = start / "final.weights.h5"
    supervised = ["--stage", "meta", "--patch", "16", "--meta-batch", "2", "--task-batch", "1", "--data", data_dir]
    supervised += ["--init", init, "--conditioned-start", "--inner-steps", "0", "--meta-lr", "0"]
    supervised += ["--start-lr", "1e-3", "--support", "son", "--val-every", "100", "--task-noise", "0.02"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert run(supervised + ["--out", straight, "--steps", "3"], capsys)[0] == 0
    assert run(supervised + ["--out", resumed, "--steps", "2"], capsys)[0] == 0
    code, err = run(supervised + ["--out", resumed, "--steps", "3", "--resume"], capsys)
    assert code == 0, err
    final = straight / "final.weights.h5"
    for a, b in zip(load_params(final), load_params(init)):
        np.testing.assert_array_equal(a, b)  # θ bit for bit
    np.testing.assert_array_equal(load_inner_lr(final), load_inner_lr(init))  # the rates it adapts with
    basis = load_start_basis(final)
    assert len(basis) == 16 and basis[0].shape == (START_FEATURES, 3, 3, 3, 64) and np.abs(basis[-1]).max() > 1e-4
    ckpt = load_start_basis(straight / "ckpt")
    for a, b, c in zip(basis, ckpt, load_start_basis(resumed / "ckpt")):
        np.testing.assert_array_equal(b, c)  # the resume is exact
        b = np.asarray(b)
        step = np.abs(b).reshape(len(b), -1, b.shape[-1]).max(axis=1) / 7  # shipped in 4-bit codes
        assert np.all(np.abs(np.asarray(a) - b).reshape(len(b), -1, b.shape[-1]) <= step[:, None])
    assert load_start_basis(init) is None
    # MMAML: θ, V and the rates together, the inner loop from θ(k), V going on from the file's
    joint = tmp_path / "joint"
    argv = TINY_META + ["--data", data_dir, "--learn-inner-lr", "--conditioned-start", "--init", final]
    code, err = run(argv + ["--out", joint, "--steps", "1", "--meta-lr", "1e-3", "--start-lr", "1e-3"], capsys)
    assert code == 0, err
    moved = [np.abs(a - b).max() for a, b in zip(load_start_basis(joint / "final.weights.h5"), basis)]
    assert 0 < max(moved) < 1e-2
    # --blind-context: blind tasks run blind; only the rows for estimated kernels learn, the rest stay bit for bit
    blind = tmp_path / "blind"
    argv = supervised + ["--init", final, "--blind-tasks", "2", "--blind-context", "32", "--out", blind, "--steps", "2"]
    code, err = run(argv, capsys)
    assert code == 0, err
    for a, b in zip(load_start_basis(blind / "ckpt"), load_start_basis(final)):
        np.testing.assert_array_equal(np.asarray(a)[:GIVEN_FEATURES], np.asarray(b)[:GIVEN_FEATURES])
        assert not np.any(np.asarray(b)[GIVEN_FEATURES:])
    assert max(np.abs(np.asarray(a)[GIVEN_FEATURES:]).max() for a in load_start_basis(blind / "ckpt")) > 1e-4
    # the update rule calibrated for θ(k): θ and V frozen (--meta-lr 0 --start-lr 0), only the rates move; the
    # checkpoint keeps only what moves (θ and V come back from --init on a resume, which must be the same file)
    start_file = shutil.copy(final, tmp_path / "start.weights.h5")
    calibrated, stepwise = tmp_path / "calibrated", tmp_path / "stepwise"
    argv = TINY_META + ["--data", data_dir, "--learn-inner-lr", "--conditioned-start", "--init", start_file]
    argv += ["--meta-lr", "0", "--start-lr", "0", "--inner-lr-meta-lr", "1e-3"]
    code, err = run(argv + ["--out", calibrated, "--steps", "2"], capsys)
    assert code == 0, err
    assert run(argv + ["--out", stepwise, "--steps", "1"], capsys)[0] == 0
    code, err = run(argv + ["--out", stepwise, "--steps", "2", "--resume"], capsys)
    assert code == 0, err
    out = calibrated / "final.weights.h5"
    for a, b in zip(load_start_basis(out), basis):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(load_params(out), load_params(init)):
        np.testing.assert_array_equal(a, b)
    assert np.abs(load_inner_lr(out) - load_inner_lr(init)).max() > 1e-4
    np.testing.assert_array_equal(load_inner_lr(stepwise / "final.weights.h5"), load_inner_lr(out))  # exact resume
    newest = tf.train.latest_checkpoint(str(calibrated / "ckpt"))
    kept = tf.train.load_checkpoint(newest).get_variable_to_shape_map()
    assert not [k for k in kept if k.startswith(("model/", "optimizer/", "start_basis", "basis_optimizer"))], kept
    assert sum(f.stat().st_size for f in (calibrated / "ckpt").glob("ckpt-2.*")) < 10_000
    with pytest.raises(InputError, match="without θ"):
        load_params(newest)
    code, err = run(argv + ["--out", stepwise, "--steps", "3", "--resume", "--start-lr", "1e-3"], capsys)
    assert code == 2 and "cannot freeze or unfreeze" in err
    save_params(load_params(init), start_file, overwrite=True, inner_lr=load_inner_lr(init), start_basis=basis)
    code, err = run(argv + ["--out", stepwise, "--steps", "3", "--resume"], capsys)
    assert code == 2 and "another --init" in err


def test_a_run_from_before_frozen_groups_left_checkpoints_keeps_them_there(data_dir, tmp_path):
    """A run whose config.json predates ``frozen`` (its checkpoints hold θ even when θ is frozen, and its --init file
    may have changed since) goes on restoring its frozen groups from its checkpoints, never from --init."""
    from mzsr_tf.meta import MetaConfig
    from mzsr_tf.training import RunConfig, _build_state, _check_run_dir, make_stage, make_strategy

    init = tmp_path / "init.weights.h5"
    from mzsr_tf.model import init_params
    from mzsr_tf.weights import save_params

    save_params(init_params(0), init, inner_lr=np.full([2, 16], 0.01, np.float32))
    config = MetaConfig(meta_lr=0.0, learn_inner_lr=True, inner_lr_meta_lr=1e-3, inner_steps=2, patch=16)
    run_config = RunConfig("meta", (str(data_dir),), str(tmp_path / "run"), 2, init=str(init), resume=True)
    record, _ = _check_run_dir(run_config, config)
    assert record["frozen"] == ["theta"] and "init_fingerprint" in record and "frozen_in_checkpoint" not in record
    (tmp_path / "run").mkdir()
    legacy = {k: v for k, v in record.items() if k not in ("frozen", "init_fingerprint")}
    (tmp_path / "run" / "config.json").write_text(json.dumps(legacy))
    record, _ = _check_run_dir(run_config, config)
    assert record["frozen_in_checkpoint"] and "init_fingerprint" not in record
    stage, strategy = make_stage(run_config, config), make_strategy("default")
    kept = _build_state(stage, run_config, config, strategy, record["frozen_in_checkpoint"]).checkpoint
    assert hasattr(kept, "model")  # θ stays in the checkpoint
    assert not hasattr(_build_state(stage, run_config, config, strategy).checkpoint, "model")


def test_the_committed_campaign_logs_hold_scalars_only():
    """The repo keeps the campaign's curves, never pictures of ../shared's training photos (logs/samples is ignored)."""
    from tensorboard.compat.proto import event_pb2

    files = sorted((ROOT / "campaign").rglob("events.out.tfevents.*"))
    assert files
    plugins = set()
    for f in files:
        for record in tf.data.TFRecordDataset(str(f)):
            event = event_pb2.Event.FromString(record.numpy())
            plugins |= {v.metadata.plugin_data.plugin_name for v in event.summary.value}
    assert plugins == {"scalars"}, plugins
