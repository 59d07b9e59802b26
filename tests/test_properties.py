"""Property tests (hypothesis): random sizes down to 1, random activations, random parsed expressions."""
import numpy as np
from hypothesis import HealthCheck, assume, given, settings, strategies as st

import generated
from codegen.build import build
from derive import DerivationError
from tests.conftest import rnn_inputs
from tests.test_kernels import BOUND, _load_file
from verify import gradcheck, near_kink

sizes = st.integers(min_value=1, max_value=4)
activations = st.sampled_from(generated.ACTIVATIONS)
seeds = st.integers(min_value=0, max_value=2**31 - 1)
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(name=activations, T=sizes, N=sizes, D=sizes, H=sizes, seed=seeds)
def test_backward_agrees_with_central_differences(name, T, N, D, H, seed):
    module = generated.load(name)
    args = rnn_inputs(T, N, D, H, seed=seed)
    assume(near_kink(module, *args) >= 1e-4)
    errors = gradcheck(module, *args, mode="projection", directions=2, seed=seed)
    assert max(errors.values()) < BOUND, errors


@SETTINGS
@given(name=activations, T=sizes, N=sizes, D=sizes, H=sizes, seed=seeds, a=st.floats(-3, 3), c=st.floats(-3, 3))
def test_backward_is_linear_in_dh(name, T, N, D, H, seed, a, c):
    module = generated.load(name)
    h, cache = module.forward(*rnn_inputs(T, N, D, H, seed=seed))
    rng = np.random.default_rng(seed)
    dh1, dh2 = rng.standard_normal(h.shape), rng.standard_normal(h.shape)
    combined = module.backward(a * dh1 + c * dh2, cache)
    g1, g2 = module.backward(dh1, cache), module.backward(dh2, cache)
    for name_, got, p, q in zip(combined._fields, combined, g1, g2):
        np.testing.assert_allclose(got, a * p + c * q, rtol=1e-10, atol=1e-10, err_msg=name_)


@SETTINGS
@given(name=activations, T=st.integers(2, 6), N=sizes, D=sizes, H=sizes, seed=seeds, data=st.data())
def test_two_chunks_with_state_carried_equal_one_run(name, T, N, D, H, seed, data):
    module = generated.load(name)
    x, h0, V, W, b = rnn_inputs(T, N, D, H, seed=seed)
    k = data.draw(st.integers(1, T - 1))
    h, _ = module.forward(x, h0, V, W, b)
    first, _ = module.forward(x[:k], h0, V, W, b)
    second, _ = module.forward(x[k:], first[-1], V, W, b)
    np.testing.assert_allclose(np.concatenate([first, second]), h, rtol=1e-13, atol=1e-15)


@SETTINGS
@given(name=activations, T=st.integers(1, 6), N=sizes, D=sizes, H=sizes, seed=seeds, data=st.data())
def test_jacobian_product_equals_backward_of_a_loss_on_h_t(name, T, N, D, H, seed, data):
    """u^T dh_t/dh_k, built from the one-step Jacobians, equals backward of L = <u, h_t> taken from h_k."""
    module = generated.load(name)
    x, h0, V, W, b = rnn_inputs(T, N, D, H, seed=seed)
    t = data.draw(st.integers(1, T))
    k = data.draw(st.integers(0, t - 1))
    h, cache = module.forward(x, h0, V, W, b)
    u = np.random.default_rng(seed).standard_normal((N, H))
    product = np.broadcast_to(np.eye(H), (N, H, H))
    for s in range(t, k, -1):  # dh_t/dh_k = J_t J_{t-1} ... J_{k+1}
        product = product @ module.jacobian(cache, s)
    pulled = np.einsum("ni,nij->nj", u, product)
    h_k = h0 if k == 0 else h[k - 1]
    _, tail = module.forward(x[k:t], h_k, V, W, b)
    dh = np.zeros((t - k, N, H))
    dh[-1] = u
    np.testing.assert_allclose(pulled, module.backward(dh, tail).dh0, rtol=1e-10, atol=1e-12)


# A small grammar of activations: smooth pieces combined so that most draws are real, finite, non-constant.
leaves = st.sampled_from(["x", "x", "2*x", "x/3", "(x - 1)", "0.5*x"])
unary = st.sampled_from(["tanh({})", "sin({})", "sigmoid({})", "softplus({})", "atan({})", "asinh({})",
                         "({})**2", "exp(-({})**2)", "abs({})", "erf({})"])


@st.composite
def expressions(draw, depth=2):
    if depth == 0 or draw(st.booleans()):
        return draw(leaves)
    a = draw(unary).format(draw(expressions(depth=depth - 1)))
    if draw(st.booleans()):
        return a
    op = draw(st.sampled_from(["+", "*", "-"]))
    return f"{a} {op} {draw(expressions(depth=depth - 1))}"


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                HealthCheck.function_scoped_fixture])
@given(text=expressions(), seed=seeds)
def test_parsed_expressions_generate_correct_kernels(tmp_path_factory, text, seed):
    root = tmp_path_factory.mktemp("prop")
    user = root / "user.json"
    user.write_text(f'{{"prop": {text!r}}}'.replace("'", '"'))
    try:
        build(root / "g", user, workers=1, base=(), timeout=30)
    except DerivationError:
        assume(False)  # constant, out of time or otherwise refused: the refusals have their own tests
    module = _load_file(root / "g" / "rnn_prop.py", f"prop_{abs(hash((text, seed)))}")
    args = rnn_inputs(5, 2, 3, 3, seed=seed)
    assume(near_kink(module, *args) >= 1e-4)
    errors = gradcheck(module, *args, mode="projection", directions=2, seed=seed)
    assert max(errors.values()) < BOUND, (text, errors)
