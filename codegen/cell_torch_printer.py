"""CellKernel -> PyTorch source text: a cell's forward and BPTT on the tensors' own device, from the same lowering.

    # [CellDerivation] -> [CellKernel]      codegen.lower.lower
    # [CellKernel] -> {section: [line]}     TorchCellPrinter(kernel).sections()
    # {section: [line]} -> text             MODULE below (no arithmetic in it)

``TorchCellPrinter`` is ``codegen.cell_printer.NumpyCellPrinter`` with the target's pieces swapped: arrays made with
``x.new_empty`` / ``new_zeros`` (x's device and dtype), ``torch.cat``, and the elementwise blocks printed by
``codegen.torch_printer.DeviceTorchPrinter`` (torch.sigmoid, torch.tanh, the numerics pass's stable forms). Every
other line (the hoisted products, the block views, the loops, the stores, the carries, the gradient products) is
the NumPy printer's own, so the two targets compute the same formulas in the same order. Used at first need by
``interop.torch_device.device_cell_kernels`` for tensors off the CPU.
"""
from codegen.cell_printer import NumpyCellPrinter
from codegen.lower import lower
from codegen.torch_printer import DeviceTorchPrinter


class ElementwiseTorchPrinter(DeviceTorchPrinter):
    """DeviceTorchPrinter for a cell's node values: a Piecewise's number branch takes the device and dtype of a
    tensor the expression reads (the first of its symbols by name)."""

    def __init__(self, settings=None):
        super().__init__(None, settings)

    def doprint(self, expr, assign_to=None):
        names = sorted(s.name for s in getattr(expr, "free_symbols", ()))
        self.arg = names[0] if names else None
        return super().doprint(expr, assign_to)


class TorchCellPrinter(NumpyCellPrinter):
    """Prints the PyTorch target of one CellKernel: ``sections()`` -> {"forward": [line], "backward": [line]}."""

    @staticmethod
    def elementwise():
        return ElementwiseTorchPrinter()

    @staticmethod
    def empty(shape, like):
        return f"{like}.new_empty({shape})"  # like's device and dtype

    @staticmethod
    def zeros(shape, like):
        return f"{like}.new_zeros({shape})"

    @staticmethod
    def zeros_like(name):
        return f"torch.zeros_like({name})"

    @staticmethod
    def concatenate(items):
        return f"torch.cat(({items}))"

    @staticmethod
    def returned(name):
        return name  # a tensor: autograd's version counter refuses in-place changes of what backward saved

    def sections(self):
        # the Jacobian products stay NumPy-only (analysis tools on the host); training needs forward and backward
        return dict(forward=self.forward(), backward=self.backward())


MODULE = '''\
"""PyTorch kernels of the cell {name!r}, printed by codegen.cell_torch_printer from its lowering: the lines of
generated/cell_{name}.py's forward and backward, in PyTorch operations on the tensors' device and in their dtype."""
from collections import namedtuple

import torch

NAME = {name!r}
STATES = {states!r}
OUTPUT = {output!r}
ARGUMENTS = {arguments!r}
SHAPES = {shapes!r}
EQUATIONS = {equations!r}

Cache = namedtuple("Cache", {cache!r})
Grads = namedtuple("Grads", {grads!r})


def forward({args}):
    """Run the cell over {input}: returns {output} (T, N, {output_size}), holding {output}_1..{output}_T, and the Cache for
    ``backward``; shapes as in SHAPES, every tensor on one device, all float32 or all float64 (not checked here)."""
{forward}


def backward(d_out, cache, final):
    """BPTT: d_out (T, N, {output_size}) is dL/d{output}_t for every t, ``final`` maps every state to dL/d(state_T) from
    beyond the sequence (zeros where there is none). Returns Grads, one per argument of forward."""
    _d_out, _final = d_out, final
{backward}
'''


def torch_cell_source(derivation):
    """CellDerivation -> the source of a module with ``forward``, ``backward``, ``Cache``, ``Grads`` and the cell's
    constants (NAME, STATES, OUTPUT, ARGUMENTS, SHAPES, EQUATIONS as in generated/cell_<name>.py)."""
    kernel = lower(derivation)
    printer = TorchCellPrinter(kernel)
    sections = printer.sections()
    size = dict(kernel.states)
    return MODULE.format(
        name=kernel.name, states=tuple(printer.states), output=kernel.output, arguments=tuple(printer.args),
        shapes=printer.shapes(), equations=tuple(e.text for e in derivation.cell.equations),
        cache=" ".join(printer.cache_fields), grads=" ".join(printer.grads_fields()),
        args=", ".join(printer.args), input=kernel.input, output_size=size[kernel.output],
        forward="\n".join("    " + line for line in sections["forward"]),
        backward="\n".join("    " + line for line in sections["backward"]),
    )
