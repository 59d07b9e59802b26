"""Gradient flow through time for a generated cell: norms of the state Jacobian products, block by block, and the
leading Lyapunov exponents of the full state's Jacobian product.

For a cell with states s = (h, c, ...), ds_T/ds_k is the product of the exact one-step block Jacobians
(``jacobian_products`` in every cell module). Per distance T - k this reports the spectral norm of the whole product
and of each block (for the LSTM dh_T/dh_k, dh_T/dc_k, dc_T/dh_k, dc_T/dc_k), as the median and the 10th-90th
percentile over the batch. The Lyapunov exponents use the same QR iteration as ``analysis.gradient_flow``, on the
full state's Jacobian ``jacobian(cache, s)``.

Weights are Gaussian, every recurrent block W_k (H, H) with entries of standard deviation scale / sqrt(H) (spectral
radius about ``scale``, the vanilla RNN's W in ``analysis.gradient_flow.make_weights`` at the same scale), input
blocks 1 / sqrt(D), biases zero except those named in ``bias`` (e.g. {"b_if": 1.0}: the LSTM's forget gate bias).
"""
from dataclasses import dataclass, field

import numpy as np

import generated
from analysis.gradient_flow import _progress
from derive.cell import read_cells


@dataclass
class CellFlowReport:
    """The numbers for one cell. Arrays are indexed by distance - 1 (distance = T - k = 1..T); ``blocks`` maps
    (row state, column state) to (median, q10, q90) of ||d row_T / d column_k||_2, ``full`` the whole state's."""

    cell: str
    states: tuple
    distances: np.ndarray
    full: tuple
    blocks: dict
    w_norm: float
    bias: dict
    lyapunov: np.ndarray = field(default_factory=lambda: np.empty(0))


def _cell(name):
    for c in read_cells():
        if c.name == name:
            return c
    raise ValueError(f"unknown cell {name!r}; known: {', '.join(generated.CELLS)}")


def parse_cell_spec(spec):
    """'lstm' or 'lstm:b_if=1:b_hf=0.5' -> ('lstm', {'b_if': 1.0, 'b_hf': 0.5}); ValueError naming the text."""
    name, *settings = spec.strip().split(":")
    bias = {}
    for item in settings:
        block, eq, value = item.partition("=")
        try:
            bias[block.strip()] = float(value)
        except ValueError:
            eq = ""
        if not eq or not block.strip():
            raise ValueError(f"cell {spec!r}: {item!r} is not BLOCK=VALUE (e.g. lstm:b_if=1)") from None
    if name not in generated.CELLS:
        raise ValueError(f"unknown cell {name!r}; known: {', '.join(generated.CELLS)}")
    blocks = {b for p in _cell(name).params for b in p.blocks if not p.is_matrix}
    unknown = sorted(set(bias) - blocks)
    if unknown:
        raise ValueError(f"cell {spec!r}: {', '.join(unknown)} is not a bias block of {name}; its bias blocks: "
                         f"{', '.join(sorted(blocks))}")
    return name, bias


def make_cell_weights(name, H, D, scale, seed=0, bias=None):
    """The parameters of cell ``name`` in forward's order: recurrent blocks N(0, scale^2 / H), input blocks
    N(0, 1 / D), biases zero but the blocks named in ``bias`` ({block: value}; names the cell lacks are ignored)."""
    cell = _cell(name)
    rng = np.random.default_rng(seed)
    bias = bias or {}
    out = []
    for p in cell.params:
        if p.is_matrix:
            cols = D if p.shape[1] == cell.input_size else H
            std = 1.0 / np.sqrt(D) if cols == D else scale / np.sqrt(H)
            out.append(rng.standard_normal((len(p.blocks) * H, cols)) * std)
        else:
            out.append(np.concatenate([np.full(H, float(bias.get(b, 0.0))) for b in p.blocks]))
    return out


def _spread(norms):
    return np.median(norms, axis=1), np.quantile(norms, 0.1, axis=1), np.quantile(norms, 0.9, axis=1)


def cell_lyapunov_exponents(module, cache, count, burn_in=0, progress=False):
    """The ``count`` leading Lyapunov exponents of the full state's Jacobian product along the cached trajectory,
    averaged over the batch rows: (count,)."""
    T = getattr(cache, module.OUTPUT).shape[0]
    first = module.jacobian(cache, 1)
    N, S, _ = first.shape
    count = min(count, S)
    if not 0 <= burn_in < T:
        raise ValueError(f"burn_in must be in 0..T-1 = 0..{T - 1}, got {burn_in}")
    Q = np.broadcast_to(np.eye(S, count), (N, S, count)).copy()
    sums = np.zeros((N, count))
    for s in _progress(range(1, T + 1), T, f"{module.NAME} lyapunov", progress):
        Q, R = np.linalg.qr(module.jacobian(cache, s) @ Q)
        if s > burn_in:
            sums += np.log(np.maximum(np.abs(np.diagonal(R, axis1=1, axis2=2)), np.finfo(float).tiny))
    exponents = np.sort(sums / (T - burn_in), axis=1)[:, ::-1]
    return exponents.mean(axis=0)


def analyze_cell(name, T=60, N=16, D=16, H=64, scale=1.0, bias=None, x=None, lyapunov_count=5, burn_in=None,
                 seed=0, progress=False):
    """Run cell ``name`` (float64) on standard normal inputs (or ``x`` (T, N, D)) from zero states, with
    ``make_cell_weights(name, H, D, scale, seed, bias)``, and measure ds_T/ds_k for k = T-1..0 block by block."""
    if name not in generated.CELLS:
        raise ValueError(f"{name!r} is not a cell; cells: {', '.join(generated.CELLS)}")
    module = generated.load(name)
    if x is not None:
        x = np.asarray(x, dtype=np.float64)
        T, N, D = x.shape
    else:
        x = np.random.default_rng(seed + 1).standard_normal((T, N, D))
    params = make_cell_weights(name, H, D, scale, seed, bias)
    states = [np.zeros((N, H)) for _ in module.STATES]
    _, cache = module.forward(x, *states, *params)
    P = module.jacobian_products(cache, T)  # P[k] = ds_T/ds_k, (T, N, S, S)
    sizes = [getattr(cache, s).shape[2] for s in module.STATES]
    edges = np.concatenate([[0], np.cumsum(sizes)])
    full = np.empty((T, N))
    blocks = {(r, c): np.empty((T, N)) for r in module.STATES for c in module.STATES}
    for k in _progress(range(T), T, f"{name} norms", progress):
        full[T - 1 - k] = np.linalg.norm(P[k], ord=2, axis=(1, 2))  # distance T - k
        for i, r in enumerate(module.STATES):
            for j, c in enumerate(module.STATES):
                block = P[k][:, edges[i]:edges[i + 1], edges[j]:edges[j + 1]]
                blocks[(r, c)][T - 1 - k] = np.linalg.norm(block, ord=2, axis=(1, 2))
    recurrent = [p for p in params if p.ndim == 2 and p.shape[1] == H]
    w_norm = max(float(np.linalg.norm(W[k * H:(k + 1) * H], 2)) for W in recurrent for k in range(W.shape[0] // H))
    burn_in = T // 5 if burn_in is None else burn_in
    return CellFlowReport(
        cell=name, states=tuple(module.STATES), distances=np.arange(1, T + 1), full=_spread(full),
        blocks={key: _spread(v) for key, v in blocks.items()}, w_norm=w_norm,
        bias={b: v for b, v in (bias or {}).items() if any(b in p.blocks for p in _cell(name).params)},
        lyapunov=cell_lyapunov_exponents(module, cache, lyapunov_count, burn_in, progress) if lyapunov_count
        else np.empty(0))


def format_cell_table(reports, rows=(1, 2, 5, 10, 20, 50, 100, 200, 500)):
    """The same numbers as the plot, for a terminal: per distance the median norm of the whole state's product and
    of each block."""
    out = []
    for r in reports:
        keys = list(r.blocks) if len(r.states) > 1 else []
        bias = ", ".join(f"{b} = {v:g}" for b, v in r.bias.items()) or "all zero"
        out.append(f"{r.cell}: states {', '.join(r.states)}; largest ||W_k||_2 of a recurrent block = "
                   f"{r.w_norm:.4g}; biases: {bias}")
        head = f"  {'t-k':>5s} {'median ||ds_t/ds_k||':>22s}" + "".join(
            f" {f'd{a}_t/d{b}_k':>11s}" for a, b in keys)
        out.append(head)
        for dist in [d for d in rows if d <= len(r.distances)]:
            i = dist - 1
            out.append(f"  {dist:>5d} {r.full[0][i]:>22.4e}" + "".join(f" {r.blocks[k][0][i]:>11.4e}" for k in keys))
        if r.lyapunov.size:
            out.append("  leading Lyapunov exponents: " + ", ".join(f"{v:+.4f}" for v in r.lyapunov))
        out.append("")
    return "\n".join(out)


BLOCK_STYLES = ("-", "--", ":", "-.")


def plot_flow(rnn_reports, cell_reports, path, title=None):
    """Median norms against t - k on a log scale, one colour per model: the vanilla RNNs' ||dh_t/dh_k||, each cell's
    norm and, for cells with several states, each state's own block ds_t/ds_k (a line style per state); and the Lyapunov
    exponents. Writes a PNG to ``path``. Needs matplotlib (``pip install -e .[plot]``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 5.5), gridspec_kw={"width_ratios": [2, 1]})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    labels, exponents = [], []
    c = 0
    for r in rnn_reports:
        color = colors[c % len(colors)]
        c += 1
        ax.semilogy(r.distances, r.norm_median, color=color, lw=2,
                    label=rf"vanilla RNN ({r.activation}): $\|\partial h_t/\partial h_k\|$")
        ax.fill_between(r.distances, r.norm_q10, r.norm_q90, color=color, alpha=0.15)
        labels.append(f"RNN {r.activation}")
        exponents.append(r.lyapunov)
    for r in cell_reports:
        color = colors[c % len(colors)]
        c += 1
        bias = "".join(f", ${b[0]}_{{{b[2:]}}}$ = {v:g}" for b, v in r.bias.items())
        if len(r.states) == 1:
            (s,) = r.states
            med, q10, q90 = r.full
            ax.semilogy(r.distances, med, color=color, lw=2,
                        label=rf"{r.cell}{bias}: $\|\partial {s}_t/\partial {s}_k\|$")
            ax.fill_between(r.distances, q10, q90, color=color, alpha=0.15)
        else:  # the paths that stay in one state; the table has every block
            for style, s in zip(BLOCK_STYLES, r.states):
                med = r.blocks[(s, s)][0]
                ax.semilogy(r.distances, med, color=color, lw=2, ls=style,
                            label=rf"{r.cell}{bias}: $\|\partial {s}_t/\partial {s}_k\|$")
        labels.append(r.cell + bias.replace("$", "").replace("_{", "_").replace("}", ""))
        exponents.append(r.lyapunov)
    ax.set_xlabel("distance t - k (time steps)")
    ax.set_ylabel("spectral norm of the Jacobian product (median over the batch)")
    ax.set_title("Gradient flow back through time")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7.5, loc="lower left")
    width = 0.8 / max(1, len(labels))
    for i, (label, lyap) in enumerate(zip(labels, exponents)):
        ax2.bar(np.arange(len(lyap)) + i * width, lyap, width=width, color=colors[i % len(colors)], label=label)
    ax2.axhline(0, color="black", lw=0.8)
    lowest = min((float(np.min(e)) for e in exponents if len(e)), default=0.0)
    if lowest < 0:  # room under the bars for the legend
        ax2.set_ylim(bottom=1.6 * lowest)
    ax2.set_xlabel("exponent index i (largest first)")
    ax2.set_ylabel(r"Lyapunov exponent $\lambda_i$ (per step)")
    ax2.set_title("Leading Lyapunov exponents (whole state)")
    ax2.legend(fontsize=8, loc="lower right")
    ax2.grid(True, axis="y", alpha=0.3)
    fig.suptitle(title or "Gradient flow through time")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
