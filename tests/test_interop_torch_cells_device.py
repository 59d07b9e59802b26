"""The cells on the device path: forward and BPTT printed in PyTorch from the same lowering as the NumPy kernels
(codegen.cell_torch_printer), run by interop.torch_device.DeviceCellFunction for tensors off the CPU.

On the CPU the path is forced (``interop.torch_rnn.BACKEND = "device"``, or DeviceCellFunction called directly) and
checked against the NumPy kernels, against torch.nn.LSTM / nn.GRU with the same weights, and (MGU, which torch lacks)
against autograd through its equations written out here. On a CUDA GPU the same comparisons run there, with every
host path made to raise. Tolerances, float64: 1e-12 relative. Both targets evaluate the same printed formulas in the
same order; only the matrix products and sums may be blocked differently (BLAS, or torch's own kernels), which
moves results by a few ulps per step: at most 1.1e-15 relative to the largest entry is measured over these 6 steps
(every cell, every configuration), so 1e-12 leaves three orders of magnitude and still catches any wrong term (a
dropped term moves results by 1e-2 or more).
"""
import itertools

import pytest

torch = pytest.importorskip("torch", reason="PyTorch (the bench extra) is not installed: interop not tested")

from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

import generated  # noqa: E402
from interop import torch_rnn  # noqa: E402
from interop.torch_device import DeviceCellFunction, device_cell_kernels  # noqa: E402
from interop.torch_rnn import CellFunction  # noqa: E402

CELLS = [c for c in ("lstm", "gru", "mgu") if c in generated.CELLS]
if len(CELLS) < 3:
    pytest.skip("generated lacks the lstm, gru or mgu cell (the cells are not merged)", allow_module_level=True)

D, H, T, N = 5, 4, 6, 3
LENGTHS = [4, 6, 2, 4]  # unsorted, a repeated length: sequences of one length run together
F64 = dict(rtol=1e-12, atol=1e-13)  # see the module docstring; atol for entries that are themselves near zero
# float32: eps = 6e-8, and the two targets round differently inside each product and through 6 recurrent steps;
# at most 4e-7 relative to the largest entry is measured, so 1e-5 keeps a margin of 25 and fails on a wrong term
F32 = dict(rtol=1e-5, atol=1e-6)
NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA GPU on this machine: the device path is checked on the CPU instead "
                                       "(the tests above force it with BACKEND='device')")


@pytest.fixture(autouse=True)
def scratch_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RNN_BPTT_CACHE", str(tmp_path / "kernels"))


def _forbid_host(monkeypatch):
    """Every way to the NumPy kernels raises: a host copy (_host), CellFunction, the generated cells' forward."""

    def refuse(*args, **kwargs):
        raise AssertionError("the device path reached the host (NumPy) kernels")

    monkeypatch.setattr(torch_rnn, "_host", refuse)
    monkeypatch.setattr(CellFunction, "forward", staticmethod(refuse))
    for name in CELLS:
        monkeypatch.setattr(generated.load(name), "forward", refuse)


# --- the Function: DeviceCellFunction against CellFunction (the NumPy kernels) ---------------------------------------

def _size(label):
    count, _, name = label.rpartition("*")
    return (int(count) if count else 1) * dict(T=T, N=N, D=D, H=H)[name]


def _arguments(name, dtype=torch.float64, device="cpu", seed=0):
    """Random arguments of the cell ``name`` in forward's order (nonzero initial states), requiring grad."""
    module = generated.load(name)
    g = torch.Generator().manual_seed(seed)
    out = []
    for arg in module.ARGUMENTS:
        scale = 1.0 if arg == module.INPUT or arg.endswith("0") else 0.5
        t = torch.randn(tuple(_size(s) for s in module.SHAPES[arg]), generator=g, dtype=torch.float64) * scale
        out.append(t.to(dtype=dtype, device=device).requires_grad_(True))
    return out


def _results(apply, args, seed=1):
    """(outputs, gradients of every argument) of L = <G, out> + sum over the other states <G_s, s_T>."""
    outputs = apply(*args)
    g = torch.Generator().manual_seed(seed)
    loss = sum((torch.randn(o.shape, generator=g, dtype=torch.float64).to(o) * o).sum() for o in outputs)
    return [o.detach() for o in outputs], torch.autograd.grad(loss, args)


def _assert_all_close(got, want, tol, what):
    (o2, g2), (o1, g1) = got, want
    assert len(o2) == len(o1) and len(g2) == len(g1)
    for k, (a, b) in enumerate(zip(o2 + list(g2), o1 + list(g1))):
        label = f"output {k}" if k < len(o1) else f"d{what[k - len(o1)]}"
        torch.testing.assert_close(a, b, **tol, msg=lambda m, label=label: f"{label}: {m}")


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_device_function_matches_the_numpy_kernels(name, dtype):
    """Outputs (the output sequence and the other states' last values) and the gradient of every argument."""
    module = generated.load(name)
    args = _arguments(name, dtype)
    want = _results(lambda *a: CellFunction.apply(module, *a), args)
    got = _results(lambda *a: DeviceCellFunction.apply(device_cell_kernels(name), *a), args)
    assert all(o.dtype == dtype for o in got[0] + list(got[1]))
    _assert_all_close(got, want, F64 if dtype == torch.float64 else F32, module.ARGUMENTS)


def _mgu_by_autograd(x, h0, weight_ih, weight_hh, bias):
    """derive/cells/mgu.cell written out in PyTorch operations, differentiated by autograd: an independent oracle
    for the one cell torch does not ship."""
    W_xf, W_xn = weight_ih.chunk(2)
    W_hf, W_hn = weight_hh.chunk(2)
    b_f, b_n = bias.chunk(2)
    h, out = h0, []
    for x_t in x:
        f = torch.sigmoid(x_t @ W_xf.T + h @ W_hf.T + b_f)
        n = torch.tanh(x_t @ W_xn.T + f * (h @ W_hn.T) + b_n)
        h = (1 - f) * h + f * n
        out.append(h)
    return (torch.stack(out),)


def test_mgu_on_the_device_path_matches_autograd_of_its_equations():
    args = _arguments("mgu")
    want = _results(_mgu_by_autograd, args)
    got = _results(lambda *a: DeviceCellFunction.apply(device_cell_kernels("mgu"), *a), args)
    _assert_all_close(got, want, F64, generated.load("mgu").ARGUMENTS)


# --- the modules on the forced device path against torch.nn.LSTM / GRU and the NumPy path ----------------------------

def _run_module(module, x, hx, kind, packed, batch_first):
    """(out, finals, dx, dhx, {param: grad}) of a random loss on the output and every final state."""
    module.zero_grad(set_to_none=True)  # the same module runs on both paths
    xi = x.clone().requires_grad_(True)
    hi = [s.clone().requires_grad_(True) for s in hx]
    states = tuple(hi) if kind == "LSTM" else hi[0]
    if packed:
        seq = pack_padded_sequence(xi, torch.tensor(LENGTHS), batch_first=batch_first, enforce_sorted=False)
        out, h_n = module(seq, states)
        out = pad_packed_sequence(out, batch_first=batch_first)[0]
    else:
        out, h_n = module(xi, states)
    finals = list(h_n) if kind == "LSTM" else [h_n]
    g = torch.Generator().manual_seed(1)
    loss = sum((torch.randn(t.shape, generator=g, dtype=torch.float64).to(t) * t).sum() for t in [out] + finals)
    loss.backward()
    return ([out.detach()] + [f.detach() for f in finals], xi.grad, [s.grad for s in hi],
            {n: p.grad for n, p in module.named_parameters()})


def _compare(kind, num_layers, bidirectional, batch_first, packed, dtype, device, tol, monkeypatch):
    """Our module on the device path against torch's module, and (on the CPU) against our NumPy path."""
    torch.manual_seed(0)
    options = dict(bidirectional=bidirectional, batch_first=batch_first, dtype=dtype, device=device)
    ref = getattr(torch.nn, kind)(D, H, num_layers, **options)
    ours = getattr(torch_rnn, kind)(D, H, num_layers, **options)
    ours.load_state_dict(ref.state_dict())
    n, dirs = len(LENGTHS), 2 if bidirectional else 1
    g = torch.Generator().manual_seed(2)
    x = torch.randn((n, T, D) if batch_first else (T, n, D), generator=g, dtype=dtype).to(device)
    hx = [torch.randn(num_layers * dirs, n, H, generator=g, dtype=dtype).to(device)
          for _ in range(2 if kind == "LSTM" else 1)]
    references = [_run_module(ref, x, hx, kind, packed, batch_first)]
    if device == "cpu":
        references.append(_run_module(ours, x, hx, kind, packed, batch_first))  # BACKEND "auto": NumPy
        monkeypatch.setattr(torch_rnn, "BACKEND", "device")
    with monkeypatch.context() as m:
        _forbid_host(m)
        got = _run_module(ours, x, hx, kind, packed, batch_first)
    for want in references:
        (o2, gx2, gh2, gp2), (o1, gx1, gh1, gp1) = got, want
        for a, b in zip(o2 + [gx2] + gh2, o1 + [gx1] + gh1, strict=True):
            assert a.device == b.device and a.dtype == b.dtype
            torch.testing.assert_close(a, b, **tol)
        assert gp2.keys() == gp1.keys()
        for name in gp1:
            torch.testing.assert_close(gp2[name], gp1[name], **tol, msg=lambda m, name=name: f"{name}: {m}")


CONFIGURATIONS = list(itertools.product(["LSTM", "GRU"], [1, 2], [False, True], [False, True], [False, True]))
IDS = [f"{c[0]}-L{c[1]}-{'bi' if c[2] else 'uni'}-{'bf' if c[3] else 'tm'}-{'packed' if c[4] else 'padded'}"
       for c in CONFIGURATIONS]


@pytest.mark.parametrize("kind, num_layers, bidirectional, batch_first, packed", CONFIGURATIONS, ids=IDS)
def test_every_configuration_on_the_device_path_matches_torch_and_numpy(kind, num_layers, bidirectional,
                                                                        batch_first, packed, monkeypatch):
    """float64: outputs, h_n (and c_n), the gradients of the input, of hx and of every parameter."""
    _compare(kind, num_layers, bidirectional, batch_first, packed, torch.float64, "cpu", F64, monkeypatch)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_float32_on_the_device_path_matches_torch_and_numpy(kind, monkeypatch):
    _compare(kind, 2, True, True, True, torch.float32, "cpu", F32, monkeypatch)


# --- the features of the modules hold on the device path --------------------------------------------------------------

@pytest.fixture
def device_path(monkeypatch):
    monkeypatch.setattr(torch_rnn, "BACKEND", "device")
    _forbid_host(monkeypatch)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_in_place_changes_before_backward_raise_on_the_device_path(kind, device_path):
    m = getattr(torch_rnn, kind)(3, 5, dtype=torch.float64)
    out, _ = m(torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True))
    out.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()
    out, _ = m(torch.randn(4, 2, 3, dtype=torch.float64))
    with torch.no_grad():
        m.weight_hh_l0.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_changing_c_n_in_place_leaves_the_gradients_alone(device_path):
    """c_T is returned as a copy: changing it in place after forward must not change what backward reads."""
    m = torch_rnn.LSTM(3, 5, dtype=torch.float64)
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    out, (_, c_n) = m(x)
    (want,) = torch.autograd.grad(out.sum(), x, retain_graph=True)
    c_n.detach().mul_(0)
    (got,) = torch.autograd.grad(out.sum(), x)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_double_backward_is_refused_with_the_same_message(kind, device_path):
    m = getattr(torch_rnn, kind)(3, 5, 2, bidirectional=True, dtype=torch.float64)
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(m(x)[0].sum(), x, create_graph=True)  # first order under create_graph works
    with pytest.raises(RuntimeError) as refused:
        g.sum().backward()
    assert torch_rnn.DOUBLE_BACKWARD.decode() in str(refused.value)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_hx_checks_dropout_and_unbatched_input_hold_on_the_device_path(kind, device_path):
    from tests import test_interop_torch_cells as numpy_path

    for case in range(len(numpy_path.BAD[kind])):
        numpy_path.test_bad_input_and_hx_raise_torchs_error(kind, case)  # torch's messages, before any kernel
    numpy_path.test_without_bias_unbatched_and_dropout_match_torch(kind)


def test_dtype_refusals_hold_on_the_device_path(device_path):
    with pytest.raises(TypeError, match="float32 or float64"):
        torch_rnn.GRU(3, 5, dtype=torch.float16)
    m = torch_rnn.LSTM(3, 5, dtype=torch.float64)
    with pytest.raises(TypeError, match="float32 or float64, but its parameters are torch.bfloat16"):
        m.bfloat16()(torch.randn(4, 2, 3, dtype=torch.bfloat16))
    args = [a.detach() for a in _arguments("lstm")]
    args[3] = args[3].float()
    with pytest.raises(TypeError, match="must share one dtype .* weight_ih float32"):
        DeviceCellFunction.apply(device_cell_kernels("lstm"), *args)
    args[3] = args[3].half()
    with pytest.raises(TypeError, match="weight_ih has dtype torch.float16"):
        DeviceCellFunction.apply(device_cell_kernels("lstm"), *args)


def test_shape_errors_are_the_numpy_kernels_messages():
    args = [a.detach() for a in _arguments("gru")]
    args[3] = args[3][:, :-1]  # weight_hh (3H, H - 1)
    with pytest.raises(ValueError) as want:
        CellFunction.apply(generated.load("gru"), *args)
    with pytest.raises(ValueError) as got:
        DeviceCellFunction.apply(device_cell_kernels("gru"), *args)
    assert str(got.value) == str(want.value) and "weight_hh" in str(got.value)


def test_printed_source_is_torch_and_reads_as_the_lowering():
    source = device_cell_kernels("lstm").SOURCE
    assert "np." not in source and "numpy" not in source
    assert "i = torch.sigmoid(W_hi_h + W_ii_x + b_hi + b_ii)  # i = sigmoid(W_ii @ x + b_ii + W_hi @ h + b_hi)" \
        in source
    assert "_d_weight_ih_x = x.new_empty((_T, _N, 4 * H))" in source  # the device and dtype of x
    assert "_h_prev = torch.cat((h0[None], _h_seq[:-1]))" in source


def test_a_cell_definition_that_drifted_from_generated_is_refused(tmp_path, monkeypatch):
    import derive.cell

    text = (derive.cell.CELLS_DIR / "gru.cell").read_text()
    (tmp_path / "gru.cell").write_text(text.replace("h' = (1 - z) * n + z * h", "h' = (1 - z) * n"))
    monkeypatch.setattr(derive.cell, "CELL_DIRS", (tmp_path,))
    with pytest.raises(RuntimeError, match="no longer has the equations of generated/cell_gru.py"):
        device_cell_kernels("gru")  # kept under the definition: the drifted one is read
    with pytest.raises(ValueError, match="unknown activation 'nope'"):
        device_cell_kernels("nope")


# --- a user's cell: two states of different sizes, functions beyond sigmoid and tanh ----------------------------------

USER_CELL = """# a user's cell: a second state m of another size, carried to the end and not the output
cell two
input x[D]
state h[H]
state m[K]
param U[H, D]
param W[H, H]
param P[K, H] = P_a, P_b
param M[K, K]
param Q[H, K]
m' = sigmoid(P_a @ h) * m + softplus(M @ m + P_b @ h) / 3
h' = tanh(U @ x + W @ h + Q @ m) * sqrt(1 + h ** 2) - exp(-h ** 2) / 4 + erf(h) / 8
"""


def test_a_user_cell_on_the_device_path_matches_its_numpy_kernels(tmp_path):
    import importlib.util
    import types

    from codegen.__main__ import _add_cell
    from codegen.cell_torch_printer import torch_cell_source
    from derive.cell import derive_cell
    from derive.cellparse import parse_cell

    dirs = (tmp_path / "cells", tmp_path / "user_cells")
    dirs[0].mkdir()
    (tmp_path / "two.cell").write_text(USER_CELL)
    _add_cell(tmp_path / "two.cell", dirs, tmp_path / "generated", tmp_path / "user.json", base=())
    spec = importlib.util.spec_from_file_location("cell_two_device_test", tmp_path / "generated" / "cell_two.py")
    numpy_kernels = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(numpy_kernels)
    torch_kernels = types.ModuleType("two_torch_under_test")
    exec(torch_cell_source(derive_cell(parse_cell(USER_CELL))), torch_kernels.__dict__)  # noqa: S102
    g = torch.Generator().manual_seed(0)
    K = 2
    shapes = ((T, N, D), (N, H), (N, K), (H, D), (H, H), (2 * K, H), (K, K), (H, K))
    args = [(torch.randn(s, generator=g, dtype=torch.float64) * 0.5).requires_grad_(True) for s in shapes]
    want = _results(lambda *a: CellFunction.apply(numpy_kernels, *a), args)
    got = _results(lambda *a: DeviceCellFunction.apply(torch_kernels, *a), args)
    assert len(got[0]) == 2  # h (T, N, H) and m_T (N, K)
    _assert_all_close(got, want, F64, numpy_kernels.ARGUMENTS)


# --- on a CUDA GPU ----------------------------------------------------------------------------------------------------

@NEEDS_CUDA
@pytest.mark.parametrize("kind, num_layers, bidirectional, batch_first, packed", CONFIGURATIONS, ids=IDS)
def test_cuda_every_configuration_stays_on_the_gpu_and_matches_torch(kind, num_layers, bidirectional, batch_first,
                                                                     packed, monkeypatch):
    """float64 on CUDA against nn.LSTM / nn.GRU on CUDA (cuDNN), every host path made to raise. 1e-10: cuDNN sums
    in its own order; nn.LSTM / nn.GRU on an H200 differ from themselves on the CPU by at most 2.1e-14 (elementwise,
    these configurations, torch 2.11, measured), and ours on the CPU from torch's CPU by 1.1e-15."""
    _compare(kind, num_layers, bidirectional, batch_first, packed, torch.float64, "cuda",
             dict(rtol=1e-10, atol=1e-12), monkeypatch)


@NEEDS_CUDA
@pytest.mark.parametrize("name", CELLS)
def test_cuda_function_matches_the_numpy_kernels_on_the_cpu(name, monkeypatch):
    """Every cell (MGU included) on CUDA against the NumPy kernels on the host copy of the same arguments."""
    module = generated.load(name)
    args = _arguments(name)
    want = _results(lambda *a: CellFunction.apply(module, *a), args)
    cuda_args = [a.detach().cuda().requires_grad_(True) for a in args]
    _forbid_host(monkeypatch)
    outputs, grads = _results(lambda *a: DeviceCellFunction.apply(device_cell_kernels(name), *a), cuda_args)
    assert all(t.device.type == "cuda" for t in outputs + list(grads))
    _assert_all_close(([o.cpu() for o in outputs], [g.cpu() for g in grads]), want, dict(rtol=1e-10, atol=1e-12),
                      module.ARGUMENTS)


@NEEDS_CUDA
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_cuda_float32_module_stays_float32_on_the_gpu(kind, monkeypatch):
    """float32 on CUDA against our own float64 there: 1e-4, float32's rounding over 6 steps (TF32 is off for
    matmul by default; were it on, 1e-3 would be the bound)."""
    torch.manual_seed(0)
    m = getattr(torch_rnn, kind)(D, H, 2, bidirectional=True, dtype=torch.float64, device="cuda")
    x = torch.randn(T, N, D, dtype=torch.float64, device="cuda")
    _forbid_host(monkeypatch)
    want, _ = m(x)
    got, _ = m.float()(x.float())
    assert got.dtype == torch.float32 and got.device.type == "cuda"
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


@NEEDS_CUDA
def test_cuda_tensors_given_to_the_numpy_function_by_hand_are_copied_with_a_warning():
    """The one host copy left: CellFunction (the NumPy kernels) applied directly to CUDA tensors warns, and its
    results come back to the GPU equal to the device path's."""
    args = [a.detach().cuda().requires_grad_(True) for a in _arguments("lstm")]
    with pytest.warns(torch_rnn.DeviceCopyWarning, match="host copies"):
        copied = _results(lambda *a: CellFunction.apply(generated.load("lstm"), *a), args)
    on_device = _results(lambda *a: DeviceCellFunction.apply(device_cell_kernels("lstm"), *a), args)
    assert all(t.device.type == "cuda" for t in copied[0] + list(copied[1]))
    _assert_all_close(on_device, copied, dict(rtol=1e-10, atol=1e-12), generated.load("lstm").ARGUMENTS)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_autocast_computes_in_float32_on_the_device_path(kind, device_path):
    """Under torch.autocast a float32 module takes half-precision input and computes in float32 on the device path
    too: the same outputs and gradients as float32 input holding the same values (autocast must not reach the
    products inside the Functions, where they would run in bfloat16)."""
    torch.manual_seed(0)
    m = getattr(torch_rnn, kind)(5, 4, 2, bidirectional=True)
    x = torch.randn(6, 3, 5).bfloat16()
    results = []
    for autocast in (False, True):
        m.zero_grad(set_to_none=True)
        with torch.autocast("cpu", enabled=autocast):
            out = m(x if autocast else x.float())[0]
            out.square().sum().backward()
        results.append([out.detach()] + [p.grad for p in m.parameters()])
    assert results[1][0].dtype == torch.float32
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)  # the same float32 operations: equal in practice


@NEEDS_CUDA
@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_cuda_autocast_computes_in_float32(kind, monkeypatch):
    """torch.autocast("cuda") (float16 products) does not reach the kernels: float32 results, as without it."""
    torch.manual_seed(0)
    m = getattr(torch_rnn, kind)(5, 4, 2, bidirectional=True, device="cuda")
    x = torch.randn(6, 3, 5, device="cuda").half()
    _forbid_host(monkeypatch)
    want = m(x.float())[0]
    with torch.autocast("cuda"):
        got = m(x)[0]
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
