"""The RNN on tensors that are not on the CPU: PyTorch operations on the tensors' own device, never the host.

    h = DeviceRNNFunction.apply(x, h0, V, W, b, device_kernels("gelu"))   # x (T, N, D) on any device

The recurrence and BPTT are the derivation's (E_t = x_t V^T + h_(t-1) W^T + b, h_t = f(E_t); delta_t = (g_t +
delta_(t+1) W) * f'(.), dV = sum delta_t^T x_t, ...), in PyTorch; f and f' are printed from the activation's
derivation by ``codegen.torch_printer`` when first needed in a process (about a second: SymPy derives it).
``interop.torch_rnn`` uses this path for tensors off the CPU, and the NumPy kernels on the CPU.
"""
import functools
import hashlib
import sys
import types

import torch

from interop.torch_rnn import _refuse_double_backward as refuse_double_backward

MODULE_PREFIX = "rnn_bptt_torch_"


@functools.cache
def device_kernels(activation):
    """The printed PyTorch functions of ``activation`` (a catalogue or user name, or an expression in x): a
    module with ``activation(E)``, ``activation_derivative(u)`` (u = h when ``USES_OUTPUT``, else E)."""
    from codegen.build import derive_all
    from codegen.torch_printer import torch_source
    from derive import Activation, parse_expression
    from derive.catalogue import all_activations

    named = {a.name: a for a in all_activations()}
    entry = named.get(activation) or Activation("expression", parse_expression(activation))
    (derivation,) = derive_all([entry], workers=1)
    source = torch_source(derivation)
    name = MODULE_PREFIX + hashlib.sha256(activation.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    module = types.ModuleType(name)
    module.__file__ = f"<torch kernels of {activation!r}>"
    module.SOURCE = source
    exec(compile(source, module.__file__, "exec"), module.__dict__)  # the printer's output; user text reached only SymPy
    sys.modules[name] = module
    return module


class DeviceRNNFunction(torch.autograd.Function):
    """h = RNN(x, h0, V, W, b) in PyTorch operations on the tensors' device; the derived BPTT as its backward.

    x (T, N, D), h0 (N, H), V (H, D), W (H, H), b (H,) -> h (T, N, H). Like RNNFunction, what backward reads goes
    through ``ctx.save_for_backward`` and double backward is refused with a message.
    """

    @staticmethod
    def forward(ctx, x, h0, V, W, b, kernels):
        T, N, D = x.shape
        H = h0.shape[1]
        xV = torch.addmm(b, x.reshape(T * N, D), V.t()).reshape(T, N, H)  # V x_t + b for every t: one product
        h = torch.empty(T, N, H, dtype=x.dtype, device=x.device)
        E = None if kernels.USES_OUTPUT else torch.empty_like(h)
        prev = h0
        for t in range(T):
            e = torch.addmm(xV[t], prev, W.t())  # E_t = V x_t + W h_(t-1) + b
            if E is not None:
                E[t] = e
            prev = h[t] = kernels.activation(e)  # h_t = f(E_t)
        ctx.kernels = kernels
        ctx.save_for_backward(x, h0, V, W, b, h, E)
        return h

    @staticmethod
    @refuse_double_backward
    def backward(ctx, dh):
        x, h0, V, W, b, h, E = ctx.saved_tensors
        T, N, D = x.shape
        H = h0.shape[1]
        delta = torch.empty_like(h)
        carry = torch.zeros_like(h0)  # W^T delta_(t+1), zero after the last step
        for t in range(T - 1, -1, -1):
            u = h[t] if ctx.kernels.USES_OUTPUT else E[t]
            delta[t] = (dh[t] + carry) * ctx.kernels.activation_derivative(u)  # delta_t = dL/dE_t
            carry = delta[t] @ W
        flat = delta.reshape(T * N, H)
        h_prev = torch.cat([h0.unsqueeze(0), h[:-1]]).reshape(T * N, H)
        dx = (flat @ V).reshape(T, N, D)  # V^T delta_t
        dV = flat.t() @ x.reshape(T * N, D)  # sum_t delta_t x_t^T
        dW = flat.t() @ h_prev  # sum_t delta_t h_(t-1)^T
        db = flat.sum(0)
        return dx, carry, dV, dW, db, None
