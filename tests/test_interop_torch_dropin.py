"""interop.torch_rnn.RNN as a drop-in for torch.nn.RNN: every configuration against nn.RNN with the same weights,
and what training code does with a module (hx checks, pickling, dtypes, double backward, attributes)."""
import copy
import io
import itertools
import pickle

import pytest

torch = pytest.importorskip("torch", reason="PyTorch (the bench extra) is not installed: interop not tested")

from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence  # noqa: E402

from interop.torch_rnn import RNN  # noqa: E402


@pytest.fixture(autouse=True)
def scratch_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RNN_BPTT_CACHE", str(tmp_path / "kernels"))


D, H, T, N = 5, 4, 6, 3
LENGTHS = [4, 6, 2]  # unsorted: the packed input carries a permutation, applied to hx and undone on h_n


def _pair(num_layers, bidirectional, batch_first, nonlinearity="tanh", bias=True, seed=0, **kwargs):
    torch.manual_seed(seed)
    ref = torch.nn.RNN(D, H, num_layers, nonlinearity=nonlinearity, bias=bias, batch_first=batch_first,
                       bidirectional=bidirectional, dtype=torch.float64, **kwargs)
    ours = RNN(D, H, num_layers, nonlinearity=nonlinearity, bias=bias, batch_first=batch_first,
               bidirectional=bidirectional, dtype=torch.float64, **kwargs)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def _run(module, x, hx, packed, batch_first):
    """Output padded (as the test's x), and h_n; packed input is made from x and unpacked after."""
    if packed:
        seq = pack_padded_sequence(x, torch.tensor(LENGTHS), batch_first=batch_first, enforce_sorted=False)
        out, h_n = module(seq, hx)
        assert isinstance(out, PackedSequence)
        assert torch.equal(out.batch_sizes, seq.batch_sizes) and torch.equal(out.sorted_indices, seq.sorted_indices)
        out = pad_packed_sequence(out, batch_first=batch_first)[0]
    else:
        out, h_n = module(x, hx)
    return out, h_n


CONFIGURATIONS = list(itertools.product([1, 2], [False, True], [False, True], [False, True], ["tanh", "relu"]))


@pytest.mark.parametrize("num_layers, bidirectional, batch_first, packed, nonlinearity", CONFIGURATIONS,
                         ids=[f"L{c[0]}-{'bi' if c[1] else 'uni'}-{'bf' if c[2] else 'tm'}-"
                              f"{'packed' if c[3] else 'padded'}-{c[4]}" for c in CONFIGURATIONS])
def test_every_configuration_matches_nn_rnn(num_layers, bidirectional, batch_first, packed, nonlinearity):
    """Outputs, h_n and the gradients of the input, hx and every parameter equal nn.RNN's to 1e-10 in float64
    (the two differ only by the order of floating-point sums: about 1e-15 measured)."""
    ref, ours = _pair(num_layers, bidirectional, batch_first, nonlinearity)
    dirs = 2 if bidirectional else 1
    x = torch.randn((N, T, D) if batch_first else (T, N, D), dtype=torch.float64)
    hx = torch.randn(num_layers * dirs, N, H, dtype=torch.float64)
    results = []
    for module in (ref, ours):
        xi, hi = x.clone().requires_grad_(True), hx.clone().requires_grad_(True)
        out, h_n = _run(module, xi, hi, packed, batch_first)
        g = torch.Generator().manual_seed(1)
        loss = (out * torch.randn(out.shape, generator=g, dtype=out.dtype)).sum() \
            + (h_n * torch.randn(h_n.shape, generator=g, dtype=h_n.dtype)).sum()
        loss.backward()
        results.append((out, h_n, xi.grad, hi.grad, {n: p.grad for n, p in module.named_parameters()}))
    (o1, h1, gx1, gh1, gp1), (o2, h2, gx2, gh2, gp2) = results
    close = dict(rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(o2, o1, **close)
    torch.testing.assert_close(h2, h1, **close)
    torch.testing.assert_close(gx2, gx1, **close)
    torch.testing.assert_close(gh2, gh1, **close)
    assert gp2.keys() == gp1.keys()
    for name in gp1:
        torch.testing.assert_close(gp2[name], gp1[name], **close, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("batch_first", [False, True])
def test_without_bias_and_unbatched_match_nn_rnn(batch_first):
    ref, ours = _pair(2, True, batch_first, bias=False)
    x = torch.randn(T, D, dtype=torch.float64)
    hx = torch.randn(4, H, dtype=torch.float64)
    for (o1, h1), (o2, h2) in [(ref(x, hx), ours(x, hx)), (ref(x), ours(x))]:
        assert o2.shape == o1.shape == (T, 2 * H) and h2.shape == h1.shape == (4, H)
        torch.testing.assert_close(o2, o1, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(h2, h1, rtol=1e-12, atol=1e-12)


def test_dropout_between_layers_as_nn_rnn():
    """In training, dropout after every layer but the last, drawn from the same generator as nn.RNN's (so the same
    mask with the same seed); none in eval mode."""
    ref, ours = _pair(3, True, False, dropout=0.5)
    x = torch.randn(T, N, D, dtype=torch.float64)
    ref.train(), ours.train()
    torch.manual_seed(5)
    o1, h1 = ref(x)
    torch.manual_seed(5)
    o2, h2 = ours(x)
    torch.testing.assert_close(o2, o1, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h2, h1, rtol=1e-12, atol=1e-12)
    torch.manual_seed(6)
    assert not torch.allclose(ours(x)[0], o2)  # another mask
    ref.eval(), ours.eval()
    torch.testing.assert_close(ours(x)[0], ref(x)[0], rtol=1e-12, atol=1e-12)
    assert torch.equal(ours(x)[0], ours(x)[0])


def test_any_activation_through_layers_directions_and_packing_passes_gradcheck():
    """gelu (backward reads E) and an expression: a 2-layer bidirectional module on packed input, differentiated
    in the input and hx by torch.autograd.gradcheck (central differences, float64)."""
    for activation in ["gelu", "x*tanh(softplus(x)) + 0.1*x"]:
        torch.manual_seed(2)
        m = RNN(3, 2, 2, activation=activation, bidirectional=True, dtype=torch.float64)
        x = torch.randn(4, 3, 3, dtype=torch.float64, requires_grad=True)
        hx = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)

        def f(x, hx):
            out, h_n = m(pack_padded_sequence(x, torch.tensor([2, 4, 3]), enforce_sorted=False), hx)
            return out.data, h_n

        assert torch.autograd.gradcheck(f, (x, hx), eps=1e-6, atol=1e-7, rtol=1e-6)


# Each bad call and nn.RNN's message for it, which ours must repeat word for word.
BAD_CALLS = {
    "hx-shape": (dict(), lambda: (torch.randn(5, 4, 3), torch.randn(1, 2, 10))),
    "hx-layers": (dict(num_layers=2), lambda: (torch.randn(5, 4, 3), torch.randn(1, 4, 5))),
    "hx-directions": (dict(bidirectional=True), lambda: (torch.randn(5, 4, 3), torch.randn(1, 4, 5))),
    "hx-2d-for-3d": (dict(), lambda: (torch.randn(5, 4, 3), torch.randn(4, 5))),
    "hx-3d-for-2d": (dict(), lambda: (torch.randn(5, 3), torch.randn(1, 1, 5))),
    "input-4d": (dict(), lambda: (torch.randn(5, 4, 3, 1), None)),
    "input-features": (dict(), lambda: (torch.randn(5, 4, 7), None)),
    "input-dtype": (dict(), lambda: (torch.randn(5, 4, 3, dtype=torch.float64), None)),
    "packed-hx": (dict(), lambda: (pack_padded_sequence(torch.randn(5, 4, 3), torch.tensor([5, 3, 2, 1])),
                                   torch.randn(1, 3, 5))),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_input_and_hx_raise_nn_rnns_error(case):
    kwargs, make = BAD_CALLS[case]
    x, hx = make()
    with pytest.raises(Exception) as want:
        torch.nn.RNN(3, 5, **kwargs)(x, hx)
    with pytest.raises(Exception) as got:
        RNN(3, 5, **kwargs)(x, hx)
    assert (got.type, str(got.value)) == (want.type, str(want.value))
    if case == "hx-shape":  # the example: once silently reshaped
        assert str(got.value) == "Expected hidden size (1, 4, 5), got [1, 2, 10]"


def test_signature_is_nn_rnns_positionally():
    m = RNN(3, 5, 2, "relu", False, True, 0.0, True, "cpu", torch.float64)
    assert (m.input_size, m.hidden_size, m.num_layers, m.nonlinearity, m.bias, m.batch_first, m.dropout,
            m.bidirectional, m.proj_size) == (3, 5, 2, "relu", False, True, 0.0, True, 0)
    assert m.weight_ih_l1_reverse.shape == (5, 10) and m.weight_ih_l1_reverse.dtype == torch.float64
    assert m.weight_ih_l0.device.type == "cpu"
    assert isinstance(m, torch.nn.RNNBase)
    assert [[tuple(p.shape) for p in group] for group in m.all_weights] == \
        [[tuple(p.shape) for p in group] for group in torch.nn.RNN(3, 5, 2, bias=False, bidirectional=True).all_weights]
    m.flatten_parameters()  # training scripts call it; nothing to do here
    assert RNN(3, 5, activation="gelu").nonlinearity == "gelu" == RNN(3, 5, activation="gelu").activation
    assert RNN(3, 5, nonlinearity="x*sigmoid(2*x)").activation == "x*sigmoid(2*x)"


def test_old_positional_activation_is_refused_with_the_fix():
    with pytest.raises(TypeError, match=r"num_layers must be an int, got 'gelu'.*nonlinearity='gelu'"):
        RNN(3, 5, "gelu")
    with pytest.raises(TypeError, match="disagree"):
        RNN(3, 5, nonlinearity="relu", activation="gelu")
    with pytest.raises(ValueError, match="unknown name 'foo'|foo"):
        RNN(3, 5, nonlinearity="foo(x)")


def _round_trips(m):
    yield pickle.loads(pickle.dumps(m))
    yield copy.deepcopy(m)
    buffer = io.BytesIO()
    torch.save(m, buffer)
    buffer.seek(0)
    yield torch.load(buffer, weights_only=False)


@pytest.mark.parametrize("activation", ["tanh", "x*tanh(softplus(x))"])
def test_pickle_deepcopy_and_torch_save(activation):
    torch.manual_seed(3)
    m = RNN(3, 5, 2, nonlinearity=activation, bidirectional=True)
    x = torch.randn(4, 2, 3)
    want = m(x)
    for copy_ in _round_trips(m):
        assert copy_ is not m and copy_.nonlinearity == activation
        got = copy_(x)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        got[0].sum().backward()
        assert copy_.weight_hh_l1_reverse.grad is not None


@pytest.mark.parametrize("weights", [False, True])
def test_double_backward_is_refused_clearly(weights):
    """A gradient penalty: create_graph=True works (first-order gradients as without it), and differentiating
    the gradients raises a message that says why."""
    m = RNN(3, 5, dtype=torch.float64)
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    wrt = list(m.parameters()) if weights else [x]
    grads = torch.autograd.grad(m(x)[0].sum(), wrt, create_graph=True)
    plain = torch.autograd.grad(m(x)[0].sum(), wrt)
    for g, p in zip(grads, plain):
        torch.testing.assert_close(g, p, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="generated BPTT kernel.*not itself differentiable: double backward"):
        sum(g.square().sum() for g in grads).backward()


def test_half_precision_refused_and_autocast_computes_in_float32():
    with pytest.raises(TypeError, match="float32 or float64.*torch.float16"):
        RNN(3, 5, dtype=torch.float16)
    m = RNN(3, 5)
    with pytest.raises(TypeError, match="float32 or float64.*torch.bfloat16.*float\\(\\)"):
        copy.deepcopy(m).bfloat16()(torch.randn(4, 2, 3, dtype=torch.bfloat16))
    x = torch.randn(4, 2, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, h_n = m(x.bfloat16())
    assert out.dtype == h_n.dtype == torch.float32
    torch.testing.assert_close(out, m(x.bfloat16().float())[0], rtol=0, atol=0)


def test_torch_compile_traces_the_module():
    """torch.compile runs the kernels as they are (Dynamo does not trace into the NumPy or Numba code), and says
    nothing: it warned of the file-system look generated.load made on every call (posix.stat) before."""
    import warnings

    m = RNN(3, 5, 2, nonlinearity="gelu", bidirectional=True, dtype=torch.float64)
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    compiled = torch.compile(m, backend="eager")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = compiled(x)[0]
    torch.testing.assert_close(out, m(x)[0], rtol=0, atol=0)
    assert not [str(w.message)[:200] for w in caught if "posix.stat" in str(w.message) or "Dynamo" in str(w.message)]
