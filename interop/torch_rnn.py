"""PyTorch: a torch.autograd.Function over the generated kernels, and a drop-in for torch.nn.RNN.

    from interop.torch_rnn import RNN
    rnn = RNN(10, 20, 2, nonlinearity="gelu", bidirectional=True)   # torch.nn.RNN's signature, any activation
    output, h_n = rnn(x)                                             # x (T, N, D), (N, T, D), (T, D) or packed

``RNN`` is a ``torch.nn.RNNBase`` with nn.RNN's constructor (``RNN(input_size, hidden_size, num_layers=1,
nonlinearity='tanh', bias=True, batch_first=False, dropout=0.0, bidirectional=False, device=None, dtype=None)``),
parameters (``weight_ih_l1_reverse``, ...), input and output forms (PackedSequence included), checks and messages;
``nonlinearity`` (or its alias ``activation``) is a catalogue name or an expression in x. Each layer and direction
runs the generated NumPy kernels (``RNNFunction``) on the tensors' memory for CPU tensors, and the same recurrence
in PyTorch operations on the tensors' device otherwise (``interop.torch_device``, f and f' printed from the same
derivation), in float32 or float64. ``LSTM`` and ``GRU`` do the same for torch.nn.LSTM and nn.GRU over the cells
derived from their equations: ``CellFunction`` (the generated NumPy kernels) for CPU tensors, and on any other device
``interop.torch_device.DeviceCellFunction``, whose forward and BPTT are printed from the same lowering. Nothing is
copied to the host on either path.
"""
import warnings

import numpy as np
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from generated import Cache
from interop.kernels import kernel_module

KERNEL_DTYPES = (torch.float32, torch.float64)


class DeviceCopyWarning(UserWarning):
    """The tensors are not on the CPU: the NumPy kernels get host copies, and the results are copied back.

    Emitted only when ``RNNFunction`` or ``CellFunction`` (the NumPy kernels) is applied directly to such tensors;
    the modules (RNN, LSTM, GRU) and ``rnn`` run on the tensors' device instead and never copy or warn."""


def _host(t):
    """The NumPy array of a tensor's data (its own memory on the CPU; a host copy elsewhere)."""
    return t.detach().cpu().numpy()


def _check_kernel_dtype(tensors, names=("x", "h0", "V", "W", "b")):
    for name, t in zip(names, tensors):
        if t.dtype not in KERNEL_DTYPES:
            raise TypeError(f"the generated kernels compute in float32 or float64; {name} has dtype {t.dtype}: "
                            f"convert it (.float() or .double()), or run the model in float32 under autocast")


DOUBLE_BACKWARD = (b"the backward of interop.torch_rnn.RNNFunction (the generated BPTT kernel) is not itself "
                   b"differentiable: double backward (gradient penalties, Hessian-vector products) is not supported")


def _refuse_double_backward(backward):
    """``backward`` run without recording; under create_graph=True its gradients lead to a node that raises
    DOUBLE_BACKWARD when differentiated. (torch's once_differentiable does this only when an incoming gradient
    requires grad, and otherwise leaves gradients without history: "element 0 of tensors does not require grad".)
    """

    def wrapper(ctx, *grad_outputs):
        with torch.no_grad():
            grads = backward(ctx, *grad_outputs)
        if not torch.is_grad_enabled():  # create_graph=False: nothing will differentiate these
            return grads
        tensors = [g for g in grads if g is not None]
        refused = torch._C._functions.DelayedError(DOUBLE_BACKWARD, len(tensors))(
            *(g.detach().requires_grad_() for g in tensors))
        refused = iter(refused if isinstance(refused, tuple) else (refused,))
        return tuple(None if g is None else next(refused) for g in grads)

    wrapper.__doc__ = backward.__doc__
    return wrapper


@torch.compiler.disable
def _eagerly(kernel, *args, **kwargs):
    """``kernel(*args, **kwargs)`` outside torch.compile's tracing (a graph break there; as called elsewhere):
    Dynamo would otherwise trace the NumPy kernels into torch operations and cannot trace Numba's compiled loops."""
    return kernel(*args, **kwargs)


class RNNFunction(torch.autograd.Function):
    """h = RNN(x, h0, V, W, b) with the generated forward, and the generated BPTT as its backward.

    x (T, N, D), h0 (N, H), V (H, D), W (H, H), b (H,) -> h (T, N, H), all float32 or all float64.
    The kernels run on the tensors' own memory, and backward reads the inputs, the output h and (when f' is not a
    function of h) f'(E_t), which the forward step computes. Every one of them goes through
    ``ctx.save_for_backward``, and backward rebuilds the kernel cache from ``ctx.saved_tensors``: an in-place change
    of any of them between forward and backward (``out.mul_(2)``, ``relu(out, inplace=True)``, a weight changed
    under ``no_grad``) raises autograd's
    "modified by an inplace operation" error instead of silently changing the gradients.
    The backward is the derived BPTT, not itself differentiable: differentiating its gradients (after
    ``create_graph=True``) raises a RuntimeError saying so.

    ``for_backward`` (optional 7th argument): False runs the kernels' inference path (h alone, without f'(E_t);
    1.1-2x cheaper a step for the activations that keep f'(E_t)), which no backward may follow; True keeps f'(E_t);
    None (left out) keeps it when an input requires grad. Inside ``forward`` grad mode is always off, so only the
    caller can tell ``torch.no_grad()`` apart: ``rnn`` and the modules pass ``needs_grad(...)``.
    """

    @staticmethod
    def forward(ctx, x, h0, V, W, b, module, for_backward=None):
        tensors = (x, h0, V, W, b)
        _check_kernel_dtype(tensors)
        device = x.device
        if device.type != "cpu":
            warnings.warn(f"the tensors are on {device}: the NumPy kernels run on host copies, and the results "
                          f"are copied back", DeviceCopyWarning, stacklevel=2)
        if for_backward is None:
            for_backward = any(ctx.needs_input_grad[:5])
        h, cache = _eagerly(module.forward, *(_host(t) for t in tensors), for_backward=bool(for_backward))
        out = torch.from_numpy(cache.h).to(device)  # h is its read-only view; autograd guards the tensor
        # f'(E_t) is private to this Function (nothing else can change it), but saving it lets saved-tensor hooks
        # (torch.autograd.graph.saved_tensors_hooks, save_on_cpu) see everything backward keeps alive
        dh_dE = torch.from_numpy(cache.dh_dE).to(device) if cache.dh_dE is not None else None
        ctx.module = module
        ctx.save_for_backward(x, h0, V, W, b, out, dh_dE)
        return out

    @staticmethod
    @_refuse_double_backward
    def backward(ctx, grad_h):
        saved = ctx.saved_tensors  # raises if any of them was changed in place since forward
        device = saved[0].device
        cache = Cache(*(None if t is None else _host(t) for t in saved))
        grads = _eagerly(ctx.module.backward, np.ascontiguousarray(_host(grad_h)), cache)
        return (*(torch.from_numpy(np.ascontiguousarray(g)).to(device) for g in grads), None, None)


# "auto": the NumPy kernels for CPU tensors, PyTorch operations on the device otherwise; "device": PyTorch
# operations everywhere, for the RNN and the cells alike (how the tests check the device path without a GPU)
BACKEND = "auto"


def _on_host(tensors):
    """True when the NumPy kernels take ``tensors`` (all on the CPU, BACKEND "auto"); False for the device path."""
    if BACKEND not in ("auto", "device"):
        raise ValueError(f"interop.torch_rnn.BACKEND must be 'auto' or 'device', got {BACKEND!r}")
    return BACKEND == "auto" and all(t.device.type == "cpu" for t in tensors)


def needs_grad(tensors):
    """Whether autograd will record an operation on ``tensors`` now: grad mode on (not under ``torch.no_grad()``
    or ``torch.inference_mode()``) and at least one of them requiring grad."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _apply(activation, x, h0, V, W, b):
    """One RNNFunction (NumPy kernels) for CPU tensors, or one DeviceRNNFunction on the tensors' device."""
    if _on_host((x, h0, V, W, b)):
        # without a gradient to come, the kernels' inference path: h alone, f'(E_t) not computed
        return RNNFunction.apply(x, h0, V, W, b, kernel_module(activation), needs_grad((x, h0, V, W, b)))
    from interop.torch_device import DeviceRNNFunction, device_kernels

    _check_kernel_dtype((x, h0, V, W, b))
    return DeviceRNNFunction.apply(x, h0, V, W, b, device_kernels(activation))


def rnn(x, h0, V, W, b, activation="tanh"):
    """Functional form: x (T, N, D), h0 (N, H) -> h (T, N, H), differentiable in every argument.

    CPU tensors run the generated NumPy kernels in their memory; tensors on another device (CUDA) stay there and
    run the same recurrence in PyTorch operations, with f and f' printed from the same derivation."""
    return _apply(activation, x, h0, V, W, b)


def _run_direction(activation, x, h0, V, W, b, lengths, reverse):
    """One layer in one direction: x (T, N, D) time-major, h0 (N, H) -> (output (T, N, H), h_last (N, H)).

    ``lengths`` (N,) int64 on the CPU, sorted, or None when every sequence has T steps. The forward direction runs
    over the padding after each sequence, which changes neither its outputs inside the sequence nor (read at
    lengths - 1) its last state; the reverse direction runs each sequence from its own last step, by reversing
    the first lengths[n] steps of column n (a permutation that is its own inverse, the padding left in place).
    """
    T, N = x.shape[:2]
    if reverse:
        if lengths is None:
            x = x.flip(0)
        else:
            t = torch.arange(T).unsqueeze(1)
            order = torch.where(t < lengths, lengths - 1 - t, t).to(x.device)  # (T, N)
            x = x.gather(0, order.unsqueeze(2).expand_as(x))
    h = _apply(activation, x.contiguous(), h0.contiguous(), V, W, b)
    if lengths is None:
        last = h[-1]
    else:
        last = h[(lengths - 1).to(x.device), torch.arange(N, device=x.device)]
    if reverse:
        h = h.flip(0) if lengths is None else h.gather(0, order.unsqueeze(2).expand_as(h))
    return h, last


class CellFunction(torch.autograd.Function):
    """A generated cell (``generated.load("lstm")``, ``"gru"``) over x with its own forward and BPTT backward.

    ``CellFunction.apply(module, x, *states0, *parameters)``, the tensors in the order of ``module.ARGUMENTS``
    (PyTorch's layouts), returns the output sequence (T, N, H) and the last value of every other state (the LSTM's
    c_T, (N, H)). As in RNNFunction, everything backward reads is saved with ``ctx.save_for_backward`` (an
    in-place change raises autograd's error), and double backward is refused with a message.
    """

    @staticmethod
    def forward(ctx, module, *tensors):
        _check_kernel_dtype(tensors, module.ARGUMENTS)
        device = tensors[0].device
        if device.type != "cpu":
            warnings.warn(f"the tensors are on {device}: the NumPy kernels run on host copies, and the results "
                          f"are copied back (the modules use interop.torch_device.DeviceCellFunction there)",
                          DeviceCopyWarning, stacklevel=2)
        out, cache = _eagerly(module.forward, *(_host(t) for t in tensors))
        out_tensor = torch.from_numpy(getattr(cache, module.OUTPUT)).to(device)  # out is its read-only view
        others = [s for s in module.STATES if s != module.OUTPUT]
        finals = [torch.from_numpy(np.ascontiguousarray(getattr(cache, s)[-1])).to(device) for s in others]
        extra = [out_tensor if name == module.OUTPUT else torch.from_numpy(getattr(cache, name)).to(device)
                 for name in cache._fields[len(tensors):]]
        ctx.module, ctx.others = module, others
        ctx.save_for_backward(*tensors, *extra)
        return (out_tensor, *finals)

    @staticmethod
    @_refuse_double_backward
    def backward(ctx, d_out, *d_finals):
        saved = ctx.saved_tensors  # raises if any of them was changed in place since forward
        device = saved[0].device
        cache = ctx.module.Cache(*(_host(t) for t in saved))
        dfinal = {s: np.ascontiguousarray(_host(d)) for s, d in zip(ctx.others, d_finals)}
        grads = _eagerly(ctx.module.backward, np.ascontiguousarray(_host(d_out)), cache, dfinal or None)
        return (None, *(torch.from_numpy(np.ascontiguousarray(g)).to(device) for g in grads))


def _apply_cell(module, *tensors):
    """One CellFunction (the NumPy kernels of ``module``) for CPU tensors, or one DeviceCellFunction (the same
    cell printed in PyTorch operations) on the tensors' device."""
    if _on_host(tensors):
        return CellFunction.apply(module, *tensors)
    from interop.torch_device import DeviceCellFunction, device_cell_kernels

    return DeviceCellFunction.apply(device_cell_kernels(module.NAME), *tensors)


def _groups(lengths):
    """(start, stop, length) of the runs of equal lengths in ``lengths`` (sorted, longest first)."""
    runs, start = [], 0
    values = lengths.tolist()
    for n in range(1, len(values) + 1):
        if n == len(values) or values[n] != values[start]:
            runs.append((start, n, values[start]))
            start = n
    return runs


def _run_cell_direction(module, x, states, params, lengths, reverse):
    """One layer of a cell in one direction: x (T, N, D), states [(N, H)] -> (output (T, N, H), [last states]).

    With ``lengths`` (packed input) the sequences of one length run together, each over its own steps only: the
    kernels' backward takes the gradient of the states at the last step T, so no sequence may end earlier.
    """
    if lengths is None:
        runs, T = [(0, x.shape[1], x.shape[0])], x.shape[0]
    else:
        runs, T = _groups(lengths), x.shape[0]
    outputs, finals = [], []
    for start, stop, steps in runs:
        xg = x[:steps, start:stop]
        if reverse:
            xg = xg.flip(0)
        out, *others = _apply_cell(module, xg.contiguous(), *(s[start:stop].contiguous() for s in states), *params)
        finals.append([out[-1], *others])
        if reverse:
            out = out.flip(0)
        if steps < T:
            out = torch.cat([out, out.new_zeros((T - steps,) + out.shape[1:])])
        outputs.append(out)
    output = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)
    last = [f[0] if len(finals) == 1 else torch.cat(f, dim=0) for f in zip(*finals)]
    return output, last


class _KernelStack:
    """The layers, directions, input forms and checks of torch.nn.RNN, LSTM and GRU, over generated kernels.

    A subclass of torch.nn.RNNBase (or nn.LSTM, nn.GRU) mixing this in sets ``_NAME`` ("RNN", "LSTM", "GRU"),
    ``_STATES`` (how many state tensors hx holds) and ``_direction`` (one layer in one direction).
    """

    _NAME, _STATES = "RNN", 1

    def flatten_parameters(self):
        """Nothing to do: the kernels read each parameter where it is (cuDNN's flat buffer is not used)."""

    def _hx_dims(self, hx, batched):
        """hx for 3-D input, or made 3-D for unbatched input, with torch's messages for a wrong dimension."""
        states = hx if self._STATES > 1 else (hx,)
        want = 3 if batched else 2
        if all(s.dim() == want for s in states):
            out = [s if batched else s.unsqueeze(1) for s in states]
            return tuple(out) if self._STATES > 1 else out[0]
        kind = "batched 3-D" if batched else "unbatched 2-D"
        if self._STATES > 1:
            dims = ", ".join(f"{s.dim()}-D" for s in states)
            raise RuntimeError(f"For {kind} input, hx and cx should also be {want}-D but got ({dims}) tensors")
        raise RuntimeError(f"For {kind} input, hx should also be {want}-D but got {hx.dim()}-D tensor")

    def forward(self, input, hx=None):
        """input (T, N, D), (N, T, D) with batch_first, (T, D) unbatched, or a PackedSequence; hx
        (num_layers * num_directions, N, H) (a tuple (h_0, c_0) for LSTM), 2-D for unbatched input; None: zeros.

        Returns (output, h_n) as torch's module does: output (T, N, num_directions * H) in the input's form (a
        PackedSequence for one), h_n (num_layers * num_directions, N, H) ((h_n, c_n) for LSTM), in the order
        layer 0 forward, layer 0 reverse, layer 1 forward, ...
        """
        self._update_flat_weights()
        weight_dtype = self._flat_weights[0].dtype
        if weight_dtype not in KERNEL_DTYPES:
            raise TypeError(f"{self._NAME} computes in float32 or float64, but its parameters are {weight_dtype}: "
                            f"call .float() or .double() on the module (under torch.autocast a float32 module "
                            f"takes half-precision input and computes in float32)")
        directions = 2 if self.bidirectional else 1
        packed = isinstance(input, PackedSequence)
        batched = True
        if packed:
            data, batch_sizes, sorted_indices, unsorted_indices = input
            N = int(batch_sizes[0])
            if hx is not None:
                hx = self.permute_hidden(hx, sorted_indices)
            x_check = data
        else:
            batch_sizes = None
            if input.dim() not in (2, 3):
                tensor = " tensor" if self._NAME == "RNN" else ""
                raise ValueError(f"{self._NAME}: Expected input to be 2D or 3D, got {input.dim()}D{tensor} instead")
            batched = input.dim() == 3
            if not batched:
                input = input.unsqueeze(0 if self.batch_first else 1)
            if hx is not None:
                hx = self._hx_dims(hx, batched)
            N = input.size(0) if self.batch_first else input.size(1)
            x_check = input
        if hx is None:
            zeros = [torch.zeros(self.num_layers * directions, N, self.hidden_size, dtype=x_check.dtype,
                                 device=x_check.device) for _ in range(self._STATES)]
            hx = tuple(zeros) if self._STATES > 1 else zeros[0]
        self.check_forward_args(x_check, hx, batch_sizes)  # torch's checks and messages
        states = list(hx) if self._STATES > 1 else [hx]
        if torch.is_autocast_enabled(x_check.device.type) or x_check.dtype != weight_dtype:
            # only reached under autocast (check_forward_args refuses a mismatch otherwise): compute in the
            # parameters' dtype, as the kernels have no half precision
            x_check, states = x_check.to(weight_dtype), [s.to(weight_dtype) for s in states]
        if packed:
            x, lengths = pad_packed_sequence(PackedSequence(x_check, batch_sizes))  # (T, N, D), sorted order
        else:
            x, lengths = (x_check.transpose(0, 1) if self.batch_first else x_check), None
        output, finals = self._layers(x, states, lengths)
        h_n = tuple(finals) if self._STATES > 1 else finals[0]
        if packed:
            data = pack_padded_sequence(output, lengths).data
            return PackedSequence(data, batch_sizes, sorted_indices, unsorted_indices), \
                self.permute_hidden(h_n, unsorted_indices)
        if self.batch_first:
            output = output.transpose(0, 1)
        if not batched:
            output = output.squeeze(0 if self.batch_first else 1)
            h_n = tuple(s.squeeze(1) for s in h_n) if self._STATES > 1 else h_n.squeeze(1)
        return output, h_n

    def _layers(self, x, states, lengths):
        """The stack: x (T, N, D) time-major, states [(L * dirs, N, H)] -> (output (T, N, dirs * H), finals)."""
        module = self.kernels
        directions = 2 if self.bidirectional else 1
        per = len(self._all_weights[0])
        finals = [[] for _ in states]
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(directions):
                k = layer * directions + direction
                weights = self._flat_weights[per * k:per * (k + 1)]
                out, last = self._direction(module, x, [s[k] for s in states], weights, lengths, direction == 1)
                outputs.append(out)
                for f, value in zip(finals, last):
                    f.append(value)
            x = outputs[0] if directions == 1 else torch.cat(outputs, dim=2)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = torch.nn.functional.dropout(x, self.dropout, training=True)
        return x, [torch.stack(f) for f in finals]

    def _weights(self, weights):
        """(weight_ih, weight_hh, bias_ih, bias_hh) of one layer and direction; zeros for bias=False."""
        if self.bias:
            return tuple(weights[:4])
        w_ih, w_hh = weights[:2]
        zero = torch.zeros(w_ih.shape[0], dtype=w_ih.dtype, device=w_ih.device)
        return w_ih, w_hh, zero, zero


class RNN(_KernelStack, torch.nn.RNNBase):
    """A drop-in for torch.nn.RNN with any activation: a catalogue name or an expression in x.

    The constructor is nn.RNN's, positionally too: ``RNN(input_size, hidden_size, num_layers=1,
    nonlinearity='tanh', bias=True, batch_first=False, dropout=0.0, bidirectional=False, device=None, dtype=None)``,
    with ``activation=`` accepted for ``nonlinearity``. An expression is derived and generated when the module is
    made (seconds the first time, then read from the expression cache). Parameters, their shapes and
    initialisation, the input forms (3-D, batch_first, unbatched 2-D, PackedSequence), the checks of input and hx
    and their messages, and the outputs are nn.RNN's; dropout between layers in training as nn.RNN.
    Computes in float32 or float64 (under autocast, in the parameters' float32).
    """

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None, *, activation=None):
        if isinstance(num_layers, str):
            raise TypeError(f"num_layers must be an int, got {num_layers!r}: the third positional argument is "
                            f"num_layers, as in torch.nn.RNN; pass the activation as nonlinearity={num_layers!r}")
        if not isinstance(num_layers, int) or isinstance(num_layers, bool):
            raise TypeError(f"num_layers must be an int, got {type(num_layers).__name__}")
        if activation is not None:
            if nonlinearity not in ("tanh", activation):
                raise TypeError(f"nonlinearity={nonlinearity!r} and activation={activation!r} disagree: "
                                f"activation is another name for nonlinearity; pass one of them")
            nonlinearity = activation
        kernel_module(nonlinearity)  # refuses a bad expression now, and derives a new one once
        _check_module_dtype(dtype, "RNN")
        super().__init__("RNN_RELU" if nonlinearity == "relu" else "RNN_TANH", input_size, hidden_size,
                         num_layers=num_layers, bias=bias, batch_first=batch_first, dropout=dropout,
                         bidirectional=bidirectional, device=device, dtype=dtype)
        self.nonlinearity = nonlinearity

    @property
    def activation(self):
        """The activation (the same as ``nonlinearity``): a catalogue name or an expression in x."""
        return self.nonlinearity

    @property
    def kernels(self):
        """The generated module of the activation. Looked up (about 2 us), never stored: a module object
        cannot be pickled, so copies, pickles and ``torch.save(model)`` keep only the name and find it again."""
        return kernel_module(self.nonlinearity)

    def _direction(self, module, x, states, weights, lengths, reverse):
        w_ih, w_hh, b_ih, b_hh = self._weights(weights)
        out, last = _run_direction(self.nonlinearity, x, states[0], w_ih, w_hh, b_ih + b_hh, lengths, reverse)
        return out, [last]

    def extra_repr(self):
        s = super().extra_repr()
        return s if self.nonlinearity == "tanh" else f"{s}, nonlinearity={self.nonlinearity!r}"


def _check_module_dtype(dtype, name):
    dtype = dtype if dtype is not None else torch.get_default_dtype()
    if dtype not in KERNEL_DTYPES:
        raise TypeError(f"{name} computes in float32 or float64, got dtype={dtype}; under torch.autocast a "
                        f"float32 module accepts half-precision input and computes in float32")


class _CellStack(_KernelStack):
    """LSTM and GRU: torch's module with each layer and direction run by the generated cell of ``_CELL``."""

    _CELL = None
    _POSITIONS = ()  # the names of torch's positional arguments after (input_size, hidden_size)

    def __init__(self, *args, **kwargs):
        given = dict(zip(("input_size", "hidden_size") + self._POSITIONS, args), **kwargs)
        if given.get("proj_size", 0):
            raise ValueError(f"proj_size is not supported by the generated {self._NAME} kernels")
        dtype = given.get("dtype")
        _check_module_dtype(dtype, self._NAME)
        self.kernels  # noqa: B018  (a missing cell fails here, not at the first forward)
        super().__init__(*args, **kwargs)

    @property
    def kernels(self):
        """The generated cell module (looked up, never stored: the module pickles)."""
        import generated

        return generated.load(self._CELL)

    def _direction(self, module, x, states, weights, lengths, reverse):
        return _run_cell_direction(module, x, states, self._weights(weights), lengths, reverse)


class LSTM(_CellStack, torch.nn.LSTM):
    """A drop-in for torch.nn.LSTM (the same constructor, parameters, inputs, checks and outputs; no proj_size),
    each layer and direction run by the LSTM kernels derived from the cell's equations (``generated.load("lstm")``).
    """

    _NAME, _STATES, _CELL = "LSTM", 2, "lstm"
    _POSITIONS = ("num_layers", "bias", "batch_first", "dropout", "bidirectional", "proj_size", "device", "dtype")


class GRU(_CellStack, torch.nn.GRU):
    """A drop-in for torch.nn.GRU (the same constructor, parameters, inputs, checks and outputs), each layer and
    direction run by the GRU kernels derived from the cell's equations (``generated.load("gru")``)."""

    _NAME, _STATES, _CELL = "GRU", 1, "gru"
    _POSITIONS = ("num_layers", "bias", "batch_first", "dropout", "bidirectional", "device", "dtype")


__all__ = ["RNN", "LSTM", "GRU", "RNNFunction", "CellFunction", "rnn", "Cache", "DeviceCopyWarning"]
