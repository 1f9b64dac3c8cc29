"""Properties of ``mzsr_tf.kernels``: Sigma = R(theta) diag(l1, l2) R(theta)^T, p = (x, y) = (col, row)."""

import math
import re

import numpy as np
import pytest
import scipy.io
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from mzsr_tf.errors import InputError
from mzsr_tf.kernels import (
    KERNEL_SIZE,
    NAMED_DEGRADATIONS,
    Degradation,
    gaussian_kernel,
    load_kernel,
    resolve_degradation,
    sample_kernel,
    validate_kernel,
)

BIG = 41  # grid size at which truncating a Gaussian with variance <= 10 is negligible (radius > 6 sigma)
seeds = st.tuples(st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1))


def covariance_of(kernel):
    """Second moments of a kernel about the grid centre ``size / 2 - 0.5``, p = (col offset, row offset)."""
    kernel = np.asarray(kernel, np.float64)
    centre = kernel.shape[0] / 2 - 0.5
    y, x = np.mgrid[0 : kernel.shape[0], 0 : kernel.shape[1]] - centre
    sxy = np.sum(kernel * x * y)
    return np.array([[np.sum(kernel * x * x), sxy], [sxy, np.sum(kernel * y * y)]])


def paper_sigma(l1, l2, theta):
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    return rot @ np.diag([l1, l2]) @ rot.T


# --- Gaussian kernels -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "l1, l2, theta",
    [(4.0, 1.0, -0.5), (1.0, 1.0, 0.0), (2.5, 1.2, 1.0), (10.0, 1.0, 2.8), (6.0, 2.0, math.pi / 4), (3.0, 1.5, 0.3)],
)
def test_gaussian_kernel_covariance_is_sigma(l1, l2, theta):
    """On a big grid the kernel's covariance is Sigma (sampling a Gaussian of variance >= 1 aliases < 1e-6)."""
    kernel = gaussian_kernel(l1, l2, theta, size=BIG).numpy()
    np.testing.assert_allclose(kernel.sum(), 1.0, atol=1e-12)
    np.testing.assert_allclose(covariance_of(kernel), paper_sigma(l1, l2, theta), rtol=0, atol=1e-5)


@pytest.mark.parametrize("l1, l2, theta", [(4.0, 1.0, -0.5), (2.0, 2.0, 0.0), (5.0, 0.6, 1.0), (1.2, 1.0, 2.8)])
def test_kernel_features_are_log_size_and_log_anisotropy(l1, l2, theta):
    from mzsr_tf.kernels import kernel_features

    kernel = gaussian_kernel(l1, l2, theta, size=BIG)
    expected = [np.log(np.sqrt(l1 * l2)), np.log(l1 / l2)]
    np.testing.assert_allclose(kernel_features(kernel), expected, atol=1e-4)
    shifted = np.pad(kernel.numpy()[:-2, 1:], [(2, 0), (0, 1)])  # off-centre: the same features
    np.testing.assert_allclose(kernel_features(shifted), expected, atol=1e-3)


def test_kernel_features_of_no_blur_are_the_floor():
    from mzsr_tf.kernels import IDENTITY, LAMBDA_FLOOR, kernel_features

    np.testing.assert_allclose(kernel_features(IDENTITY), [np.log(LAMBDA_FLOOR), 0.0], atol=1e-6)
    np.testing.assert_allclose(kernel_features(5 * np.pad(IDENTITY, 3)), [np.log(LAMBDA_FLOOR), 0.0], atol=1e-6)


def test_gaussian_kernel_orientation_of_g_d_ani():
    """theta = -0.5 with l1 > l2: the long axis runs from top-right to bottom-left (x and y anti-correlated)."""
    kernel = gaussian_kernel(4.0, 1.0, -0.5, size=BIG).numpy()
    c = BIG // 2
    assert covariance_of(kernel)[0, 1] < -1.0
    assert kernel[c - 3, c + 3] > 10 * kernel[c - 3, c - 3]  # up-right is on the long axis, up-left is not


def test_gaussian_kernel_dtype_and_shape():
    kernel = gaussian_kernel(2.0, 1.0, 0.3, size=15, dtype=tf.float32)
    assert kernel.shape == (15, 15) and kernel.dtype == tf.float32
    assert np.unravel_index(np.argmax(kernel.numpy()), (15, 15)) == (7, 7)


# --- the meta-training sampler ----------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(seed=seeds, scale=st.sampled_from([2, 3, 4]))
def test_sample_kernel_is_a_normalised_non_negative_kernel(seed, scale):
    kernel = sample_kernel(tf.constant(seed, tf.int64), scale).numpy()
    assert kernel.shape == (KERNEL_SIZE, KERNEL_SIZE) and kernel.dtype == np.float32
    assert np.all(kernel >= 0)
    assert abs(float(kernel.sum(dtype=np.float64)) - 1.0) < 1e-5


@settings(max_examples=25, deadline=None)
@given(seed=seeds, other=seeds)
def test_sample_kernel_is_deterministic_per_seed_and_differs_across_seeds(seed, other):
    first = sample_kernel(tf.constant(seed, tf.int64), 2).numpy()
    np.testing.assert_array_equal(first, sample_kernel(tf.constant(seed, tf.int64), 2).numpy())
    if other != seed:
        assert not np.allclose(first, sample_kernel(tf.constant(other, tf.int64), 2).numpy())


@pytest.mark.parametrize("scale", [2, 4])
def test_sample_kernel_eigenvalues_are_in_the_paper_ranges(scale):
    """lambda1 ~ U[1, 2.5 s], lambda2 ~ U[1, lambda1], theta ~ U[0, pi), read back from the covariance.

    Sixty fixed seeds: every sample lies in range, and together they cover the range (so a sampler
    that ignored the scale, or drew a fixed orientation, would fail).
    """
    eigen, corr = [], []
    for i in range(60):
        kernel = sample_kernel(tf.constant([i, 1234]), scale, size=BIG, dtype=tf.float64).numpy()
        sigma = covariance_of(kernel)
        eigen.append(np.linalg.eigvalsh(sigma)[::-1])  # (lambda1, lambda2), largest first
        corr.append(sigma[0, 1] / math.sqrt(sigma[0, 0] * sigma[1, 1]))
    l1, l2 = np.array(eigen).T
    tol = 1e-5
    assert np.all(l2 >= 1 - tol) and np.all(l1 >= l2) and np.all(l1 <= 2.5 * scale + tol)
    assert l1.max() > 2.5 * scale - 0.1 * (2.5 * scale - 1) and l1.min() < 1 + 0.2 * (2.5 * scale - 1)
    assert min(corr) < -0.3 and max(corr) > 0.3  # orientations on both diagonals


def test_sample_kernel_min_variance_widens_the_range_to_sharp_kernels():
    """Kernels sharper than the paper's sharpest (isotropic, variance 1) appear only with min_variance < 1."""
    sharpest = float(gaussian_kernel(1.0, 1.0, 0.0, KERNEL_SIZE).numpy().max())

    def peaks(min_variance):
        kernels = [sample_kernel(tf.constant([i, 77]), 2, min_variance=min_variance) for i in range(60)]
        return [float(tf.reduce_max(k)) for k in kernels]

    assert max(peaks(1.0)) <= sharpest + 1e-6
    assert max(peaks(0.2)) > 1.5 * sharpest


# --- named benchmark degradations (MZSR Table 2) ----------------------------------------------


@pytest.mark.parametrize(
    "name, subsample, size",
    [("g_d_0.2", "direct", 15), ("g_d_2.0", "direct", 21), ("g_d_ani", "direct", 15), ("g_b_1.3", "bicubic", 15)],
)
def test_named_kernel_degradations(name, subsample, size):
    deg = NAMED_DEGRADATIONS[name]()
    assert isinstance(deg, Degradation) and deg.name == name and deg.subsample == subsample
    assert deg.kernel.shape == (size, size)
    np.testing.assert_allclose(deg.kernel.sum(), 1.0, atol=1e-12)
    assert np.unravel_index(np.argmax(deg.kernel), deg.kernel.shape) == (size // 2, size // 2)
    np.testing.assert_allclose(deg.kernel, deg.kernel[::-1, ::-1], atol=1e-15)  # point-symmetric


def test_named_isotropic_and_anisotropic_kernels():
    for name in ("g_d_0.2", "g_d_2.0", "g_b_1.3"):
        k = NAMED_DEGRADATIONS[name]().kernel
        np.testing.assert_allclose(k, k.T, atol=1e-15)
        np.testing.assert_allclose(k, k[::-1], atol=1e-15)
    ani = NAMED_DEGRADATIONS["g_d_ani"]().kernel
    assert np.abs(ani - ani.T).max() > 1e-3 or np.abs(ani - ani[::-1]).max() > 1e-3
    # Wider blur means a lower peak: 0.2 < 1.3 < 2.0 in variance.
    peaks = {n: NAMED_DEGRADATIONS[n]().kernel.max() for n in ("g_d_0.2", "g_b_1.3", "g_d_2.0")}
    assert peaks["g_d_0.2"] > peaks["g_b_1.3"] > peaks["g_d_2.0"]


def test_named_bicubic_has_no_kernel():
    deg = NAMED_DEGRADATIONS["bicubic"]()
    assert deg.kernel is None and deg.subsample == "bicubic"


# --- loading and validation -------------------------------------------------------------------


def _unnormalised_kernel():
    return 3.0 * gaussian_kernel(3.0, 1.0, 0.7, size=13).numpy()


@pytest.mark.parametrize("variable", ["Kernel", "kernel"])
def test_load_kernel_mat(tmp_path, variable):
    raw = _unnormalised_kernel()
    path = tmp_path / "k.mat"
    scipy.io.savemat(path, {variable: raw, "other": np.ones(3)})
    kernel = load_kernel(path)
    assert kernel.dtype == np.float64 and kernel.shape == raw.shape
    np.testing.assert_allclose(kernel, raw / raw.sum(), rtol=1e-12)


def test_load_kernel_npy_normalises(tmp_path):
    raw = _unnormalised_kernel().astype(np.float32)
    path = tmp_path / "k.npy"
    np.save(path, raw)
    np.testing.assert_allclose(load_kernel(path), raw / raw.sum(dtype=np.float64), rtol=1e-6)
    np.testing.assert_allclose(load_kernel(path).sum(), 1.0, atol=1e-12)


def test_resolve_degradation_from_a_file_and_subsample_override(tmp_path):
    raw = _unnormalised_kernel()
    scipy.io.savemat(tmp_path / "kernelgan_x2.mat", {"Kernel": raw})
    deg = resolve_degradation(str(tmp_path / "kernelgan_x2.mat"))
    assert deg.subsample == "direct" and deg.name == "kernelgan_x2"
    np.testing.assert_allclose(deg.kernel, raw / raw.sum(), rtol=1e-12)
    assert resolve_degradation("g_d_ani", subsample="bicubic").subsample == "bicubic"
    assert resolve_degradation("g_b_1.3").subsample == "bicubic"


@pytest.mark.parametrize(
    "kernel, message",
    [
        (np.ones((3, 3, 2)), "2-D"),
        (np.ones(5), "2-D"),
        (np.array([[1.0, np.nan], [1.0, 1.0]]), "NaN"),
        (np.array([[1.0, np.inf], [1.0, 1.0]]), "Inf"),
        (np.zeros((3, 3)), "positive sum"),
        (np.array([[1.0, -1.0], [0.5, -0.5]]), "positive sum"),
        (-np.ones((3, 3)), "positive sum"),
        (np.array([["a", "b"], ["c", "d"]]), "real number"),
        (np.array([[1.0, None], [1.0, 1.0]], dtype=object), "real number"),
        (np.ones((3, 3), complex), "real number"),
        (np.ones((3, 1, 3)), "2-D"),
    ],
)
def test_validate_kernel_rejects(kernel, message):
    with pytest.raises(InputError, match=message):
        validate_kernel(kernel, "my_kernel")


@pytest.mark.parametrize(
    "shape, kept",
    [
        ((1, 1), (1, 1)),
        ((1, 5), (1, 5)),
        ((5, 1), (5, 1)),
        ((3, 4, 1), (3, 4)),
        ((1, 3, 4), (3, 4)),
        ((1, 5, 1), (1, 5)),
    ],
)
def test_validate_kernel_takes_any_h_by_w(tmp_path, shape, kept):
    k = validate_kernel(np.ones(shape))
    assert k.shape == kept and np.isclose(k.sum(), 1.0)
    scipy.io.savemat(tmp_path / "k.mat", {"kernel": np.ones(kept)})  # through the file loader too
    assert load_kernel(tmp_path / "k.mat").shape == kept


@pytest.mark.parametrize("value", [1e308, np.finfo(np.float64).max, 1e-320])
def test_validate_kernel_normalises_extreme_values(value):
    raw = np.full((9, 9), value)
    raw[4, 4] = value  # the same everywhere: a box
    k = validate_kernel(raw)
    np.testing.assert_allclose(k, np.full((9, 9), 1 / 81), rtol=1e-12)


def test_validate_kernel_names_the_source():
    with pytest.raises(InputError, match=r"^my_kernel: "):
        validate_kernel(np.zeros((3, 3)), "my_kernel")


@pytest.mark.parametrize(
    "kernel, message",
    [(np.ones((3, 3, 2)), "2-D"), (np.full((3, 3), np.nan), "NaN"), (np.zeros((3, 3)), "positive sum")],
)
def test_load_kernel_validates_file_contents(tmp_path, kernel, message):
    scipy.io.savemat(tmp_path / "bad.mat", {"kernel": kernel})
    np.save(tmp_path / "bad.npy", kernel)
    for path in (tmp_path / "bad.mat", tmp_path / "bad.npy"):
        with pytest.raises(InputError, match=message) as info:
            load_kernel(path)
        assert str(path) in str(info.value)


def test_load_kernel_unknown_extension(tmp_path):
    path = tmp_path / "kernel.txt"
    path.write_text("1 2 3\n")
    with pytest.raises(InputError, match="unsupported kernel format") as info:
        load_kernel(path)
    assert str(path) in str(info.value)


def test_load_kernel_mat_without_the_variable(tmp_path):
    path = tmp_path / "k.mat"
    scipy.io.savemat(path, {"weights": np.ones((3, 3))})
    with pytest.raises(InputError, match=r"no variable 'Kernel' or 'kernel'.*weights") as info:
        load_kernel(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("suffix", [".mat", ".npy"])
def test_load_kernel_corrupt_file(tmp_path, suffix):
    path = tmp_path / f"corrupt{suffix}"
    path.write_bytes(b"MATLAB 5.0 MAT-file, but then nothing useful \x00\x01\x02" * 3)
    with pytest.raises(InputError, match="cannot read kernel") as info:
        load_kernel(path)
    assert str(path) in str(info.value)


def test_load_kernel_truncated_mat(tmp_path):
    path = tmp_path / "k.mat"
    scipy.io.savemat(path, {"Kernel": np.ones((15, 15))})
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(InputError) as info:
        load_kernel(path)
    assert str(path) in str(info.value)


def test_load_kernel_missing_file(tmp_path):
    path = tmp_path / "absent.mat"
    with pytest.raises(InputError, match="not found") as info:
        load_kernel(path)
    assert str(path) in str(info.value)


def test_resolve_degradation_unknown_name_lists_the_valid_names():
    with pytest.raises(InputError, match=re.escape("unknown kernel 'g_d_9.9'")) as info:
        resolve_degradation("g_d_9.9")
    for name in NAMED_DEGRADATIONS:
        assert name in str(info.value)


def test_resolve_degradation_bad_subsample():
    with pytest.raises(InputError, match="subsample"):
        resolve_degradation("g_d_2.0", subsample="nearest")
