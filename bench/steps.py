"""One kernel's targets side by side: forward alone and backward alone of each target forced (BACKEND), against
NumPy's loop, as ratios. What decides the dispatch between targets (NUMBA_STEP_FORWARD and _BACKWARD: README,
Performance).

    python -m bench.steps                                   numba_step against numpy, every activation, medium
    python -m bench.steps --activations gelu,silu --sizes medium,large --target numba_step
    python -m bench.steps --sizes small --target numba_blas

The targets run interleaved, in one process, after a warm-up that also checks that both give the same h and dW
(to 1e-12 of the largest entry in float64, 2e-5 in float32: the compiled steps compute f in double); a cell is the
median of ``--repeats`` runs.
"""
import argparse
import time

import numpy as np

import generated
from bench.__main__ import SIZES, parse_activations, problem

TOLERANCE = {np.float64: 1e-12, np.float32: 2e-5}


def _run(module, target, args, G):
    saved = module.BACKEND
    module.BACKEND = target
    try:
        t0 = time.perf_counter()
        h, cache = module.forward(*args)
        t1 = time.perf_counter()
        grads = module.backward(G, cache)
        return t1 - t0, time.perf_counter() - t1, h, grads
    finally:
        module.BACKEND = saved


def compare(name, size, dtype, target, repeats):
    """(forward ratio, backward ratio, NumPy's forward ms, NumPy's backward ms) of ``target`` against "numpy"."""
    module = generated.load(name)
    *args, G = problem(*SIZES[size], dtype)
    _, _, h_ref, g_ref = _run(module, "numpy", args, G)
    _, _, h, g = _run(module, target, args, G)
    for label, got, want in (("h", h, h_ref), ("dW", g.dW, g_ref.dW)):
        if np.abs(got - want).max() > TOLERANCE[dtype] * np.abs(want).max():
            raise AssertionError(f"{name} {size} {dtype.__name__}: {target}'s {label} differs from numpy's")
    times = {t: ([], []) for t in ("numpy", target)}
    for _ in range(repeats):
        for t in times:
            forward, backward, _, _ = _run(module, t, args, G)
            times[t][0].append(forward)
            times[t][1].append(backward)
    (nf, nb), (tf, tb) = ([np.median(v) for v in times[t]] for t in ("numpy", target))
    return tf / nf, tb / nb, nf * 1e3, nb * 1e3


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.steps", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--activations", default="all", help="comma-separated names, or all")
    p.add_argument("--sizes", default="medium", help=f"comma-separated from {', '.join(SIZES)}")
    p.add_argument("--dtypes", default="float32,float64", help="comma-separated NumPy dtypes")
    p.add_argument("--target", default="numba_step", choices=["numba", "numba_blas", "numba_step"],
                   help="the target timed against numpy")
    p.add_argument("--repeats", type=int, default=25, help="timed runs per cell (the median is reported)")
    args = p.parse_args(argv)
    try:
        activations = parse_activations(args.activations)
    except ValueError as e:
        p.error(str(e))
    sizes = args.sizes.split(",")
    bad = [s for s in sizes if s not in SIZES]
    if bad:
        p.error(f"unknown size(s) {', '.join(bad)}; known: {', '.join(SIZES)}")
    known = {"float32": np.float32, "float64": np.float64}
    if any(d not in known for d in args.dtypes.split(",")):
        p.error(f"--dtypes {args.dtypes}: float32 and/or float64")
    dtypes = [known[d] for d in args.dtypes.split(",")]
    print(f"{args.target} / numpy, medians of {args.repeats} interleaved runs (auto: what BACKEND 'auto' runs "
          "above small for that pass)")
    print(f"{'activation':10s} {'size':6s} {'dtype':7s} {'forward':>8s} {'(numpy ms)':>10s} {'auto':>5s} "
          f"{'backward':>8s} {'(numpy ms)':>10s} {'auto':>5s}")
    for name in activations:
        module = generated.load(name)
        for size in sizes:
            for dtype in dtypes:
                f, b, nf, nb = compare(name, size, dtype, args.target, args.repeats)
                key = np.dtype(dtype).name
                auto = ["step" if key in getattr(module, f"NUMBA_STEP_{p}", ()) else "numpy"
                        for p in ("FORWARD", "BACKWARD")]
                print(f"{name:10s} {size:6s} {key:7s} {f:8.2f} {nf:10.2f} {auto[0]:>5s} {b:8.2f} {nb:10.2f} "
                      f"{auto[1]:>5s}", flush=True)


if __name__ == "__main__":
    main()
