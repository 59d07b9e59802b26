"""The device target: the RNN in PyTorch operations (f and f' printed from the derivation by
codegen.torch_printer), used for tensors off the CPU; checked here on the CPU against the NumPy kernels, and on a
GPU when there is one."""
import pytest

from tests.conftest import rnn_inputs

torch = pytest.importorskip("torch", reason="PyTorch (the bench extra) is not installed: interop not tested")

import generated  # noqa: E402
from interop import torch_rnn  # noqa: E402
from interop.torch_device import DeviceRNNFunction, device_kernels  # noqa: E402


@pytest.fixture(autouse=True)
def scratch_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RNN_BPTT_CACHE", str(tmp_path / "kernels"))


def _both(activation, scale=0.5, dtype=torch.float64):
    """Output and every gradient from the NumPy kernels and from the device path, on the same CPU inputs."""
    results = []
    for path in ("numpy", "device"):
        args = [torch.tensor(a, dtype=dtype, requires_grad=True) for a in rnn_inputs(6, 3, 4, 5, seed=4, scale=scale)]
        if path == "numpy":
            h = torch_rnn.RNNFunction.apply(*args, torch_rnn.kernel_module(activation))
        else:
            h = DeviceRNNFunction.apply(*args, device_kernels(activation))
        G = torch.randn(h.shape, generator=torch.Generator().manual_seed(2), dtype=dtype)
        grads = torch.autograd.grad((h * G).sum(), args)
        results.append((h, grads))
    return results


@pytest.mark.parametrize("activation", list(generated.ACTIVATIONS) + ["x*tanh(softplus(x)) + 0.1*x"])
def test_device_path_matches_the_numpy_kernels(activation):
    """float64, outputs and the gradients of x, h0, V, W, b to 1e-12 relative: the same formulas in another
    order of floating-point operations (about 1e-15 measured)."""
    (h1, g1), (h2, g2) = _both(activation)
    torch.testing.assert_close(h2, h1, rtol=1e-12, atol=1e-14)
    for name, a, b in zip(("dx", "dh0", "dV", "dW", "db"), g2, g1):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("activation", ["softplus", "elu", "selu", "sigmoid", "mish", "gelu"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_device_path_stays_finite_at_large_pre_activations(activation, dtype):
    """|E| up to about 1e3: the printed forms are the stable ones (softplus as logaddexp, exp clamped to its
    branch), so nothing overflows where the NumPy kernels do not."""
    (h1, g1), (h2, g2) = _both(activation, scale=400.0, dtype=dtype)
    assert torch.isfinite(h2).all() and all(torch.isfinite(g).all() for g in g2)
    tol = dict(rtol=1e-5, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(h2, h1, **tol)


def test_printed_source_reads_as_the_derivation():
    assert "(1 - h)*(h + 1)" in device_kernels("tanh").SOURCE  # 1 - h^2, factored by the numerics pass
    assert "torch.expm1(" in device_kernels("elu").SOURCE  # the numerics pass's stable forms reach this target
    assert "torch.logaddexp(E, torch.zeros_like(E))" in device_kernels("softplus").SOURCE


@pytest.mark.parametrize("config", [dict(num_layers=2, bidirectional=True), dict(batch_first=True)])
def test_module_on_the_device_path_matches_nn_rnn(config, monkeypatch):
    monkeypatch.setattr(torch_rnn, "BACKEND", "device")
    torch.manual_seed(0)
    ref = torch.nn.RNN(5, 4, nonlinearity="relu", dtype=torch.float64, **config)
    ours = torch_rnn.RNN(5, 4, nonlinearity="relu", dtype=torch.float64, **config)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(6, 3, 5, dtype=torch.float64)
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    (o1, h1), (o2, h2) = ref(x1), ours(x2)
    torch.testing.assert_close(o2, o1, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(h2, h1, rtol=1e-10, atol=1e-12)
    (o1.sum() + h1.sum()).backward()
    (o2.sum() + h2.sum()).backward()
    torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-10, atol=1e-12)
    for name, p in ref.named_parameters():
        torch.testing.assert_close(dict(ours.named_parameters())[name].grad, p.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here: the device path is checked on the CPU")
def test_cuda_tensors_stay_on_the_gpu_and_match_the_cpu():
    torch.manual_seed(0)
    m = torch_rnn.RNN(5, 4, 2, nonlinearity="gelu", bidirectional=True, dtype=torch.float64)
    x = torch.randn(6, 3, 5, dtype=torch.float64)
    out_cpu, _ = m(x)
    out_cpu.sum().backward()
    grads_cpu = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad()
    gpu = m.cuda()
    out, h_n = gpu(x.cuda())
    assert out.device.type == "cuda" and h_n.device.type == "cuda"
    out.sum().backward()
    torch.testing.assert_close(out.cpu(), out_cpu, rtol=1e-12, atol=1e-13)
    for n, p in gpu.named_parameters():
        assert p.grad.device.type == "cuda"
        torch.testing.assert_close(p.grad.cpu(), grads_cpu[n], rtol=1e-10, atol=1e-12)
