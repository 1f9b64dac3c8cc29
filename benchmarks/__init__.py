"""Benchmarks, run as ``python -m benchmarks.NAME``; each writes JSON under ``benchmarks/results``."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before any module imports TensorFlow
