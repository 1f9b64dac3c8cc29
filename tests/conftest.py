"""Shared fixtures: small pictures from scikit-image's bundled data (no network, no ../shared)."""

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import skimage.data

# Before any test module imports TensorFlow (and thus ``mzsr_tf``):
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Hypothesis keeps its example database and caches here rather than in a .hypothesis/ in the work tree.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "mzsr-tf-hypothesis"))
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # plain ``pytest`` (not ``python -m pytest``) does not add the repo root
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def astronaut_uint8():
    """A 128x128 uint8 RGB crop of ``skimage.data.astronaut()`` (face and suit: edges and texture)."""
    return np.ascontiguousarray(skimage.data.astronaut()[40:168, 160:288])


@pytest.fixture(scope="session")
def chelsea_uint8():
    """A 64x80 uint8 RGB crop of ``skimage.data.chelsea()`` (fur texture)."""
    return np.ascontiguousarray(skimage.data.chelsea()[100:164, 150:230])


@pytest.fixture(scope="session")
def astronaut64(astronaut_uint8):
    """The astronaut crop as float64 HWC in [0, 1]."""
    return astronaut_uint8.astype(np.float64) / 255.0


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run the tests marked slow (CI runs them)")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: minutes-long end-to-end runs; skipped unless --runslow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
