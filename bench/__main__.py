"""make bench: forward plus full BPTT backward, ours against PyTorch, JAX and the matrix-product floor.

    python -m bench                                   every size, float32 and float64, tanh
    python -m bench --sizes tiny,small --dtypes float64 --repeats 20
    python -m bench --activations sigmoid,gelu,mish   other activations (PyTorch runs a loop of torch ops)
    python -m bench --activations all --markdown bench.md   all 14 catalogue activations, tables for the README
    python -m bench --busy --sizes small,medium       beside a process that keeps one core busy

Loss: L = sum_t <G_t, h_t> for a fixed random G. All implementations run in this one process after a warm-up;
each cell is the median over ``--repeats`` runs, and runs of the implementations are interleaved in a shuffled
order so that drift of a shared machine touches all alike. OMP_WAIT_POLICY=PASSIVE keeps PyTorch's idle OpenMP
threads from spinning on the cores while the others are timed. Before timing, every implementation's gradients
are checked against ours. ``--busy`` runs a separate process spinning on one core during the whole run (stopped at
the end, also on Ctrl-C or an error): the machine of a user whose other programs keep a core busy.
"""
import argparse
import os

# PyTorch's OpenMP threads otherwise spin for a while after each call, taking the cores from whatever runs next
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import platform
import sys
import time

import numpy as np

import generated
from bench.busy import busy, describe
from bench.peers import PEERS, gemm_floor, installed_peers, ours

SIZES = {"tiny": (50, 1, 16, 32), "small": (100, 16, 32, 64), "medium": (100, 32, 64, 128),
         "large": (100, 64, 256, 512)}
TOLERANCE = {np.float64: 1e-8, np.float32: 2e-3}  # relative to each gradient's largest entry
# An activation with a kink (relu, leaky_relu, elu, selu) in float32: an E_t within rounding of the kink takes the
# other branch in one implementation, and that delta entry then differs by O(dL/dh_t). Seen: relu, large, float32,
# dx 3.5e-3 relative between ours and nn.RNN, each within 4e-7 of the float64 gradients but for ours' one flipped
# entry. Peers with a wrong setup (slope, alpha, layout) differ everywhere, by O(1).
KINK_TOLERANCE_FLOAT32 = 5e-2
# the matrix-product floor is the same for every activation: timed beside the two that nn.RNN also has
FLOOR_ACTIVATIONS = ("tanh", "relu")


def problem(T, N, D, H, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, N, D))
    h0 = rng.standard_normal((N, H)) * 0.1
    V = rng.standard_normal((H, D)) / np.sqrt(D)
    W = rng.standard_normal((H, H)) * 0.9 / np.sqrt(H)
    b = rng.standard_normal(H) * 0.1
    G = rng.standard_normal((T, N, H))
    return tuple(a.astype(dtype) for a in (x, h0, V, W, b, G))


def _numpy(g):
    return np.asarray(g.detach().numpy() if hasattr(g, "detach") else g)


def check_agree(name, got, want, dtype, kinked=False):
    """AssertionError naming the gradient where ``got`` (a peer's) differs from ``want`` (ours) past the tolerance
    of ``dtype``; ``kinked``: the activation has a kink (see KINK_TOLERANCE_FLOAT32)."""
    tolerance = KINK_TOLERANCE_FLOAT32 if kinked and dtype == np.float32 else TOLERANCE[dtype]
    for label, a, b in zip(("dx", "dh0", "dV", "dW", "db"), got, want):
        a, b = _numpy(a), _numpy(b)
        err = np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30)
        if err > tolerance:
            raise AssertionError(f"{name} disagrees with ours on {label}: relative error {err:.2e}")


def measure(runs, args, repeats):
    """Median seconds of each run, interleaved: one call of each per round, in a shuffled order (so that no
    implementation always runs right after the one whose idle thread pool is still spinning), after one warm-up
    call each."""
    for run in runs.values():
        run(*args)
    times = {k: [] for k in runs}
    order = np.random.default_rng(0)
    names = list(runs)
    for _ in range(repeats):
        for k in order.permutation(names):
            start = time.perf_counter()
            runs[k](*args)
            times[k].append(time.perf_counter() - start)
    return {k: float(np.median(v)) for k, v in times.items()}


def bench(sizes, dtypes, activations, repeats, peers, out=sys.stdout):
    rows = []
    for activation in activations:
        for size in sizes:
            for dtype in dtypes:
                args = problem(*SIZES[size], dtype)
                runs = {"ours": ours(activation)}
                for p in peers:
                    runs[p] = PEERS[p](*args, activation=activation)
                if activation in FLOOR_ACTIVATIONS:
                    runs["floor"] = gemm_floor(*args)
                reference = runs["ours"](*args)
                for k, run in runs.items():
                    if k not in ("ours", "floor"):
                        check_agree(k, run(*args), reference, dtype, kinked=bool(generated.load(activation).KINKS))
                med = measure(runs, args, repeats)
                rows.append((activation, size, np.dtype(dtype).name, med))
                print(_row(rows[-1], peers), file=out, flush=True)
    return rows


def _row(row, peers):
    activation, size, dtype, med = row
    cells = [f"{activation:10s} {size:7s} {dtype:8s}"] + [f"{med[k] * 1e3:9.3f}" for k in ["ours", *peers]]
    cells.append(f"{med['floor'] * 1e3:9.3f}" if "floor" in med else f"{'-':>9s}")
    best = min((med[p] for p in peers), default=None)
    cells.append(f"{med['ours'] / best:12.2f}" if best else f"{'-':>12s}")
    cells.append(f"{med['ours'] / med['floor']:10.2f}" if "floor" in med else f"{'-':>10s}")
    return " ".join(cells)


def header(peers):
    names = ["ours", *peers, "floor"]
    return (f"{'activation':10s} {'size':7s} {'dtype':8s} " + " ".join(f"{n:>9s}" for n in names)
            + f" {'ours/best':>12s} {'ours/floor':>10s}\n" + "(medians in ms; best = the faster of the peers)")


def parse_activations(text):
    """The activations named in ``text`` (comma-separated; "all": every catalogue activation, in its order)."""
    from derive.catalogue import CATALOGUE

    names = [a.name for a in CATALOGUE] if text == "all" else [a for a in text.split(",") if a]
    unknown = [a for a in names if a not in generated.ACTIVATIONS]
    if unknown or not names:
        raise ValueError(f"unknown activation(s) {', '.join(unknown) or repr(text)}; known: all, "
                         f"{', '.join(generated.ACTIVATIONS)}")
    return names


def markdown(rows, peers, title):
    """README-ready markdown of ``rows``: a table per activation with nn.RNN (tanh, relu: every timing, the
    floor), then ours / the faster peer for every activation, size and dtype."""
    names = {"pytorch": "PyTorch", "jax": "JAX"}
    lines = [title, "", "PyTorch: nn.RNN for tanh and relu, a loop of torch ops for the others; JAX: "
             "jit(grad(scan)); floor: only the matrix products, same BLAS as ours", ""]
    full = [r for r in rows if "floor" in r[3]]
    if full:
        lines += ["| activation | size | dtype | ours (ms) | " + " | ".join(f"{names[p]} (ms)" for p in peers)
                  + " | floor (ms) | ours / best peer | ours / floor |",
                  "|" + "---|" * (7 + len(peers))]
        for activation, size, dtype, med in full:
            best = min((med[p] for p in peers), default=None)
            lines.append(f"| {activation} | {size} | {dtype} | {med['ours'] * 1e3:.2f} | "
                         + " | ".join(f"{med[p] * 1e3:.2f}" for p in peers)
                         + f" | {med['floor'] * 1e3:.2f} | {_ratio(med['ours'], best)} | "
                         + f"{_ratio(med['ours'], med['floor'])} |")
        lines.append("")
    columns = list(dict.fromkeys((size, dtype) for _, size, dtype, _ in rows))
    lines += ["ours / the faster peer (below 1: ours is faster)", "",
              "| activation | " + " | ".join(f"{size} {dtype}" for size, dtype in columns) + " |",
              "|" + "---|" * (1 + len(columns))]
    ratios = {}
    for activation, size, dtype, med in rows:
        best = min((med[p] for p in peers), default=None)
        ratios.setdefault(activation, {})[size, dtype] = _ratio(med["ours"], best)
    for activation, cells in ratios.items():
        lines.append(f"| {activation} | " + " | ".join(cells.get(c, "-") for c in columns) + " |")
    return "\n".join(lines) + "\n"


def _ratio(a, b):
    return f"{a / b:.2f}" if b else "-"


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--sizes", default=",".join(SIZES), help=f"comma-separated from {', '.join(SIZES)}")
    p.add_argument("--dtypes", default="float32,float64", help="comma-separated NumPy dtypes")
    p.add_argument("--activations", default="tanh", help="comma-separated names, or all (the 14 of the catalogue); "
                                                          "tanh and relu against nn.RNN, JAX and the floor, the "
                                                          "others against JAX and a PyTorch loop")
    p.add_argument("--repeats", type=int, default=15, help="timed runs per cell (the median is reported)")
    p.add_argument("--peers", default="pytorch,jax", help="which peers to run (those not installed are skipped "
                                                           "with a note)")
    p.add_argument("--busy", type=int, nargs="?", const=1, default=0, metavar="CORES",
                   help="keep CORES cores busy (default 1 when given) with separate spinning processes meanwhile")
    p.add_argument("--markdown", metavar="FILE", help="also write the results as README-ready markdown tables to "
                                                       "FILE (- for the standard output)")
    args = p.parse_args(argv)
    sizes = args.sizes.split(",")
    bad = [s for s in sizes if s not in SIZES]
    if bad:
        p.error(f"unknown size(s) {', '.join(bad)}; known: {', '.join(SIZES)}")
    try:
        activations = parse_activations(args.activations)
    except ValueError as e:
        p.error(str(e))
    if args.busy < 0 or args.busy >= (os.cpu_count() or 1):
        p.error(f"--busy {args.busy}: keep at least one of the {os.cpu_count()} cores free, and at least 0 busy")
    dtypes = [{"float32": np.float32, "float64": np.float64}[d] for d in args.dtypes.split(",")]
    peers = installed_peers(args.peers)
    machine = (f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
               f"NumPy {np.__version__}; {describe(args.busy)}")
    print(machine)
    print(header(peers))
    start = time.perf_counter()
    with busy(args.busy):
        rows = bench(sizes, dtypes, activations, args.repeats, peers)
    print(f"({time.perf_counter() - start:.0f} s)")
    if args.markdown:
        text = markdown(rows, peers, f"`python -m bench {' '.join(argv if argv is not None else sys.argv[1:])}` "
                                     f"({machine}; medians of {args.repeats} runs)")
        if args.markdown == "-":
            print(text, end="")
        else:
            os.makedirs(os.path.dirname(args.markdown) or ".", exist_ok=True)
            with open(args.markdown, "w", encoding="utf-8") as f:
                f.write(text)
            print(f"markdown tables in {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
