"""The BLAS thread policy measured: forward + backward of ours at 1 thread, at the BLAS's default and under the
policy (generated/_support.py, blas_threads), on the machine as it is and beside a busy core; and what the policy
costs per call.

    python -m bench.threads                              tanh, every size, float32 and float64, quiet and busy
    python -m bench.threads --sizes small,medium --rounds 5 --activation sigmoid

Each configuration runs in its own process (a thread count set from outside, as OPENBLAS_NUM_THREADS does, is
the only way to time "1 thread" without the cost of switching counts), several rounds of processes interleaved in
a shuffled order; a cell is the median over rounds of each process's median. "default" and "1 thread" run with
threadpoolctl hidden from the kernels (they then leave the BLAS alone, as before the policy).
"""
import argparse
import json
import os
import subprocess
import sys

CONFIGS = {"1 thread": {"OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
           "default": {}, "policy": {}}


def child(activation, sizes, dtypes, repeats, hide_threadpoolctl):
    """In a fresh process: {"size dtype": median seconds} of forward + backward."""
    import time

    if hide_threadpoolctl:
        sys.modules["threadpoolctl"] = None  # the import in generated/_support.py then fails: no policy
    import numpy as np

    from bench.__main__ import SIZES, problem
    from bench.peers import ours

    from generated import _support

    run = ours(activation)
    out = {}
    for size in sizes:
        for dtype in dtypes:
            args = problem(*SIZES[size], getattr(np, dtype))
            run(*args)
            time.sleep(0.25)  # one full interval for the policy's first look at the load
            times, free = [], []
            for _ in range(repeats):
                start = time.perf_counter()
                run(*args)
                times.append(time.perf_counter() - start)
                if _support._BLAS_LIMIT is not None and _support._BLAS_LIMIT.free_cores.free is not None:
                    free.append(_support._BLAS_LIMIT.free_cores.free)
            out[f"{size} {dtype}"] = float(np.median(times))
            out[f"{size} {dtype} free"] = float(np.median(free)) if free else float("nan")
    return out


def overhead(activation, size, dtype, repeats=2000):
    """(median seconds blas_threads adds to one forward call at ``size`` when it leaves the BLAS alone, forward's
    own median), and the median seconds of one decision with its lowering and restoring of the thread count."""
    import time

    import numpy as np

    import generated
    from bench.__main__ import SIZES, problem
    from generated import _support

    module = generated.load(activation)
    x, h0, V, W, b, _ = problem(*SIZES[size], getattr(np, dtype))
    wrapped, bare = module.forward, getattr(module.forward, "__wrapped__", module.forward)
    times = {"wrapped": [], "bare": [], "enter": []}
    for i in range(repeats):
        for name, f in ((("wrapped", wrapped), ("bare", bare)) if i % 2 else (("bare", bare), ("wrapped", wrapped))):
            start = time.perf_counter()
            f(x, h0, V, W, b)
            times[name].append(time.perf_counter() - start)
    limit = _support._BLAS_LIMIT
    if limit is not None:
        for _ in range(repeats):
            start = time.perf_counter()
            if limit.enter(2**30):
                limit.leave()
            times["enter"].append(time.perf_counter() - start)
    median = {k: float(np.median(v)) if v else float("nan") for k, v in times.items()}
    return median["wrapped"] - median["bare"], median["bare"], median["enter"]


def measure(activation, sizes, dtypes, repeats, rounds, busy_cores):
    """{config: {"size dtype": seconds}}: the median over ``rounds`` of each child's medians."""
    import numpy as np

    from bench.busy import busy

    order = np.random.default_rng(0)
    got = {c: [] for c in CONFIGS}
    with busy(busy_cores):
        for _ in range(rounds):
            for config in order.permutation(list(CONFIGS)):
                env = {**os.environ, **CONFIGS[config]}
                code = (f"import json, bench.threads as t; print(json.dumps(t.child({activation!r}, {sizes!r}, "
                        f"{dtypes!r}, {repeats}, {config != 'policy'})))")
                done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                      check=False)
                if done.returncode:
                    raise SystemExit(f"the {config} run failed:\n{done.stderr}")
                got[config].append(json.loads(done.stdout.splitlines()[-1]))
    return {c: {k: float(np.median([r[k] for r in runs])) for k in runs[0]} for c, runs in got.items()}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.threads", description=__doc__.splitlines()[0])
    p.add_argument("--activation", default="tanh")
    p.add_argument("--sizes", default="tiny,small,medium,large")
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--repeats", type=int, default=7, help="timed runs per cell in each process")
    p.add_argument("--rounds", type=int, default=3, help="processes per configuration, interleaved")
    p.add_argument("--modes", default="quiet,busy", help="quiet (the machine as it is), busy (one core kept busy)")
    args = p.parse_args(argv)
    import platform

    import numpy as np

    from generated._support import BLAS_FREE_MARGIN

    sizes, dtypes = args.sizes.split(","), args.dtypes.split(",")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, NumPy {np.__version__}; {args.activation}, "
          f"medians in ms over {args.rounds} processes of {args.repeats} runs each")
    cost, bare, decision = overhead(args.activation, "tiny", dtypes[-1])
    print(f"blas_threads per forward call at tiny {dtypes[-1]}, where it leaves the BLAS alone: {cost * 1e6:+.1f} us "
          f"(forward alone {bare * 1e6:.0f} us); a decision that lowers and restores the count: "
          f"{decision * 1e6:.1f} us")
    for mode in args.modes.split(","):
        result = measure(args.activation, sizes, dtypes, args.repeats, args.rounds, 1 if mode == "busy" else 0)
        print(f"\n{mode}:\n{'size':7s} {'dtype':8s} " + " ".join(f"{c:>9s}" for c in CONFIGS)
              + f" {'policy/best':>12s} {'free cores':>11s}")
        for key in [k for k in result["policy"] if not k.endswith(" free")]:
            row = {c: result[c][key] for c in CONFIGS}
            best = min(row["1 thread"], row["default"])
            print(f"{key.split()[0]:7s} {key.split()[1]:8s} " + " ".join(f"{row[c] * 1e3:9.3f}" for c in CONFIGS)
                  + f" {row['policy'] / best:12.2f} {result['policy'][key + ' free']:11.2f}", flush=True)
        print(f"(free cores: what the policy saw, the median over the timed calls; it runs the BLAS on "
              f"int(free + {BLAS_FREE_MARGIN}) threads, at least 1, when that is fewer than the BLAS's own)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
