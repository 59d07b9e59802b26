"""How gradients flow back through time in an RNN: the norms of dh_t/dh_k and the Lyapunov exponents.

For a trajectory of the generated kernel, dh_t/dh_k is the product of the exact one-step Jacobians
diag(f'(E_s)) W (``jacobian_products`` in every generated module). Per distance t - k this reports the spectral
norm of that product over the batch (median and the 10th-90th percentile spread) next to the bound of Pascanu,
Mikolov and Bengio (2013), (gamma ||W||_2)^(t-k), with gamma = sup |f'| taken from the derivation (``GAMMA``).

The leading Lyapunov exponents of the Jacobian product come from the QR iteration of the Lyapunov-spectrum
literature (as used for RNNs by Engelken, Wolf and Abbott, 2020): Q_0 = I, Q_s R_s = J_s Q_{s-1}, and
lambda_i = mean over s of log |R_s[i, i]|, after a burn-in; they are averaged over the batch.
"""
import sys
from dataclasses import dataclass, field

import numpy as np

import generated


@dataclass
class FlowReport:
    """The numbers for one activation. Arrays are indexed by distance - 1 (distance = t - k = 1..t)."""

    activation: str
    distances: np.ndarray
    norm_median: np.ndarray
    norm_q10: np.ndarray
    norm_q90: np.ndarray
    bound: np.ndarray
    gamma: float
    w_norm: float
    lyapunov: np.ndarray = field(default_factory=lambda: np.empty(0))


def make_weights(H, D, scale, seed=0):
    """V (H, D) and W (H, H) with Gaussian entries; W has spectral radius about ``scale``."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((H, H)) * scale / np.sqrt(H)
    V = rng.standard_normal((H, D)) / np.sqrt(D)
    return V, W


def _progress(iterable, total, label, enabled):
    """Yield from ``iterable`` while drawing a one-line progress bar on stderr."""
    for i, item in enumerate(iterable):
        if enabled:
            done = int(30 * (i + 1) / total)
            sys.stderr.write(f"\r{label:>14s} [{'#' * done}{'.' * (30 - done)}] {i + 1}/{total}")
            sys.stderr.flush()
        yield item
    if enabled:
        sys.stderr.write("\n")


def lyapunov_exponents(module, cache, count, burn_in=0, progress=False):
    """The ``count`` leading Lyapunov exponents of the Jacobian product along the cached trajectory.

    Returns (count,) averaged over the batch rows; the first ``burn_in`` steps orient Q and are not averaged.
    """
    T = cache.h.shape[0]
    N, H = cache.h0.shape
    count = min(count, H)
    if not 0 <= burn_in < T:
        raise ValueError(f"burn_in must be in 0..T-1 = 0..{T - 1}, got {burn_in}")
    d = module.derivatives(cache)  # f'(E_s) for every step
    Q = np.broadcast_to(np.eye(H, count), (N, H, count)).copy()
    sums = np.zeros((N, count))
    for s in _progress(range(T), T, "lyapunov", progress):
        Z = d[s][:, :, None] * (cache.W @ Q)  # J_s Q = diag(f'(E_s)) W Q
        Q, R = np.linalg.qr(Z)
        if s >= burn_in:
            sums += np.log(np.maximum(np.abs(np.diagonal(R, axis1=1, axis2=2)), np.finfo(float).tiny))
    exponents = np.sort(sums / (T - burn_in), axis=1)[:, ::-1]
    return exponents.mean(axis=0)


def analyze(activation, T=50, N=16, D=8, H=32, scale=1.0, W=None, V=None, x=None, lyapunov_count=5,
            burn_in=None, seed=0, progress=False):
    """Run the ``activation`` kernel on inputs and measure dh_T/dh_k for k = T-1..0 and the Lyapunov exponents.

    Weights: ``W`` and ``V`` if given, else ``make_weights(H, D, scale, seed)``. Inputs: ``x`` (T, N, D) if given,
    else standard normal. Everything runs in float64.
    """
    module = generated.load(activation) if isinstance(activation, str) else activation
    rng = np.random.default_rng(seed + 1)
    if x is not None:
        x = np.asarray(x, dtype=np.float64)
        T, N, D = x.shape
    elif V is not None:
        D = np.shape(V)[1]
    if W is None or V is None:
        V_made, W_made = make_weights(H if W is None else np.shape(W)[0], D, scale, seed)
        V = V_made if V is None else V
        W = W_made if W is None else W
    W, V = np.asarray(W, dtype=np.float64), np.asarray(V, dtype=np.float64)
    H = W.shape[0]
    if x is None:
        x = rng.standard_normal((T, N, D))
    h0 = np.zeros((N, H))
    b = np.zeros(H)
    _, cache = module.forward(x, h0, V, W, b)
    P = module.jacobian_products(cache, T)  # P[k] = dh_T/dh_k
    norms = np.empty((T, N))
    for k in _progress(range(T), T, f"{module.NAME} norms", progress):
        norms[T - 1 - k] = np.linalg.norm(P[k], ord=2, axis=(1, 2))  # distance T - k
    distances = np.arange(1, T + 1)
    w_norm = float(np.linalg.norm(W, 2))
    gamma = float(module.GAMMA) if module.GAMMA is not None else np.nan
    burn_in = T // 5 if burn_in is None else burn_in
    return FlowReport(
        activation=module.NAME, distances=distances,
        norm_median=np.median(norms, axis=1), norm_q10=np.quantile(norms, 0.1, axis=1),
        norm_q90=np.quantile(norms, 0.9, axis=1), bound=(gamma * w_norm) ** distances.astype(float),
        gamma=gamma, w_norm=w_norm,
        lyapunov=lyapunov_exponents(module, cache, lyapunov_count, burn_in, progress) if lyapunov_count else
        np.empty(0),
    )


def format_table(reports, rows=(1, 2, 5, 10, 20, 50, 100, 200, 500)):
    """The same numbers as the plot, for a terminal."""
    out = []
    for r in reports:
        out.append(f"{r.activation}: gamma = sup|f'| = {r.gamma:.4g}, ||W||_2 = {r.w_norm:.4g}, "
                   f"gamma ||W||_2 = {r.gamma * r.w_norm:.4g}")
        out.append(f"  {'t-k':>5s} {'median ||dh_t/dh_k||':>22s} {'10%':>11s} {'90%':>11s} {'bound':>11s}")
        for dist in [d for d in rows if d <= len(r.distances)]:
            i = dist - 1
            out.append(f"  {dist:>5d} {r.norm_median[i]:>22.4e} {r.norm_q10[i]:>11.4e} {r.norm_q90[i]:>11.4e} "
                       f"{r.bound[i]:>11.4e}")
        if r.lyapunov.size:
            out.append("  leading Lyapunov exponents: " + ", ".join(f"{v:+.4f}" for v in r.lyapunov))
        out.append("")
    return "\n".join(out)


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
HATCHES = ("", "//", "..", "xx", "\\\\", "oo", "--", "++")  # the bars keep apart without colour too
BOUND_DASHES = ((6, 2), (2, 2), (6, 2, 2, 2), (1, 3), (8, 3, 1, 3, 1, 3), (4, 4), (10, 2), (3, 1, 1, 1))


def plot(reports, path, title=None):
    """Norm of dh_t/dh_k against t - k on a log scale, one colour per activation, each bound dashed; and the
    Lyapunov exponents. Writes a PNG to ``path``. Needs matplotlib (``pip install -e .[plot]``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = draw(reports, title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw(reports, title=None):
    """The figure of ``plot``. Lines of two activations can coincide (tanh's and relu's bounds at one W, both
    gamma = 1; medians that agree): each activation has its own marker, placed at its own offset along the line,
    and each bound its own dash pattern, so every line stays visible where another lies on it."""
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 5), gridspec_kw={"width_ratios": [2, 1]})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, r in enumerate(reports):
        c = colors[i % len(colors)]
        n = len(r.distances)
        step = max(1, n // 8)
        every = (min(n - 1, i * max(1, step // max(1, len(reports)))), step)  # markers of two lines interleave
        marker = MARKERS[i % len(MARKERS)]
        ax.semilogy(r.distances, r.norm_median, color=c, lw=2, marker=marker, markevery=every, ms=6,
                    label=f"{r.activation}: median over the batch")
        ax.fill_between(r.distances, r.norm_q10, r.norm_q90, color=c, alpha=0.2)
        ax.semilogy(r.distances, r.bound, color=c, lw=1.2, dashes=BOUND_DASHES[i % len(BOUND_DASHES)],
                    marker=marker, markevery=every, ms=4, mfc="none",
                    label=rf"{r.activation}: bound $(\gamma\,\|W\|_2)^{{t-k}}$, $\gamma$ = {r.gamma:.3g}")
    ax.set_xlabel("distance t - k (time steps)")
    ax.set_ylabel(r"spectral norm $\|\partial h_t / \partial h_k\|_2$")
    ax.set_title("Gradient flow back through time (band: 10th-90th percentile)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    width = 0.8 / max(1, len(reports))
    for i, r in enumerate(reports):
        idx = np.arange(len(r.lyapunov))
        ax2.bar(idx + i * width, r.lyapunov, width=width, color=colors[i % len(colors)], label=r.activation,
                hatch=HATCHES[i % len(HATCHES)], edgecolor="black", lw=0.5)
    ax2.axhline(0, color="black", lw=0.8)
    ax2.set_xlabel("exponent index i (largest first)")
    ax2.set_ylabel(r"Lyapunov exponent $\lambda_i$ (per step)")
    ax2.set_title("Leading Lyapunov exponents")
    ax2.legend(fontsize=8)
    ax2.grid(True, axis="y", alpha=0.3)
    fig.suptitle(title or f"Vanilla RNN, one W for every activation, ||W||_2 = {reports[0].w_norm:.3f}")
    fig.tight_layout()
    return fig
