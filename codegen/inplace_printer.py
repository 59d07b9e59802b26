"""SymPy expressions -> NumPy statements that write every intermediate value into an array given with ``out=``.

    # [prepared expressions] -> [lines]     array_program([(expr, "d")], {"h"}, fresh={"d"})

The expression printer (codegen.numpy_printer) writes ``(1 - h)*(h + 1)`` as one line, and NumPy allocates a fresh
array for every intermediate value: three arrays of the argument's size for tanh's f'. Over a whole sequence
(T x N x H values) each one is a new mapping from the C library whose pages fault on first touch (~3 us a page in
the VMs we measured), and which of them are fresh depends on what the process allocated before: tanh's f' over
(100, 32, 128) float64 took 0.3 ms or 5 ms. Here the same expression becomes one ufunc call per operation, each
into an output array or into a scratch array that is reused as soon as the value in it is dead
(``np.add(h, 1, out=_s0)``, ``np.subtract(1, h, out=d)``, ``np.multiply(d, _s0, out=d)``): no temporary beyond the
scratch arrays, which the caller allocates once (``scratch``).

How: SymPy's ``cse`` over all results (canonical order, so the text is the same on every run), then each operation
in the order it runs as an ``_Op`` on virtual values, then a linear scan that gives each value an array: the result
array of its expression for the result itself, else the array of an operand that dies at this operation (ufuncs
read each element before they write it), else a free scratch array, else a result array that is ``fresh`` (aliases
no input) and not written yet, as long as the value dies before that result is written.

Operations without an ``out=`` form (SciPy's ndtr, erf and erfc, which the support module's fallback cannot take
``out=`` for; a Piecewise left as np.where) are written as ``array[...] = <expression>``: correct, with the
temporaries of that one call.
"""
from dataclasses import dataclass, field

import sympy as sp
from sympy.codegen.cfunctions import log1p

from codegen.numpy_printer import KernelPrinter
from codegen.passes import indicator
from derive.functions import sigmoid, softplus

COMPARE = {"<": "np.less", "<=": "np.less_equal", ">": "np.greater", ">=": "np.greater_equal"}


@dataclass
class _Op:
    """``template`` with {0}, {1}, ... for the operands and {out} for the array written; ``operands``: the names of
    input arrays, number literals, or ints (virtual values, given arrays by the allocation)."""

    value: int
    template: str
    operands: tuple


@dataclass
class Program:
    """``lines`` compute every result into its array; ``scratch``: the names of the scratch arrays they use, each of
    the shape and dtype of the input (the caller allocates them before the lines)."""

    lines: list
    scratch: list = field(default_factory=list)
    borrowed: set = field(default_factory=set)  # fresh result arrays that also held values before their result


class _Linearizer:
    """Each operation of the expressions as an _Op, operands first, each distinct subexpression once."""

    def __init__(self, inputs):
        self.inputs = inputs
        self.ops = []
        self.memo = {}
        self.count = 0
        self.printer = KernelPrinter()

    def new(self, template, *operands):
        self.ops.append(_Op(self.count, template, operands))
        self.count += 1
        return self.count - 1

    def ufunc(self, name, *operands):
        return self.new(f"{name}({', '.join('{%d}' % i for i in range(len(operands)))}, out={{out}})", *operands)

    def emit(self, e):
        if e not in self.memo:
            self.memo[e] = self._emit(e)
        return self.memo[e]

    def _emit(self, e):
        if e.is_Symbol:
            assert e.name in self.inputs, e
            return e.name
        if e.is_Integer:
            return self.printer.doprint(e)
        if e.is_number:
            try:
                return self.printer.doprint(sp.Float(e))
            except (TypeError, ValueError):  # no value yet (an indicator of a number): computed as written below
                pass
        if e.is_Add:
            return self._add(e)
        if e.is_Mul:
            return self._mul(e)
        if e.is_Pow:
            return self._pow(e.base, e.exp)
        if isinstance(e, (sp.Max, sp.Min)):
            name = "np.maximum" if isinstance(e, sp.Max) else "np.minimum"
            head, *rest = e.args
            acc = self.emit(head)
            for a in rest:
                acc = self.ufunc(name, acc, self.emit(a))
            return acc
        if isinstance(e, sp.Abs):
            return self.ufunc("np.abs", self.emit(e.args[0]))
        if isinstance(e, sigmoid):  # the support module's sigmoid takes out= (it may be its argument)
            return self.ufunc("sigmoid", self.emit(e.args[0]))
        if isinstance(e, softplus):  # max(u, 0) + log1p(exp(-|u|)), as codegen.numpy_printer writes it
            (u,) = e.args
            return self.emit(sp.Add(sp.Max(u, 0), log1p(sp.exp(-sp.Abs(u))), evaluate=False))
        if isinstance(e, indicator):  # [u OP c] into the array as 0/1; 1 - [u OP c] where it does not hold (NaN: 1)
            u, edge, op, holds = e.args
            key = ("compare", u, edge, op)  # [c] and 1 - [c] share one comparison
            if key not in self.memo:
                self.memo[key] = self.ufunc(COMPARE[indicator.OPS[op]], self.emit(u), self.emit(edge))
            mask = self.memo[key]
            return mask if holds else self.ufunc("np.subtract", "1", mask)
        if isinstance(e, sp.Heaviside):  # as codegen.passes.shared_sigmoids writes it: [u >= 0]
            u, at_zero = e.args
            assert at_zero == 1, e
            if u.could_extract_minus_sign():
                return self.ufunc("np.less_equal", self.emit(-u), "0")
            return self.ufunc("np.greater_equal", self.emit(u), "0")
        if isinstance(e, sp.Function) and len(e.args) == 1:
            known = self.printer.known_functions.get(type(e).__name__, "")
            if known.startswith("numpy."):
                return self.ufunc(self.printer._module_format(known), self.emit(e.args[0]))
        return self._whole(e)

    def _whole(self, e):
        """``out[...] = e`` as the expression printer writes it, its array arguments computed first."""
        parts = sorted((a for a in e.free_symbols), key=lambda s: s.name)
        operands = [self.emit(a) for a in parts]
        placeholders = {a: sp.Symbol(f"_operand{i}_", real=True) for i, a in enumerate(parts)}
        text = self.printer.doprint(e.xreplace(placeholders)).replace("{", "{{").replace("}", "}}")
        for i in range(len(parts)):
            text = text.replace(f"_operand{i}_", "{%d}" % i)
        return self.new("{out}[...] = " + text, *operands)

    def _add(self, e):
        constant, terms = e.as_coeff_add()
        positive = [t for t in terms if not t.could_extract_minus_sign()]
        negative = [-t for t in terms if t.could_extract_minus_sign()]
        acc = None
        for t in positive:
            acc = self.emit(t) if acc is None else self.ufunc("np.add", acc, self.emit(t))
        if constant != 0:
            literal = self.emit(constant)
            acc = literal if acc is None else self.ufunc("np.add", acc, literal)
        for t in negative:
            u = self.emit(t)
            acc = self.ufunc("np.negative", u) if acc is None else self.ufunc("np.subtract", acc, u)
        return acc

    def _product(self, factors):
        acc = None
        for f in factors:
            acc = self.emit(f) if acc is None else self.ufunc("np.multiply", acc, self.emit(f))
        return acc

    def _mul(self, e):
        coefficient, factors = e.as_coeff_mul()
        numerator = [f for f in factors if not (f.is_Pow and f.exp.is_number and f.exp < 0)]
        denominator = [f.base ** -f.exp for f in factors if f.is_Pow and f.exp.is_number and f.exp < 0]
        sign = -1 if coefficient < 0 else 1
        magnitude = abs(coefficient)
        acc = self._product(numerator)
        if magnitude != 1:
            literal = self.emit(magnitude)
            acc = literal if acc is None else self.ufunc("np.multiply", acc, literal)
        if denominator:
            acc = self.ufunc("np.divide", "1" if acc is None else acc, self._product(denominator))
        if sign < 0:
            acc = self.ufunc("np.negative", acc)
        return acc

    def _pow(self, base, exponent):
        if exponent == 2:
            return self.ufunc("np.square", self.emit(base))
        if exponent.is_Integer and 3 <= exponent <= 8:  # u*u*u: NumPy's power calls pow() for exponents past 2
            u = self.emit(base)
            acc = u
            for _ in range(int(exponent) - 1):
                acc = self.ufunc("np.multiply", acc, u)
            return acc
        if exponent.is_number and exponent < 0:
            return self.ufunc("np.divide", "1", self.emit(base ** -exponent))
        if exponent == sp.S.Half:
            return self.ufunc("np.sqrt", self.emit(base))
        return self.ufunc("np.power", self.emit(base), self.emit(exponent))


def array_program(results, inputs, fresh=(), prefix="_s"):
    """NumPy lines writing each ``(expr, out)`` of ``results`` into the array named ``out``, in order.

    ``expr`` is a prepared expression (codegen.passes) in symbols named as the input arrays ``inputs``. A result
    array may be one of the inputs (``d`` written over E) unless it is named in ``fresh``: a fresh one also serves as
    scratch before its result is written. The results are written in order, each after every read of the inputs
    that a later non-fresh result overwrites (the last result is written last). Returns a Program.
    """
    exprs = [e for e, _ in results]
    replacements, reduced = sp.cse(exprs, symbols=sp.numbered_symbols("_cse"), order="canonical")
    lin = _Linearizer(set(inputs))
    for sym, value in replacements:
        lin.memo[sym] = lin.emit(value)
    finals = []
    for e, out in zip(reduced, (o for _, o in results)):
        v = lin.emit(e)
        if not isinstance(v, int) or v in [f for f, _ in finals]:  # an input, a literal, or another result's value
            v = lin.new("np.copyto({out}, {0})" if isinstance(v, int) or v in inputs else "{out}[...] = {0}", v)
        finals.append((v, out))
    return _allocate(lin.ops, finals, set(fresh), set(inputs), prefix)


def _allocate(ops, finals, fresh, inputs, prefix):
    """Arrays for the values of ``ops`` (the linear scan of the module docstring), then the printed lines."""
    index = {op.value: i for i, op in enumerate(ops)}
    last_use = {}
    for i, op in enumerate(ops):
        for a in op.operands:
            if isinstance(a, int):
                last_use[a] = i
    pinned = dict(finals)  # value -> its result array
    written_at = {out: index[v] for v, out in finals}
    last_input_read = max((i for i, op in enumerate(ops) for a in op.operands if a in inputs), default=-1)
    for out, at in written_at.items():  # a RuntimeError, not an assert: -O must not print an aliasing kernel
        if out not in fresh and at < last_input_read:
            raise RuntimeError(f"{out} would be written before the last read of the inputs")
    home = {}  # value -> array name
    holds = {}  # array name -> the value it holds now
    scratch = []
    borrowed = set()
    for i, op in enumerate(ops):
        dying = [a for a in dict.fromkeys(op.operands) if isinstance(a, int) and last_use.get(a) == i
                 and a not in pinned]
        for a in dying:
            del holds[home[a]]
        v = op.value
        if v in pinned:
            name = pinned[v]
        else:
            end = last_use.get(v, i)
            candidates = [home[a] for a in dying if home[a] not in holds and not home[a] in written_at]
            candidates += [s for s in scratch if s not in holds]
            candidates += [o for _, o in finals if o in fresh and o not in holds and written_at[o] >= end
                           and written_at[o] > i]  # in the results' order: the same text on every run
            if candidates:
                name = candidates[0]
            else:
                name = f"{prefix}{len(scratch)}"
                scratch.append(name)
        if name in holds:
            raise RuntimeError(f"{name} still holds a value needed later: {op}")
        if name in written_at and v not in pinned:
            borrowed.add(name)
        holds[name] = v
        home[v] = name
    lines = []
    for op in ops:
        names = [home[a] if isinstance(a, int) else a for a in op.operands]
        lines.append(op.template.format(*names, out=home[op.value]))
    return Program(lines, scratch, borrowed)
