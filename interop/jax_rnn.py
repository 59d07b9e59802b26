"""JAX: the generated kernels as a differentiable JAX function, through jax.custom_vjp and jax.pure_callback.

    from interop.jax_rnn import make_rnn
    rnn = make_rnn("gelu")                   # or an expression in x
    h = rnn(x, h0, V, W, b)                  # x (T, N, D) -> h (T, N, H); jax.grad, jit and vmap work through it

The forward and backward passes run the generated NumPy kernels on the host (pure_callback); what backward needs
(h, and f'(E_t) when f' is not a function of h) travels as residuals. Called without a gradient (the custom_vjp's
primal, what ``rnn(...)`` and ``jax.jit(rnn)(...)`` run) the kernels take their inference path and do not compute
f'(E_t); ``jax.grad``, ``jax.vjp`` and the like run the forward rule, which keeps it. Shapes and dtypes are checked when the function is
traced, with the kernels' own messages; float32 stays float32 with and without jax_enable_x64.

Under ``vmap`` a mapped axis of x and h0 folds into the batch N (one kernel call over all of it) when V, W and b
are shared; mapped weights run one kernel call per element. The backward always runs per element, since each
element has its own dV, dW, db.
"""
import functools

import jax
import numpy as np

from generated import Cache
from generated._support import check_forward
from interop.kernels import kernel_module

ARGS = ("x", "h0", "V", "W", "b")
CORE_NDIM = (3, 2, 2, 2, 1)  # the dimensions of x, h0, V, W, b in one (unmapped) call


def _check_traced(x, h0, V, W, b):
    """The kernels' own checks on the traced shapes and dtypes (zero-stride stand-ins: no memory, no data)."""
    stand_ins = []
    for value, name in zip((x, h0, V, W, b), ARGS):
        shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
        if shape is None or dtype is None:
            raise TypeError(f"{name} must be a float32 or float64 array, got {type(value).__name__}")
        stand_ins.append(np.broadcast_to(np.zeros((), dtype=np.dtype(dtype)), shape))
    check_forward(*stand_ins)


def _mapped_shape(arrays, core_ndims):
    """The broadcast shape of the leading (vmapped) axes of ``arrays``, beyond each one's core dimensions."""
    return np.broadcast_shapes(*(a.shape[:a.ndim - c] for a, c in zip(arrays, core_ndims)))


def _elements(arrays, core_ndims, lead):
    """Each element of the mapped axes: the tuple of core arrays, in C order of ``lead``."""
    expanded = [np.broadcast_to(a, lead + a.shape[a.ndim - c:]) for a, c in zip(arrays, core_ndims)]
    for index in np.ndindex(*lead):
        yield tuple(np.ascontiguousarray(a[index]) for a in expanded)


def make_rnn(activation="tanh"):
    """A function rnn(x, h0, V, W, b) -> h with a custom VJP given by the generated BPTT kernel.

    x (T, N, D), h0 (N, H), V (H, D), W (H, H), b (H,), one dtype (float32 or float64) -> h (T, N, H).
    """
    module = kernel_module(activation)

    def keeps_dh_dE(for_backward):  # f'(E_t) travels only to a backward that cannot take it from h
        return for_backward and not module.USES_OUTPUT

    def dh_dE_shape(T, N, H, for_backward):  # f'(E_t) for every t, or an empty stand-in
        return (T, N, H) if keeps_dh_dE(for_backward) else (0,)

    def forward_one(x, h0, V, W, b, for_backward):
        h, cache = module.forward(x, h0, V, W, b, for_backward=for_backward)
        return h, (cache.dh_dE if cache.dh_dE is not None else np.zeros((0,), h.dtype))

    def host_forward(*arrays, for_backward):
        arrays = [np.asarray(a) for a in arrays]
        lead = _mapped_shape(arrays, CORE_NDIM)
        if not lead:
            return forward_one(*arrays, for_backward)
        x, h0, V, W, b = arrays
        if all(a.shape[:a.ndim - c] == (1,) * len(lead) for a, c in zip((V, W, b), CORE_NDIM[2:])):
            # shared weights: the mapped axes become more rows of the batch, (P, T, N, D) -> (T, P * N, D)
            T, N, D = x.shape[-3:]
            H = h0.shape[-1]
            P = int(np.prod(lead))
            xs = np.broadcast_to(x, lead + (T, N, D)).reshape(P, T, N, D).transpose(1, 0, 2, 3)
            h0s = np.broadcast_to(h0, lead + (N, H)).reshape(P * N, H)
            h, dh_dE = forward_one(np.ascontiguousarray(xs.reshape(T, P * N, D)), np.ascontiguousarray(h0s),
                               V.reshape(V.shape[-2:]), W.reshape(W.shape[-2:]), b.reshape(b.shape[-1:]),
                               for_backward)
            unfold = lambda a: a.reshape(T, P, N, H).transpose(1, 0, 2, 3).reshape(lead + (T, N, H))  # noqa: E731
            return unfold(h), (unfold(dh_dE) if keeps_dh_dE(for_backward) else np.zeros(lead + (0,), h.dtype))
        results = [forward_one(*element, for_backward) for element in _elements(arrays, CORE_NDIM, lead)]
        return tuple(np.stack([r[i] for r in results]).reshape(lead + results[0][i].shape) for i in range(2))

    def forward(x, h0, V, W, b, for_backward):
        _check_traced(x, h0, V, W, b)
        T, N = x.shape[:2]
        H = h0.shape[1]
        shapes = (jax.ShapeDtypeStruct((T, N, H), x.dtype),
                  jax.ShapeDtypeStruct(dh_dE_shape(T, N, H, for_backward), x.dtype))
        host = functools.partial(host_forward, for_backward=for_backward)
        return jax.pure_callback(host, shapes, x, h0, V, W, b, vmap_method="expand_dims")

    @jax.custom_vjp
    def rnn(x, h0, V, W, b):
        # the primal: runs only when no gradient is taken (differentiation runs rnn_fwd), so f'(E_t) is not needed
        return forward(x, h0, V, W, b, for_backward=False)[0]

    def rnn_fwd(x, h0, V, W, b):
        h, dh_dE = forward(x, h0, V, W, b, for_backward=True)
        return h, (x, h0, V, W, b, h, dh_dE)

    def backward_one(x, h0, V, W, b, h, dh_dE, dh):
        cache = Cache(x, h0, V, W, b, h, None if module.USES_OUTPUT else dh_dE)
        return tuple(np.asarray(g) for g in module.backward(np.ascontiguousarray(dh), cache))

    def host_backward(*arrays):
        arrays = [np.asarray(a) for a in arrays]
        core = CORE_NDIM + (3, 1 if module.USES_OUTPUT else 3, 3)  # and h, dh_dE, dh
        lead = _mapped_shape(arrays, core)
        if not lead:
            return backward_one(*arrays)
        results = [backward_one(*element) for element in _elements(arrays, core, lead)]
        return tuple(np.stack([r[i] for r in results]).reshape(lead + results[0][i].shape) for i in range(5))

    def rnn_bwd(residuals, dh):
        out = tuple(jax.ShapeDtypeStruct(a.shape, a.dtype) for a in residuals[:5])
        return jax.pure_callback(host_backward, out, *residuals, dh, vmap_method="expand_dims")

    rnn.defvjp(rnn_fwd, rnn_bwd)
    return rnn


__all__ = ["make_rnn"]
