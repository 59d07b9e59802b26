"""The wheel, installed into a fresh virtual environment (no system site-packages, so a missing dependency fails):
only the four packages users import, the three runtime dependencies, no setuptools warning, adding and removing
an activation without writing into site-packages, and an uninstall that leaves nothing behind."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import derive.locations
import generated

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"derive", "codegen", "generated", "interop"}
# what setuptools prints when the package configuration misses data or packages
BUILD_WARNINGS = ("BuildBackendWarning", "SetuptoolsDeprecationWarning", "is absent from the `packages`",
                  "would be ignored", "Installing '")
OFFLINE = ("No matching distribution", "Could not find a version", "NewConnectionError", "Temporary failure in name",
           "Network is unreachable", "ConnectionError", "ReadTimeoutError")


def _run(args, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, timeout=600, **kwargs)


def _source_copy(tmp_path):
    """The repository's files (tracked, and new ones not ignored) copied to a scratch folder: the build writes
    build/ and *.egg-info beside its sources, and must not do so in the checkout."""
    listed = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT)
    if listed.returncode != 0:
        pytest.skip(f"the repository's files cannot be listed with git ({listed.stderr.strip()[:200]})")
    src = tmp_path / "src"
    for name in filter(None, listed.stdout.split("\0")):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    return src


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv python, its site-packages, the environment of a user with a scratch HOME and data folder)."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed here: the wheel cannot be built without build isolation")
    tmp = tmp_path_factory.mktemp("packaging")
    src = _source_copy(tmp)
    built = _run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-v",
                  "-w", str(tmp / "dist")])
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    output = built.stdout + built.stderr
    warned = [line for line in output.splitlines() if any(w in line for w in BUILD_WARNINGS)]
    assert not warned, "\n".join(warned)
    (wheel,) = (tmp / "dist").glob("rnn_bptt_derive-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(tmp / "venv")], check=True, timeout=300)
    python = tmp / "venv" / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "RNN_BPTT", "XDG_", "VIRTUAL_ENV"))}
    env.update(HOME=str(tmp / "home"), XDG_DATA_HOME=str(tmp / "data"), RNN_BPTT_CACHE=str(tmp / "cache"))
    (tmp / "home").mkdir()
    installing = _run([str(python), "-m", "pip", "install", str(wheel)], env=env, cwd=tmp)
    if installing.returncode != 0:
        text = installing.stdout + installing.stderr
        if any(marker in text for marker in OFFLINE):
            pytest.skip(f"the runtime dependencies cannot be installed (no package index reachable): "
                        f"{text.strip().splitlines()[-1][:200]}")
        pytest.fail(text[-3000:])
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        env=env).stdout.strip())
    work = tmp / "elsewhere"  # not the source tree: imports must come from site-packages
    work.mkdir()
    return python, purelib, env, work, tmp / "data" / "rnn-bptt-derive"


def _py(installed, code):
    python, _, env, work, _ = installed
    done = _run([str(python), "-c", code], env=env, cwd=work)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def test_wheel_installs_only_the_packages_users_import_and_three_dependencies(installed):
    _, purelib, _, _, _ = installed
    (info,) = purelib.glob("rnn_bptt_derive-*.dist-info")
    record = (info / "RECORD").read_text().splitlines()
    top = {line.split(",")[0].split("/")[0] for line in record}
    assert top == PACKAGES | {info.name}, top
    assert any(line.startswith("codegen/templates/rnn_module.py.jinja,") for line in record)
    assert any(line.startswith("derive/user_activations.json,") for line in record)
    assert any(line.startswith("derive/cells/lstm.cell,") for line in record)
    requires = [line.split(":", 1)[1].strip() for line in (info / "METADATA").read_text().splitlines()
                if line.startswith("Requires-Dist:")]
    runtime = sorted(r.split(">")[0].split("=")[0].split(";")[0].strip() for r in requires if "extra ==" not in r)
    assert runtime == ["jinja2", "numpy", "sympy"]


def test_installed_copy_runs_and_writes_user_activations_outside_site_packages(installed):
    python, purelib, env, work, data = installed
    where = json.loads(_py(installed, "import json, generated, derive.locations as l, numpy as np\n"
                                      "m = generated.load('tanh')\n"
                                      "x = np.ones((3, 2, 4)); h0 = np.zeros((2, 5))\n"
                                      "h, c = m.forward(x, h0, np.full((5, 4), .1), np.eye(5) * .5, np.zeros(5))\n"
                                      "g = m.backward(np.ones_like(h), c)\n"
                                      "print(json.dumps([generated.__file__, l.is_checkout(), str(l.data_dir())]))"))
    assert Path(where[0]).is_relative_to(purelib) and where[1] is False and Path(where[2]) == data
    before = _files(purelib)
    added = _run([str(python), "-m", "codegen", "add", "swish2", "x*sigmoid(2*x)"], env=env, cwd=work)
    assert added.returncode == 0, added.stdout + added.stderr
    assert _files(purelib) == before  # nothing written into the installed packages
    assert (data / "generated" / "rnn_swish2.py").is_file()
    assert json.loads((data / "user_activations.json").read_text()) == {"swish2": "x*sigmoid(2*x)"}
    out = _py(installed, "import generated, numpy as np\n"
                         "m = generated.load('swish2')\n"
                         "print('swish2' in generated.ACTIVATIONS, m.EXPRESSION)\n"
                         "m.forward(np.ones((3, 2, 4)), np.zeros((2, 5)), np.ones((5, 4)), np.eye(5), np.zeros(5))")
    assert out.split()[0] == "True"
    removed = _run([str(python), "-m", "codegen", "remove", "swish2"], env=env, cwd=work)
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert not (data / "generated" / "rnn_swish2.py").exists()
    assert _py(installed, "import generated; print('swish2' in generated.ACTIVATIONS)").strip() == "False"


def test_installed_copy_adds_a_user_cell_outside_site_packages(installed):
    python, purelib, env, work, data = installed
    source = (ROOT / "derive" / "cells" / "mgu.cell").read_text().replace("cell mgu", "cell mgu2")
    (work / "mgu2.cell").write_text(source)
    before = _files(purelib)
    added = _run([str(python), "-m", "codegen", "add-cell", "mgu2.cell"], env=env, cwd=work)
    assert added.returncode == 0, added.stdout + added.stderr
    assert _files(purelib) == before
    assert (data / "user_cells" / "mgu2.cell").is_file() and (data / "generated" / "cell_mgu2.py").is_file()
    out = _py(installed, "import generated\nprint('mgu2' in generated.CELLS, generated.load('mgu2').NAME)")
    assert out.split() == ["True", "mgu2"]
    removed = _run([str(python), "-m", "codegen", "remove-cell", "mgu2"], env=env, cwd=work)
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert not (data / "generated" / "cell_mgu2.py").exists() and not (data / "user_cells" / "mgu2.cell").exists()


def test_uninstall_leaves_nothing(installed):
    python, purelib, env, work, _ = installed
    _py(installed, "import derive, codegen, generated, interop.kernels")  # leaves __pycache__ behind, if any
    done = _run([str(python), "-m", "pip", "uninstall", "-y", "rnn-bptt-derive"], env=env, cwd=work)
    assert done.returncode == 0, done.stdout + done.stderr
    left = sorted(p.name for p in purelib.iterdir() if p.name in PACKAGES or p.name.startswith("rnn_bptt_derive"))
    assert left == []


def test_the_generated_package_and_derive_agree_on_the_data_folder(monkeypatch, tmp_path):
    """generated/__init__ repeats derive.locations' rule (it must not import derive): the two must agree."""
    for value in (str(tmp_path / "xdg"), "relative/xdg", ""):
        monkeypatch.setenv("XDG_DATA_HOME", value)
        assert generated._data_dir() == derive.locations.data_dir()
