"""Check a generated module's backward pass against central finite differences, in float64.

The loss is L = sum_t <G_t, h_t> for a fixed random G (T, N, H), so backward(G, cache) is its exact gradient.
Two modes, both reporting the worst relative error per argument (x, h0, V, W, b):

- ``"projection"`` (any size): for random unit directions u, compare the central difference
  (L(p + eps u) - L(p - eps u)) / (2 eps) with <dL/dp, u>; error |fd - an| / max(|fd|, |an|, ||dL/dp||_2 / 10),
  relative to the directional derivative, or to the largest one a unit direction can give when u happens to be
  nearly orthogonal to the gradient (there <dL/dp, u> ~ 0 and a plain relative error measures only rounding).
- In both modes the rounding noise of the finite difference itself, 16 T ulp(L) / (2 eps), is subtracted from
  |fd - an| first (an atol + rtol comparison): a discrepancy that small is below what central differences see.
- ``"entries"`` (small sizes): perturb every entry; error max_i |fd_i - an_i| / max_i |an_i|, i.e. relative to
  the argument's largest gradient entry (an entry whose gradient is ~0 has no meaningful relative error).

With eps = 1e-6 in float64 the truncation error is O(eps^2) ~ 1e-12 and the rounding error ~1e-16 |L| / eps ~ 1e-10
|L|, so a correct kernel scores ~1e-8 or better; 1e-6 is a safe bound that a wrong derivative misses by far.
Finite differences are meaningless across a kink of a piecewise activation: inputs whose pre-activations lie
within ``10 * eps`` of one are refused (see ``near_kink``).
"""
import numpy as np

ARGS = ("x", "h0", "V", "W", "b")


def _noise(plus, minus, eps, T):
    """A bound on the rounding error of a central difference of L: the rounding of L (the forward pass included,
    ~T ulps, with a factor 16 of margin) divided by the step. Finite differences cannot resolve anything below it,
    so that much of |fd - an| is forgiven (the absolute part of an atol + rtol comparison)."""
    return 16 * T * np.finfo(np.float64).eps * max(abs(plus), abs(minus)) / (2 * eps)


def _pre_activations(module, args, h):
    x, h0, V, W, b = args
    h_prev = np.concatenate([h0[None], h[:-1]], axis=0)
    return x @ V.T + h_prev @ W.T + b


def near_kink(module, x, h0, V, W, b):
    """The smallest distance from any pre-activation E_t to a kink of the activation (inf when it has none)."""
    kinks = getattr(module, "KINKS", ())
    if not kinks:
        return np.inf
    h, _ = module.forward(x, h0, V, W, b)
    E = _pre_activations(module, (x, h0, V, W, b), h)
    return float(min(np.min(np.abs(E - k)) for k in kinks))


def gradcheck(module, x, h0, V, W, b, mode="projection", eps=1e-6, directions=3, seed=0):
    """Worst relative error of ``module.backward`` against central differences: {argument name: error}.

    All arrays must be float64 (float32 has too few digits for finite differences).
    """
    args = [np.asarray(a) for a in (x, h0, V, W, b)]
    for name, a in zip(ARGS, args):
        if a.dtype != np.float64:
            raise TypeError(f"gradcheck needs float64 arrays; {name} is {a.dtype}")
    if mode not in ("projection", "entries"):
        raise ValueError(f"mode must be 'projection' or 'entries', got {mode!r}")
    distance = near_kink(module, *args)
    if distance < 10 * eps:
        raise ValueError(f"a pre-activation lies {distance:.2e} from a kink of {module.NAME} (at "
                         f"{module.KINKS}); finite differences are meaningless there: move the inputs")
    rng = np.random.default_rng(seed)
    h, cache = module.forward(*args)
    G = rng.standard_normal(h.shape)
    grads = module.backward(G, cache)
    analytic = dict(zip(ARGS, (grads.dx, grads.dh0, grads.dV, grads.dW, grads.db)))

    def loss(i, value):
        trial = list(args)
        trial[i] = value
        return float(np.sum(G * module.forward(*trial)[0]))

    T = args[0].shape[0]
    errors = {}
    for i, name in enumerate(ARGS):
        p, g = args[i], analytic[name]
        if mode == "projection":
            worst = 0.0
            for _ in range(directions):
                u = rng.standard_normal(p.shape)
                u /= np.linalg.norm(u)
                plus, minus = loss(i, p + eps * u), loss(i, p - eps * u)
                fd = (plus - minus) / (2 * eps)
                an = float(np.sum(g * u))
                scale = max(abs(fd), abs(an), float(np.linalg.norm(g)) / 10, 1e-300)
                worst = max(worst, max(0.0, abs(fd - an) - _noise(plus, minus, eps, T)) / scale)
        else:
            fd, noise = np.empty_like(p), np.empty_like(p)
            for j in np.ndindex(p.shape):
                e = np.zeros_like(p)
                e[j] = eps
                plus, minus = loss(i, p + e), loss(i, p - e)
                fd[j] = (plus - minus) / (2 * eps)
                noise[j] = _noise(plus, minus, eps, T)
            excess = np.maximum(np.abs(fd - g) - noise, 0.0)
            worst = float(np.max(excess) / max(np.max(np.abs(g)), 1e-300))
        errors[name] = worst
    return errors
