"""Forward plus full BPTT backward of the generated LSTM and GRU cells against torch.nn.LSTM / torch.nn.GRU.

    python -m bench.cells                      both cells, small and medium sizes, float32 and float64
    python -m bench.cells --repeats 30 --threads 1

Loss: L = sum_t <G_t, h_t> for a fixed random G; both sides use the same weights, and each side's gradients are
checked against PyTorch's before timing. Medians over ``--repeats`` runs after a warm-up, each side in turn.
NumPy's BLAS and PyTorch get the same number of threads (set before NumPy loads).
"""
import argparse
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads must not spin while the other side runs
SIZES = {"tiny": (20, 2, 4, 8), "small": (100, 16, 32, 64), "medium": (100, 32, 64, 128)}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.cells", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sizes", default="small,medium")
    args = parser.parse_args(argv)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import time

    import numpy as np
    import torch

    import generated

    torch.set_num_threads(args.threads)

    def median_ms(fn):
        fn()
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return 1e3 * float(np.median(times))

    print(f"{'cell':5s} {'size':20s} {'dtype':8s} {'ours':>7s} {'torch':>7s}   (medians in ms, {args.threads} thread(s))")
    for name, layer_type in (("lstm", torch.nn.LSTM), ("gru", torch.nn.GRU)):
        module = generated.load(name)
        for size in args.sizes.split(","):
            T, N, D, H = SIZES[size]
            for dtype, tdtype in ((np.float32, torch.float32), (np.float64, torch.float64)):
                rng = np.random.default_rng(0)
                torch.manual_seed(0)
                layer = layer_type(D, H).to(tdtype)
                params = [getattr(layer, f"{p}_l0").detach().numpy().copy()
                          for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
                x = rng.standard_normal((T, N, D)).astype(dtype)
                G = rng.standard_normal((T, N, H)).astype(dtype)
                states = [np.zeros((N, H), dtype)] * (2 if name == "lstm" else 1)
                xt, Gt = torch.tensor(x, requires_grad=True), torch.tensor(G)

                def ours():
                    h, cache = module.forward(x, *states, *params)
                    return module.backward(G, cache)

                def theirs():
                    xt.grad = None
                    layer.zero_grad()
                    (layer(xt)[0] * Gt).sum().backward()

                theirs()
                grads = ours()
                tol = 1e-8 if dtype == np.float64 else 2e-3
                err = np.abs(grads.dx - xt.grad.numpy()).max() / np.abs(xt.grad.numpy()).max()
                if err > tol:
                    sys.exit(f"{name} {size} {dtype.__name__}: gradients disagree with PyTorch ({err:.1e})")
                print(f"{name:5s} {str((T, N, D, H)):20s} {dtype.__name__:8s} {median_ms(ours):7.1f} "
                      f"{median_ms(theirs):7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
