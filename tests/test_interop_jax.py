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
    jax.config.update("jax_enable_x64", True)
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
