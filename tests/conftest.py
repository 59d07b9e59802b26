"""Shared fixtures: the catalogue as parameters with readable ids, and random RNN inputs kept off kinks."""
import os

import numpy as np
import pytest
from hypothesis import settings

# `make test` (and plain pytest) replays the same examples on every clone and every run: derandomized, with no
# example database, so a red suite always means the same failure and no .hypothesis/ directory replays an old one.
# `make explore` (HYPOTHESIS_PROFILE=explore) draws new examples each run and keeps the failures it finds in
# .hypothesis/; each derivation there is still under the time limit, so no example can run for minutes.
settings.register_profile("replay", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "replay"))

import generated
import generated._support


@pytest.fixture(params=generated.ACTIVATIONS)
def module(request):
    """Each generated module in turn (test ids are the activation names)."""
    return generated.load(request.param)


TARGETS = ("numpy", "numba", "numba_blas", "numba_step")


@pytest.fixture(params=[(name, target) for name in generated.ACTIVATIONS for target in TARGETS],
                ids=lambda p: f"{p[0]}-{p[1]}")
def kernel(request):
    """Each generated module with each target forced (ids ``tanh-numpy``, ``tanh-numba``, ``tanh-numba_step``, ...): the
    test runs that target whatever its problem size, instead of the size-based dispatch (which sends the small
    problems of tests to Numba where it is installed). The compiled targets are skipped, saying so, where Numba (and
    for numba_blas SciPy) is not installed. numba_blas compiles the backward pass of every activation and the forward
    pass where ``_forward_blas`` exists (f vectorises); elsewhere its forward is NumPy's. numba_step is NumPy's loops
    with each step's elementwise work compiled (``_forward_step``, ``_backward_step``), in every module."""
    name, target = request.param
    module = generated.load(name)
    if target in ("numba", "numba_step") and module.numba is None:
        pytest.skip("Numba (the fast extra) is not installed: the compiled target is not tested")
    if target == "numba_blas" and not generated._support.NUMBA_BLAS:
        pytest.skip("Numba and SciPy (the fast extra) are not both installed: the compiled BLAS target is not tested")
    saved = module.BACKEND
    module.BACKEND = target
    yield module
    module.BACKEND = saved


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
