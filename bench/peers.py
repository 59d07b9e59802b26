"""The implementations the benchmark runs side by side, each as run(x, h0, V, W, b, G) -> gradients.

Every run computes forward and the full BPTT backward of L = sum_t <G_t, h_t> and returns
(dx, dh0, dV, dW, db) as NumPy arrays when asked to (``as_numpy``), so the benchmark can check that all agree
before it times anything. Peers whose package is missing are reported as unavailable, not silently dropped.
"""
import numpy as np

import generated
from generated._support import blas_threads


def ours(activation):
    module = generated.load(activation)

    def run(x, h0, V, W, b, G):
        h, cache = module.forward(x, h0, V, W, b)
        return tuple(module.backward(G, cache))

    return run


def gemm_floor(x, h0, V, W, b, G):
    """Only the matrix products the algorithm cannot avoid, into preallocated arrays, same BLAS as ours, on the
    threads the kernels' policy picks for ours (generated._support.blas_threads)."""
    T, N, D = x.shape
    H = W.shape[0]
    E = np.empty((T, N, H), dtype=x.dtype)
    tmp = np.empty((N, H), dtype=x.dtype)

    @blas_threads("x", "W")
    def run(x, h0, V, W, b, G):
        np.matmul(x.reshape(T * N, D), V.T, out=E.reshape(T * N, H))  # the input projection
        h_prev = h0
        for t in range(T):
            np.matmul(h_prev, W.T, out=tmp)  # W h_{t-1}
            h_prev = E[t]
        for t in range(T - 1, -1, -1):
            np.matmul(G[t], W, out=tmp)  # W^T delta_t
        rows = G.reshape(T * N, H)
        dV = rows.T @ x.reshape(T * N, D)
        dW = rows.T @ E.reshape(T * N, H)
        dx = rows @ V
        return dx, tmp, dV, dW, rows.sum(0)

    return run


def torch_rnn(x, h0, V, W, b, G, activation="tanh"):
    """torch.nn.RNN (tanh or relu) with our weights copied in; for other activations a loop of torch ops."""
    import torch

    torch.set_num_threads(2)
    dtype = torch.float64 if x.dtype == np.float64 else torch.float32
    T, N, D = x.shape
    H = W.shape[0]
    xt = torch.tensor(x, requires_grad=True)
    h0t = torch.tensor(h0[None], requires_grad=True)
    Gt = torch.tensor(G)
    if activation in ("tanh", "relu"):
        rnn = torch.nn.RNN(D, H, nonlinearity=activation).to(dtype)
        with torch.no_grad():
            rnn.weight_ih_l0.copy_(torch.tensor(V))
            rnn.weight_hh_l0.copy_(torch.tensor(W))
            rnn.bias_ih_l0.copy_(torch.tensor(b))
            rnn.bias_hh_l0.zero_()
        params = (rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0)

        def forward():
            return rnn(xt, h0t)[0]
    else:
        f = torch_activation(activation)
        params = tuple(torch.tensor(a, requires_grad=True) for a in (V, W, b))

        def forward():
            Vp, Wp, bp = params
            xv = xt @ Vp.T + bp
            h, out = h0t[0], []
            for t in range(T):
                h = f(xv[t] + h @ Wp.T)
                out.append(h)
            return torch.stack(out)

    def run(x_, h0_, V_, W_, b_, G_):
        for p in (xt, h0t, *params):
            p.grad = None
        (forward() * Gt).sum().backward()
        return xt.grad, h0t.grad[0], params[0].grad, params[1].grad, params[2].grad

    return run


def torch_activation(name):
    """The catalogue activation ``name`` as a torch function (parameters as in derive/catalogue.py)."""
    import functools

    import torch

    F = torch.nn.functional
    table = {"identity": torch.clone, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu,
             "leaky_relu": functools.partial(F.leaky_relu, negative_slope=0.01),
             "elu": functools.partial(F.elu, alpha=1.0), "selu": F.selu, "softplus": F.softplus,
             "softsign": F.softsign, "silu": F.silu, "gelu": F.gelu,
             "gelu_tanh": functools.partial(F.gelu, approximate="tanh"), "mish": F.mish, "sin": torch.sin}
    if name not in table:
        raise SystemExit(f"error: no PyTorch peer for activation {name!r}; known: {', '.join(table)}")
    return table[name]


def jax_activation(name):
    """The catalogue activation ``name`` as a JAX function (parameters as in derive/catalogue.py)."""
    import functools

    import jax
    import jax.numpy as jnp

    table = {"identity": jnp.asarray, "tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid, "relu": jax.nn.relu,
             "leaky_relu": functools.partial(jax.nn.leaky_relu, negative_slope=0.01),
             "elu": functools.partial(jax.nn.elu, alpha=1.0), "selu": jax.nn.selu, "softplus": jax.nn.softplus,
             "softsign": jax.nn.soft_sign, "silu": jax.nn.silu,
             "gelu": functools.partial(jax.nn.gelu, approximate=False),
             "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True), "mish": jax.nn.mish, "sin": jnp.sin}
    if name not in table:
        raise SystemExit(f"error: no JAX peer for activation {name!r}; known: {', '.join(table)}")
    return table[name]


def jax_scan(x, h0, V, W, b, G, activation="tanh"):
    """jax.jit(jax.grad(...)) over lax.scan of the same recurrence."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    f = jax_activation(activation)

    def loss(x, h0, V, W, b, G):
        def step(h, x_t):
            h = f(x_t @ V.T + h @ W.T + b)
            return h, h

        _, hs = jax.lax.scan(step, h0, x)
        return jnp.sum(G * hs)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3, 4)))
    args = [jnp.asarray(a) for a in (x, h0, V, W, b, G)]

    def run(*_):
        return jax.block_until_ready(grad(*args))

    return run


PEERS = {"pytorch": torch_rnn, "jax": jax_scan}


def available(name):
    """Whether the peer's package imports here."""
    module = {"pytorch": "torch", "jax": "jax"}[name]
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def installed_peers(text):
    """The peers named in ``text`` (comma-separated) that import here; a note for each one left out."""
    wanted = [q for q in text.split(",") if q]
    unknown = [q for q in wanted if q not in PEERS]
    if unknown:
        raise SystemExit(f"error: unknown peer(s) {', '.join(unknown)}; known: {', '.join(PEERS)}")
    peers = [q for q in wanted if available(q)]
    for q in wanted:
        if q not in peers:
            print(f"note: {q} is not installed: its column is left out (pip install -e '.[bench]')")
    return peers
