"""RnnKernel -> NumPy and Numba source lines: every arithmetic line of an rnn_<name> module, printed from the
description (codegen.rnn_lower).

    # [RnnKernel] -> {section: [line]}     RnnPrinter(kernel).sections()

The template (codegen/templates/rnn_module.py.jinja) only places these lines inside function definitions with their
docstrings. Each line's comment is the derivation step its description names, printed from the Derivation's SymPy
objects (codegen.text_printer). Arrays are time-major with the batch in rows, so W u is printed as ``u @ W.T``.

NumPy: the forward pass writes E_t in place (``out=``, ``+=``) into one (T, N, H) array, with V x_t + b for every t
hoisted into one product before the loop; where f' is kept, the step computes f and f' in one pass (their shared
subexpressions once) and writes h_t and then f'(E_t) over E_t. Every elementwise line is one ufunc into an array
given with ``out=`` (codegen.inplace_printer), the step's scratch arrays allocated once before the loop. Backward
fills delta in place over f'(h_t), or multiplies the kept f'(E_t) into a fresh delta (the cache is only read).
Numba: the same description as fused loops over (n, i, j), for small N*H*H where NumPy's per-call overhead
dominates, its scalar f through codegen.numpy_printer's ScalarKernelPrinter. Every target is given the expressions
after codegen.passes' numerics passes.
"""
import re

import sympy as sp

from codegen.inplace_printer import array_program
from codegen.numpy_printer import (elementary_calls, pair_prepared, returned, scalar_body, scalar_pair_body,
                                   vectorizes)
from codegen.passes import prepare
from codegen.rnn_lower import dh_dE_t
from codegen.text_printer import text
from derive.cell import Assignment
from derive.recurrence import delta_t as delta_matrix


def _terms(expr):
    """The operands of a sum or product built with evaluate=False, in the order written."""
    return list(expr.args)


class RnnPrinter:
    """Prints one activation's RnnKernel; ``sections()`` gives {section: [line]} for the template."""

    returned = staticmethod(returned)  # h as forward returns it: a read-only view (as every cell's output)

    def __init__(self, kernel):
        self.k = kernel
        d = kernel.derivation
        s = d.scalar
        names = {s.f: "f", s.df: "f'"}  # each formula is written out once, in the module docstring
        self.eq = {f: text(getattr(d, f), names) for f in ("pre_activation", "output", "dh_dE", "jacobian",
                                                           "dL_dh", "delta", "grad_V", "grad_W", "grad_b",
                                                           "grad_x")}
        self.eq["grad_h_prev"] = text(d.grad_h_prev.subs(delta_matrix, sp.MatrixSymbol("delta_1", *delta_matrix.shape)))
        self.eq["dh_dE_used"] = text(d.dh_dE, names) + (", from h_t" if kernel.keep == "h" else "")

    def note(self, line):
        """' # <step> = <its equation>' for a line that computes a derivation step."""
        return f"  # {self.LHS[line.step]}{self.eq[line.step]}" if line.step else ""

    LHS = {"pre_activation": "E_t = ", "output": "h_t = ", "dh_dE": "dh_t/dE_t = ", "dL_dh": "dL/dh_t = ",
           "delta": "delta_t = ", "grad_V": "dV = sum_t ", "grad_W": "dW = sum_t ", "grad_b": "db = sum_t ",
           "grad_x": "dx_t = ", "grad_h_prev": "dh_0 = ", "jacobian": "dh_t/dh_{t-1} = "}

    # NumPy ---------------------------------------------------------------------------------------------------------
    ALL = {"x": "x.reshape(T * N, D)", "E": "E.reshape(T * N, H)", "delta": "delta_rows"}  # (T*N, cols) views
    ONE = {"h_prev": "h_prev", "delta": "delta_t"}  # a step's (N, cols) arrays

    def operand(self, name, transposed, steps):
        """The NumPy text of a MatMul operand: a parameter (W^T hoisted as W_T in a step), a step's array, or a
        sequence taken as (T*N, cols) when the product spans all steps."""
        if name in ("V", "W"):
            return f"{name}_T" if transposed and steps == "one" else f"{name}{'.T' if transposed else ''}"
        text_ = (self.ALL if steps == "all" else self.ONE)[name]
        return f"{text_}{'.T' if transposed else ''}"

    def matmul(self, m, out=None):
        """A MatMul as ``left @ right``, or into the preallocated ``out`` (no temporary in the step loops)."""
        left = self.operand(m.left, m.left_t, m.steps)
        right = self.operand(m.right, m.right_t, m.steps)
        if out is not None:
            return f"np.matmul({left}, {right}, out={out})"
        return f"{left} @ {right}"

    def inplace(self, a, name=str, out=None):
        """An elementwise Assignment written in place: ``a += b`` / ``a *= b`` when the target is among the
        operands, else ``np.add(b, c, out=a)``; ``name`` prints each symbol (array views or loop elements)."""
        op = "+" if a.expr.is_Add else "*"
        terms = _terms(a.expr)
        if a.symbol in terms:
            rest = [t for t in terms if t != a.symbol]
            value = rest[0] if len(rest) == 1 else (sp.Add if op == "+" else sp.Mul)(*rest, evaluate=False)
            return f"{name(a.symbol)} {op}= {self.element(value, name)}"
        ufunc = {"+": "add", "*": "multiply"}[op]
        return f"np.{ufunc}({', '.join(name(t) for t in terms)}, out={out or name(a.symbol)})"

    def element(self, expr, name):
        """A sum or product of symbols, operands in the order written."""
        if expr.is_Symbol:
            return name(expr)
        joiner = " + " if expr.is_Add else " * "
        return joiner.join(self.element(t, name) for t in _terms(expr))

    # The elementwise work, one ufunc a line into arrays given with out= (codegen.inplace_printer) -------------------
    def _in(self, expr, arg, name):
        """A prepared expression of the kernel's ``arg``, in the array named ``name``."""
        return prepare(expr).subs(arg, sp.Symbol(name, real=True))

    def output_program(self):
        """h_t = f(E_t) into h_t, in the step (h_t is E_t itself where f' is taken from h)."""
        a = self.k.output.value
        fresh = {a.symbol.name} if self.k.fused_derivative is not None else set()
        return array_program([(prepare(a.expr), a.symbol.name)], {"E_t"}, fresh=fresh)

    def pair_program(self, h, d, arg):
        """h = f(arg) and d = f'(arg) in one pass (their shared subexpressions once); d may be the array ``arg``."""
        f, df = pair_prepared(self.k.f, self.k.df, self.k.f_arg, arg)
        return array_program([(f, h), (df, d)], {arg}, fresh={h})

    @staticmethod
    def scratch(program, like):
        """Lines allocating ``program``'s scratch arrays: ``like`` is the text of an array of their shape."""
        return [f"{name} = np.empty_like({like})" for name in program.scratch]

    def activation(self):
        """The body of ``activation(E, out=None)`` (out may be E itself)."""
        program = array_program([(self._in(self.k.f, self.k.f_arg, "E"), "out")], {"E"})
        return (["E = np.asarray(E)", "if out is None:", "    out = np.empty_like(E, dtype=np.result_type(E, 0.0))"]
                + self.scratch(program, "out") + program.lines + ["return out"])

    def activation_derivative(self):
        """The body of ``activation_derivative(u, out=None)``, u = h or E (out may be u itself)."""
        u = self.k.df_arg.name if self.k.keep == "h" else "E"
        program = array_program([(self._in(self.k.df, self.k.df_arg, u), "d")], {u}, fresh={"d"})
        new = f"np.empty_like({u}, dtype=np.result_type({u}, 0.0))"
        first = [f"{u} = np.asarray({u})"]
        if not program.borrowed:  # d is written once, by the last line: it may be u
            return first + [f"d = {new} if out is None else out"] + self.scratch(program, "d") + program.lines + [
                "return d"]
        return (first + [f"d = {new} if out is None or np.may_share_memory(out, {u}) else out"]
                + self.scratch(program, "d") + program.lines
                + ["if out is not None and out is not d:  # out overlaps the argument: d was computed apart",
                   "    out[...] = d",
                   "    return out",
                   "return d"])

    def forward(self):
        k = self.k
        fused = k.fused_derivative
        (vx, bias) = k.hoisted
        lines = ["x, h0, V, W, b = check_forward(x, h0, V, W, b)", "T, N, D = x.shape", "H = h0.shape[1]",
                 "h = np.empty((T, N, H), dtype=x.dtype)",
                 "E = np.empty_like(h)  # E_t, each replaced by f'(E_t) once h_t is formed: the cache's dh_dE" if fused
                 else "E = h  # E_t is formed in h[t] and replaced by h_t in place: f' needs only h_t",
                 "# V x_t + b_h for all T steps at once: one matrix product",
                 self.matmul(vx.value, out=self.ALL[vx.target]),
                 self.inplace(bias.value)]
        cache = f"Cache(x, h0, V, W, b, h, {'E if for_backward else None' if fused else 'None'})"
        contiguous = {"h0": "np.ascontiguousarray(h0)", "W": "np.ascontiguousarray(W)",
                      "W_T": "np.ascontiguousarray(W.T)"}

        def call(blas):
            names = self.forward_compiled_args(blas).split(", ")
            return ", ".join(contiguous.get(n, n) for n in names)

        lines += ["if use_numba(BACKEND, N * H * H, NUMBA_MAX_WORK):  # the same steps, compiled",
                  f"    _forward_loop({call(False)})"]
        output = self.output_program()
        pair = self.pair_program(k.output.target, fused.target, "E_t") if fused else None
        scratch = max([output, pair] if fused else [output], key=lambda p: len(p.scratch))
        lines += [f"    return {self.returned('h')}, {cache}"]
        if self.forward_blas():
            lines += ["if use_numba_blas(BACKEND, N * H * H, NUMBA_BLAS_MAX_WORK):  # compiled, products by BLAS",
                      f"    _forward_blas({call(True)})",
                      f"    return {self.returned('h')}, {cache}"]
        product = f"{self.matmul(k.step_product.value, out=k.step_product.target)}  # W h_{{t-1}}, rows as batch"
        lines += ["if use_numba_step(BACKEND, x.dtype, NUMBA_STEP_FORWARD):"
                  "  # each step's product by NumPy, the rest of it compiled",
                  f"    {k.step_product.target} = np.empty((N, H), dtype=x.dtype)",
                  "    W_T, h_prev = W.T, h0",
                  "    for E_t, h_t in zip(E, h):",
                  f"        {product}",
                  f"        _forward_step({self.forward_step_args()}){self.note(k.pre_activation)}; h_t = f(E_t)"
                  + (", f'(E_t) over E_t" if fused else ""),
                  "        h_prev = h_t",
                  f"    return {self.returned('h')}, {cache}"]
        lines += [f"{k.step_product.target} = np.empty((N, H), dtype=x.dtype)"]
        if scratch.scratch:
            inside = "f and f'" if fused else "f"
            lines += [f"# scratch for the values inside {inside}, one ufunc a line"]
            lines += self.scratch(scratch, "W_h")
        lines += ["W_T, h_prev = W.T, h0",
                  "for E_t, h_t in zip(E, h):  # views of step t (the same array when E is h)",
                  f"    {product}",
                  f"    {self.inplace(k.pre_activation.value)}{self.note(k.pre_activation)}"]
        if fused:
            lines += [f"    if for_backward:  # h_t = {self.eq['output']}; then {self.LHS['dh_dE']}{self.eq['dh_dE']},"
                      " over E_t"]
            lines += [f"        {line}" for line in pair.lines]
            lines += ["    else:"]
            lines += self._noted(output.lines, "        ", k.output)
        elif output.lines == ["np.copyto(h_t, E_t)"]:  # f(E) = E, and h_t is E_t
            lines += [f"    {self.note(k.output).strip()}: E_t is h_t already"]
        else:
            lines += self._noted(output.lines, "    ", k.output)
        lines += ["    h_prev = h_t",
                  f"return {self.returned('h')}, {cache}"]
        return lines

    def _noted(self, program_lines, indent, line):
        """``program_lines`` indented, the derivation step's note on the first (or on a line of its own)."""
        if len(program_lines) == 1:
            return [f"{indent}{program_lines[0]}{self.note(line)}"]
        return [f"{indent}{self.note(line).strip()}"] + [f"{indent}{text_}" for text_ in program_lines]

    def fused(self):
        """The body of ``activation_and_derivative(E, h=None, d=None)``: f and f' in one pass (their shared
        subexpressions once) when f' is kept; else h = f(E), then f' from h."""
        k = self.k
        lines = ["E = np.asarray(E)", "h = np.empty_like(E, dtype=np.result_type(E, 0.0)) if h is None else h",
                 "d = np.empty_like(h) if d is None else d"]
        if k.fused_derivative is None:
            return lines + ["activation(E, out=h)", "activation_derivative(h, out=d)", "return h, d"]
        program = self.pair_program("h", "d", "E")
        return lines + self.scratch(program, "h") + program.lines + ["return h, d"]

    def backward(self):
        k = self.k
        (_, dV), (_, dW) = k.weight_grads
        kept = k.fused_derivative is not None
        lines = [f"dh = check_backward(dh, cache{', kept=True' if kept else ''})", "x, h0, V, W, b, h, dh_dE = cache",
                 "T, N, D = x.shape", "H = h0.shape[1]"]
        source = "dh_dE" if kept else "h"  # what the compiled step reads f'(E_t) from
        carry = f"{self.matmul(k.carry.value, out=k.carry.target)}  # W^T delta_t, rows as batch"
        lines += ["if use_numba(BACKEND, N * H * H, NUMBA_MAX_WORK):",
                  f"    delta = derivatives(cache)  # dh_t/dE_t = {self.eq['dh_dE_used']}"
                  + (", kept by forward" if kept else ""),
                  "    W_delta = _backward_loop(delta, dh, W)  # the same steps, compiled",
                  "elif use_numba_blas(BACKEND, N * H * H, NUMBA_BLAS_MAX_WORK):",
                  "    delta = derivatives(cache)",
                  "    W_delta = _backward_blas(delta, dh, np.ascontiguousarray(W))"
                  "  # compiled, products by BLAS",
                  "elif use_numba_step(BACKEND, x.dtype, NUMBA_STEP_BACKWARD):"
                  "  # each step's product by NumPy, delta_t compiled",
                  f"    delta = np.empty_like({source})",
                  "    W_delta = np.zeros((N, H), dtype=x.dtype)  # W^T delta_{T+1} = 0",
                  f"    for {source}_t, delta_t, dh_t in zip({source}[::-1], delta[::-1], dh[::-1]):  # t = T, ..., 1",
                  f"        _backward_step({source}_t, dh_t, W_delta, delta_t){self.note(k.delta)}",
                  f"        {carry}"]
        if kept:
            lines += ["else:",
                      "    delta = np.empty_like(dh_dE)  # filled step by step; the cache's f'(E_t) is only read"]
            loop = "    for dh_dE_t, delta_t, dh_t in zip(dh_dE[::-1], delta[::-1], dh[::-1]):  # t = T, ..., 1"
        else:
            lines += ["else:",
                      "    # f'(E_t) for all t at once; delta is then filled in place, step by step",
                      f"    delta = derivatives(cache)  # dh_t/dE_t = {self.eq['dh_dE_used']}"]
            loop = "    for delta_t, dh_t in zip(delta[::-1], dh[::-1]):  # t = T, ..., 1"
        lines += ["    dL_dh = np.empty((N, H), dtype=x.dtype)",
                  "    W_delta = np.zeros((N, H), dtype=x.dtype)  # W^T delta_{T+1} = 0",
                  loop,
                  f"        {self.inplace(k.dL_dh.value)}{self.note(k.dL_dh)}",
                  f"        {self.inplace(k.delta.value)}{self.note(k.delta)}",
                  f"        {carry}",
                  "delta_rows = delta.reshape(T * N, H)",
                  f"dV = {self.matmul(dV.value)}{self.note(dV)}"]
        lines += self.previous_states(dW)
        assert isinstance(k.bias_grad.value.expr, sp.Sum)  # over t and the batch: the rows of delta
        lines += [f"db = delta_rows.sum(axis=0){self.note(k.bias_grad)}",
                  f"dx = ({self.matmul(k.input_grad.value)}).reshape(T, N, D){self.note(k.input_grad)}",
                  f"return Grads(dx, {k.carry.target}, dV, dW, db){self.note(k.carry)}"]
        return lines

    def previous_states(self, line):
        """sum_t delta_t h_{t-1}^T without forming h_0..h_{T-1}: t = 1 from h0, t > 1 from h[:-1]."""
        m = line.value
        assert (m.left, m.left_t, m.right, m.right_t, m.steps) == ("delta", True, "h_prev", False, "all")
        first = {"delta": "delta[0]", "h_prev": "h0"}
        rest = {"delta": "delta[1:].reshape((T - 1) * N, H)", "h_prev": "h[:-1].reshape((T - 1) * N, H)"}
        return [f"{line.target} = {first[m.left]}.T @ {first[m.right]}{self.note(line)}: t = 1 uses h_0 ...",
                "if T > 1:",
                f"    {line.target} += {rest[m.left]}.T @ {rest[m.right]}  # ... t > 1 uses h[t-1]"]

    # Numba ---------------------------------------------------------------------------------------------------------
    def numba_activation(self):
        lines, result = scalar_body(self.k.f, self.k.f_arg, "E")
        return lines + [f"return {result}"]

    def numba_pair(self):
        """The body of ``_activation_pair_scalar(E)``: (f(E), f'(E)) at one float, their common subexpressions
        once; [] where f' is taken from h (the forward pass then computes f alone)."""
        k = self.k
        if k.fused_derivative is None:
            return []
        lines, f, df = scalar_pair_body(k.f, k.df, k.f_arg, "E")
        return lines + [f"return {f}, {df}"]

    def forward_loop(self):
        """The forward step as fused loops (every activation): W h_{t-1} accumulated into E_t row by row, then h_t
        (and f'(E_t) where it is kept)."""
        return self._forward_compiled(blas=False)

    def backward_loop(self):
        """The backward step as fused loops: delta_t[n, i] with dL/dh_t inlined, then W^T delta_t row by row."""
        k = self.k
        names = {"delta_t": "delta[t, n, i]", "dh_t": "dh[t, n, i]", "W_delta": "W_delta[n, i]"}
        name = lambda s: names[s.name]  # noqa: E731 - symbols as loop elements
        dL = k.dL_dh.value
        target = k.delta.value.symbol
        # the loop is given f'(E_t) as delta (the kept one copied by ``derivatives``): delta_t *= dL/dh_t
        inlined = Assignment(target, sp.Mul(*[dL.expr if t == dL.symbol else target if t == dh_dE_t else t
                                              for t in _terms(k.delta.value.expr)], evaluate=False))
        m = k.carry.value  # delta_t @ W: element (n, j) = sum_i delta[n, i] W[i, j]
        assert (m.left, m.right, m.right_t) == ("delta", "W", False)
        return ["T, N, H = delta.shape",
                "W_delta = np.zeros((N, H), dtype=delta.dtype)  # W^T delta_{T+1} = 0",
                "for t in range(T - 1, -1, -1):",
                "    for n in range(N):",
                "        for i in range(H):",
                f"            {self.inplace(inlined, name)}{self.note(k.delta)}",
                "        W_delta[n, :] = 0.0",
                "        for i in range(H):  # W^T delta_t, row by row of W (contiguous)",
                "            d = delta[t, n, i]",
                "            for j in range(H):",
                f"                W_delta[n, j] += d * {m.right}[i, j]",
                "return W_delta"]

    # Numba loops calling BLAS for each step's product (small and medium N*H*H) -------------------------------------
    def forward_blas(self):
        """The forward step compiled, W h_{t-1} by BLAS (np.dot into W_h): only where f (and f' where it is kept)
        vectorise (``vectorizes``: arithmetic, selections and the support module's exp, expm1, log1p, tanh, sigmoid,
        softplus). An f that calls the math library (erf, sin) keeps NumPy's vectorised ufuncs. [] where it does
        not apply."""
        k = self.k
        if not vectorizes(k.f) or (k.fused_derivative is not None and not vectorizes(k.df)):
            return []
        return self._forward_compiled(blas=True)

    def forward_compiled_args(self, blas):
        """The arguments of ``_forward_loop`` (blas=False) or ``_forward_blas``, as the template declares them and
        ``forward`` passes them (after the arrays ``forward`` makes contiguous)."""
        arrays = "E, h" if self.k.fused_derivative is not None else "h"
        flag = ", for_backward" if self.k.fused_derivative is not None else ""
        m = self.k.step_product.value  # h_prev @ W.T (or h_prev @ W): the loops take the right operand row-major
        return f"{arrays}, h0, {'W' if blas or not m.right_t else 'W_T'}{flag}"

    def _forward_compiled(self, blas):
        """One float at a time, compiled with contraction only (no reassociation: the support module's exp and
        log1p depend on the order of their operations): W h_{t-1} by BLAS into W_h, or accumulated over j into
        the row E_t[n, :] (a loop over i, which LLVM vectorises without reordering any sum; W^T contiguous). Where
        f' is taken from h, E is h and the loops read and write h alone: one array, where LLVM sees a value read
        and written at the same place (E and h given as two arguments, it tests them for overlap, finds it, and
        runs the loop without vectors)."""
        k = self.k
        m = k.step_product.value  # h_prev @ W.T: element (n, i) = sum_j W[i, j] h_prev[n, j] = sum_j W_T[j, i] ...
        assert (m.left, m.right) == ("h_prev", "W")
        right = "W_T" if m.right_t else "W"  # ... or h_prev @ W: sum_j W[j, i] h_prev[n, j]
        pre = k.pre_activation.value
        (added,) = [t for t in _terms(pre.expr) if t != pre.symbol]
        fused = k.fused_derivative is not None
        E = "E" if fused else "h"
        lines = [f"T, N, H = {E}.shape"]
        if blas:
            lines += [f"{added.name} = np.empty((N, H), dtype={E}.dtype)"] + (["W_T = W.T"] if m.right_t else [])
        lines += ["for t in range(T):", "    h_prev = h0 if t == 0 else h[t - 1]"]
        if blas:
            lines += [f"    np.dot(h_prev, {right}, {added.name})  # W h_{{t-1}}, rows as batch",
                      "    for n in range(N):"]
        else:
            lines += ["    for n in range(N):",
                      f"        for j in range(H):  # W h_{{t-1}}: row j of {right} times h_{{t-1}}[n, j]",
                      "            h_j = h_prev[n, j]",
                      "            for i in range(H):",
                      f"                {E}[t, n, i] += {right}[j, i] * h_j{self.note(k.pre_activation)}"]
        lines += ["        for i in range(H):",
                  f"            acc = np.float64({E}[t, n, i] + {added.name}[n, i]){self.note(k.pre_activation)}"
                  if blas else f"            acc = np.float64({E}[t, n, i])"]
        return lines + self._activation_at("h[t, n, i]", "E[t, n, i]", "            ")

    def _activation_at(self, h, E, indent):
        """h_t = f(acc) into the element ``h`` (and f'(acc) into ``E`` where it is kept): f (and f') in double, also
        for float32 arrays (Numba keeps float32 arithmetic in float32: E*E*E and E**2 would be rounded to float32
        inside gelu_tanh's sigmoid and gelu's exp); E_t itself in the array's dtype."""
        k = self.k
        if k.fused_derivative is None:
            return [f"{indent}{h} = _activation_scalar(acc){self.note(k.output)}"]
        return [f"{indent}if for_backward:  # h_t = f(E_t), and f'(E_t) over E_t",
                f"{indent}    {h}, {E} = _activation_pair_scalar(acc)",
                f"{indent}else:",
                f"{indent}    {h} = _activation_scalar(acc){self.note(k.output)}"]

    # Numba steps inside NumPy's loop (above NUMBA_BLAS_MAX_WORK: "numba_step") -------------------------------------
    # "auto" runs the compiled step for the dtypes where NumPy's step makes at least this many passes over the step's
    # N*H values per elementary function the compiled step evaluates (exp, tanh, ...: numpy_printer.elementary_calls).
    # NumPy's transcendental ufuncs are SIMD-vectorised, its float32 ones twice as wide as the compiled double forms;
    # the compiled step makes one pass. Measured (forward alone, medium, compiled steps / NumPy's loop, 25 interleaved
    # runs; passes/calls): tanh 2/1: 1.09 float64, 1.41 float32; softplus 7/2: 0.93, 1.01; sigmoid 8/1: 0.77, 0.78;
    # selu 7/1: 0.75, 0.81; silu 16/2: 0.62, 0.82; mish 21/6: 0.91, 1.36; gelu_tanh 24/2: 0.57, 0.59; gelu 31/4:
    # 0.54, 0.45; relu 2/0: 0.88, 0.86 (bench numbers in the README).
    STEP_PASSES_PER_CALL = {"float64": 3, "float32": 6}
    # NumPy passes of generated/_support.py's array functions: sigmoid is abs, negative, exp, comparison, maximum,
    # add and divide; SciPy's erf, erfc and ndtr are not vectorised (19 ns a value, measured, against about 1 for a
    # vectorised pass): counted as 20
    SUPPORT_PASSES = {"sigmoid(": 7, "erf(": 20, "erfc(": 20, "ndtr(": 20}

    def _passes(self, program_lines):
        """How many passes over a step's values ``program_lines`` make (one a ufunc, more for a support function)."""
        def passes(line):
            calls = [n for call, n in self.SUPPORT_PASSES.items() if re.search(rf"(?<![\w.]){re.escape(call)}", line)]
            return calls[0] if calls else 1
        return sum(map(passes, program_lines))

    def step_cost(self, backward):
        """(NumPy's passes over a step's values, elementary functions per value compiled, or None where the
        compiled step calls the math library): the forward step's h_t = f(E_t) (with f'(E_t) where kept), or the
        backward step's delta_t (f'(h_t) computed there where it comes from h)."""
        k = self.k
        if backward:
            if k.keep != "h":
                return 2, 0  # dL/dh_t and delta_t: f'(E_t) read from the cache
            u = k.df_arg.name
            program = array_program([(self._in(k.df, k.df_arg, u), "d")], {u}, fresh={"d"})
            return self._passes(program.lines) + 2, elementary_calls(k.df)
        if k.fused_derivative is not None:
            program = self.pair_program(k.output.target, k.fused_derivative.target, "E_t")
            return self._passes(program.lines) + 1, elementary_calls(k.f, k.df)
        lines = [line for line in self.output_program().lines if line != "np.copyto(h_t, E_t)"]
        return self._passes(lines) + 1, elementary_calls(k.f)

    def numba_step_dtypes(self, backward):
        """The text of NUMBA_STEP_FORWARD (or _BACKWARD): the dtypes "auto" compiles that step for, and why."""
        passes, calls = self.step_cost(backward)
        if calls is None:
            chosen, why = (), f"the compiled step calls the math library one value at a time (NumPy: {passes} passes)"
        else:
            chosen = tuple(d for d, ratio in self.STEP_PASSES_PER_CALL.items() if passes >= ratio * calls)
            why = (f"NumPy: {passes} pass{'' if passes == 1 else 'es'} a step; compiled: {calls} elementary "
                   f"function{'' if calls == 1 else 's'} a value")
        return f"{chosen!r}  # {why}"

    def forward_step_args(self):
        """The arguments of ``_forward_step``, as the template declares them and ``forward`` passes them."""
        return "E_t, W_h, h_t, for_backward" if self.k.fused_derivative is not None else "h_t, W_h"

    def forward_step(self):
        """The body of ``_forward_step``: E_t += W h_{t-1} (W_h, NumPy's product) and h_t = f(E_t), with f'(E_t)
        over E_t where it is kept, element by element in one compiled pass."""
        k = self.k
        pre = k.pre_activation.value
        (added,) = [t for t in _terms(pre.expr) if t != pre.symbol]
        E = "E_t" if k.fused_derivative is not None else "h_t"  # where f' comes from h, E_t is formed in h_t
        return [f"N, H = {E}.shape", "for n in range(N):", "    for i in range(H):",
                f"        acc = np.float64({E}[n, i] + {added.name}[n, i]){self.note(k.pre_activation)}"
                ] + self._activation_at("h_t[n, i]", "E_t[n, i]", "        ")

    def backward_step_args(self):
        return f"{'dh_dE_t' if self.k.keep != 'h' else 'h_t'}, dh_t, W_delta, delta_t"

    def backward_step(self):
        """The body of ``_backward_step``: delta_t = f'(E_t) (g_t + W^T delta_{t+1}) in one compiled pass, f'(E_t)
        read from the cache or computed from h_t (``_derivative_scalar``, in double)."""
        k = self.k
        names = {"dh_t": "dh_t[n, i]", "W_delta": "W_delta[n, i]",
                 "dh_dE_t": "dh_dE_t[n, i]", "delta_t": "_derivative_scalar(np.float64(h_t[n, i]))"}
        dL = k.dL_dh.value
        factors = [f"({self.element(dL.expr, lambda s: names[s.name])})" if t == dL.symbol else names[t.name]
                   for t in _terms(k.delta.value.expr)]
        return ["N, H = delta_t.shape", "for n in range(N):", "    for i in range(H):",
                f"        delta_t[n, i] = {' * '.join(factors)}{self.note(k.delta)}"]

    def numba_derivative(self):
        """The body of ``_derivative_scalar(h)``: f'(E) from h = f(E) at one float; [] where f' is kept."""
        k = self.k
        if k.keep != "h":
            return []
        lines, result = scalar_body(k.df, k.df_arg, k.df_arg.name)
        return lines + [f"return {result}"]

    def backward_blas(self):
        """The backward step compiled: delta_t elementwise as in ``backward_loop``, W^T delta_t by BLAS."""
        k = self.k
        names = {"delta_t": "delta[t, n, i]", "dh_t": "dh[t, n, i]", "W_delta": "W_delta[n, i]"}
        name = lambda s: names[s.name]  # noqa: E731 - symbols as loop elements
        dL = k.dL_dh.value
        target = k.delta.value.symbol
        inlined = Assignment(target, sp.Mul(*[dL.expr if t == dL.symbol else target if t == dh_dE_t else t
                                              for t in _terms(k.delta.value.expr)], evaluate=False))
        m = k.carry.value
        assert (m.left, m.right, m.right_t) == ("delta", "W", False)
        return ["T, N, H = delta.shape",
                "W_delta = np.zeros((N, H), dtype=delta.dtype)  # W^T delta_{T+1} = 0",
                "for t in range(T - 1, -1, -1):",
                "    for n in range(N):",
                "        for i in range(H):",
                f"            {self.inplace(inlined, name)}{self.note(k.delta)}",
                f"    np.dot(delta[t], {m.right}, W_delta)  # W^T delta_t, rows as batch",
                "return W_delta"]

    # Jacobians -----------------------------------------------------------------------------------------------------
    def _factor(self):
        ((factor, param),) = self.k.jacobian
        return factor.name, f"cache.{param}"

    def jacobian(self):
        d, W = self._factor()
        read = "activation_derivative(cache.h[t - 1])" if self.k.keep == "h" else "check_kept(cache)[t - 1]"
        return ["t = check_time(cache, t)",
                f"{d} = {read}  # f'(E_t), (N, H)",
                f"return {d}[:, :, None] * {W}[None, :, :]  # diag(f'(E_t)) W, row by row"]

    def derivatives(self):
        if self.k.keep == "h":
            return ["return activation_derivative(cache.h)"]
        return ["return check_kept(cache).copy()  # computed by forward; a copy, so the cache cannot change through it"]

    def jacobian_products(self):
        d, W = self._factor()
        return ["t = check_time(cache, t)",
                "check_products_bytes(cache, t, max_bytes)",
                "N, H = cache.h0.shape",
                f"{d} = derivatives(cache)",
                "P = np.empty((t, N, H, H), dtype=cache.h.dtype)",
                f"P[t - 1] = {d}[t - 1][:, :, None] * {W}{self.note_jacobian()}",
                "for k in range(t - 2, -1, -1):",
                f"    np.matmul(P[k + 1] * {d}[k][:, None, :], {W}, out=P[k])"
                "  # (dh_t/dh_{k+1}) diag(f'(E_{k+1})) W",
                "return P"]

    def note_jacobian(self):
        return f"  # dh_t/dh_{{t-1}} = {self.eq['jacobian']}"

    def pushforward(self):
        d, W = self._factor()
        return ["k, t = check_span(cache, k, t)",
                f"{d} = derivatives(cache)",
                "v = np.asarray(v, dtype=cache.h.dtype)",
                "for s in range(k, t):  # step s + 1: v <- diag(f'(E_{s+1})) W v",
                f"    v = {d}[s] * (v @ {W}.T)",
                "return v"]

    def pullback(self):
        d, W = self._factor()
        return ["k, t = check_span(cache, k, t)",
                f"{d} = derivatives(cache)",
                "u = np.asarray(u, dtype=cache.h.dtype)",
                "for s in range(t - 1, k - 1, -1):  # u <- W^T diag(f'(E_{s+1})) u",
                f"    u = (u * {d}[s]) @ {W}",
                "return u"]

    def sections(self):
        return dict(forward=self.forward(), backward=self.backward(), fused=self.fused(),
                    activation=self.activation(), activation_derivative=self.activation_derivative(),
                    activation_scalar=self.numba_activation(), activation_pair_scalar=self.numba_pair(),
                    forward_loop=self.forward_loop(), backward_loop=self.backward_loop(),
                    forward_loop_args=self.forward_compiled_args(False), forward_blas_args=self.forward_compiled_args(True),
                    forward_blas=self.forward_blas(), backward_blas=self.backward_blas(), jacobian=self.jacobian(),
                    forward_step=self.forward_step(), forward_step_args=self.forward_step_args(),
                    backward_step=self.backward_step(), backward_step_args=self.backward_step_args(),
                    derivative_scalar=self.numba_derivative(),
                    numba_step_forward=self.numba_step_dtypes(False), numba_step_backward=self.numba_step_dtypes(True),
                    derivatives=self.derivatives(), jacobian_products=self.jacobian_products(),
                    pushforward=self.pushforward(), pullback=self.pullback())
