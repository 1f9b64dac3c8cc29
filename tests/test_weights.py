"""The shipped weights: present, loadable, finite, within the 1 MB budget, and not a fresh init."""

import numpy as np
import pytest

from mzsr_tf.errors import InputError
from mzsr_tf.model import init_params, load_params
from mzsr_tf.weights import WEIGHTS_DIR, default_weights


def test_shipped_meta_weights_load_and_fit_the_budget():
    path = default_weights(2, "direct")
    assert path.stat().st_size <= 1_000_000
    params = load_params(path)
    assert len(params) == 16 and all(np.all(np.isfinite(p)) for p in params)
    # Trained, not an initialisation: biases moved away from zero.
    assert max(float(np.abs(p).max()) for p in params[1::2]) > 1e-3
    assert not np.allclose(params[0], init_params(0)[0])


def test_missing_shipped_weights_say_what_exists():
    with pytest.raises(InputError, match="mzsr_x2_direct.weights.h5"):
        default_weights(4, "direct")
    assert (WEIGHTS_DIR / "pretrained_x2_direct.weights.h5").is_file()
