"""JAX: the generated kernels as a differentiable JAX function, through jax.custom_vjp and jax.pure_callback.

    from interop.jax_rnn import make_rnn
    rnn = make_rnn("gelu")                   # or an expression in x
    h = rnn(x, h0, V, W, b)                  # x (T, N, D) -> h (T, N, H); jax.grad works through it

The forward and backward passes run the generated NumPy kernels on the host (pure_callback); what backward needs
(h, and E when f' is not a function of h) travels as residuals. Works under jit; not under vmap.
"""
import jax
import numpy as np

from generated import Cache
from interop.kernels import kernel_module


def make_rnn(activation="tanh"):
    """A function rnn(x, h0, V, W, b) -> h with a custom VJP given by the generated BPTT kernel."""
    module = kernel_module(activation)

    def host_forward(x, h0, V, W, b):
        h, cache = module.forward(*(np.asarray(a) for a in (x, h0, V, W, b)))
        return h, (cache.E if cache.E is not None else np.zeros((0,), h.dtype))

    def shapes(x, h0):
        T, N = x.shape[:2]
        H = h0.shape[1]
        E = (0,) if module.USES_OUTPUT else (T, N, H)
        return (jax.ShapeDtypeStruct((T, N, H), x.dtype), jax.ShapeDtypeStruct(E, x.dtype))

    def forward(x, h0, V, W, b):
        return jax.pure_callback(host_forward, shapes(x, h0), x, h0, V, W, b)

    @jax.custom_vjp
    def rnn(x, h0, V, W, b):
        return forward(x, h0, V, W, b)[0]

    def rnn_fwd(x, h0, V, W, b):
        h, E = forward(x, h0, V, W, b)
        return h, (x, h0, V, W, b, h, E)

    def host_backward(x, h0, V, W, b, h, E, dh):
        arrays = [np.asarray(a) for a in (x, h0, V, W, b, h)]
        cache = Cache(*arrays, None if module.USES_OUTPUT else np.asarray(E))
        return tuple(module.backward(np.ascontiguousarray(dh), cache))

    def rnn_bwd(residuals, dh):
        x, h0, V, W, b, h, E = residuals
        out = tuple(jax.ShapeDtypeStruct(a.shape, a.dtype) for a in (x, h0, V, W, b))
        return jax.pure_callback(host_backward, out, *residuals, dh)

    rnn.defvjp(rnn_fwd, rnn_bwd)
    return rnn


__all__ = ["make_rnn"]
