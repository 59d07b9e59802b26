"""python -m analysis: gradient flow through time for one or more activations, as a table and a PNG plot.

    python -m analysis --activations tanh,relu,sigmoid --T 60 --H 64 --scale 1.2 --plot flow.png
    python -m analysis --activations tanh --weights W.npy --inputs x.npy
"""
import argparse
import sys

import numpy as np

import generated
from analysis.gradient_flow import analyze, format_table, make_weights, plot


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m analysis", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--activations", default="tanh,relu,sigmoid",
                   help=f"comma-separated names from: {', '.join(generated.ACTIVATIONS)}")
    p.add_argument("--T", type=int, default=60, help="sequence length")
    p.add_argument("--N", type=int, default=16, help="batch size: the spread is taken over it")
    p.add_argument("--D", type=int, default=16, help="input size")
    p.add_argument("--H", type=int, default=64, help="hidden size")
    p.add_argument("--scale", type=float, default=1.0, help="spectral radius of the random W")
    p.add_argument("--weights", help="a .npy file holding W (H, H) to use instead of a random one")
    p.add_argument("--inputs", help="a .npy file holding x (T, N, D) to use instead of random inputs")
    p.add_argument("--lyapunov", type=int, default=5, help="how many leading Lyapunov exponents")
    p.add_argument("--seed", type=int, default=0, help="seed of the random W and inputs")
    p.add_argument("--plot", help="write the plot to this PNG file (needs matplotlib)")
    p.add_argument("--no-progress", action="store_true", help="do not draw progress bars")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.activations.split(",") if n.strip()]
    unknown = [n for n in names if n not in generated.ACTIVATIONS]
    if unknown:
        p.error(f"unknown activation(s) {', '.join(unknown)}; known: {', '.join(generated.ACTIVATIONS)}")
    x = np.load(args.inputs) if args.inputs else None
    if x is not None and x.ndim != 3:
        p.error(f"--inputs must hold an array of shape (T, N, D), got {x.shape}")
    D = x.shape[2] if x is not None else args.D
    if args.weights:
        W = np.load(args.weights)
        if W.ndim != 2 or W.shape[0] != W.shape[1]:
            p.error(f"--weights must hold a square array W (H, H), got {W.shape}")
        V, _ = make_weights(W.shape[0], D, 1.0, args.seed)
    else:
        V, W = make_weights(args.H, D, args.scale, args.seed)  # one W for every activation
    reports = [analyze(n, T=args.T, N=args.N, D=D, W=W, V=V, x=x, lyapunov_count=args.lyapunov, seed=args.seed,
                       progress=not args.no_progress) for n in names]
    print(format_table(reports))
    if args.plot:
        plot(reports, args.plot, title=f"Vanilla RNN, H = {W.shape[0]}, T = {reports[0].distances.size}, "
                                       f"one W for every activation, ||W||_2 = {reports[0].w_norm:.3f}")
        print(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
