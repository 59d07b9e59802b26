"""interop.torch_rnn.LSTM and GRU (the generated cells) as drop-ins for torch.nn.LSTM and nn.GRU: every
configuration against torch's module with the same weights, and what training code does with a module."""
import copy
import io
import itertools
import pickle

import pytest

torch = pytest.importorskip("torch", reason="PyTorch (the bench extra) is not installed: interop not tested")

from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

import generated  # noqa: E402
from interop import torch_rnn  # noqa: E402

D, H, T, N = 5, 4, 6, 3
LENGTHS = [4, 6, 2, 4]  # unsorted, with a repeated length: sequences of one length run together

MODULES = [name for name in ("LSTM", "GRU") if name.lower() in getattr(generated, "CELLS", ())]
if not MODULES:
    pytest.skip("generated has no lstm or gru cell (the cells are not merged)", allow_module_level=True)


def _pair(kind, num_layers, bidirectional, batch_first, bias=True, seed=0, **kwargs):
    torch.manual_seed(seed)
    ref = getattr(torch.nn, kind)(D, H, num_layers, bias=bias, batch_first=batch_first,
                                  bidirectional=bidirectional, dtype=torch.float64, **kwargs)
    ours = getattr(torch_rnn, kind)(D, H, num_layers, bias=bias, batch_first=batch_first,
                                    bidirectional=bidirectional, dtype=torch.float64, **kwargs)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def _hidden(kind, layers_dirs, n, seed=3):
    g = torch.Generator().manual_seed(seed)
    states = [torch.randn(layers_dirs, n, H, generator=g, dtype=torch.float64) for _ in range(2 if kind == "LSTM" else 1)]
    return states


def _pack(states, kind):
    return tuple(states) if kind == "LSTM" else states[0]


def _flat(h_n, kind):
    return list(h_n) if kind == "LSTM" else [h_n]


CONFIGURATIONS = list(itertools.product(MODULES, [1, 2], [False, True], [False, True], [False, True]))


@pytest.mark.parametrize("kind, num_layers, bidirectional, batch_first, packed", CONFIGURATIONS,
                         ids=[f"{c[0]}-L{c[1]}-{'bi' if c[2] else 'uni'}-{'bf' if c[3] else 'tm'}-"
                              f"{'packed' if c[4] else 'padded'}" for c in CONFIGURATIONS])
def test_every_configuration_matches_torch(kind, num_layers, bidirectional, batch_first, packed):
    """Outputs, h_n (and c_n) and the gradients of the input, every state of hx and every parameter equal
    torch's to 1e-10 in float64 (they differ by the order of floating-point sums only)."""
    ref, ours = _pair(kind, num_layers, bidirectional, batch_first)
    dirs = 2 if bidirectional else 1
    n = len(LENGTHS)
    x = torch.randn((n, T, D) if batch_first else (T, n, D), dtype=torch.float64)
    hx = _hidden(kind, num_layers * dirs, n)
    results = []
    for module in (ref, ours):
        xi = x.clone().requires_grad_(True)
        hi = [s.clone().requires_grad_(True) for s in hx]
        if packed:
            seq = pack_padded_sequence(xi, torch.tensor(LENGTHS), batch_first=batch_first, enforce_sorted=False)
            out, h_n = module(seq, _pack(hi, kind))
            out = pad_packed_sequence(out, batch_first=batch_first)[0]
        else:
            out, h_n = module(xi, _pack(hi, kind))
        finals = _flat(h_n, kind)
        g = torch.Generator().manual_seed(1)
        loss = (out * torch.randn(out.shape, generator=g, dtype=out.dtype)).sum()
        for f in finals:
            loss = loss + (f * torch.randn(f.shape, generator=g, dtype=f.dtype)).sum()
        loss.backward()
        results.append((out, finals, xi.grad, [s.grad for s in hi],
                        {name: p.grad for name, p in module.named_parameters()}))
    (o1, f1, gx1, gh1, gp1), (o2, f2, gx2, gh2, gp2) = results
    close = dict(rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(o2, o1, **close)
    for a, b in zip(f2, f1, strict=True):
        torch.testing.assert_close(a, b, **close)
    torch.testing.assert_close(gx2, gx1, **close)
    for a, b in zip(gh2, gh1, strict=True):
        torch.testing.assert_close(a, b, **close)
    assert gp2.keys() == gp1.keys()
    for name in gp1:
        torch.testing.assert_close(gp2[name], gp1[name], **close, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("kind", MODULES)
def test_without_bias_unbatched_and_dropout_match_torch(kind):
    ref, ours = _pair(kind, 3, True, False, bias=False, dropout=0.5)
    x = torch.randn(T, D, dtype=torch.float64)
    for module in (ref, ours):
        module.eval()
    o1, h1 = ref(x)
    o2, h2 = ours(x)
    assert o2.shape == o1.shape == (T, 2 * H)
    torch.testing.assert_close(o2, o1, rtol=1e-12, atol=1e-12)
    for a, b in zip(_flat(h2, kind), _flat(h1, kind)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    ref.train(), ours.train()
    xb = torch.randn(T, N, D, dtype=torch.float64)
    torch.manual_seed(5)
    o1 = ref(xb)[0]
    torch.manual_seed(5)
    torch.testing.assert_close(ours(xb)[0], o1, rtol=1e-12, atol=1e-12)  # the same dropout masks


BAD = {
    "LSTM": [
        lambda: (torch.randn(5, 4, 3), (torch.randn(1, 2, 10), torch.randn(1, 4, 5))),
        lambda: (torch.randn(5, 4, 3), (torch.randn(1, 4, 5), torch.randn(1, 4, 6))),
        lambda: (torch.randn(5, 4, 3), (torch.randn(4, 5), torch.randn(4, 5))),
        lambda: (torch.randn(5, 3), (torch.randn(1, 1, 5), torch.randn(1, 1, 5))),
        lambda: (torch.randn(5, 4, 3, 1), None),
        lambda: (torch.randn(5, 4, 7), None),
    ],
    "GRU": [
        lambda: (torch.randn(5, 4, 3), torch.randn(1, 2, 10)),
        lambda: (torch.randn(5, 4, 3), torch.randn(4, 5)),
        lambda: (torch.randn(5, 3), torch.randn(1, 1, 5)),
        lambda: (torch.randn(5, 4, 3, 1), None),
        lambda: (torch.randn(5, 4, 7), None),
    ],
}


@pytest.mark.parametrize("kind, case", [(k, i) for k in MODULES for i in range(len(BAD[k]))])
def test_bad_input_and_hx_raise_torchs_error(kind, case):
    x, hx = BAD[kind][case]()
    with pytest.raises(Exception) as want:
        getattr(torch.nn, kind)(3, 5)(x, hx)
    with pytest.raises(Exception) as got:
        getattr(torch_rnn, kind)(3, 5)(x, hx)
    assert (got.type, str(got.value)) == (want.type, str(want.value))


@pytest.mark.parametrize("kind", MODULES)
def test_module_round_trips_refuses_half_and_double_backward(kind):
    cls = getattr(torch_rnn, kind)
    m = cls(3, 5, 2, bidirectional=True)
    assert isinstance(m, getattr(torch.nn, kind))
    m.flatten_parameters()
    x = torch.randn(4, 2, 3)
    want = m(x)[0]
    buffer = io.BytesIO()
    torch.save(m, buffer)
    buffer.seek(0)
    for other in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m), torch.load(buffer, weights_only=False)):
        assert torch.equal(other(x)[0], want)
    with pytest.raises(TypeError, match="float32 or float64"):
        cls(3, 5, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="float32 or float64"):
        cls(3, 5, 1, True, False, 0.0, False, *((0,) if kind == "LSTM" else ()), None, torch.float16)
    if kind == "LSTM":
        with pytest.raises(ValueError, match="proj_size"):
            cls(3, 5, proj_size=2)
    xg = torch.randn(4, 2, 3, requires_grad=True)
    (g,) = torch.autograd.grad(m(xg)[0].sum(), xg, create_graph=True)
    with pytest.raises(RuntimeError, match="not itself differentiable"):
        g.sum().backward()


@pytest.mark.parametrize("kind", MODULES)
def test_in_place_change_of_the_output_before_backward_raises(kind):
    m = getattr(torch_rnn, kind)(3, 5)
    out, _ = m(torch.randn(4, 2, 3, requires_grad=True))
    out.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()
