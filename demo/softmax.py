"""The softmax output layer and its gradient, derived by SymPy.

For logits z and target class y, L = -log softmax(z)_y = -z_y + log sum_k exp(z_k), and SymPy gives
dL/dz_j = softmax(z)_j - [j = y]. ``derive_gradient`` does that derivation for a K-vector, so the closed form
the training loop uses is the one SymPy derived, not one typed in on trust.
"""
import numpy as np
import sympy as sp


def derive_gradient(K=4, y=1):
    """SymPy's dL/dz for K logits and target ``y``, and whether it equals softmax(z) - onehot(y)."""
    z = sp.symbols(f"z0:{K}", real=True)
    loss = -z[y] + sp.log(sum(sp.exp(zk) for zk in z))
    grad = [sp.diff(loss, zj) for zj in z]
    softmax = [sp.exp(zj) / sum(sp.exp(zk) for zk in z) for zj in z]
    closed_form = [softmax[j] - (1 if j == y else 0) for j in range(K)]
    return grad, all(sp.simplify(g - c) == 0 for g, c in zip(grad, closed_form))


def softmax_cross_entropy(logits, targets):
    """Mean cross-entropy over all rows and its gradient softmax(z) - onehot(y), divided by the row count."""
    z = logits - logits.max(axis=-1, keepdims=True)  # stable: exp of values <= 0
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    rows = np.arange(targets.size)
    flat_p = p.reshape(-1, p.shape[-1])
    loss = -np.mean(np.log(np.maximum(flat_p[rows, targets.ravel()], 1e-300)))
    grad = flat_p.copy()
    grad[rows, targets.ravel()] -= 1.0  # dL/dz = softmax(z) - onehot(y), as derived above
    return float(loss), (grad / targets.size).reshape(p.shape)
