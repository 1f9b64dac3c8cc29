"""The kernel-accuracy benchmark's size measure and table (the estimator itself: test_kernel_estimation.py)."""

import math

import pytest

from benchmarks.kernel_accuracy import log_area_ratio, log_eigen_error, main, render
from mzsr_tf import cli
from mzsr_tf.kernels import gaussian_kernel


def test_log_area_ratio_is_zero_for_the_same_size_and_log2_for_twice_the_variances():
    k = gaussian_kernel(1.0, 2.0, 0.3, 31)
    assert log_area_ratio(k, k) == pytest.approx(0.0, abs=1e-9)
    assert log_area_ratio(gaussian_kernel(2.0, 1.0, 1.2, 31), k) == pytest.approx(0.0, abs=1e-6)  # size, not shape
    assert log_area_ratio(gaussian_kernel(2.0, 4.0, 0.3, 31), k) == pytest.approx(math.log(2), abs=1e-4)
    assert log_area_ratio(k, gaussian_kernel(2.0, 4.0, 0.3, 31)) == pytest.approx(-math.log(2), abs=1e-4)
    assert log_area_ratio(gaussian_kernel(2.0, 4.0, 0.3, 31), k, own=k) == pytest.approx(0.0, abs=1e-4)  # Σ adds


def test_table_names_the_worst_image(tmp_path):
    per_image = {
        "a.png": {"kernel_psnr": 50.0, "log_area_ratio": 0.1},
        "b.png": {"kernel_psnr": 40.0, "log_area_ratio": -0.5},
    }
    report = {"set": "S", "scale": 2, "images": 2, "kernel_psnr": 45.0, "log_area_ratio_mean": -0.2,
              "log_area_ratio_std": 0.3, "too_blurry": 0, "too_sharp": 1, "per_image": per_image,
              "log_area_ratio_own_mean": 0.01, "log_area_ratio_own_std": 0.2}  # fmt: skip
    assert "| S | ×2 | 2 | 45.00 | -0.200 ± 0.300 | 0 | 1 | b.png (-0.50) | +0.010 ± 0.200 |  |" in render([report])
    assert render([report | {"log_eigen_error_mean": 0.25}]).splitlines()[-1].endswith("| +0.010 ± 0.200 | 0.250 |")
    assert "| S, run7 | ×2 |" in render([report | {"estimator": "runs/run7/final.npz"}])  # another estimator's row


def test_direction_error_sees_shape_as_well_as_size():
    k = gaussian_kernel(1.0, 3.0, 0.3, 31)
    assert log_eigen_error(k, k) == pytest.approx(0.0, abs=1e-12)  # exact: no guard on the way
    turned = gaussian_kernel(3.0, 1.0, 0.3, 31)  # the same area, the axes swapped: the area ratio is 0
    assert log_area_ratio(turned, k) == pytest.approx(0.0, abs=1e-6)
    assert log_eigen_error(turned, k) == pytest.approx(2 * math.log(3), abs=1e-3)


def test_a_missing_folder_is_one_line_and_exit_2(tmp_path, capsys):
    assert cli.run(main, ["--hr", str(tmp_path / "nope")]) == 2  # as python -m benchmarks.kernel_accuracy
    assert capsys.readouterr().err.count("\n") == 1
    assert cli.run(main, ["--photos", "camera", "--kernel-draws", "0"]) == 2
    err = capsys.readouterr().err
    assert "--kernel-draws" in err and "must be >= 1" in err and err.count("\n") == 1
