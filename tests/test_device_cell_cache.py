"""interop.torch_device.device_cell_kernels keeps the printed kernels of a cell under its definition, not its name:
a user cell replaced under the same name in one process (remove-cell, add-cell) gets kernels printed from the new
definition. The device path runs on the CPU here (DeviceCellFunction called directly)."""
import sys

import pytest

torch = pytest.importorskip("torch", reason="PyTorch (the bench extra) is not installed: interop not tested")

import derive.cell  # noqa: E402
import generated  # noqa: E402
from codegen.__main__ import _add_cell, _remove_cell  # noqa: E402
from interop.torch_device import DeviceCellFunction, device_cell_kernels  # noqa: E402
from interop.torch_rnn import CellFunction  # noqa: E402

TINY = """cell tiny
input x[D]
state h[H]
param U[H, D]
param W[H, H]
h' = {f}(U @ x + W @ h)
"""


@pytest.fixture
def user_cells(tmp_path, monkeypatch):
    """(add, remove) of the user cell "tiny" as an installed copy keeps it: its definition in the user cells'
    folder, its module in the data folder's generated/, where generated.load finds it (the tmp folder is put
    where an installed copy's data folder would be: generated._USER_FOLDER and the package's __path__)."""
    monkeypatch.setenv("RNN_BPTT_CACHE", str(tmp_path / "kernels"))
    dirs = (tmp_path / "cells", tmp_path / "user_cells")
    dirs[0].mkdir()
    root, user = tmp_path / "generated", tmp_path / "user.json"
    monkeypatch.setattr(derive.cell, "CELL_DIRS", dirs)
    monkeypatch.setattr(generated, "_USER_FOLDER", root)
    monkeypatch.setattr(generated, "_USER_CELLS", ("tiny",))
    monkeypatch.setattr(generated, "CELLS", generated.CELLS + ("tiny",))
    monkeypatch.setattr(generated, "__path__", [*generated.__path__, str(root)])
    monkeypatch.delitem(sys.modules, f"{generated.__name__}.cell_tiny", raising=False)

    def add(f):
        source = tmp_path / "tiny.cell"
        source.write_text(TINY.format(f=f))
        _add_cell(source, dirs, root, user, base=())

    def remove():
        _remove_cell("tiny", dirs, root, user, base=())

    yield add, remove
    sys.modules.pop(f"{generated.__name__}.cell_tiny", None)


def _run(kernels, numpy_module):
    g = torch.Generator().manual_seed(0)
    shapes = ((5, 2, 3), (2, 4), (4, 3), (4, 4))  # x (T, N, D), h0 (N, H), U (H, D), W (H, H)
    args = [torch.randn(s, generator=g, dtype=torch.float64) * 0.5 for s in shapes]
    return DeviceCellFunction.apply(kernels, *args)[0], CellFunction.apply(numpy_module, *args)[0]


def test_a_cell_replaced_under_its_name_gets_new_device_kernels(user_cells):
    add, remove = user_cells
    add("tanh")
    first = device_cell_kernels("tiny")
    assert device_cell_kernels("tiny") is first  # printed once while the definition stands
    old, host = _run(first, generated.load("tiny"))
    torch.testing.assert_close(old, host, rtol=1e-12, atol=1e-13)  # see test_interop_torch_cells_device
    remove()
    add("sigmoid")
    second = device_cell_kernels("tiny")
    assert second is not first and "sigmoid" in second.SOURCE and "sigmoid" not in first.SOURCE
    device, host = _run(second, generated.load("tiny"))
    torch.testing.assert_close(device, host, rtol=1e-12, atol=1e-13)
    assert (device - old).abs().max() > 0.1  # tanh and sigmoid cells differ by far more than rounding
