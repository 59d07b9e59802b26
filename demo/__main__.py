"""make demo: a character-level language model trained with the generated RNN and cell kernels.

    python -m demo --activations tanh,relu,gelu --cells lstm,gru --iterations 1500 --plot docs/demo_loss.png

One-hot characters -> the RNN (generated forward and BPTT, any activation) or a generated cell (LSTM, GRU, ...)
-> a softmax layer. Truncated BPTT over
chunks of --seq characters with the hidden state carried from chunk to chunk, in --batch parallel streams of the
text; gradients clipped to a global norm of --clip; Adam. A progress bar shows the loss, samples of generated
text are printed as training goes, and the loss curves go to a PNG.
"""
import argparse
import sys
import time

import numpy as np

import generated
from demo.softmax import softmax_cross_entropy
from demo.text import stdlib_text


class _Adam:
    """Adam with global gradient-norm clipping over the parameters named in ``self.names``."""

    def adam(self, grads, lr, clip, beta1=0.9, beta2=0.999, eps=1e-8):
        norm = np.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
        scale = min(1.0, clip / (norm + 1e-12))                      # global gradient-norm clipping
        self.steps += 1
        for n in self.names:
            g = grads[n] * scale
            self.m[n] = beta1 * self.m[n] + (1 - beta1) * g
            self.v[n] = beta2 * self.v[n] + (1 - beta2) * g * g
            m_hat = self.m[n] / (1 - beta1 ** self.steps)
            v_hat = self.v[n] / (1 - beta2 ** self.steps)
            self.params[n][...] -= lr * m_hat / (np.sqrt(v_hat) + eps)
        return norm

    def _init_adam(self):
        self.m = {n: np.zeros_like(self.params[n]) for n in self.names}
        self.v = {n: np.zeros_like(self.params[n]) for n in self.names}
        self.steps = 0

    def _draw(self, state, rng, temperature):
        z = (state[0] @ self.params["Wy"].T + self.params["by"])[0] / temperature
        p = np.exp(z - z.max())
        return int(rng.choice(p.size, p=p / p.sum()))


class CharCell(_Adam):
    """A generated cell (its ``forward``, ``backward``, ``step_forward``) under the same softmax layer. Weights
    as PyTorch initialises its LSTM and GRU: uniform in +-1/sqrt(hidden)."""

    def __init__(self, cell, vocab, hidden, seed=0):
        from derive.cell import read_cells  # the cell's parameter layout: block counts and which size is D

        rng = np.random.default_rng(seed)
        self.kernels = generated.load(cell)
        spec = next(c for c in read_cells() if c.name == cell)
        k = 1.0 / np.sqrt(hidden)
        self.params = {}
        for p in spec.params:
            rows = len(p.blocks) * hidden
            shape = (rows, vocab if p.shape[1] == spec.input_size else hidden) if p.is_matrix else (rows,)
            self.params[p.name] = rng.uniform(-k, k, shape)
        self.params["Wy"] = rng.standard_normal((vocab, hidden)) * 0.1
        self.params["by"] = np.zeros(vocab)
        self.weights = [p.name for p in spec.params]                 # forward's order
        self.names = tuple(self.params)
        self.hidden = hidden
        self._init_adam()

    def zero_state(self, batch):
        return tuple(np.zeros((batch, self.hidden)) for _ in self.kernels.STATES)

    def loss_and_grads(self, x, targets, state):
        h, cache = self.kernels.forward(x, *state, *(self.params[n] for n in self.weights))
        Wy, by = self.params["Wy"], self.params["by"]
        logits = h @ Wy.T + by
        loss, dlogits = softmax_cross_entropy(logits, targets)
        g = self.kernels.backward(dlogits @ Wy, cache)               # BPTT through the derived cell
        grads = {n: getattr(g, f"d{n}") for n in self.weights}
        grads["Wy"] = dlogits.reshape(-1, dlogits.shape[-1]).T @ h.reshape(-1, h.shape[-1])
        grads["by"] = dlogits.sum(axis=(0, 1))
        return loss, grads, tuple(getattr(cache, s)[-1] for s in self.kernels.STATES)

    def sample(self, seed_index, length, rng, temperature=0.8):
        """Generate ``length`` characters, one step at a time (step_forward)."""
        vocab = self.params["Wy"].shape[0]
        state, index, out = self.zero_state(1), seed_index, []
        weights = [self.params[n] for n in self.weights]
        for _ in range(length):
            x = np.zeros((1, vocab))
            x[0, index] = 1.0
            _, cache = self.kernels.step_forward(x, *state, *weights)
            state = tuple(getattr(cache, s)[-1] for s in self.kernels.STATES)
            out_state = (getattr(cache, self.kernels.OUTPUT)[-1],)
            index = self._draw(out_state, rng, temperature)
            out.append(index)
        return out


class CharRNN(_Adam):
    """Parameters and one training step of the model; the recurrence is the generated kernel."""

    def __init__(self, activation, vocab, hidden, seed=0):
        rng = np.random.default_rng(seed)
        self.kernels = generated.load(activation)
        self.V = rng.standard_normal((hidden, vocab)) * 0.1          # input weights (one-hot -> E_t)
        self.W = rng.standard_normal((hidden, hidden)) * 0.5 / np.sqrt(hidden)  # spectral radius ~0.5
        self.b = np.zeros(hidden)
        self.Wy = rng.standard_normal((vocab, hidden)) * 0.1         # output layer
        self.by = np.zeros(vocab)
        self.names = ("V", "W", "b", "Wy", "by")
        self.params = {n: getattr(self, n) for n in self.names}     # the same arrays, updated in place
        self.hidden = hidden
        self._init_adam()

    def zero_state(self, batch):
        return np.zeros((batch, self.hidden))

    def loss_and_grads(self, x, targets, h0):
        h, cache = self.kernels.forward(x, h0, self.V, self.W, self.b)
        logits = h @ self.Wy.T + self.by
        loss, dlogits = softmax_cross_entropy(logits, targets)
        dh = dlogits @ self.Wy                                       # dL/dh_t from the output layer
        g = self.kernels.backward(dh, cache)                          # BPTT through the derived kernel
        grads = {"V": g.dV, "W": g.dW, "b": g.db,
                 "Wy": dlogits.reshape(-1, dlogits.shape[-1]).T @ h.reshape(-1, h.shape[-1]),
                 "by": dlogits.sum(axis=(0, 1))}
        return loss, grads, h[-1]

    def sample(self, seed_index, length, rng, temperature=0.8):
        """Generate ``length`` characters, one step at a time (step_forward)."""
        vocab, hidden = self.Wy.shape
        h = np.zeros((1, hidden))
        index, out = seed_index, []
        for _ in range(length):
            x = np.zeros((1, vocab))
            x[0, index] = 1.0
            h, _ = self.kernels.step_forward(x, h, self.V, self.W, self.b)
            z = (h @ self.Wy.T + self.by)[0] / temperature
            p = np.exp(z - z.max())
            index = int(rng.choice(vocab, p=p / p.sum()))
            out.append(index)
        return out


def _bar(i, total, loss, start, activation):
    done = int(30 * i / total)
    rate = i / max(time.perf_counter() - start, 1e-9)
    return f"\r{activation:>10s} [{'#' * done}{'.' * (30 - done)}] {i}/{total} loss {loss:.3f} {rate:5.1f} it/s"


def train(activation, text, iterations=1500, hidden=128, seq=50, batch=16, lr=3e-3, clip=5.0, seed=0,
          sample_every=500, out=sys.stdout, progress=True):
    """Train one model, the vanilla RNN with ``activation`` or, when it names a cell (``generated.CELLS``), that
    cell; returns the smoothed loss after each iteration (and prints samples along the way)."""
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    data = np.array([index[c] for c in text])
    vocab = len(chars)
    stream = len(data) // batch
    streams = data[: stream * batch].reshape(batch, stream)  # batch parallel streams of the text
    model = (CharCell if activation in generated.CELLS else CharRNN)(activation, vocab, hidden, seed)
    rng = np.random.default_rng(seed)
    eye = np.eye(vocab)
    h = model.zero_state(batch)
    smooth, curve, pos, start = np.log(vocab), [], 0, time.perf_counter()
    for i in range(1, iterations + 1):
        if pos + seq + 1 > stream:
            pos, h = 0, model.zero_state(batch)                      # back to the start of every stream
        chunk = streams[:, pos: pos + seq + 1].T                      # (seq + 1, batch)
        loss, grads, h = model.loss_and_grads(eye[chunk[:-1]], chunk[1:], h)  # h carried to the next chunk
        model.adam(grads, lr, clip)
        pos += seq
        smooth = 0.98 * smooth + 0.02 * loss if i > 1 else loss
        curve.append(smooth)
        if progress and (i % 10 == 0 or i == iterations):
            out.write(_bar(i, iterations, smooth, start, activation))
            out.flush()
        if sample_every and (i % sample_every == 0 or i == iterations):
            text_out = "".join(chars[k] for k in model.sample(index["T"] if "T" in index else 0, 200, rng))
            out.write(f"\n--- {activation}, iteration {i}, loss {smooth:.3f} ---\n{text_out}\n")
    if progress:
        out.write("\n")
    return np.array(curve), vocab


def _first_below(curve, level):
    """The first iteration (1-based) whose smoothed loss is below ``level``; len(curve) + 1 when none is."""
    below = np.flatnonzero(curve < level)
    return int(below[0]) + 1 if below.size else curve.size + 1


def plot_curves(curves, vocab, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, curve in curves.items():
        label = name.upper() if name in generated.CELLS else f"vanilla RNN, {name}"
        ax.plot(np.arange(1, curve.size + 1), curve, label=f"{label} (final {curve[-1]:.2f})")
    ax.axhline(np.log(vocab), color="gray", ls=":", label=f"uniform guess, log {vocab} = {np.log(vocab):.2f}")
    ax.set_xlabel("training iteration (one chunk of characters per stream)")
    ax.set_ylabel("cross-entropy (nats per character, smoothed)")
    ax.set_title("Character-level models on Python's standard-library docstrings (same settings)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m demo", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--activations", default="tanh,relu,gelu",
                   help=f"comma-separated, from: {', '.join(generated.ACTIVATIONS)}")
    p.add_argument("--cells", default="",
                   help=f"comma-separated cells to train too, from: {', '.join(generated.CELLS)}")
    p.add_argument("--iterations", type=int, default=1500, help="training steps per activation")
    p.add_argument("--hidden", type=int, default=128, help="hidden size H")
    p.add_argument("--seq", type=int, default=50, help="truncated-BPTT chunk length")
    p.add_argument("--batch", type=int, default=16, help="parallel streams of the text")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam's learning rate")
    p.add_argument("--clip", type=float, default=5.0, help="global gradient-norm clip")
    p.add_argument("--sample-every", type=int, default=500, help="print generated text every this many steps")
    p.add_argument("--plot", help="write the loss curves to this PNG (needs matplotlib)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the run (weights, stream offsets, samples)")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.activations.split(",") if n.strip()]
    unknown = [n for n in names if n not in generated.ACTIVATIONS]
    if unknown:
        p.error(f"unknown activation(s) {', '.join(unknown)}; known: {', '.join(generated.ACTIVATIONS)}")
    cells = [n.strip() for n in args.cells.split(",") if n.strip()]
    unknown = [n for n in cells if n not in generated.CELLS]
    if unknown:
        p.error(f"unknown cell(s) {', '.join(unknown)}; known: {', '.join(generated.CELLS)}")
    names += cells
    text = stdlib_text()
    print(f"text: {len(text)} characters of standard-library docstrings, {len(set(text))} distinct")
    curves = {}
    for name in names:
        curves[name], vocab = train(name, text, args.iterations, args.hidden, args.seq, args.batch, args.lr,
                                    args.clip, args.seed, args.sample_every)
    for name, curve in curves.items():
        print(f"{name:>10s}: loss {curve[0]:.3f} -> {curve[-1]:.3f} (uniform guess {np.log(vocab):.3f}); "
              f"first below 2.5 at iteration {_first_below(curve, 2.5)}")
    if len(curves) > 1:
        fastest = min(curves, key=lambda n: (_first_below(curves[n], 2.5), curves[n][-1]))
        print(f"learned fastest: {fastest} (first to a smoothed loss below 2.5 nats per character)")
    if args.plot:
        plot_curves(curves, vocab, args.plot)
        print(f"loss curves written to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
