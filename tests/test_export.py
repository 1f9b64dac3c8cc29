"""Exports (issue #7): SavedModel equals the library path and is thread-safe; the TFLite graph adapts like it.

Everything is exported once per module through ``python -m export`` (in-process) with small,
distinct-valued weights: ``init_params(seed)`` repeats one kernel for layers of the same shape,
which the TFLite converter stores once and would make the size check meaningless.
"""

import dataclasses
import threading
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from mzsr_tf import cli
from mzsr_tf.commands import export as export_cli
from mzsr_tf.errors import InputError
from mzsr_tf.export import FILES, ExportConfig
from mzsr_tf.export.tflite import (
    MAX_BYTES,
    SR_SIGNATURES,
    WEIGHT_NAMES,
    bake_weights,
    check_tflite,
    embed_kernel,
    op_names,
    weight_slots,
)
from mzsr_tf.kernel_estimation import estimate_kernel, init_estimator, load_estimator, save_estimator
from mzsr_tf.kernels import Degradation, gaussian_kernel, kernel_features, kernel_offset, validate_kernel
from mzsr_tf.metrics import to_uint8
from mzsr_tf.model import init_params, param_shapes, super_resolve
from mzsr_tf.weights import load_params, save_params
from mzsr_tf.zero_shot import OFFICIAL_RATES, AdaptConfig, adapt, zero_shot_sr

KERNEL_SIZE = 21
MAX_PIXELS = 40 * 40
MAX_STEPS = 5
KERNEL = gaussian_kernel(3.0, 1.5, 0.4, 13, offset=0.5).numpy().astype(np.float32)  # 13x13 anisotropic, off-centre


def assert_rounds_alike(a, b):
    """uint8 images equal but for a level at a few pixels: the same arithmetic in another graph (the kernel's
    phase taps are computed where they run) may round a pixel the other way."""
    a, b = np.asarray(a, int), np.asarray(b, int)
    assert a.shape == b.shape and np.abs(a - b).max() <= 1 and np.mean(a != b) < 1e-3, np.abs(a - b).max()


def distinct_params(seed):
    """init_params kernels drawn with a different seed per layer, plus small non-zero biases."""
    rng = np.random.default_rng(seed)
    return [
        init_params(seed + i)[i].numpy() if len(s) == 4 else rng.normal(0, 0.01, s).astype(np.float32)
        for i, s in enumerate(param_shapes())
    ]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    params = distinct_params(3)
    save_params(params, root / "meta.weights.h5")
    save_estimator(init_estimator(8, seed=4), root / "estimator.npz")
    argv = ["--weights", root / "meta.weights.h5", "--out", root / "out", "--kernel-size", KERNEL_SIZE]
    argv += ["--kernel-estimator", root / "estimator.npz"]
    argv += ["--max-pixels", MAX_PIXELS, "--max-steps", MAX_STEPS]
    assert cli.run(export_cli.main, [str(a) for a in argv]) == 0
    return root / "out", params


@pytest.fixture(scope="module")
def served(exported):
    return tf.saved_model.load(str(exported[0] / FILES["serving"]))


@pytest.fixture(scope="module")
def image(astronaut_uint8):
    return np.ascontiguousarray(astronaut_uint8[30:54, 50:76])  # 24x26 uint8


def serve(served, image, kernel=KERNEL, steps=3):
    fn = served.signatures["serving_default"]
    return fn(image=tf.constant(image[None]), kernel=tf.constant(kernel), steps=tf.constant(steps))["sr"].numpy()


# === Weights files ===


def test_weights_files_hold_the_meta_weights(exported):
    out, params = exported
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES[k].split("/")[0] for k in FILES)
    for name in (FILES["weights_h5"], FILES["weights_npz"]):
        for a, b in zip(load_params(out / name), params):
            np.testing.assert_array_equal(a, b)
    with np.load(out / FILES["weights_npz"]) as npz:
        assert sorted(npz.files) == sorted(f"conv{i}/{p}" for i in range(1, 9) for p in ("kernel", "bias"))


# === SavedModel ===


def test_serving_equals_the_library_path(served, image, exported):
    """adapt.py's path (float32, as a portable servable's 'auto'): zero_shot_sr, then MATLAB-style rounding."""
    params = exported[1]
    for steps in (0, 3):
        degradation = Degradation(validate_kernel(KERNEL), "direct")
        config = AdaptConfig(steps=steps, precision="float32")
        ref = zero_shot_sr(params, image.astype(np.float32) / 255.0, degradation, 2, config)
        assert_rounds_alike(serve(served, image, steps=steps)[0], to_uint8(ref.sr).numpy())
    plain = served.signatures["super_resolve"](image=tf.constant(image[None]))["sr"].numpy()
    lr = tf.constant(image[None].astype(np.float32) / 255.0)
    np.testing.assert_array_equal(plain, to_uint8(tf.clip_by_value(super_resolve(params, lr, 2), 0, 1)).numpy())
    assert plain.shape == (1, 48, 52, 3) and plain.dtype == np.uint8
    assert not np.array_equal(plain, serve(served, image, steps=0))  # the off-centre kernel's phase


def test_png_signature_takes_encoded_images_and_returns_the_same_sr_as_png(served, image):
    """Encoded bytes in (PNG, or JPEG decoded as TF decodes it), PNG bytes out: the pixels of serving_default."""
    png = served.signatures["png"]
    for encoded, pixels in (
        (tf.io.encode_png(image), image),
        (tf.io.encode_jpeg(image, quality=90), tf.io.decode_jpeg(tf.io.encode_jpeg(image, quality=90)).numpy()),
    ):
        out = png(image_bytes=encoded, kernel=tf.constant(KERNEL), steps=tf.constant(2))["sr_bytes"]
        assert out.dtype == tf.string and out.numpy().startswith(b"\x89PNG")
        np.testing.assert_array_equal(tf.io.decode_png(out).numpy(), serve(served, pixels, steps=2)[0])
    with pytest.raises(tf.errors.InvalidArgumentError):
        png(image_bytes=tf.constant(b"not an image"), kernel=tf.constant(KERNEL), steps=tf.constant(1))
    blind = served.signatures["blind_png"](image_bytes=tf.io.encode_png(image), steps=tf.constant(2))
    expected = served.signatures["blind"](image=tf.constant(image[None]), steps=tf.constant(2))
    np.testing.assert_array_equal(tf.io.decode_png(blind["sr_bytes"]).numpy(), expected["sr"].numpy()[0])
    np.testing.assert_array_equal(blind["kernel"], expected["kernel"])


def rest_predict(served, body: dict) -> dict:
    """TF Serving's REST ``:predict`` (columnar ``inputs``) in-process: JSON values become tensors of the
    signature's types, ``{"b64": ...}`` becomes bytes, outputs named ``*_bytes`` go back as base64."""
    import base64

    fn = served.signatures[body.get("signature_name", "serving_default")]
    specs = fn.structured_input_signature[1]
    inputs = {}
    for name, value in body["inputs"].items():
        if isinstance(value, dict):
            value = base64.b64decode(value["b64"])
        inputs[name] = tf.constant(value, dtype=specs[name].dtype)
    outputs = fn(**inputs)
    return {
        k: {"b64": base64.b64encode(v.numpy()).decode()} if k.endswith("_bytes") else v.numpy().tolist()
        for k, v in outputs.items()
    }


def test_the_readmes_rest_bodies_run(served, image):
    """The README's curl body, as written, through serving_default; its PNG body through png."""
    import base64
    import json
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    body = json.loads(re.search(r"curl -d '(\{.*?\})' \\", readme, re.S).group(1))
    sr = np.array(rest_predict(served, body)["sr"])
    assert sr.shape == (1, 6, 6, 3) and sr.min() >= 0 and sr.max() <= 255
    assert 'image_bytes\\": {\\"b64\\"' in readme  # the README's png body: the same shape as below
    encoded = base64.b64encode(tf.io.encode_png(image).numpy()).decode()
    png = {"signature_name": "png", "inputs": {"image_bytes": {"b64": encoded}, "kernel": [[1.0]], "steps": 2}}
    got = tf.io.decode_png(base64.b64decode(rest_predict(served, png)["sr_bytes"]["b64"])).numpy()
    np.testing.assert_array_equal(got, serve(served, image, np.ones((1, 1), np.float32), steps=2)[0])


def test_the_docs_grpc_example_runs_against_an_in_process_grpc_server(served, image, tmp_path, monkeypatch):
    """docs/export.md's gRPC client, as written, through a real gRPC round trip to the SavedModel's signatures."""
    import re
    from concurrent import futures

    import grpc
    from PIL import Image
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):  # TF Serving's Predict: TensorProtos in and out
            fn = served.signatures[request.model_spec.signature_name]
            outputs = fn(**{k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()})
            reply = predict_pb2.PredictResponse()
            for k, v in outputs.items():
                reply.outputs[k].CopyFrom(tf.make_tensor_proto(v.numpy()))
            return reply

    docs = (Path(__file__).resolve().parents[1] / "docs" / "export.md").read_text()
    client = re.search(r"### gRPC\n.*?```python\n(.*?)```", docs, re.S).group(1)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("localhost:0")
    server.start()
    Image.fromarray(image).save(tmp_path / "photo.png")
    monkeypatch.chdir(tmp_path)
    steps = "tf.make_tensor_proto(10, dtype=tf.int32)"
    assert steps in client and "localhost:8500" in client
    client = client.replace(steps, f"tf.make_tensor_proto({MAX_STEPS}, dtype=tf.int32)")  # this export's limit
    scope = {}
    try:
        exec(client.replace("localhost:8500", f"localhost:{port}"), scope)
    finally:
        server.stop(None)
    expected = serve(served, image, np.ones((1, 1), np.float32), steps=MAX_STEPS)[0]
    np.testing.assert_array_equal(scope["sr"], expected)


def test_blind_signature_estimates_like_the_library_then_adapts_with_that_kernel(served, image, exported):
    estimator = load_estimator(exported[0].parent / "estimator.npz")
    expected = estimate_kernel(image.astype(np.float32) / 255.0, 2, estimator).kernel
    got = served.signatures["blind"](image=tf.constant(image[None]), steps=tf.constant(2))
    np.testing.assert_allclose(got["kernel"].numpy(), expected, atol=1e-6)
    np.testing.assert_array_equal(got["sr"].numpy(), serve(served, image, got["kernel"].numpy(), steps=2))


def test_concurrent_requests_equal_serial_ones(served, image):
    requests = [(np.ascontiguousarray(np.rot90(image, r)), steps) for r in range(2) for steps in (1, 3)] * 2
    plain = served.signatures["super_resolve"](image=tf.constant(image[None]))["sr"].numpy()
    serial = [serve(served, img, steps=steps) for img, steps in requests]
    results = [None] * len(requests)

    def worker(i):
        results[i] = serve(served, requests[i][0], steps=requests[i][1])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, expected in zip(results, serial):
        np.testing.assert_array_equal(got, expected)
    # θ_M is read-only: after all the requests plain SR is unchanged.
    np.testing.assert_array_equal(served.signatures["super_resolve"](image=tf.constant(image[None]))["sr"], plain)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"image": np.zeros((41, 40, 3), np.uint8)}, "more than max_pixels=1600 pixels"),
        ({"steps": MAX_STEPS + 1}, "steps must be at most max_steps=5"),
        ({"steps": -1}, "steps must be >= 0"),
        ({"kernel": np.full((5, 5), np.nan, np.float32)}, "kernel contains NaN or Inf"),
        ({"kernel": np.zeros((5, 5), np.float32)}, "kernel must have a positive sum"),
        ({"kernel": np.ones((30, 30), np.float32)}, "image is smaller than the kernel"),
        ({"image": np.zeros((2, 30, 3), np.uint8)}, "at least 3 pixels on each side"),
    ],
)
def test_bad_requests_raise_readable_errors(served, image, change, message):
    request = {"image": image, "kernel": KERNEL, "steps": 1, **change}
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        serve(served, request["image"], request["kernel"], request["steps"])


def test_serving_refuses_a_batch(served, image):
    """Weights adapted to image 1 must never answer for image 2 (TF Serving may batch requests)."""
    batch = tf.constant(np.stack([image, image]))
    for name, extra in (
        ("serving_default", {"kernel": tf.constant(KERNEL), "steps": tf.constant(1)}),
        ("super_resolve", {}),
    ):
        with pytest.raises(tf.errors.InvalidArgumentError, match="one image per request"):
            served.signatures[name](image=batch, **extra)


def test_serving_kernel_is_normalised_in_graph(served, image):
    np.testing.assert_array_equal(serve(served, image, KERNEL * 7.0, 1), serve(served, image, KERNEL, 1))
    huge = (KERNEL / KERNEL.max() * 3e38).astype(np.float32)  # near float32.max: a float32 sum would overflow
    assert_rounds_alike(serve(served, image, huge, 1), serve(served, image, KERNEL, 1))  # float32 sums differ
    box = np.ones((1, 1), np.float32)  # 1x1: no blur
    assert serve(served, image, box, 1).shape == (1, 48, 52, 3)


# === TFLite ===


@pytest.fixture(scope="module")
def tflite_path(exported):
    return exported[0] / FILES["tflite"]


def runner(interpreter, name):
    return interpreter.get_signature_runner(name)


def test_tflite_is_small_and_builtin_only(tflite_path):
    model = tflite_path.read_bytes()
    assert len(model) <= MAX_BYTES
    ops = op_names(model)
    assert not [op for op in ops if op.startswith("CUSTOM")], ops
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "MIRROR_PAD", "ASSIGN_VARIABLE", "BATCH_MATMUL"} <= ops, ops
    interpreter = Interpreter(model_content=model)
    signatures = ["estimate_kernel", "get_weights", "learning_rates", "reset", "super_resolve", "train_step"]
    assert sorted(interpreter.get_signature_list()) == signatures
    assert interpreter.get_signature_list()["train_step"]["inputs"] == ["image", "kernel", "learning_rate"]


def test_a_model_over_the_phone_size_is_an_input_error(tflite_path, monkeypatch):
    """Too large a LiteRT model (e.g. a wider kernel estimator given) is refused in one line, not a traceback."""
    import mzsr_tf.export.tflite

    model = tflite_path.read_bytes()
    names = list(Interpreter(model_content=model).get_signature_list())
    check_tflite(model, names)
    monkeypatch.setattr(mzsr_tf.export.tflite, "MAX_BYTES", len(model) - 1)
    with pytest.raises(InputError, match="over the .* a phone model may take"):
        check_tflite(model, names)


def test_the_docs_kotlin_snippet_calls_the_models_signatures_by_their_names(tflite_path):
    """docs/export.md's Android snippet (not compiled here): every runSignature names a signature of the model
    and exactly its inputs and outputs."""
    import re

    docs = (Path(__file__).resolve().parents[1] / "docs" / "export.md").read_text()
    kotlin = re.search(r"```kotlin\n(.*?)```", docs, re.S).group(1).replace("//", "")  # commented calls too
    calls = re.findall(r"runSignature\((.*?),\s*\"(\w+)\"\)", kotlin, re.S)
    found = {}
    for args, key in calls:
        maps = re.split(r"mapOf\(|emptyMap\(\)", args)[1:]  # [inputs, outputs]
        found[key] = [sorted(re.findall(r'"(\w+)" to', m)) for m in maps]
    signatures = Interpreter(model_content=tflite_path.read_bytes()).get_signature_list()
    assert set(found) == set(signatures) - {"get_weights"}, found
    for key, (inputs, outputs) in found.items():
        assert inputs == sorted(signatures[key]["inputs"]) and outputs == sorted(signatures[key]["outputs"]), key


def test_tflite_estimates_the_kernel_like_tf(tflite_path, exported, image):
    """Blind SR on the device: estimate_kernel equals the library's estimate on the train_step grid."""
    from mzsr_tf.kernel_estimation import kernel_from_covariance

    lr = image.astype(np.float32) / 255.0
    weights = load_estimator(exported[0].parent / "estimator.npz")
    stored = [np.asarray(w, np.float16).astype(np.float32) if np.size(w) >= 1024 else w for w in weights]
    estimate = estimate_kernel(lr, 2, stored)  # the device holds the estimator's larger tensors in float16
    got = runner(Interpreter(model_path=str(tflite_path)), "estimate_kernel")(image=lr[None])
    np.testing.assert_allclose(got["covariance"], estimate.covariance, rtol=1e-5)
    full = estimate_kernel(lr, 2, weights).covariance
    np.testing.assert_allclose(got["covariance"], full, rtol=2e-3)
    np.testing.assert_allclose(got["kernel"], kernel_from_covariance(estimate.covariance, 2, KERNEL_SIZE), atol=1e-6)
    assert got["kernel"].shape == (KERNEL_SIZE, KERNEL_SIZE)


def device_adapt(interpreter, lr, steps, rates=None):
    """The app's loop: ``steps`` train_steps with the model's own ``learning_rates`` rows (or ``rates``); losses."""
    kernel = embed_kernel(KERNEL, KERNEL_SIZE)
    table = runner(interpreter, "learning_rates")(kernel=kernel)["learning_rates"] if rates is None else rates
    train = runner(interpreter, "train_step")
    rows = [table[min(i, len(table) - 1)] for i in range(steps)]
    return [train(image=lr[None], kernel=kernel, learning_rate=np.atleast_1d(np.float32(row)))["loss"] for row in rows]


def test_tflite_adaptation_matches_tf(tflite_path, exported, image):
    """N train_steps + super_resolve in LiteRT == zero_shot.adapt + super_resolve in TF (1e-4); weights without
    learned rates get the official schedule."""
    params = exported[1]
    lr = image.astype(np.float32) / 255.0
    config = AdaptConfig.official(steps=7)  # train_step is an SGD update
    interpreter = Interpreter(model_path=str(tflite_path))
    table = runner(interpreter, "learning_rates")(kernel=embed_kernel(KERNEL, KERNEL_SIZE))["learning_rates"]
    np.testing.assert_array_equal(table, np.repeat(np.float32(OFFICIAL_RATES)[:, None], 16, axis=1))
    losses = device_adapt(interpreter, lr, config.steps)
    sr = runner(interpreter, "super_resolve")(image=lr[None])["sr"]

    fast, ref_losses, _ = adapt(params, lr, Degradation(KERNEL, "direct"), 2, config)
    ref = tf.clip_by_value(super_resolve(fast, lr[None], 2, (48, 52), shift=kernel_offset(KERNEL)), 0, 1).numpy()
    assert sr.shape == ref.shape == (1, 48, 52, 3)
    np.testing.assert_allclose(np.ravel(losses), ref_losses, atol=1e-5)
    np.testing.assert_allclose(sr, ref, atol=1e-4)
    weights = runner(interpreter, "get_weights")()
    for name, w in zip(WEIGHT_NAMES, fast):
        np.testing.assert_allclose(weights[name], w, atol=1e-5)


def test_baked_sr_model_runs_the_adapted_weights_with_constant_filters(tflite_path, exported, image):
    """After adapting on the device, the adapted weights baked into mzsr_sr.tflite give the adaptation model's SR."""
    model = (exported[0] / FILES["tflite_sr"]).read_bytes()
    check_tflite(model, SR_SIGNATURES)
    assert "BATCH_MATMUL" not in op_names(model)  # convolutions as CONV_2D with constant filters: XNNPACK's
    lr = image.astype(np.float32)[None] / 255.0
    theta_sr = runner(Interpreter(model_content=model), "super_resolve")(image=lr, offset=np.zeros(2, np.float32))["sr"]
    np.testing.assert_allclose(theta_sr, tf.clip_by_value(super_resolve(exported[1], lr, 2), 0, 1), atol=1e-5)

    interpreter = Interpreter(model_path=str(tflite_path))
    device_adapt(interpreter, lr[0], 2, rates=[0.02, 0.01])  # one rate for every tensor: [1]
    adapted = runner(interpreter, "get_weights")()
    baked = bake_weights(model, [adapted[name] for name in WEIGHT_NAMES])
    assert len(baked) == len(model) and baked != model
    offset = runner(interpreter, "train_step")(
        image=lr, kernel=embed_kernel(KERNEL, KERNEL_SIZE), learning_rate=np.zeros(1, np.float32)
    )["offset"]
    np.testing.assert_allclose(offset, kernel_offset(KERNEL), atol=1e-6)  # the off-centre kernel's phase
    got = runner(Interpreter(model_content=baked), "super_resolve")(image=lr, offset=offset)["sr"]
    np.testing.assert_allclose(got, runner(interpreter, "super_resolve")(image=lr)["sr"], atol=1e-5)
    assert np.abs(got - theta_sr).max() > 1e-3  # the adaptation shows
    assert [s["name"] for s in weight_slots(baked)] == WEIGHT_NAMES
    with pytest.raises(ValueError, match="conv1_kernel: shape"):
        bake_weights(model, [np.zeros((3, 3, 3, 8))] + list(exported[1][1:]))
    with pytest.raises(ValueError, match="no weight slots"):
        weight_slots(tflite_path.read_bytes())


def test_tflite_reset_restores_the_meta_weights_exactly(tflite_path, exported, image):
    params = exported[1]
    interpreter = Interpreter(model_path=str(tflite_path))
    get = runner(interpreter, "get_weights")
    for name, p in zip(WEIGHT_NAMES, params):
        np.testing.assert_array_equal(get()[name], p)  # initial weights are θ_M
    lr = image.astype(np.float32)[None] / 255.0
    device_adapt(interpreter, lr[0], 1, rates=[0.1])
    assert not np.array_equal(get()["conv8_bias"], params[-1])
    runner(interpreter, "reset")()
    for name, p in zip(WEIGHT_NAMES, params):
        np.testing.assert_array_equal(get()[name], p)


def test_embed_kernel_keeps_the_centre():
    k = np.arange(1, 13, dtype=np.float32).reshape(3, 4)  # centre (1, 2)
    big = embed_kernel(k, 7)
    assert big[3, 3] == k[1, 2] and big.sum() == k.sum()
    with pytest.raises(ValueError):
        embed_kernel(np.ones((9, 9)), 7)


# === CLI ===


def run(argv, capsys):
    code = cli.run(export_cli.main, [str(a) for a in argv])
    return code, capsys.readouterr().err


def test_cli_errors_are_one_line_and_write_nothing(exported, tmp_path, capsys):
    out = exported[0]
    good = tmp_path / "w.weights.h5"
    save_params(init_params(0), good)
    (tmp_path / "corrupt.weights.h5").write_bytes(b"not hdf5")
    cases = [
        (["--weights", good, "--out", out], "exists (pass --overwrite"),
        (["--weights", tmp_path / "missing.weights.h5", "--out", tmp_path / "a"], "weights file not found"),
        (["--weights", tmp_path / "corrupt.weights.h5", "--out", tmp_path / "a"], "cannot read weights"),
        (["--weights", good, "--out", tmp_path / "no" / "such"], "output folder does not exist"),
        (["--weights", good, "--out", tmp_path / "a", "--kernel-size", "0"], "must be >= 1"),
        (["--weights", good, "--out", tmp_path / "a", "--scale", "1.5"], "scale must be an integer"),
        (["--weights", good, "--out", tmp_path / "a", "--max-steps", "x"], "not an integer"),
        (["--weights", good], "--out"),
    ]
    before = sorted(p.name for p in tmp_path.iterdir())
    for argv, message in cases:
        code, err = run(argv, capsys)
        assert code == 2 and message in err and err.count("\n") == 1, (argv, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_defaults():
    assert ExportConfig().max_pixels == AdaptConfig().max_pixels
    assert ExportConfig().kernel_size == gaussian_kernel(2, 2, 0, 21).shape[0] == KERNEL_SIZE


def test_failed_export_leaves_nothing(tmp_path, monkeypatch):
    import mzsr_tf.export.savedmodel
    from mzsr_tf.export import export_all

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(mzsr_tf.export.savedmodel, "save_serving", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        export_all(distinct_params(0), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def _fake_export(folder, tag):
    """A staging folder shaped like an export, each entry holding ``tag``."""
    for name in FILES.values():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        if name == FILES["serving"]:
            (folder / name).mkdir()
            (folder / name / "saved_model.pb").write_text(tag)
        else:
            (folder / name).write_text(tag)
    return folder


def test_overwrite_replaces_only_the_exported_entries(tmp_path):
    from mzsr_tf.export import _publish

    out = tmp_path / "out"
    (out / "serving" / "2").mkdir(parents=True)  # another served version
    (out / "notes.txt").write_text("mine")
    _publish(_fake_export(tmp_path / ".s1", "old"), out, overwrite=False)  # into an existing folder
    with pytest.raises(InputError, match="exists"):
        _publish(_fake_export(tmp_path / ".s2", "new"), out, overwrite=False)
    _publish(tmp_path / ".s2", out, overwrite=True)
    assert (out / FILES["weights_h5"]).read_text() == "new"
    assert (out / FILES["serving"] / "saved_model.pb").read_text() == "new"
    assert (out / "notes.txt").read_text() == "mine" and (out / "serving" / "2").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".s1", ".s2", "out"]  # stagings: export_all removes them


def test_a_failed_move_puts_the_old_export_back(tmp_path, monkeypatch):
    import os

    from mzsr_tf.export import _publish

    out = _fake_export(tmp_path / "out", "old")
    real_rename = os.rename

    def rename(src, dst):
        if str(dst).endswith(FILES["tflite"]) and ".replaced" not in str(dst) and "new" in Path(src).parent.name:
            raise OSError(28, "No space left on device")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(InputError, match="No space left"):
        _publish(_fake_export(tmp_path / "new", "new"), out, overwrite=True)
    for name in FILES.values():
        path = out / name
        assert (path / "saved_model.pb" if path.is_dir() else path).read_text() == "old", name


@pytest.mark.slow
def test_cli_overwrite_keeps_other_files_and_refuses_a_folder_holding_the_input(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    weights = out / "meta.weights.h5"
    save_params(distinct_params(1), weights)
    (out / "notes.txt").write_text("mine")
    code, err = run(["--weights", weights, "--out", out, "--overwrite"], capsys)
    assert code == 2 and "holds the input" in err and err.count("\n") == 1
    assert sorted(p.name for p in out.iterdir()) == ["meta.weights.h5", "notes.txt"]
    # the same export into a sibling folder, twice: the second replaces only the exported files
    out2 = tmp_path / "out2"
    out2.mkdir()
    (out2 / "notes.txt").write_text("mine")
    argv = ["--weights", weights, "--out", out2, "--kernel-size", 5, "--max-pixels", 64, "--max-steps", 1]
    assert run(argv, capsys)[0] == 0
    assert run(argv, capsys)[0] == 2
    assert run(argv + ["--overwrite"], capsys)[0] == 0
    assert (out2 / "notes.txt").read_text() == "mine" and weights.exists()
    assert sorted(p.name for p in out2.iterdir()) == sorted({"notes.txt"} | {n.split("/")[0] for n in FILES.values()})


def test_sigterm_mid_export_leaves_no_staging_folder(tmp_path):
    """A terminated export unwinds like Ctrl-C: the staging folder is removed, nothing is published."""
    import signal
    import subprocess
    import sys
    import time

    weights = save_params(distinct_params(2), tmp_path / "w.weights.h5")
    out = tmp_path / "out"
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "export", "--weights", str(weights), "--out", str(out), "--kernel-size", "5"],
        cwd=root,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not any(p.name.startswith(".out.") for p in tmp_path.iterdir()):  # staging has begun
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() is not None else ""
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    code, err = proc.wait(timeout=120), proc.stderr.read()
    assert code == 143 and "terminated" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.weights.h5"]


@pytest.mark.slow
@pytest.mark.parametrize("slopes", [0, 2])
def test_learned_rates_travel_into_the_weights_files_and_the_servings_adaptation(tmp_path, image, slopes):
    """Weights with meta-learned rates (plain, or with kernel slopes: ``meta.kernel_rates``): export keeps them, and
    the SavedModel and the device adapt as adapt.py does for them."""
    from mzsr_tf.meta import kernel_rates
    from mzsr_tf.weights import load_inner_lr

    params = distinct_params(4)
    rng = np.random.default_rng(0)
    rates = np.concatenate([rng.uniform(0.005, 0.02, (3, 16)), rng.uniform(-0.003, 0.003, (3, slopes))], 1)
    rates = rates.astype(np.float32)
    weights = save_params(params, tmp_path / "lslr.weights.h5", inner_lr=rates)
    out = tmp_path / "out"
    save_estimator(init_estimator(8, seed=4), tmp_path / "estimator.npz")
    argv = ["--weights", weights, "--out", out, "--kernel-size", KERNEL_SIZE, "--max-pixels", MAX_PIXELS]
    argv += ["--kernel-estimator", tmp_path / "estimator.npz"]
    assert cli.run(export_cli.main, [str(a) for a in argv]) == 0
    for name in (FILES["weights_h5"], FILES["weights_npz"]):
        np.testing.assert_array_equal(load_inner_lr(out / name), rates)
    served = tf.saved_model.load(str(out / FILES["serving"]))
    config = AdaptConfig.learned(rates, steps=4, precision="float32")
    expected = zero_shot_sr(params, image / np.float32(255), Degradation(validate_kernel(KERNEL), "direct"), 2, config)
    assert_rounds_alike(serve(served, image, KERNEL, 4)[0], to_uint8(expected.sr).numpy())

    # the device runs the same rule (without the guard): its learning_rates, one rate per tensor
    interpreter = Interpreter(model_path=str(out / FILES["tflite"]))
    table = runner(interpreter, "learning_rates")(kernel=embed_kernel(KERNEL, KERNEL_SIZE))["learning_rates"]
    np.testing.assert_allclose(table, kernel_rates(rates, kernel_features(KERNEL)), rtol=1e-5)
    assert slopes == 0 or not np.allclose(table, rates[:, :16], rtol=1e-3)
    lr = image.astype(np.float32) / 255.0
    losses = device_adapt(interpreter, lr, 4)
    device = dataclasses.replace(config, keep_best=False, noise_sigma=0.0)  # the device's son is noise-free
    fast, ref_losses, _ = adapt(params, lr, Degradation(validate_kernel(KERNEL), "direct"), 2, device)
    np.testing.assert_allclose(np.ravel(losses), ref_losses, atol=1e-5)
    weights = runner(interpreter, "get_weights")()
    for name, w in zip(WEIGHT_NAMES, fast):
        np.testing.assert_allclose(weights[name], w, atol=1e-5)


@pytest.mark.slow
def test_a_conditioned_start_travels_into_the_weights_files_and_the_servings_adaptation(tmp_path, image):
    """Weights with a kernel-conditioned start (``conditioning``): export keeps V, and the SavedModel adapts from
    θ(k) as adapt.py does."""
    from mzsr_tf.conditioning import START_FEATURES
    from mzsr_tf.weights import load_start_basis

    params = distinct_params(5)
    rng = np.random.default_rng(1)
    basis = [(2e-3 * rng.standard_normal((START_FEATURES, *s))).astype(np.float32) for s in param_shapes()]
    weights = save_params(params, tmp_path / "cond.weights.h5", start_basis=basis)
    stored = load_start_basis(weights)
    out = tmp_path / "out"
    save_estimator(init_estimator(8, seed=4), tmp_path / "estimator.npz")
    argv = ["--weights", weights, "--out", out, "--kernel-size", KERNEL_SIZE, "--max-pixels", MAX_PIXELS]
    argv += ["--kernel-estimator", tmp_path / "estimator.npz"]
    assert cli.run(export_cli.main, [str(a) for a in argv]) == 0
    for name in (FILES["weights_h5"], FILES["weights_npz"]):
        for a, b in zip(load_start_basis(out / name), stored):
            np.testing.assert_array_equal(a, b)
    served = tf.saved_model.load(str(out / FILES["serving"]))
    degradation = Degradation(validate_kernel(KERNEL), "direct")
    config = AdaptConfig(steps=3, precision="float32")
    expected = zero_shot_sr(params, image / np.float32(255), degradation, 2, config, start_basis=stored)
    assert_rounds_alike(serve(served, image, KERNEL, 3)[0], to_uint8(expected.sr).numpy())
    plain = zero_shot_sr(params, image / np.float32(255), degradation, 2, config)
    assert np.abs(to_uint8(plain.sr).numpy().astype(int) - serve(served, image, KERNEL, 3)[0].astype(int)).max() > 2
    # the blind signature starts from the rows for estimated kernels, as the library does with the estimate
    blind = served.signatures["blind"](image=tf.constant(image[None]), steps=tf.constant(3))
    estimate = estimate_kernel(image / np.float32(255), 2, load_estimator(tmp_path / "estimator.npz"))
    np.testing.assert_allclose(blind["kernel"].numpy(), estimate.kernel, atol=1e-6)
    expected = zero_shot_sr(params, image / np.float32(255), estimate.degradation, 2, config, start_basis=stored)
    assert_rounds_alike(blind["sr"].numpy()[0], to_uint8(expected.sr).numpy())
    given = serve(served, image, blind["kernel"].numpy(), 3)[0]  # the same kernel as given: the other start
    assert np.abs(given.astype(int) - blind["sr"].numpy()[0].astype(int)).max() > 2
