"""The RNN on tensors that are not on the CPU: PyTorch operations on the tensors' own device, never the host.

    h = DeviceRNNFunction.apply(x, h0, V, W, b, device_kernels("gelu"))   # x (T, N, D) on any device

The recurrence and BPTT are the derivation's (E_t = x_t V^T + h_(t-1) W^T + b, h_t = f(E_t); delta_t = (g_t +
delta_(t+1) W) * f'(.), dV = sum delta_t^T x_t, ...), in PyTorch; f and f' are printed from the activation's
derivation by ``codegen.torch_printer`` when first needed in a process (about a second: SymPy derives it).
The cells (LSTM, GRU, MGU, a user's cell) take the same path:

    out, *finals = DeviceCellFunction.apply(device_cell_kernels("lstm"), x, h0, c0, w_ih, w_hh, b_ih, b_hh)

with forward and BPTT printed by ``codegen.cell_torch_printer`` from the same lowering (``codegen.lower``) as
generated/cell_<name>.py, from the cell's definition (derive/cells/<name>.cell or the user's cell folder) when first
needed in a process (well under a second beyond importing SymPy).
``interop.torch_rnn`` uses this path for tensors off the CPU, and the NumPy kernels on the CPU.
"""
import functools
import hashlib
import sys
import types
from pathlib import Path

import numpy as np
import torch

from interop.torch_rnn import _check_kernel_dtype
from interop.torch_rnn import _refuse_double_backward as refuse_double_backward

MODULE_PREFIX = "rnn_bptt_torch_"


def autocast_off(method):
    """A Function's forward or backward with autocast off on its tensors' device: the kernels compute in their
    arguments' dtype (float32 or float64), as the NumPy kernels do; under torch.autocast the products would
    otherwise run in half precision (float16, bfloat16) and their results mix into float32 arrays."""

    @functools.wraps(method)
    def wrapper(ctx, *args):
        device = next(a.device.type for a in args if isinstance(a, torch.Tensor))
        if not torch.amp.is_autocast_available(device):
            return method(ctx, *args)
        with torch.autocast(device, enabled=False):
            return method(ctx, *args)

    return wrapper


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
    @autocast_off
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
    @autocast_off
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


def device_cell_kernels(name):
    """The printed PyTorch kernels of the cell ``name`` (one of ``generated.CELLS``): a module with ``forward``,
    ``backward``, ``Cache``, ``Grads`` and the constants of generated/cell_<name>.py. The cell is read from its
    definition and derived again (SymPy); a definition whose equations differ from the generated module's
    (generated/ not rebuilt after an edit) is refused, so both targets always compute the same cell.

    Printed once per process for each definition: the kernels are kept under the definition's text and the
    generated module's equations, not the name alone, so a cell replaced under the same name (``remove-cell``
    then ``add-cell`` in one process) is printed again (each call reads the .cell file, a few microseconds)."""
    import generated
    from derive.cell import CELL_DIRS

    numpy_kernels = generated.load(name)  # refuses an unknown name, naming the known cells
    path = next((p for p in (Path(d) / f"{name}.cell" for d in CELL_DIRS) if p.is_file()), None)
    if path is None:
        raise ValueError(f"the cell {name!r} has no definition {name}.cell in {', '.join(map(str, CELL_DIRS))}: "
                         f"its device kernels are printed from it")
    return _printed_cell(name, str(path), path.read_bytes(), tuple(numpy_kernels.EQUATIONS))


@functools.cache
def _printed_cell(name, path, source, equations):
    """device_cell_kernels' work, for the definition ``source`` (bytes of ``path``) of the cell ``name`` whose
    generated module has ``equations``."""
    from codegen.cell_torch_printer import torch_cell_source
    from derive.cell import derive_cell
    from derive.cellparse import CellError, parse_cell

    try:  # the text read once, by the caller: the kernels are printed from the very bytes they are keyed by
        cell = parse_cell(source.decode("utf-8"))
    except (CellError, UnicodeDecodeError) as error:
        raise CellError(f"{Path(path).name}: {error}") from None
    if tuple(e.text for e in cell.equations) != equations:
        raise RuntimeError(f"{path} no longer has the equations of generated/cell_{name}.py: run "
                           f"`python -m codegen` (make derive) to rebuild generated/ first")
    printed = torch_cell_source(derive_cell(cell))
    module_name = f"{MODULE_PREFIX}cell_{name}_{hashlib.sha256(printed.encode()).hexdigest()[:16]}"
    module = types.ModuleType(module_name)
    module.__file__ = f"<torch kernels of the cell {name!r}>"
    module.SOURCE = printed
    exec(compile(printed, module.__file__, "exec"), module.__dict__)  # the printer's output, from a parsed cell
    sys.modules[module_name] = module
    return module


def _check_cell_arguments(kernels, tensors):
    """The NumPy kernels' checks and messages (generated._cell_support.check_arguments) on the tensors' shapes
    and dtypes, through zero-size stand-ins: nothing is copied off the device."""
    from generated._cell_support import check_arguments

    if len(tensors) != len(kernels.ARGUMENTS):
        raise TypeError(f"the {kernels.NAME} cell takes {len(kernels.ARGUMENTS)} tensors "
                        f"({', '.join(kernels.ARGUMENTS)}), got {len(tensors)}")
    _check_kernel_dtype(tensors, kernels.ARGUMENTS)
    numpy_dtype = {torch.float32: np.float32, torch.float64: np.float64}
    stand_ins = [np.broadcast_to(np.zeros((), numpy_dtype[t.dtype]), tuple(t.shape)) for t in tensors]
    check_arguments(kernels.ARGUMENTS, stand_ins, kernels.SHAPES)


class DeviceCellFunction(torch.autograd.Function):
    """A cell over x in PyTorch operations on the tensors' device, with its derived BPTT as the backward.

    ``DeviceCellFunction.apply(device_cell_kernels(name), x, *states0, *parameters)``, the tensors in the order of
    ``ARGUMENTS``, returns what ``interop.torch_rnn.CellFunction`` returns: the output sequence (T, N, H) and the
    last value of every other state (the LSTM's c_T). Everything backward reads goes through
    ``ctx.save_for_backward`` (an in-place change raises autograd's error), and double backward is refused with
    RNNFunction's message.
    """

    @staticmethod
    @autocast_off
    def forward(ctx, kernels, *tensors):
        _check_cell_arguments(kernels, tensors)
        out, cache = kernels.forward(*tensors)
        others = [s for s in kernels.STATES if s != kernels.OUTPUT]
        # copies: a caller changing c_T in place must not change the sequence backward reads
        finals = [getattr(cache, s)[-1].clone() for s in others]
        ctx.kernels, ctx.others = kernels, others
        ctx.save_for_backward(*cache)
        return (out, *finals)

    @staticmethod
    @refuse_double_backward
    @autocast_off
    def backward(ctx, d_out, *d_finals):
        cache = ctx.kernels.Cache(*ctx.saved_tensors)  # raises if any of them was changed in place since forward
        final = {s: torch.zeros_like(getattr(cache, s)[-1]) for s in ctx.kernels.STATES}
        final.update(zip(ctx.others, d_finals))
        grads = ctx.kernels.backward(d_out, cache, final)
        return (None, *grads)
