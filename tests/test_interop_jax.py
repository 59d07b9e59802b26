"""The JAX function over the generated kernels (an optional extra)."""
import numpy as np
import pytest

from tests.conftest import rnn_inputs

jax = pytest.importorskip("jax", reason="JAX (the bench extra) is not installed: the JAX function is not tested")


@pytest.fixture(autouse=True)
def scratch_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RNN_BPTT_CACHE", str(tmp_path / "kernels"))


def _jax_reference(f):

    def run(x, h0, V, W, b):
        def step(h, x_t):
            h = f(x_t @ V.T + h @ W.T + b)
            return h, h

        return jax.lax.scan(step, h0, x)[1]

    return run


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "gelu", "silu"])
def test_jax_function_check_grads_and_matches_autodiff(activation):
    with jax.enable_x64(True):  # restored after the test: the others run with the default
        _check_against_autodiff(activation)


def _check_against_autodiff(activation):
    import jax.numpy as jnp
    from jax.test_util import check_grads

    from interop.jax_rnn import make_rnn

    f = make_rnn(activation)
    args = tuple(jnp.asarray(a) for a in rnn_inputs(5, 2, 3, 4, seed=5))
    check_grads(f, args, order=1, modes=["rev"], eps=1e-6, atol=1e-6, rtol=1e-6)
    jf = {"tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid, "gelu": lambda u: jax.nn.gelu(u, approximate=False),
          "silu": jax.nn.silu}[activation]
    reference = _jax_reference(jf)
    G = jnp.asarray(np.random.default_rng(6).standard_normal((5, 2, 4)))
    ours = jax.jit(jax.grad(lambda *a: jnp.sum(G * f(*a)), argnums=(0, 1, 2, 3, 4)))(*args)
    want = jax.grad(lambda *a: jnp.sum(G * reference(*a)), argnums=(0, 1, 2, 3, 4))(*args)
    for a, b in zip(ours, want):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)


def _args(dtype, seed=7, T=5, N=2, D=3, H=4):
    import jax.numpy as jnp

    return tuple(jnp.asarray(a.astype(dtype)) for a in rnn_inputs(T, N, D, H, seed=seed))


@pytest.mark.parametrize("activation", ["tanh", "gelu"])  # gelu: E travels as a residual, batched too
def test_vmap_folds_a_mapped_axis_into_the_batch(activation):
    """vmap over x and h0 with shared weights equals the unmapped function on each element (and makes one
    kernel call over all of them), nested vmap and jit(vmap) too; gradients through vmap equal the sum of each
    element's, and vmap(grad) gives each element's own dV, dW, db."""
    import jax.numpy as jnp

    from interop.jax_rnn import make_rnn

    with jax.enable_x64(True):
        f = make_rnn(activation)
        x0, h00, V, W, b = _args(np.float64)
        rng = np.random.default_rng(8)
        xs = jnp.asarray(rng.standard_normal((3, 2) + x0.shape))  # two mapped axes
        h0s = jnp.asarray(rng.standard_normal((3, 2) + h00.shape))
        each = np.stack([np.stack([np.asarray(f(xs[i, j], h0s[i, j], V, W, b)) for j in range(2)])
                         for i in range(3)])
        inner = jax.vmap(f, in_axes=(0, 0, None, None, None))
        nested = jax.jit(jax.vmap(inner, in_axes=(0, 0, None, None, None)))(xs, h0s, V, W, b)
        np.testing.assert_allclose(np.asarray(nested), each, rtol=1e-13, atol=1e-14)
        one_h0 = jax.vmap(f, in_axes=(0, None, None, None, None))(xs[0], h00, V, W, b)  # h0 shared too
        np.testing.assert_allclose(np.asarray(one_h0[1]), np.asarray(f(xs[0, 1], h00, V, W, b)), rtol=1e-13)

        def loss(x, h0, V, W, b):
            return jnp.sum(jnp.sin(f(x, h0, V, W, b)))

        summed = jax.grad(lambda *a: jnp.sum(jax.vmap(loss, in_axes=(0, 0, None, None, None))(*a)),
                          argnums=(0, 1, 2, 3, 4))(xs[0], h0s[0], V, W, b)
        per = [jax.grad(loss, argnums=(0, 1, 2, 3, 4))(xs[0, j], h0s[0, j], V, W, b) for j in range(2)]
        mapped = jax.vmap(jax.grad(loss, argnums=(0, 1, 2, 3, 4)), in_axes=(0, 0, None, None, None))(
            xs[0], h0s[0], V, W, b)
        for k in range(5):
            want_each = np.stack([np.asarray(p[k]) for p in per])
            np.testing.assert_allclose(np.asarray(mapped[k]), want_each, rtol=1e-12, atol=1e-13)
            want_sum = want_each if k < 2 else want_each.sum(0)
            np.testing.assert_allclose(np.asarray(summed[k]), want_sum, rtol=1e-12, atol=1e-13)


def test_vmap_over_the_weights_runs_each_element():
    import jax.numpy as jnp

    from interop.jax_rnn import make_rnn

    with jax.enable_x64(True):
        f = make_rnn("tanh")
        x, h0, V, W, b = _args(np.float64)
        Ws = jnp.stack([W, 0.5 * W, -W])
        got = jax.vmap(f, in_axes=(None, None, None, 0, None))(x, h0, V, Ws, b)
        for i in range(3):
            np.testing.assert_allclose(np.asarray(got[i]), np.asarray(f(x, h0, V, Ws[i], b)), rtol=1e-13)
        g = jax.vmap(jax.grad(lambda W: jnp.sum(f(x, h0, V, W, b) ** 2)))(Ws)
        for i in range(3):
            want = jax.grad(lambda W: jnp.sum(f(x, h0, V, W, b) ** 2))(Ws[i])
            np.testing.assert_allclose(np.asarray(g[i]), np.asarray(want), rtol=1e-12, atol=1e-13)


# Each wrong argument and the kernel's own message for it, raised when the function is traced (not the
# callback's "INTERNAL: CpuCallback error" at run time).
WRONG = {
    "W-shape": (lambda a: a[:3] + (a[3][:, :3],) + a[4:], ValueError,
                r"W must have shape \(H, H\) = \(4, 4\), got \(4, 3\)"),
    "x-ndim": (lambda a: (a[0][0],) + a[1:], ValueError,
               r"x must have 3 dimensions \(T, N, D\), got shape \(2, 3\)"),
    "int-x": (lambda a: (a[0].astype("int32"),) + a[1:], TypeError,
              "x must be a float32 or float64 array, got dtype int32"),
    "half-b": (lambda a: a[:4] + (a[4].astype("float16"),), TypeError,
               "b must be a float32 or float64 array, got dtype float16"),
}


@pytest.mark.parametrize("case", list(WRONG))
@pytest.mark.parametrize("how", ["call", "jit", "grad", "vmap"])
def test_wrong_shapes_and_dtypes_raise_the_kernels_message_when_traced(case, how):
    import jax.numpy as jnp

    from interop.jax_rnn import make_rnn

    f = make_rnn("tanh")
    change, error, message = WRONG[case]
    args = change(_args(np.float32))
    run = {"call": f, "jit": jax.jit(f), "grad": lambda x, h0, V, W, b: jax.grad(lambda V: jnp.sum(f(x, h0, V, W, b)))(V),
           "vmap": lambda x, *rest: jax.vmap(f, in_axes=(0, None, None, None, None))(jnp.stack([x, x]), *rest)}
    with pytest.raises(error, match=message):
        jax.eval_shape(run[how], *args)  # tracing only: nothing runs


@pytest.mark.parametrize("x64", [False, True])
def test_float32_kept_with_and_without_x64(x64):
    import jax.numpy as jnp

    from interop.jax_rnn import make_rnn

    with jax.enable_x64(x64):
        f = make_rnn("gelu")
        args = _args(np.float32)
        h = jax.jit(f)(*args)
        grads = jax.grad(lambda *a: jnp.sum(f(*a)), argnums=(0, 1, 2, 3, 4))(*args)
        assert h.dtype == jnp.float32 and all(g.dtype == jnp.float32 for g in grads)
        if x64:
            h64 = f(*_args(np.float64))
            assert h64.dtype == jnp.float64
            np.testing.assert_allclose(np.asarray(h), np.asarray(h64), rtol=1e-5, atol=1e-6)


def test_vmap_with_shared_weights_is_one_kernel_call(monkeypatch):
    import generated
    from interop.jax_rnn import make_rnn

    module = generated.load("tanh")
    calls = []
    forward = module.forward
    monkeypatch.setattr(module, "forward", lambda x, *rest, **options: calls.append(x.shape) or forward(x, *rest, **options))
    x, h0, V, W, b = _args(np.float32)
    jax.vmap(make_rnn("tanh"), in_axes=(0, None, None, None, None))(np.stack([x] * 6), h0, V, W, b)
    assert calls == [(5, 6 * 2, 3)]  # (T, P * N, D): the six elements are rows of one batch
