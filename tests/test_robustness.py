"""Bad input gets a clear error before any work; extreme pre-activations stay finite and silent."""
import warnings

import numpy as np
import pytest

import generated
from tests.conftest import rnn_inputs

tanh = generated.load("tanh")
T, N, D, H = 4, 2, 3, 5


def good():
    return list(rnn_inputs(T, N, D, H))


@pytest.mark.parametrize("index, value, message", [
    (0, np.zeros((T, N)), r"x must have 3 dimensions \(T, N, D\), got shape \(4, 2\)"),
    (1, np.zeros((N, H, 1)), r"h0 must have 2 dimensions \(N, H\), got shape \(2, 5, 1\)"),
    (1, np.zeros((N + 1, H)), r"h0 must have shape \(N, H\) = \(2, 5\), got \(3, 5\)"),
    (2, np.zeros((H, D + 1)), r"V must have shape \(H, D\) = \(5, 3\), got \(5, 4\)"),
    (3, np.zeros((H, H - 1)), r"W must have shape \(H, H\) = \(5, 5\), got \(5, 4\)"),
    (4, np.zeros((H, 1)), r"b must have shape \(H,\) = \(5,\), got \(5, 1\)"),
    (0, np.zeros((0, N, D)), r"sizes must be at least 1"),
])
def test_forward_shape_errors_name_the_argument(index, value, message):
    args = good()
    args[index] = value
    with pytest.raises(ValueError, match=message):
        tanh.forward(*args)


@pytest.mark.parametrize("index, value, message", [
    (2, np.zeros((H, D + 1)), r"V must have shape \(H, D\) = \(5, 3\), got \(5, 4\): its D = 4 disagrees with D = 3 "
                              r"from x, shape \(T, N, D\) = \(4, 2, 3\) \(either V or x is wrong\)"),
    (1, np.zeros((N + 1, H)), r"h0 must have shape \(N, H\) = \(2, 5\), got \(3, 5\): its N = 3 disagrees with N = 2 "
                              r"from x, shape \(T, N, D\) = \(4, 2, 3\) \(either h0 or x is wrong\)"),
    (3, np.zeros((H - 1, H + 1)), r"W must have shape \(H, H\) = \(5, 5\), got \(4, 6\): its H = 4 disagrees with "
                                  r"H = 5 from h0, shape \(N, H\) = \(2, 5\); its H = 6 disagrees with H = 5 from h0"),
    (4, np.zeros(H + 2), r"b must have shape \(H,\) = \(5,\), got \(7,\): its H = 7 disagrees with H = 5 from h0, "
                         r"shape \(N, H\) = \(2, 5\) \(either b or h0 is wrong\)"),
])
def test_a_size_disagreement_names_both_arguments_and_where_each_size_came_from(index, value, message):
    """x has D = 3 but V has 4 columns: either may be wrong, so the error names both and where D was read."""
    args = good()
    args[index] = value
    with pytest.raises(ValueError, match=message):
        tanh.forward(*args)


@pytest.mark.parametrize("index, value, message", [
    (0, np.zeros((T, N, D), dtype=np.int64), r"x must be a float32 or float64 array, got dtype int64"),
    (3, np.zeros((H, H), dtype=np.complex128), r"W must be a float32 or float64 array, got dtype complex128"),
    (2, "V", r"V must be a float32 or float64 array, got str"),
    (4, np.zeros(H, dtype=np.float32), r"must share one dtype .* b float32"),
])
def test_forward_type_errors_name_the_argument(index, value, message):
    args = good()
    args[index] = value
    with pytest.raises(TypeError, match=message):
        tanh.forward(*args)


def test_backward_checks_dh_and_cache():
    h, cache = tanh.forward(*good())
    with pytest.raises(ValueError, match=r"dh must have shape \(T, N, H\) = \(4, 2, 5\), got \(4, 2, 4\)"):
        tanh.backward(np.zeros((T, N, H - 1)), cache)
    with pytest.raises(TypeError, match=r"dh must have the dtype of the forward pass, float64, got float32"):
        tanh.backward(np.zeros((T, N, H), dtype=np.float32), cache)
    with pytest.raises(TypeError, match=r"cache must be the Cache that forward returned, got tuple"):
        tanh.backward(np.zeros((T, N, H)), tuple(cache))


def test_step_and_jacobian_errors():
    x, h0, V, W, b = good()
    with pytest.raises(ValueError, match=r"x_t must have 2 dimensions \(N, D\), got shape \(4, 2, 3\)"):
        tanh.step_forward(x, h0, V, W, b)
    _, cache = tanh.forward(x, h0, V, W, b)
    for t in (0, T + 1, 1.5, True):
        with pytest.raises(ValueError, match=r"t must be an integer in 1..T = 1..4"):
            tanh.jacobian(cache, t)


def extreme_inputs(magnitude, dtype, seed=0):
    """Pre-activations of size ~magnitude with both signs (and some exact zeros); a weak recurrence."""
    rng = np.random.default_rng(seed)
    Hh = 6
    x = rng.choice([-1.0, 1.0], size=(5, 3, Hh)) * magnitude * rng.uniform(0.5, 1.0, size=(5, 3, Hh))
    x[0, 0, :2] = 0.0
    V = np.eye(Hh)
    W = rng.standard_normal((Hh, Hh)) * 1e-3 / max(1.0, magnitude / 1e3)
    h0 = np.zeros((3, Hh))
    b = np.zeros(Hh)
    return tuple(a.astype(dtype) for a in (x, h0, V, W, b))


@pytest.mark.parametrize("magnitude", [1e3, 1e5])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extreme_pre_activations_are_finite_and_silent(module, magnitude, dtype):
    """|E| up to 1e5: no overflow, invalid or divide warning, and finite results (underflow to 0 is fine)."""
    args = extreme_inputs(magnitude, dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(over="raise", divide="raise", invalid="raise", under="ignore"):
            h, cache = module.forward(*args)
            grads = module.backward(np.ones_like(h), cache)
            J = module.jacobian(cache, 3)
    for name, a in [("h", h), ("J", J), *zip(grads._fields, grads)]:
        assert a.dtype == dtype, name
        assert np.all(np.isfinite(a)), f"{module.NAME}: {name} is not finite"
