"""SymPy expression -> NumPy source text: the printer subclass, and elementwise functions with CSE.

Overrides of SymPy's NumPyPrinter, each for one reason:
- module prefix ``np.`` (the generated modules ``import numpy as np``);
- ``sigmoid``, ``softplus``, ``erf``, ``erfc``, ``ndtr``: stable forms (``sigmoid``, ``erf``, ``erfc`` and ``ndtr``
  come from ``generated/_support.py``; softplus is ``np.logaddexp(0, u)``, which never overflows); ``expm1`` and
  ``log1p`` (put there by ``codegen.passes.stable_forms``) are NumPy's own;
- ``Piecewise`` (what ``codegen.passes.piecewise_arithmetic`` leaves of it) as nested ``np.where`` instead of
  ``np.select`` (cheaper, and ``select`` needs a default); its ``indicator`` as a comparison into an array of the
  argument's dtype;
  ``ScalarKernelPrinter`` prints it as a conditional expression for the compiled (Numba) loops;
- ``Float`` as the shortest literal that round-trips, ``x**-1`` as a division, ``Abs`` as ``np.abs``.
"""
import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p
from sympy.printing.numpy import NumPyPrinter

from codegen.passes import indicator, ndtr, prepare, prepare_scalar, share_saturated, shared_sigmoids
from derive.functions import sigmoid, softplus

MAX_PRODUCT_POWER = 8  # u**n with 3 <= |n| <= 8 is printed as a product (rounding: n - 1 products, each 1/2 ulp)
# SymPy function -> the name generated/_support.py gives its stable array version
SUPPORT = {sp.erf: "erf", sp.erfc: "erfc", ndtr: "ndtr", sigmoid: "sigmoid"}
# ... and its scalar version for the compiled loops, when it is not the math module's: exp, expm1, log1p, tanh,
# sigmoid, softplus, erfc and ndtr written so that LLVM vectorises the loop around them (VECTOR_FUNCTIONS); erf calls
# math.erf
SCALAR_SUPPORT = {sigmoid: "sigmoid_scalar", softplus: "softplus_scalar", ndtr: "ndtr_scalar", sp.exp: "exp_scalar",
                  expm1: "expm1_scalar", log1p: "log1p_scalar", sp.tanh: "tanh_scalar", sp.erfc: "erfc_scalar"}
VECTOR_FUNCTIONS = (sp.Max, sp.Min, sp.Abs, sp.Piecewise, sp.exp, expm1, log1p, sp.tanh, sigmoid, softplus, sp.erfc,
                    ndtr)


def softplus_terms(v):
    """The two terms of log(1 + exp(v)) = max(v, 0) + log1p(exp(-|v|)) for the array named ``v``."""
    return f"np.maximum({v}, 0)", f"np.log1p(np.exp(-np.abs({v})))"


class KernelPrinter(NumPyPrinter):
    """Prints the elementwise expressions of a derivation as NumPy code."""

    def _module_format(self, fqn, register=True):
        # every generated module imports numpy as np
        return "np." + fqn.split(".", 1)[1] if fqn.startswith("numpy.") else fqn

    def _print_sigmoid(self, expr):
        # exp(-|u|) never overflows; see generated/_support.py
        return f"sigmoid({self._print(expr.args[0])})"

    def _print_softplus(self, expr):
        # log(1 + exp(u)) overflows at u > 709; max(u, 0) + log1p(exp(-|u|)) does not, and is what NumPy's
        # logaddexp(0, u) computes, in four vectorised passes instead of logaddexp's scalar loop (twice as fast);
        # for an array name only (it is read three times), else logaddexp
        (u,) = expr.args
        if u.is_Symbol:
            return f"({' + '.join(softplus_terms(self._print(u)))})"
        return f"np.logaddexp(0, {self._print(u)})"

    def _print_erf(self, expr):
        # NumPy has no erf; the support module provides a vectorised one
        return f"erf({self._print(expr.args[0])})"

    def _print_erfc(self, expr):
        return f"erfc({self._print(expr.args[0])})"

    def _print_ndtr(self, expr):
        # Phi(u) from u itself: erfc(-u/sqrt(2)) would round u/sqrt(2) in the array's dtype first
        return f"ndtr({self._print(expr.args[0])})"

    def _print_Piecewise(self, expr):
        # nested selections: the last branch's condition is True
        (value, cond), rest = expr.args[0], expr.args[1:]
        tail = self._print(rest[0].expr) if len(rest) == 1 and rest[0].cond is sp.true \
            else self._print_Piecewise(sp.Piecewise(*rest))
        return self._select(self._print(cond), self._print(value), tail)

    def _select(self, cond, value, otherwise):
        return f"np.where({cond}, {value}, {otherwise})"

    def _print_Relational(self, expr):
        # plain operators read better than np.greater(...)
        return f"({self._print(expr.lhs)} {expr.rel_op} {self._print(expr.rhs)})"

    def _print_Float(self, expr):
        # the shortest literal that round-trips to the same double
        return repr(float(expr))

    def _print_Abs(self, expr):
        return f"np.abs({self._print(expr.args[0])})"

    COMPARE = {">": "greater", ">=": "greater_equal", "<": "less", "<=": "less_equal"}

    def _print_indicator(self, expr):
        # [u <= c] written by the comparison ufunc straight into an array of u's dtype as 0 or 1 (a boolean array times
        # a Python float would be float64); [not c] as 1 - [c], so NaN gives 1 (np.greater(u, c) would give 0)
        u, edge, op, holds = expr.args
        u = self._print(u)
        mask = f"np.{self.COMPARE[indicator.OPS[op]]}({u}, {self._print(edge)}, out=np.empty_like({u}))"
        return mask if holds else f"(1 - {mask})"

    def _print_Heaviside(self, expr):
        # only as codegen.passes.shared_sigmoids writes it, [u >= 0]: a boolean array, which np.maximum takes as 0/1
        u, at_zero = expr.args
        assert at_zero == 1, expr
        if u.could_extract_minus_sign():  # [-E >= 0] as (E <= 0): no negation pass
            return self._print(sp.LessThan(-u, 0, evaluate=False))
        return self._print(sp.GreaterThan(u, 0, evaluate=False))

    def _print_Pow(self, expr, rational=False):
        # 1/u rather than u**(-1.0)
        if expr.exp == -1:
            return f"1 / {self.parenthesize(expr.base, sp.printing.precedence.PRECEDENCE['Mul'])}"
        # u*u*u, not u**3: NumPy's power has fast paths for exponents 2, 1/2 and -1 only, and u**3 calls pow()
        # per element (about 90 ns, against 1 ns a product)
        if expr.exp.is_Integer and 3 <= abs(expr.exp) <= MAX_PRODUCT_POWER:
            base = self.parenthesize(expr.base, sp.printing.precedence.PRECEDENCE["Pow"])
            product = f"({'*'.join([base] * int(abs(expr.exp)))})"  # a factor of its own, as u**n was
            return product if expr.exp > 0 else f"1 / {product}"
        if expr.exp == -2:
            base = self.parenthesize(expr.base, sp.printing.precedence.PRECEDENCE["Pow"])
            return f"1 / {base}**2"
        return super()._print_Pow(expr, rational=rational)

    def _print_Max(self, expr):
        return self._binary_reduce("np.maximum", expr.args)

    def _print_Min(self, expr):
        return self._binary_reduce("np.minimum", expr.args)

    def _binary_reduce(self, fn, args):
        head, *rest = args
        return f"{fn}({self._print(head)}, {self._binary_reduce(fn, rest) if len(rest) > 1 else self._print(rest[0])})"


def elementwise_body(expr, arg, argname):
    """Lines of a function body computing ``expr`` (in the symbol ``arg``) from the array ``argname``.

    Common subexpressions become temporaries ``_tmp0``, ``_tmp1``, ... numbered in order of appearance, so the
    text is the same on every run. Returns (assignments, result expression) as strings.
    """
    return _body(KernelPrinter(), prepare(expr).subs(arg, sp.Symbol(argname, real=True)))


def _body(printer, prepared):
    """CSE of ``prepared``, then each temporary and the result printed by ``printer``."""
    lines, (result,) = _bodies(printer, [prepared])
    return lines, result


def _bodies(printer, prepared):
    """CSE over the expressions ``prepared`` together: (assignments, [each result]) printed by ``printer``."""
    replacements, reduced = sp.cse(prepared, symbols=sp.numbered_symbols("_tmp"), order="canonical")
    lines = [f"{printer.doprint(sym)} = {printer.doprint(value)}" for sym, value in replacements]
    return lines, [printer.doprint(r) for r in reduced]


class ScalarKernelPrinter(KernelPrinter):
    """The same expressions for one float at a time, inside Numba-compiled loops (no arrays, no np.where)."""

    def _select(self, cond, value, otherwise):
        # a conditional expression: only the selected branch is evaluated, so no clamping is needed
        return f"({value} if {cond} else {otherwise})"

    def _print_sigmoid(self, expr):
        return f"sigmoid_scalar({self._print(expr.args[0])})"

    def _print_softplus(self, expr):
        return f"softplus_scalar({self._print(expr.args[0])})"

    def _print_erf(self, expr):
        return f"math.erf({self._print(expr.args[0])})"

    def _print_erfc(self, expr):
        return f"erfc_scalar({self._print(expr.args[0])})"

    def _print_ndtr(self, expr):
        return f"ndtr_scalar({self._print(expr.args[0])})"

    def _print_expm1(self, expr):
        return f"expm1_scalar({self._print(expr.args[0])})"

    def _print_log1p(self, expr):
        return f"log1p_scalar({self._print(expr.args[0])})"

    def _print_exp(self, expr):
        return f"exp_scalar({self._print(expr.args[0])})"

    def _print_tanh(self, expr):
        return f"tanh_scalar({self._print(expr.args[0])})"

    def _print_Abs(self, expr):
        return f"abs({self._print(expr.args[0])})"

    # Numba's min(a, b) and max(a, b) give a when the comparison fails: NaN passes only as the first argument, so
    # the numbers (saturate's bounds) go last
    def _print_Max(self, expr):
        return self._binary_reduce("max", sorted(expr.args, key=lambda a: a.is_number))

    def _print_Min(self, expr):
        return self._binary_reduce("min", sorted(expr.args, key=lambda a: a.is_number))


def scalar_body(expr, arg, argname):
    """Like ``elementwise_body``, for the scalar printer: (assignments, result) of f at one float."""
    return _body(ScalarKernelPrinter(), prepare_scalar(expr).subs(arg, sp.Symbol(argname, real=True)))


def scalar_pair_body(f, df, arg, argname):
    """f and f' (both in the symbol ``arg``) at one float in one body, their common subexpressions once (silu's
    sigmoid, gelu's Phi: f's saturated terms take f''s clamp, as in ``pair_prepared``): (assignments, f's result,
    f''s result)."""
    symbol = sp.Symbol(argname, real=True)
    lines, (f_result, df_result) = _bodies(ScalarKernelPrinter(), [e.subs(arg, symbol)
                                                                   for e in scalar_pair_prepared(f, df)])
    return lines, f_result, df_result


def scalar_pair_prepared(f, df):
    """f and f' as ``scalar_pair_body`` prints them: the scalar passes, f's saturated terms with f''s clamp."""
    f_prepared, df_prepared = prepare_scalar(f), prepare_scalar(df)
    return [share_saturated(f_prepared, df_prepared), df_prepared]


def _functions(expr):
    return {type(a) for a in expr.atoms(sp.Function)}


def support_names(*exprs):
    """The names ``elementwise_body`` of ``exprs`` imports from generated/_support.py, sorted."""
    used = set().union(*(_functions(prepare(e)) for e in exprs if e is not None))
    return sorted(SUPPORT[f] for f in used if f in SUPPORT)


def scalar_support(*exprs):
    """(names ``scalar_body`` of ``exprs`` imports from generated/_support.py, whether any uses the math module)."""
    prepared = [prepare_scalar(e) for e in exprs]
    used = set().union(*map(_functions, prepared))
    printed = "".join(ScalarKernelPrinter().doprint(e) for e in prepared)
    return sorted(SCALAR_SUPPORT[f] for f in used if f in SCALAR_SUPPORT), "math." in printed


def pair_prepared(f, df, arg, argname):
    """f and f' (both in the symbol ``arg``) as the one pass computes them, in the symbol named ``argname``: the
    numerics passes, then f's saturated terms and the sigmoids written so that the two share them."""
    symbol = sp.Symbol(argname, real=True)
    f_prepared, df_prepared = prepare(f), prepare(df)
    return [e.subs(arg, symbol) for e in shared_sigmoids([share_saturated(f_prepared, df_prepared), df_prepared])]


# elementary functions a scalar form evaluates per element (the support module's sigmoid is one exp, its softplus an
# exp and a log1p, its erfc and Phi two exps and two polynomials of degree 16 and 22, about three exps' time): what
# a compiled step spends its time on, against NumPy's passes (codegen.rnn_printer)
ELEMENTARY_CALLS = {sp.exp: 1, expm1: 1, log1p: 1, sp.tanh: 1, sigmoid: 1, softplus: 2, sp.erfc: 3, ndtr: 3}


def elementary_calls(*exprs):
    """How many elementary functions the scalar form of f, or of f and f' written together (``scalar_pair_body``:
    their common subexpressions once), evaluates per element; None where one does not vectorise (``vectorizes``)."""
    if not all(vectorizes(e) for e in exprs):
        return None
    prepared = scalar_pair_prepared(*exprs) if len(exprs) == 2 else [prepare_scalar(e) for e in exprs]
    replacements, reduced = sp.cse(prepared, symbols=sp.numbered_symbols("_tmp"), order="canonical")
    total = 0
    for e in [value for _, value in replacements] + list(reduced):
        for call in sp.preorder_traversal(e):
            if isinstance(call, sp.Function) and type(call) in ELEMENTARY_CALLS:
                total += ELEMENTARY_CALLS[type(call)]
    return total


def returned(name):
    """The NumPy text of the output sequence ``name`` as a kernel returns it (the RNN's forward and step_forward,
    every cell's forward): a read-only view, so that no in-place change of it reaches the cache's array, which
    backward reads. The one place both NumPy targets take it from (the PyTorch targets return the tensor itself)."""
    return f"read_only({name})"


def vectorizes(expr):
    """Whether ``expr``'s scalar form (``scalar_body``) is arithmetic, comparisons, selections, |u|, max and min,
    integer powers and the support module's exp, expm1, log1p, tanh, sigmoid, softplus, erfc and ndtr only: what
    LLVM turns into vector code inside a Numba loop. A call of the math library (erf, sin, a real power, ...) is
    made one value at a time there (Numba's LLVM has no SVML here)."""
    prepared = prepare_scalar(expr)
    return (all(isinstance(f, VECTOR_FUNCTIONS) for f in prepared.atoms(sp.Function))
            and all(p.exp.is_Integer for p in prepared.atoms(sp.Pow)))
