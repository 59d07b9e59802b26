"""make bench, cells: forward plus full BPTT of the generated LSTM and GRU against torch.nn.LSTM / torch.nn.GRU,
JAX jit(grad(scan)) of the same equations, and the matrix-product floor.

    python -m bench.cells                                  lstm and gru, every size, float32 and float64
    python -m bench.cells --cells lstm --sizes small,medium --dtypes float64 --repeats 10
    python -m bench.cells --threads 1                      pin NumPy's BLAS, PyTorch and XLA to one thread
    python -m bench.cells --busy                           beside a process that keeps one core busy

Loss: L = sum_t <G_t, h_t> for a fixed random G. Every implementation gets the same weights (PyTorch's layout and
gate order: weight_ih (G H, D), weight_hh (G H, H), bias_ih, bias_hh, G = 4 gates for the LSTM and 3 for the GRU,
drawn as PyTorch draws them, uniform in +-1/sqrt(H)) and returns the gradients of every argument of our
``forward``; before anything is timed each peer's gradients are checked against ours. Timing as in ``python -m
bench``: medians over ``--repeats`` rounds after a warm-up, the implementations interleaved in a shuffled order
within each round, in one process.
"""
import argparse
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads must not spin while another side runs

CELLS = ("lstm", "gru")
GATES = {"lstm": 4, "gru": 3}
TOLERANCE = {"float64": 1e-8, "float32": 2e-3}  # relative to each gradient's largest entry


def _pin_threads(threads):
    """Every library on ``threads`` threads; must run before NumPy, PyTorch or JAX load their thread pools."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                               f"intra_op_parallelism_threads={threads}").strip()


def problem(cell, T, N, D, H, dtype, seed=0):
    """(x, states..., weight_ih, weight_hh, bias_ih, bias_hh), G: random inputs and states, PyTorch-style weights."""
    import numpy as np

    rng = np.random.default_rng(seed)
    k = 1.0 / np.sqrt(H)
    gh = GATES[cell] * H
    x = rng.standard_normal((T, N, D))
    states = [rng.standard_normal((N, H)) * 0.1 for _ in range(2 if cell == "lstm" else 1)]
    params = [rng.uniform(-k, k, shape) for shape in ((gh, D), (gh, H), (gh,), (gh,))]
    G = rng.standard_normal((T, N, H))
    return tuple(a.astype(dtype) for a in (x, *states, *params)), G.astype(dtype)


def ours(cell):
    import generated

    module = generated.load(cell)

    def run(args, G):
        _, cache = module.forward(*args)
        return tuple(module.backward(G, cache))

    return run


def gemm_floor(cell, args, G):
    """Only the matrix products the algorithm cannot avoid, into preallocated arrays, same BLAS as ours (on the
    threads the kernels' policy picks for ours): the input projection for every step at once, one recurrent
    product a step forward and one back, and the three weight and input gradients as single products over all
    steps."""
    import functools

    import numpy as np

    from generated._support import blas_threads

    x, weight_ih, weight_hh = args[0], args[-4], args[-3]
    T, N, D = x.shape
    gh, H = weight_hh.shape
    P = np.empty((T, N, gh), dtype=x.dtype)  # the products (and, backward, their adjoints)
    # stand-ins for h_1..h_T: finite values of the right size (np.empty could hold NaNs or subnormals, which
    # would time something else than the products)
    h = np.random.default_rng(0).uniform(-1, 1, (T, N, H)).astype(x.dtype)
    carry = np.empty((N, H), dtype=x.dtype)

    @blas_threads("x", "weight_hh")
    def under_policy(x, weight_hh, products):
        return products()

    def run(args, G):
        return under_policy(x, weight_hh, functools.partial(products, args, G))

    def products(args, G):
        np.matmul(x.reshape(T * N, D), weight_ih.T, out=P.reshape(T * N, gh))
        h_prev = args[1]
        for t in range(T):
            np.matmul(h_prev, weight_hh.T, out=P[t])  # weight_hh h_{t-1}, every gate block
            h_prev = h[t]
        for t in range(T - 1, -1, -1):
            np.matmul(P[t], weight_hh, out=carry)  # weight_hh^T dL/dP_t
        rows = P.reshape(T * N, gh)
        return (rows @ weight_ih, carry, rows.T @ x.reshape(T * N, D), rows.T @ h.reshape(T * N, H),
                rows.sum(0))

    return run


def torch_cell(cell, args, G, threads):
    """torch.nn.LSTM / torch.nn.GRU with our weights copied in; returns the gradients in ours' order."""
    import torch

    torch.set_num_threads(threads)
    x, *rest = args
    states, params = rest[:-4], rest[-4:]
    dtype = torch.float64 if x.dtype.name == "float64" else torch.float32
    D, H = x.shape[2], params[1].shape[1]
    layer = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(D, H).to(dtype)
    with torch.no_grad():
        for name, value in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), params):
            getattr(layer, f"{name}_l0").copy_(torch.tensor(value))
    xt = torch.tensor(x, requires_grad=True)
    st = [torch.tensor(s[None], requires_grad=True) for s in states]
    Gt = torch.tensor(G)
    weights = [getattr(layer, f"{n}_l0") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]

    def run(args_, G_):
        for p in (xt, *st, *weights):
            p.grad = None
        out = layer(xt, tuple(st) if cell == "lstm" else st[0])[0]
        (out * Gt).sum().backward()
        return (xt.grad, *(s.grad[0] for s in st), *(w.grad for w in weights))

    return run


def jax_cell(cell, args, G):
    """jax.jit(jax.grad(...)) over lax.scan of the same equations, in PyTorch's layout (the input projection
    hoisted out of the scan, as ours and PyTorch do)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    def lstm_step(params, carry, px_t):
        (h, c), (_, weight_hh, _, bias_hh) = carry, params
        i, f, g, o = jnp.split(px_t + h @ weight_hh.T + bias_hh, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    def gru_step(params, carry, px_t):
        (h,), (_, weight_hh, _, bias_hh) = carry, params
        xr, xz, xn = jnp.split(px_t, 3, axis=-1)
        hr, hz, hn = jnp.split(h @ weight_hh.T + bias_hh, 3, axis=-1)
        r, z = jax.nn.sigmoid(xr + hr), jax.nn.sigmoid(xz + hz)
        n = jnp.tanh(xn + r * hn)
        return ((1 - z) * n + z * h,), (1 - z) * n + z * h

    step = lstm_step if cell == "lstm" else gru_step
    n_states = len(args) - 5

    def loss(*a):
        x, states, params = a[0], a[1:1 + n_states], a[1 + n_states:-1]  # a[-1] is G
        px = x @ params[0].T + params[2]
        _, hs = jax.lax.scan(lambda carry, px_t: step(params, carry, px_t), tuple(states), px)
        return jnp.sum(a[-1] * hs)

    grad = jax.jit(jax.grad(loss, argnums=tuple(range(len(args)))))
    values = [jnp.asarray(a) for a in (*args, G)]

    def run(*_):
        return jax.block_until_ready(grad(*values))

    return run


def check_agree(name, got, want, dtype):
    """Each of ``got`` (a peer's gradients) against ours, relative to ours' largest entry; AssertionError naming
    the argument otherwise."""
    import numpy as np

    for k, (a, b) in enumerate(zip(got, want)):
        a = np.asarray(a.detach().numpy() if hasattr(a, "detach") else a)
        err = np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30)
        if err > TOLERANCE[dtype]:
            raise AssertionError(f"{name} disagrees with ours on gradient {k}: relative error {err:.2e}")


def bench(cells, sizes, dtypes, repeats, peers, threads, out=None):
    """Rows (cell, size, dtype, {implementation: median seconds}), printed to ``out`` (default: sys.stdout as it
    is when called) as they come."""
    import numpy as np

    out = out or sys.stdout
    from bench.__main__ import SIZES, measure

    rows = []
    for cell in cells:
        for size in sizes:
            for dtype in dtypes:
                args, G = problem(cell, *SIZES[size], getattr(np, dtype))
                runs = {"ours": ours(cell)}
                if "pytorch" in peers:
                    runs["pytorch"] = torch_cell(cell, args, G, threads or 2)
                if "jax" in peers:
                    runs["jax"] = jax_cell(cell, args, G)
                runs["floor"] = gemm_floor(cell, args, G)
                reference = runs["ours"](args, G)
                for k in peers:
                    check_agree(f"{cell} {size} {dtype}: {k}", runs[k](args, G), reference, dtype)
                med = measure(runs, (args, G), repeats)
                rows.append((cell, size, dtype, med))
                print(row_text(rows[-1], peers), file=out, flush=True)
    return rows


def row_text(row, peers):
    cell, size, dtype, med = row
    best = min((med[p] for p in peers), default=None)
    return (f"{cell:5s} {size:7s} {dtype:8s} " + " ".join(f"{med[k] * 1e3:9.2f}" for k in ["ours", *peers, "floor"])
            + (f" {med['ours'] / best:10.2f}" if best else f" {'-':>10s}") + f" {med['ours'] / med['floor']:10.2f}")


def header(peers):
    return (f"{'cell':5s} {'size':7s} {'dtype':8s} " + " ".join(f"{n:>9s}" for n in ["ours", *peers, "floor"])
            + f" {'ours/best':>10s} {'ours/floor':>10s}\n(medians in ms; best = the faster of the peers)")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.cells", description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default=",".join(CELLS), help="comma-separated from lstm, gru")
    parser.add_argument("--sizes", default="tiny,small,medium,large")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--peers", default="pytorch,jax")
    parser.add_argument("--threads", type=int, default=0,
                        help="pin every library to this many threads (default 0: as `python -m bench`, NumPy's "
                             "BLAS and XLA as they start, PyTorch on 2)")
    parser.add_argument("--busy", type=int, nargs="?", const=1, default=0, metavar="CORES",
                        help="keep CORES cores busy (default 1 when given) with separate spinning processes meanwhile")
    args = parser.parse_args(argv)
    if args.threads:
        _pin_threads(args.threads)
    import platform

    import numpy as np

    from bench.__main__ import SIZES
    from bench.busy import busy, describe
    from bench.peers import installed_peers

    cells = [c for c in args.cells.split(",") if c]
    sizes = [s for s in args.sizes.split(",") if s]
    dtypes = [d for d in args.dtypes.split(",") if d]
    for label, got, known in (("cell", cells, CELLS), ("size", sizes, SIZES), ("dtype", dtypes, TOLERANCE)):
        bad = [g for g in got if g not in known]
        if bad:
            parser.error(f"unknown {label}(s) {', '.join(bad)}; known: {', '.join(known)}")
    if args.busy < 0 or args.busy >= (os.cpu_count() or 1):
        parser.error(f"--busy {args.busy}: keep at least one of the {os.cpu_count()} cores free, and at least 0 busy")
    peers = installed_peers(args.peers)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"NumPy {np.__version__}; threads: {args.threads or 'default'}; {describe(args.busy)}")
    print(header(peers))
    with busy(args.busy):
        bench(cells, sizes, dtypes, args.repeats, peers, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
