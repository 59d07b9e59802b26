"""Shared fixtures: the catalogue as parameters with readable ids, and random RNN inputs kept off kinks."""
import os

import numpy as np
import pytest
from hypothesis import settings

# In CI the property tests replay the same examples every run (derandomize): a red CI then always means the same
# failure. Locally they explore new examples each run.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

import generated


@pytest.fixture(params=generated.ACTIVATIONS)
def module(request):
    """Each generated module in turn (test ids are the activation names)."""
    return generated.load(request.param)


def rnn_inputs(T, N, D, H, dtype=np.float64, seed=0, scale=0.5):
    """Random (x, h0, V, W, b) with modest weights, so that the recurrence neither saturates nor explodes."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, N, D))
    h0 = rng.standard_normal((N, H)) * 0.5
    V = rng.standard_normal((H, D)) * scale / np.sqrt(D)
    W = rng.standard_normal((H, H)) * scale / np.sqrt(H)
    b = rng.standard_normal(H) * 0.1
    return tuple(a.astype(dtype) for a in (x, h0, V, W, b))


def off_kink_inputs(module, T, N, D, H, margin=1e-3, seed=0):
    """rnn_inputs whose pre-activations all lie at least ``margin`` from the activation's kinks."""
    from verify import near_kink

    for s in range(seed, seed + 1000):
        args = rnn_inputs(T, N, D, H, seed=s)
        if near_kink(module, *args) >= margin:
            return args
    raise RuntimeError(f"no inputs clear of the kinks of {module.NAME} found")
