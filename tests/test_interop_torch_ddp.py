"""Data-parallel training over the drop-in modules with torch.nn.parallel.DistributedDataParallel (gloo on the
CPU): two processes, each with half the batch, end with the gradients of one process on the whole batch."""
import pytest

torch = pytest.importorskip("torch", reason="PyTorch (the bench extra) is not installed: interop not tested")
dist = pytest.importorskip("torch.distributed", reason="this PyTorch build has no torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("this PyTorch build has no gloo backend for torch.distributed", allow_module_level=True)

import torch.multiprocessing as mp  # noqa: E402

from interop import torch_rnn  # noqa: E402

N, T, D, H = 6, 5, 3, 4


def _model(kind):
    torch.manual_seed(0)  # every process starts from the same weights (DDP also broadcasts rank 0's)
    if kind == "RNN":
        return torch_rnn.RNN(D, H, 2, nonlinearity="gelu", bidirectional=True, dtype=torch.float64)
    return getattr(torch_rnn, kind)(D, H, 2, bidirectional=True, dtype=torch.float64)


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(T, N, D, generator=g, dtype=torch.float64), torch.randn(T, N, 2 * H, generator=g,
                                                                              dtype=torch.float64)


def _loss(model, x, target):
    out, _ = model(x)
    return ((out - target) ** 2).mean()  # a mean over the batch: DDP averages the processes' gradients


def _worker(rank, world, kind, store, results):
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        model = torch.nn.parallel.DistributedDataParallel(_model(kind))
        x, target = _batch()
        part = slice(rank * N // world, (rank + 1) * N // world)
        _loss(model, x[:, part], target[:, part]).backward()
        grads = {name: p.grad for name, p in model.module.named_parameters()}
        torch.save(grads, f"{results}.{rank}")
        del model, grads  # DDP's reducer holds the process group: release it before the group is destroyed
        # both ranks reach the teardown together: a rank that tears gloo down while its peer still has the
        # connection open was once aborted ("terminate called without an active exception", SIGABRT) under load
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_two_processes_give_the_gradients_of_one_on_the_whole_batch(kind, tmp_path, monkeypatch):
    import generated

    if kind != "RNN" and kind.lower() not in getattr(generated, "CELLS", ()):
        pytest.skip(f"generated has no {kind.lower()} cell")
    monkeypatch.setenv("RNN_BPTT_CACHE", str(tmp_path / "kernels"))
    mp.spawn(_worker, args=(2, kind, str(tmp_path / "store"), str(tmp_path / "grads")), nprocs=2, join=True)
    model = _model(kind)
    _loss(model, *_batch()).backward()
    for rank in range(2):
        grads = torch.load(tmp_path / f"grads.{rank}")
        assert grads.keys() == dict(model.named_parameters()).keys()
        for name, p in model.named_parameters():
            # all-reduce sums two float64 halves: rounding only (about 1e-16 relative)
            torch.testing.assert_close(grads[name], p.grad, rtol=1e-10, atol=1e-13, msg=lambda m: f"{name}: {m}")
