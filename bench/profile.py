"""Where the time of ours goes: cProfile of forward + backward, grouped by NumPy call.

    python -m bench.profile --size large --dtype float64
    python -m bench.profile --cell lstm --size medium --dtype float32
"""
import argparse
import cProfile
import pstats
import sys

import numpy as np

from bench.__main__ import SIZES, problem
from bench.peers import ours


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.profile", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--size", default="large", help="one of the sizes of python -m bench")
    p.add_argument("--dtype", default="float64", help="float32 or float64")
    p.add_argument("--activation", default="tanh", help="a name in generated.ACTIVATIONS")
    p.add_argument("--cell", help="profile this cell (lstm, gru) instead of the RNN with --activation")
    p.add_argument("--repeats", type=int, default=5, help="forward and backward passes profiled")
    args = p.parse_args(argv)
    if args.cell:
        from bench import cells

        data = cells.problem(args.cell, *SIZES[args.size], getattr(np, args.dtype))
        run = cells.ours(args.cell)
    else:
        data = problem(*SIZES[args.size], {"float32": np.float32, "float64": np.float64}[args.dtype])
        run = ours(args.activation)
    run(*data)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(args.repeats):
        run(*data)
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = stats.total_tt
    rows = sorted(((v[2], k) for k, v in stats.stats.items()), reverse=True)[:10]
    print(f"{args.cell or args.activation} {args.size} {args.dtype}: {total / args.repeats * 1e3:.1f} ms per forward "
          f"+ backward")
    for tt, (filename, line, name) in rows:
        where = name if filename == "~" else f"{name} ({filename.rsplit('/', 1)[-1]}:{line})"
        print(f"  {tt / total * 100:5.1f} %  {tt / args.repeats * 1e3:8.2f} ms  {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
