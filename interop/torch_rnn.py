"""PyTorch: a torch.autograd.Function over the generated kernels, and an nn.RNN-compatible module.

    from interop.torch_rnn import RNN
    rnn = RNN(input_size=10, hidden_size=20, activation="gelu")     # or activation="x*tanh(softplus(x))"
    output, h_n = rnn(x)                                             # x (T, N, D); batch_first=True for (N, T, D)

Parameters follow nn.RNN's names (weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0) so state dicts move between
the two; one layer, unidirectional, CPU, float32 or float64. The kernels run in NumPy on the tensors' memory.
"""
import math

import numpy as np
import torch

from generated import Cache
from interop.kernels import kernel_module


class RNNFunction(torch.autograd.Function):
    """h = RNN(x, h0, V, W, b) with the generated forward, and the generated BPTT as its backward.

    The kernels run on the tensors' own memory, and backward reads the inputs, the output h and (when f' is not a
    function of h) the pre-activations E. Every one of them goes through ``ctx.save_for_backward``, and backward
    rebuilds the kernel cache from ``ctx.saved_tensors``: an in-place change of any of them between forward and
    backward (``out.mul_(2)``, ``relu(out, inplace=True)``, a weight changed under ``no_grad``) raises autograd's
    "modified by an inplace operation" error instead of silently changing the gradients.
    """

    @staticmethod
    def forward(ctx, x, h0, V, W, b, module):
        arrays = [t.detach().cpu().numpy() for t in (x, h0, V, W, b)]
        h, cache = module.forward(*arrays)
        out = torch.from_numpy(h)
        # E is private to this Function (nothing else can change it), but saving it lets saved-tensor hooks
        # (torch.autograd.graph.saved_tensors_hooks, save_on_cpu) see everything backward keeps alive
        E = torch.from_numpy(cache.E) if cache.E is not None else None
        ctx.module = module
        ctx.save_for_backward(x, h0, V, W, b, out, E)
        return out

    @staticmethod
    def backward(ctx, grad_h):
        saved = ctx.saved_tensors  # raises if any of them was changed in place since forward
        cache = Cache(*(None if t is None else t.detach().cpu().numpy() for t in saved))
        grads = ctx.module.backward(np.ascontiguousarray(grad_h.detach().cpu().numpy()), cache)
        return (*(torch.from_numpy(np.ascontiguousarray(g)) for g in grads), None)


def rnn(x, h0, V, W, b, activation="tanh"):
    """Functional form: x (T, N, D), h0 (N, H) -> h (T, N, H), differentiable in every argument."""
    return RNNFunction.apply(x, h0, V, W, b, kernel_module(activation))


class RNN(torch.nn.Module):
    """A drop-in for a one-layer torch.nn.RNN with any activation (a catalogue name or an expression in x)."""

    def __init__(self, input_size, hidden_size, activation="tanh", bias=True, batch_first=False, dtype=None):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.activation, self.bias, self.batch_first = activation, bias, batch_first
        self.kernels = kernel_module(activation)  # derives and generates an expression on first use
        dtype = dtype or torch.get_default_dtype()
        self.weight_ih_l0 = torch.nn.Parameter(torch.empty(hidden_size, input_size, dtype=dtype))
        self.weight_hh_l0 = torch.nn.Parameter(torch.empty(hidden_size, hidden_size, dtype=dtype))
        if bias:
            self.bias_ih_l0 = torch.nn.Parameter(torch.empty(hidden_size, dtype=dtype))
            self.bias_hh_l0 = torch.nn.Parameter(torch.empty(hidden_size, dtype=dtype))
        else:
            self.register_parameter("bias_ih_l0", None)
            self.register_parameter("bias_hh_l0", None)
        self.reset_parameters()

    def reset_parameters(self):
        """nn.RNN's initialisation: every parameter uniform in (-1/sqrt(H), 1/sqrt(H))."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            torch.nn.init.uniform_(p, -bound, bound)

    def forward(self, input, hx=None):
        """input (T, N, D), or (N, T, D) with batch_first, or (T, D) unbatched; hx (1, N, H) or (1, H).

        Returns (output, h_n) as nn.RNN does: output (T, N, H) (or (N, T, H)), h_n (1, N, H).
        """
        if input.dim() not in (2, 3):
            raise ValueError(f"input must have 2 or 3 dimensions, got shape {tuple(input.shape)}")
        if input.dim() == 3 and input.shape[-1] != self.input_size:
            raise ValueError(f"input must have {self.input_size} features in its last dimension, "
                             f"got shape {tuple(input.shape)}")
        unbatched = input.dim() == 2
        x = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if self.batch_first else input)
        N = x.shape[1]
        if hx is None:
            h0 = torch.zeros(N, self.hidden_size, dtype=x.dtype)
        else:
            h0 = hx[0] if not unbatched else hx
            h0 = h0.reshape(N, self.hidden_size)
        if self.bias:
            b = self.bias_ih_l0 + self.bias_hh_l0
        else:
            b = torch.zeros(self.hidden_size, dtype=x.dtype)
        h = RNNFunction.apply(x.contiguous(), h0.contiguous(), self.weight_ih_l0, self.weight_hh_l0, b,
                              self.kernels)
        h_n = h[-1:].clone()
        if unbatched:
            return h[:, 0], h_n[:, 0]
        return (h.transpose(0, 1) if self.batch_first else h), h_n

    def extra_repr(self):
        return (f"{self.input_size}, {self.hidden_size}, activation={self.activation!r}"
                + (", batch_first=True" if self.batch_first else "") + ("" if self.bias else ", bias=False"))


__all__ = ["RNN", "RNNFunction", "rnn", "Cache"]
