"""Peak memory of one forward + backward pass, each implementation in a fresh process.

    python -m bench.memory --size large --dtype float64
    python -m bench.memory --cell lstm --size large          the LSTM against torch.nn.LSTM and JAX

Reports the growth of the process's peak resident set (ru_maxrss) during one run, after the inputs and the
implementation are set up: the memory the pass itself needs (activations kept for backward, temporaries).
"""
import argparse
import resource
import subprocess
import sys

import numpy as np


def child(name, size, dtype, cell=None):
    from bench.__main__ import SIZES, problem
    from bench.peers import PEERS, ours

    if cell:
        from bench import cells

        args = cells.problem(cell, *SIZES[size], getattr(np, dtype))
        run = {"ours": lambda *a: cells.ours(cell), "pytorch": lambda *a: cells.torch_cell(cell, *a, threads=2),
               "jax": lambda *a: cells.jax_cell(cell, *a)}[name](*args)
    else:
        args = problem(*SIZES[size], {"float32": np.float32, "float64": np.float64}[dtype])
        run = ours("tanh") if name == "ours" else PEERS[name](*args)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run(*args)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print((after - before) / 1024)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.memory", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--size", default="large", help="one of the sizes of python -m bench")
    p.add_argument("--dtype", default="float64", help="float32 or float64")
    p.add_argument("--impls", default="ours,pytorch,jax", help="comma-separated implementations to measure")
    p.add_argument("--cell", help="a cell (lstm or gru) against its PyTorch module and JAX, instead of the tanh RNN")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child, args.size, args.dtype, args.cell)
        return 0
    from bench.__main__ import SIZES

    T, N, D, H = SIZES[args.size]
    print(f"peak memory growth of one forward + backward, {args.cell or 'tanh RNN'}, {args.size} {(T, N, D, H)} "
          f"{args.dtype} "
          f"(one T x N x H array = {T * N * H * np.dtype(args.dtype).itemsize / 2**20:.1f} MiB)")
    for name in args.impls.split(","):
        cell = ["--cell", args.cell] if args.cell else []
        proc = subprocess.run([sys.executable, "-m", "bench.memory", "--child", name, "--size", args.size,
                               "--dtype", args.dtype, *cell], capture_output=True, text=True)
        result = proc.stdout.strip().splitlines()[-1] if proc.returncode == 0 else f"failed: {proc.stderr[-200:]}"
        print(f"  {name:8s} {float(result):8.1f} MiB" if proc.returncode == 0 else f"  {name:8s} {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
