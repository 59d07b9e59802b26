"""python -m analysis: gradient flow through time for one or more activations, as a table and a PNG plot.

    python -m analysis --activations tanh,relu,sigmoid --T 60 --H 64 --scale 1.2 --plot flow.png
    python -m analysis --activations tanh --weights W.npy --inputs x.npy
    python -m analysis --activations tanh --cells lstm,lstm:b_if=1,gru --T 60 --H 64 --plot cells.png
"""
import argparse
import sys

import numpy as np

import generated
from analysis.cell_flow import analyze_cell, format_cell_table, parse_cell_spec, plot_flow
from analysis.gradient_flow import analyze, format_table, make_weights, plot


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m analysis", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--activations", default="tanh,relu,sigmoid",
                   help=f"comma-separated names from: {', '.join(generated.ACTIVATIONS)}")
    p.add_argument("--cells", default="",
                   help=f"comma-separated cells from: {', '.join(generated.CELLS)}; a cell may set bias blocks, "
                        f"e.g. lstm:b_if=1 (the forget gate's); weights at the same --scale as the RNN's W")
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
    try:
        cells = [parse_cell_spec(c) for c in args.cells.split(",") if c.strip()]
    except ValueError as e:
        p.error(str(e))
    if cells and args.weights:
        p.error("--weights gives the vanilla RNN's W; with --cells every model draws its weights at --scale")
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
    if reports:
        print(format_table(reports))
    if cells:
        cell_reports = [analyze_cell(n, T=args.T, N=args.N, D=D, H=args.H, scale=args.scale, bias=bias, x=x,
                                     lyapunov_count=args.lyapunov, seed=args.seed, progress=not args.no_progress)
                        for n, bias in cells]
        print(format_cell_table(cell_reports))
        if args.plot:
            vanilla = f" (vanilla RNN's ||W||_2 = {reports[0].w_norm:.2f})" if reports else ""
            plot_flow(reports, cell_reports, args.plot,
                      title=f"H = {args.H}, T = {cell_reports[0].distances.size}, every recurrent weight block "
                            f"drawn at scale {args.scale:g}{vanilla}; biases zero unless named")
            print(f"plot written to {args.plot}")
        return 0
    if args.plot:
        plot(reports, args.plot, title=f"Vanilla RNN, H = {W.shape[0]}, T = {reports[0].distances.size}, "
                                       f"one W for every activation, ||W||_2 = {reports[0].w_norm:.3f}")
        print(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
