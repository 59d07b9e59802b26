"""The generated cell kernels (generated/cell_*.py) against PyTorch, JAX autodiff, and finite differences.

Tolerances: comparisons with an independent float64 implementation (torch.nn.LSTM/GRU, JAX autodiff of the same
equations written here) at 1e-10 relative to the largest entry: both sides round differently, the differences
seen are ~1e-15, and a wrong derivative is off by O(1). Finite differences (central, eps = 1e-6, float64) at 1e-7
relative: truncation O(eps^2) ~ 1e-12 plus rounding ~1e-16 / eps ~ 1e-10.
"""
import numpy as np
import pytest

import generated

CELLS = generated.CELLS
T, N, D, H = 6, 4, 3, 5


def rel(a, b):
    """Largest entry difference relative to the largest entry of the reference."""
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def cell_args(module, seed=0, dtype=np.float64):
    """Random arguments in forward's order, sized from the module's SHAPES (nonzero initial states)."""
    rng = np.random.default_rng(seed)
    sizes = {"T": T, "N": N, "D": D, "H": H}
    out = []
    for name in module.ARGUMENTS:
        shape = tuple((int(c) if c else 1) * sizes[s] for c, _, s in (l.rpartition("*") for l in module.SHAPES[name]))
        scale = 1.0 if name == module.INPUT or name.endswith("0") else 0.5
        out.append((rng.standard_normal(shape) * scale).astype(dtype))
    return out


def loss_terms(module, seed=1):
    """A random loss L = sum_t <G_t, out_t> + sum over the other states <G_s, s_T>: (G, dfinal)."""
    rng = np.random.default_rng(seed)
    G = rng.standard_normal((T, N, H))
    final = {s: rng.standard_normal((N, H)) for s in module.STATES if s != module.OUTPUT}
    return G, final


def loss(module, args, G, final):
    out, cache = module.forward(*args)
    return float(np.sum(G * out) + sum(np.sum(g * getattr(cache, s)[-1]) for s, g in final.items()))


def central_differences(module, args, G, final, k, eps=1e-6):
    """dL/d(args[k]) by central differences of ``loss``, every entry perturbed by +-eps."""
    fd = np.empty_like(args[k])
    for idx in np.ndindex(fd.shape):
        plus, minus = [a.copy() for a in args], [a.copy() for a in args]
        plus[k][idx] += eps
        minus[k][idx] -= eps
        fd[idx] = (loss(module, plus, G, final) - loss(module, minus, G, final)) / (2 * eps)
    return fd


@pytest.fixture(params=CELLS)
def cell(request):
    return generated.load(request.param)


def test_builtin_cells_are_listed_and_activations_still_load():
    assert {"lstm", "gru", "mgu"} <= set(generated.CELLS)
    assert generated.load("tanh").NAME == "tanh"
    assert generated.load("lstm").NAME == "lstm"
    with pytest.raises(ValueError, match="unknown activation 'nope'; known: identity, .*; cells: gru, lstm, mgu"):
        generated.load("nope")


# --- PyTorch -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_matches_torch_outputs_and_every_gradient(name):
    torch = pytest.importorskip("torch")
    module = generated.load(name)
    torch.manual_seed(0)
    layer = (torch.nn.LSTM if name == "lstm" else torch.nn.GRU)(D, H).double()
    params = [getattr(layer, f"{p}_l0") for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    rng = np.random.default_rng(3)
    x, h0, c0 = rng.standard_normal((T, N, D)), rng.standard_normal((N, H)), rng.standard_normal((N, H))
    G, Gc = rng.standard_normal((T, N, H)), rng.standard_normal((N, H))
    xt, h0t, c0t = (torch.tensor(a, requires_grad=True) for a in (x, h0[None], c0[None]))
    states = [h0] + ([c0] if name == "lstm" else [])
    out, cache = module.forward(x, *states, *(p.detach().numpy() for p in params))
    if name == "lstm":
        ref, (hT, cT) = layer(xt, (h0t, c0t))
        (ref * torch.tensor(G)).sum().add((cT[0] * torch.tensor(Gc)).sum()).backward()
        grads = module.backward(G, cache, dfinal=Gc)
        assert rel(cache.c[-1], cT[0].detach().numpy()) < 1e-10
        expected = [xt.grad, h0t.grad[0], c0t.grad[0]]
    else:
        ref, hT = layer(xt, h0t)
        (ref * torch.tensor(G)).sum().backward()
        grads = module.backward(G, cache)
        expected = [xt.grad, h0t.grad[0]]
    assert rel(out, ref.detach().numpy()) < 1e-10
    expected += [p.grad for p in params]
    assert grads._fields == tuple(f"d{a}" for a in module.ARGUMENTS)
    for field, got, want in zip(grads._fields, grads, expected):
        assert got.shape == tuple(want.shape), field
        assert rel(got, want.numpy()) < 1e-10, field


# --- JAX autodiff of the same equations, written here independently ----------------------------------------------

def _jax_step(name, jnp, jax):
    sig = jax.nn.sigmoid

    def lstm(x, s, w_ih, w_hh, b_ih, b_hh):
        h, c = s
        i, f, g, o = jnp.split(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh, 4, axis=-1)
        c = sig(f) * c + sig(i) * jnp.tanh(g)
        return (sig(o) * jnp.tanh(c), c)

    def gru(x, s, w_ih, w_hh, b_ih, b_hh):
        (h,) = s
        xr, xz, xn = jnp.split(x @ w_ih.T + b_ih, 3, axis=-1)
        hr, hz, hn = jnp.split(h @ w_hh.T + b_hh, 3, axis=-1)
        r, z = sig(xr + hr), sig(xz + hz)
        n = jnp.tanh(xn + r * hn)
        return ((1 - z) * n + z * h,)

    def mgu(x, s, w_ih, w_hh, b):
        (h,) = s
        xf, xn = jnp.split(x @ w_ih.T, 2, axis=-1)
        W_hf, W_hn = jnp.split(w_hh, 2, axis=0)
        b_f, b_n = jnp.split(b, 2)
        f = sig(xf + h @ W_hf.T + b_f)
        n = jnp.tanh(xn + f * (h @ W_hn.T) + b_n)
        return ((1 - f) * h + f * n,)

    return {"lstm": lstm, "gru": gru, "mgu": mgu}[name]


def test_matches_jax_autodiff_of_the_same_equations(cell):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    step = _jax_step(cell.NAME, jnp, jax)
    nstates = len(cell.STATES)
    args = cell_args(cell, seed=4)
    G, final = loss_terms(cell, seed=5)

    def jax_loss(*a):
        x, states, params = a[0], tuple(a[1:1 + nstates]), a[1 + nstates:]
        total = 0.0
        for t in range(T):
            states = step(x[t], states, *params)
            total = total + jnp.sum(G[t] * states[0])
        return total + sum(jnp.sum(final[s] * states[k]) for k, s in enumerate(cell.STATES) if s in final)

    want = jax.grad(jax_loss, argnums=tuple(range(len(args))))(*(jnp.asarray(a) for a in args))
    out, cache = cell.forward(*args)
    got = cell.backward(G, cache, dfinal=final or None)
    assert abs(loss(cell, args, G, final) - float(jax_loss(*args))) < 1e-10 * abs(float(jax_loss(*args)))
    for field, g, w in zip(got._fields, got, want):
        assert rel(g, np.asarray(w)) < 1e-10, field


# --- finite differences --------------------------------------------------------------------------------------------

def test_gradcheck_every_entry_central_differences(cell):
    """Every entry of every argument perturbed: max |fd - an| / max |an| per argument < 1e-7."""
    args = cell_args(cell, seed=6)
    G, final = loss_terms(cell, seed=7)
    _, cache = cell.forward(*args)
    grads = cell.backward(G, cache, dfinal=final or None)
    for k, (name, g) in enumerate(zip(cell.ARGUMENTS, grads)):
        assert rel(g, central_differences(cell, args, G, final, k)) < 1e-7, name


def test_gradcheck_catches_a_wrong_gradient(cell):
    """The check above has teeth: a 0.1 % error in one weight's gradient fails it by orders of magnitude."""
    args = cell_args(cell, seed=6)
    G, final = loss_terms(cell, seed=7)
    _, cache = cell.forward(*args)
    g = cell.backward(G, cache, dfinal=final or None)[3] * 1.001
    eps, k = 1e-6, 3
    fd = np.empty_like(g)
    for idx in np.ndindex(g.shape):
        plus, minus = [a.copy() for a in args], [a.copy() for a in args]
        plus[k][idx] += eps
        minus[k][idx] -= eps
        fd[idx] = (loss(cell, plus, G, final) - loss(cell, minus, G, final)) / (2 * eps)
    assert rel(g, fd) > 1e-4


def full_state(cache, module, t):
    """The concatenated state (N, S) at step t (0: the initial states)."""
    return np.concatenate([getattr(cache, f"{s}0") if t == 0 else getattr(cache, s)[t - 1] for s in module.STATES],
                          axis=1)


def test_block_jacobian_matches_finite_differences(cell):
    args = cell_args(cell, seed=8)
    _, cache = cell.forward(*args)
    nstates = len(cell.STATES)
    params = args[1 + nstates:]
    eps = 1e-6
    for t in (1, 3, T):
        J = cell.jacobian(cache, t)
        S = J.shape[1]
        assert J.shape == (N, S, S) and S == H * nstates
        s_prev = full_state(cache, cell, t - 1)
        fd = np.empty_like(J)
        for j in range(S):
            outs = []
            for sign in (1, -1):
                s = s_prev.copy()
                s[:, j] += sign * eps
                _, c1 = cell.step_forward(args[0][t - 1], *np.split(s, nstates, axis=1), *params)
                outs.append(full_state(c1, cell, 1))
            fd[:, :, j] = (outs[0] - outs[1]) / (2 * eps)
        assert rel(J, fd) < 1e-7, t


def test_jacobian_products_pushforward_pullback_agree_with_backward(cell):
    args = cell_args(cell, seed=9)
    _, cache = cell.forward(*args)
    t, k = T, 1
    P = cell.jacobian_products(cache, t)
    S = P.shape[-1]
    rng = np.random.default_rng(10)
    v, u = rng.standard_normal((N, S)), rng.standard_normal((N, S))
    assert rel(cell.pushforward(cache, v, k, t), np.einsum("nij,nj->ni", P[k], v)) < 1e-12
    assert rel(cell.pullback(cache, u, t, k), np.einsum("ni,nij->nj", u, P[k])) < 1e-12
    assert rel(P[t - 1], cell.jacobian(cache, t)) == 0
    # u^T d(state_T)/d(state_0) is what backward sends to the initial states for a loss on the final states only
    parts = dict(zip(cell.STATES, np.split(u, len(cell.STATES), axis=1)))
    dout = np.zeros((T, N, H))
    dout[-1] = parts[cell.OUTPUT]
    g = cell.backward(dout, cache, dfinal={s: a for s, a in parts.items() if s != cell.OUTPUT} or None)
    initial = np.concatenate(g[1:1 + len(cell.STATES)], axis=1)
    assert rel(cell.pullback(cache, u, T, 0), initial) < 1e-10


def test_step_functions_are_one_step_of_the_sequence(cell):
    args = cell_args(cell, seed=11)
    out, cache = cell.forward(*args)
    h1, c1 = cell.step_forward(args[0][0], *args[1:])
    assert rel(h1, out[0]) == 0
    dh = np.random.default_rng(12).standard_normal((N, H))
    g = cell.step_backward(dh, c1)
    full = cell.backward(dh[None], c1)
    assert g.dx.shape == (N, D) and rel(g.dx, full.dx[0]) == 0
    assert all(rel(a, b) == 0 for a, b in zip(g[1:], full[1:]))


def test_float32_stays_float32(cell):
    args = cell_args(cell, dtype=np.float32)
    out, cache = cell.forward(*args)
    assert out.dtype == np.float32
    grads = cell.backward(np.ones_like(out), cache)
    assert all(g.dtype == np.float32 for g in grads)
    ref = cell.forward(*(a.astype(np.float64) for a in args))[0]
    assert rel(out, ref) < 1e-5


# --- argument validation -------------------------------------------------------------------------------------------

def test_errors_name_the_argument():
    lstm = generated.load("lstm")
    args = cell_args(lstm)
    bad = list(args)
    bad[3] = bad[3][:-1]
    with pytest.raises(ValueError, match=r"weight_ih must have shape \(4\*H, D\) = \(20, 3\), got \(19, 3\)"):
        lstm.forward(*bad)
    bad = list(args)
    bad[2] = bad[2][:, :2]
    with pytest.raises(ValueError, match=r"c0 must have shape \(N, H\) = \(4, 5\), got \(4, 2\)"):
        lstm.forward(*bad)
    bad = list(args)
    bad[6] = bad[6].astype(np.int64)
    with pytest.raises(TypeError, match="bias_hh must be a float32 or float64 array, got dtype int64"):
        lstm.forward(*bad)
    bad = list(args)
    bad[0] = bad[0][0]
    with pytest.raises(ValueError, match=r"x must have 3 dimensions \(T, N, D\)"):
        lstm.forward(*bad)
    bad = list(args)
    bad[4] = bad[4].astype(np.float32)
    with pytest.raises(TypeError, match="must share one dtype"):
        lstm.forward(*bad)
    out, cache = lstm.forward(*args)
    with pytest.raises(ValueError, match="dh must have shape"):
        lstm.backward(out[:-1], cache)
    with pytest.raises(ValueError, match=r"dfinal\['c'\] must have shape"):
        lstm.backward(out, cache, dfinal=np.zeros((N, H + 1)))
    with pytest.raises(ValueError, match="dfinal names unknown state"):
        lstm.backward(out, cache, dfinal={"q": np.zeros((N, H))})
    with pytest.raises(ValueError, match=r"t must be an integer in 1..T = 1..6, got 0"):
        lstm.jacobian(cache, 0)
    with pytest.raises(ValueError, match=r"v must have shape \(N, S\) = \(4, 10\), got \(4, 3\)"):
        lstm.pushforward(cache, np.zeros((N, 3)), 0, 2)
    with pytest.raises(ValueError, match=r"k must be an integer in 0..t-1 = 0..1, got 2"):
        lstm.pullback(cache, np.zeros((N, 2 * H)), 2, 2)
    with pytest.raises(TypeError, match="cache must be the Cache that forward returned"):
        lstm.backward(out, (1, 2))
    gru = generated.load("gru")
    with pytest.raises(TypeError, match="dfinal must be None or a dict"):
        gru.backward(out, gru.forward(*cell_args(gru))[1], dfinal=np.zeros((N, H)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_saturated_gates_stay_finite_without_warnings(cell, dtype):
    """Pre-activations up to ~1e5: sigmoid goes through exp(-|u|), so nothing overflows in either direction."""
    args = cell_args(cell, dtype=dtype)
    args = [a * dtype(1e4) if name.startswith("weight") else a for name, a in zip(cell.ARGUMENTS, args)]
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is the right answer
        out, cache = cell.forward(*args)
        grads = cell.backward(np.ones_like(out), cache)
    assert np.isfinite(out).all() and all(np.isfinite(g).all() for g in grads)


def test_bench_cells_runs_and_checks_gradients(capsys, monkeypatch):
    torch = pytest.importorskip("torch")
    from bench.cells import main

    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # main sets them: restored after
        monkeypatch.setenv(var, "1")
    threads = torch.get_num_threads()
    try:
        assert main(["--sizes", "tiny", "--repeats", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "lstm  tiny    float32" in out and "gru   tiny    float64" in out and "ours/floor" in out
