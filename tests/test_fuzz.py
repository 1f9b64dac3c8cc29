"""Property-based: random bytes, headers and kernels give a valid result or one clear line, never a traceback.

Readers (``read_image``, ``load_kernel``, ``validate_kernel``) and ``adapt.py`` end to end (exit 0 with an
output, or exit 2 with one line and nothing written).
"""

import io

import numpy as np
import pytest
import scipy.io
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from mzsr_tf.commands import adapt
from mzsr_tf.errors import InputError
from mzsr_tf.io import read_image
from mzsr_tf.kernels import load_kernel, validate_kernel
from mzsr_tf.model import init_params
from mzsr_tf.weights import save_params

FIXTURES = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
HEADERS = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"BM", b"II*\x00", b"MM\x00*", b"GIF89a", b"\x93NUMPY"]
SUFFIXES = [".png", ".jpg", ".bmp", ".tif", ".tiff"]


def _valid_image_bytes(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


VALID = {s: _valid_image_bytes(f) for s, f in ((".png", "PNG"), (".jpg", "JPEG"), (".bmp", "BMP"), (".tif", "TIFF"))}


def _one_line_naming(error: Exception, path) -> None:
    assert isinstance(error, InputError)
    assert "\n" not in str(error) and str(path) in str(error)


def _check_read(path):
    try:
        image = read_image(path, max_pixels=10**6)
    except InputError as e:
        _one_line_naming(e, path)
        return None
    rgb = image.rgb
    assert rgb.dtype == np.float32 and rgb.ndim == 3 and rgb.shape[-1] == 3 and min(rgb.shape[:2]) >= 1
    assert np.isfinite(rgb).all() and rgb.min() >= 0 and rgb.max() <= 1
    return image


@settings(max_examples=200, deadline=None, suppress_health_check=FIXTURES)
@given(header=st.sampled_from(HEADERS), body=st.binary(max_size=600), suffix=st.sampled_from(SUFFIXES))
def test_read_image_survives_random_bytes(tmp_path, header, body, suffix):
    path = tmp_path / f"x{suffix}"
    path.write_bytes(header + body)
    _check_read(path)


@settings(max_examples=200, deadline=None, suppress_health_check=FIXTURES)
@given(suffix=st.sampled_from(sorted(VALID)), data=st.data())
def test_read_image_survives_corrupted_real_files(tmp_path, suffix, data):
    raw = bytearray(VALID[suffix])
    for _ in range(data.draw(st.integers(1, 8))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    raw = raw[: data.draw(st.integers(1, len(raw)))]
    path = tmp_path / f"x{suffix}"
    path.write_bytes(bytes(raw))
    _check_read(path)


KERNEL_ARRAYS = hnp.arrays(
    dtype=st.sampled_from([np.float64, np.float32, np.int32, np.uint8, np.bool_, np.complex64]),
    shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6),
    elements={"allow_nan": True, "allow_infinity": True},
)


@settings(max_examples=300, deadline=None)
@given(kernel=KERNEL_ARRAYS)
def test_validate_kernel_returns_a_normalised_kernel_or_one_line(kernel):
    try:
        k = validate_kernel(kernel, "k")
    except InputError as e:
        assert "\n" not in str(e) and str(e).startswith("k: ")
        return
    assert k.ndim == 2 and min(k.shape) >= 1 and np.isfinite(k).all()
    np.testing.assert_allclose(k.sum(), 1.0, rtol=1e-9)


@settings(max_examples=150, deadline=None, suppress_health_check=FIXTURES)
@given(
    kernel=KERNEL_ARRAYS, body=st.binary(max_size=300), kind=st.sampled_from(["npy", "mat", "npy_bytes", "mat_bytes"])
)
def test_load_kernel_survives_random_files(tmp_path, kernel, body, kind):
    path = tmp_path / f"k.{kind.split('_')[0]}"
    if kind == "npy":
        np.save(path, kernel)
    elif kind == "mat":
        try:
            scipy.io.savemat(path, {"kernel": kernel})
        except Exception:  # scipy cannot write every array (e.g. 0-d bool): nothing to load
            return
    else:
        path.write_bytes(body)
    try:
        k = load_kernel(path)
    except InputError as e:
        _one_line_naming(e, path)
        return
    assert np.isfinite(k).all() and np.isclose(k.sum(), 1.0)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return save_params(init_params(0), tmp_path_factory.mktemp("fuzz") / "w.weights.h5")


@settings(max_examples=40, deadline=None, suppress_health_check=FIXTURES)
@given(
    image=st.one_of(
        st.binary(max_size=200).map(lambda b: ("bytes", b)),
        hnp.arrays(np.uint8, hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=24)).map(
            lambda a: ("array", a)
        ),
    ),
    kernel=st.one_of(
        KERNEL_ARRAYS,
        hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, max_side=5), elements=st.floats(0, 1e300)),
    ),
)
def test_adapt_cli_gives_an_output_or_one_line(tmp_path_factory, weights, capsys, image, kernel):
    root = tmp_path_factory.mktemp("case")
    photo, kernel_path, out = root / "photo.png", root / "k.npy", root / "out.png"
    kind, value = image
    if kind == "bytes":
        photo.write_bytes(value)
    else:
        if value.ndim == 3 and value.shape[-1] not in (1, 3, 4):
            value = value[..., :1]
        Image.fromarray(value.squeeze(-1) if value.ndim == 3 and value.shape[-1] == 1 else value).save(photo)
    np.save(kernel_path, kernel)
    before = sorted(p.name for p in root.iterdir())
    argv = [str(photo), "--kernel", str(kernel_path), "--weights", str(weights), "--steps", "1", "--out", str(out)]
    code = adapt.cli.run(adapt.main, argv)
    err = capsys.readouterr().err
    event("adapted" if code == 0 else "refused")
    if code == 0:
        assert _check_read(out) is not None
    else:
        assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
        assert sorted(p.name for p in root.iterdir()) == before
