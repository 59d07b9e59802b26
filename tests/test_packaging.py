"""The wheel, installed into a fresh virtual environment (no system site-packages, so a missing dependency fails):
one top-level package, rnn_bptt_derive, holding the five packages users import under names that cannot collide
with other projects' (the import statements rewritten by setup.py's build_py), the three runtime dependencies, no
setuptools warning, adding and removing activations and cells without writing into site-packages, and an uninstall
that leaves nothing behind. Everything installed runs from a folder holding other projects' derive, codegen,
generated, interop and verify, first on sys.path: an import of a short name would get one of those."""
import ast
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import derive.locations
import generated

ROOT = Path(__file__).resolve().parent.parent
TOP = "rnn_bptt_derive"
PACKAGES = ("derive", "codegen", "generated", "interop", "verify")
# what setuptools prints when the package configuration misses data or packages, and any other warning; pip's
# disabling of byte-compiling for the wheel is no warning about the project
BUILD_WARNINGS = re.compile(r"warn|deprecat|is absent from the `packages`|would be ignored|Installing '|"
                            r"package init file", re.I)
NOT_A_WARNING = "byte-compiling is disabled"
OFFLINE = ("No matching distribution", "Could not find a version", "NewConnectionError", "Temporary failure in name",
           "Network is unreachable", "ConnectionError", "ReadTimeoutError")
# another project's package of one of our short names: importing it fails loudly
DECOY = "raise ImportError('another project\'s {name}: rnn_bptt_derive must not import it')\n"


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


def _short_imports(source, filename):
    """(line, module) of every absolute import in the Python ``source`` that names one of PACKAGES."""
    found = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found += [(node.lineno, n) for n in names if n.partition(".")[0] in PACKAGES]
    return found


TEMPLATE_IMPORT = re.compile(rf"^[ \t]*(?:from|import)[ \t]+(?:{'|'.join(PACKAGES)})\b.*", re.M)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv python, its site-packages, the environment of a user with a scratch HOME and data folder, the folder
    the commands run in (holding decoys of the short names), the data folder, the build's wheel)."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed here: the wheel cannot be built without build isolation")
    tmp = tmp_path_factory.mktemp("packaging")
    src = _source_copy(tmp)
    built = _run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-v",
                  "-w", str(tmp / "dist")])
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    output = built.stdout + built.stderr
    warned = [line for line in output.splitlines() if BUILD_WARNINGS.search(line) and NOT_A_WARNING not in line]
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
    for name in PACKAGES:  # `python -c` and `python -m` put this folder first on sys.path
        (work / name).mkdir(parents=True)
        (work / name / "__init__.py").write_text(DECOY.format(name=name))
    return python, purelib, env, work, tmp / "data" / "rnn-bptt-derive", wheel


def _py(installed, code):
    python, _, env, work, _, _ = installed
    done = _run([str(python), "-c", code], env=env, cwd=work)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def _cli(installed, *args):
    python, _, env, work, _, _ = installed
    done = _run([str(python), "-m", f"{TOP}.codegen", *args], env=env, cwd=work)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def test_wheel_holds_one_top_level_package_and_three_dependencies(installed):
    _, purelib, _, _, _, wheel = installed
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    (info,) = purelib.glob("rnn_bptt_derive-*.dist-info")
    assert {name.split("/")[0] for name in names} == {TOP, info.name}
    record = (info / "RECORD").read_text().splitlines()
    assert {line.split(",")[0].split("/")[0] for line in record} == {TOP, info.name}  # nothing in bin/ either
    installed_files = {line.split(",")[0] for line in record}
    for rel in ("__init__.py", "derive/catalogue.py", "derive/user_activations.json", "derive/cells/lstm.cell",
                "codegen/__main__.py", "codegen/templates/rnn_module.py.jinja", "generated/rnn_tanh.py",
                "generated/cell_gru.py", "generated/latex/rnn_tanh.tex", "interop/kernels.py",
                "verify/gradcheck.py"):
        assert f"{TOP}/{rel}" in installed_files, rel
    requires = [line.split(":", 1)[1].strip() for line in (info / "METADATA").read_text().splitlines()
                if line.startswith("Requires-Dist:")]
    runtime = sorted(r.split(">")[0].split("=")[0].split(";")[0].strip() for r in requires if "extra ==" not in r)
    assert runtime == ["jinja2", "numpy", "sympy"]


def test_no_installed_file_imports_a_short_name(installed):
    _, purelib, _, _, _, _ = installed
    package = purelib / TOP
    sources = sorted(package.rglob("*.py"))
    templates = sorted(package.rglob("*.jinja"))
    assert len(sources) > 40 and len(templates) > 5  # the scan below looked at the whole installed tree
    left = [f"{p.relative_to(purelib)}:{line}: {name}" for p in sources
            for line, name in _short_imports(p.read_text(), str(p))]
    left += [f"{p.relative_to(purelib)}: {m.group(0).strip()}" for p in templates
             for m in TEMPLATE_IMPORT.finditer(p.read_text())]
    assert left == []
    # the templates import what the generated modules need from the installed names
    module_template = (package / "codegen" / "templates" / "rnn_module.py.jinja").read_text()
    assert f"from {TOP}.generated._support import" in module_template


def test_installed_copy_runs_from_another_directory(installed):
    _, purelib, _, _, data, _ = installed
    out = _py(installed, f"""
import json
import numpy as np
from {TOP} import generated
from {TOP}.derive import locations
from {TOP}.verify import gradcheck
m = generated.load('tanh')
rng = np.random.default_rng(0)
x, h0 = rng.standard_normal((5, 2, 3)), rng.standard_normal((2, 4)) * .5
V, W, b = rng.standard_normal((4, 3)) * .5, rng.standard_normal((4, 4)) * .5, rng.standard_normal(4) * .1
h, cache = m.forward(x, h0, V, W, b)
g = m.backward(np.ones_like(h), cache)
errors = gradcheck(m, x, h0, V, W, b)
print(json.dumps([generated.__file__, m.__name__, locations.is_checkout(), str(locations.data_dir()),
                  g.dW.shape, max(errors.values()), sorted(generated.CELLS)]))
""")
    where, name, checkout, data_dir, dw_shape, worst, cells = json.loads(out)
    assert Path(where).is_relative_to(purelib / TOP) and name == f"{TOP}.generated.rnn_tanh"
    assert checkout is False and Path(data_dir) == data and dw_shape == [4, 4]
    assert worst < 1e-6  # the suite's gradcheck bound (float64 central differences, README)
    assert cells == ["gru", "lstm", "mgu"]


def test_installed_expression_cache_imports_the_installed_names(installed):
    """An expression's module is rendered at run time from the installed templates into the cache."""
    python, purelib, env, _, _, _ = installed
    out = _py(installed, f"""
import numpy as np
import sympy
from {TOP}.interop import kernels
m = kernels.kernel_module('x*tanh(x) + x')
h, c = m.forward(np.ones((3, 2, 4)), np.zeros((2, 5)), np.full((5, 4), .1), np.eye(5) * .5, np.zeros(5))
m.backward(np.ones_like(h), c)
engine = [r'{purelib / TOP / "derive"}', r'{purelib / TOP / "codegen"}']
print(kernels.engine_fingerprint() == kernels.fingerprint(engine, sympy.__version__))
print(m.__file__)
""")
    same_engine, file = out.split()
    assert same_engine == "True"  # the installed derive and codegen decide the cached files, not the decoys
    path = Path(file)
    assert path.parent == Path(env["RNN_BPTT_CACHE"]) and not path.is_relative_to(purelib)
    source = path.read_text()
    assert f"from {TOP}.generated._support import" in source and _short_imports(source, str(path)) == []


def test_installed_cli_adds_and_removes_a_user_activation_outside_site_packages(installed):
    _, purelib, _, _, data, _ = installed
    assert f"python -m {TOP}.codegen" in _cli(installed, "add", "--help")
    before = _files(purelib)
    _cli(installed, "add", "swish2", "x*sigmoid(2*x)")
    assert _files(purelib) == before  # nothing written into the installed package
    module = data / "generated" / "rnn_swish2.py"
    assert _short_imports(module.read_text(), str(module)) == []
    assert json.loads((data / "user_activations.json").read_text()) == {"swish2": "x*sigmoid(2*x)"}
    out = _py(installed, f"""
import numpy as np
from {TOP} import generated
m = generated.load('swish2')
print('swish2' in generated.ACTIVATIONS, m.__name__)
h, c = m.forward(np.ones((3, 2, 4)), np.zeros((2, 5)), np.ones((5, 4)), np.eye(5), np.zeros(5))
m.backward(np.ones_like(h), c)
""")
    assert out.split() == ["True", f"{TOP}.generated.rnn_swish2"]
    _cli(installed, "remove", "swish2")
    assert not module.exists()
    assert _py(installed, f"from {TOP} import generated; print('swish2' in generated.ACTIVATIONS)").strip() == "False"


def test_installed_copy_refuses_a_stale_user_module_and_its_command_regenerates_it(installed):
    """A user module an older install wrote (its FORMAT line another, an import of a name since removed): load
    names it, its file and the command; that command, run as the message spells it, makes it load again."""
    import re

    _, _, _, _, data, _ = installed
    _cli(installed, "add", "swish3", "x*sigmoid(3*x)")
    module = data / "generated" / "rnn_swish3.py"
    text = module.read_text()
    module.write_text(re.sub(r"^FORMAT = .*$", "FORMAT = '" + "0" * 64 + "'", text, count=1, flags=re.M).replace(
        "import numpy as np\n", f"import numpy as np\nfrom {TOP}.generated._support import gone_now\n", 1))
    out = _py(installed, f"""
from {TOP} import generated
try:
    generated.load('swish3')
except generated.StaleModuleError as e:
    print(e)
""")
    assert f"the user activation 'swish3' ({module}) was generated by another release" in out, out
    command = re.search(r"Regenerate the per-user data folder with `([^`]+)`", out).group(1)
    assert command == f"python -m {TOP}.codegen"
    _cli(installed, *command.split()[3:])
    assert module.read_text() == text
    assert _py(installed, f"from {TOP} import generated; print(generated.load('swish3').NAME)").strip() == "swish3"
    _cli(installed, "remove", "swish3")


def test_installed_cli_adds_and_removes_a_user_cell_outside_site_packages(installed):
    _, purelib, _, work, data, _ = installed
    source = (ROOT / "derive" / "cells" / "mgu.cell").read_text().replace("cell mgu", "cell mgu2")
    (work / "mgu2.cell").write_text(source)
    before = _files(purelib)
    _cli(installed, "add-cell", "mgu2.cell")
    assert _files(purelib) == before
    module = data / "generated" / "cell_mgu2.py"
    assert (data / "user_cells" / "mgu2.cell").is_file() and _short_imports(module.read_text(), str(module)) == []
    out = _py(installed, f"from {TOP} import generated\nprint('mgu2' in generated.CELLS, generated.load('mgu2').NAME)")
    assert out.split() == ["True", "mgu2"]
    _cli(installed, "remove-cell", "mgu2")
    assert not module.exists() and not (data / "user_cells" / "mgu2.cell").exists()


def test_installed_pytorch_and_jax_front_ends_import_the_installed_names(installed, tmp_path):
    """The front ends need PyTorch and JAX, which the fresh venv lacks: the wheel goes into a folder on this
    interpreter's PYTHONPATH instead, and runs among the decoys as above."""
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    _, _, env, work, _, wheel = installed
    target = tmp_path / "target"
    done = _run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel)])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ran = _run([sys.executable, "-c", f"""
import sys
import torch
from {TOP}.interop import jax_rnn, torch_device
from {TOP}.interop.torch_rnn import LSTM, RNN
x = torch.randn(3, 2, 4, dtype=torch.float64, requires_grad=True)
for module in (RNN(4, 5, nonlinearity='tanh').double(), LSTM(4, 5).double()):
    y, _ = module(x)
    y.sum().backward()
    assert torch.isfinite(x.grad).all()
print(torch_device.device_kernels('tanh').USES_OUTPUT)
print(sorted(n for n in sys.modules if n.partition('.')[0] in {PACKAGES!r}))
"""], env={**env, "PYTHONPATH": str(target)}, cwd=work)
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-3000:]
    assert ran.stdout.split("\n")[:2] == ["True", "[]"]


def test_uninstall_leaves_nothing(installed):
    python, purelib, env, work, _, _ = installed
    # leaves __pycache__ behind, if any
    _py(installed, f"import {TOP}.derive, {TOP}.codegen, {TOP}.generated, {TOP}.interop.kernels, {TOP}.verify")
    done = _run([str(python), "-m", "pip", "uninstall", "-y", "rnn-bptt-derive"], env=env, cwd=work)
    assert done.returncode == 0, done.stdout + done.stderr
    left = sorted(p.name for p in purelib.iterdir() if p.name in PACKAGES or p.name.startswith(TOP))
    assert left == []


def test_the_generated_package_and_derive_agree_on_the_data_folder(monkeypatch, tmp_path):
    """generated/__init__ repeats derive.locations' rule (it must not import derive): the two must agree."""
    for value in (str(tmp_path / "xdg"), "relative/xdg", ""):
        monkeypatch.setenv("XDG_DATA_HOME", value)
        assert generated._data_dir() == derive.locations.data_dir()


def test_editable_install_serves_the_checkout_under_the_short_names(tmp_path):
    """`pip install -e .` (the Makefile's): the checkout's own folders as derive, codegen, ... from any folder,
    and no rnn_bptt_derive (its modules would import the short names from a second copy)."""
    src = _source_copy(tmp_path)
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True, timeout=300)
    python = tmp_path / "venv" / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    # the editable wheel pip would build (PEP 660), by this setuptools: a new venv's lacks bdist_wheel, and no
    # index is needed; the runtime dependencies are not what is checked here
    built = _run([sys.executable, "-c", "import sys; from setuptools import build_meta\n"
                                        "print(build_meta.build_editable(sys.argv[1]))", str(tmp_path / "dist")],
                 cwd=src)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    wheel = tmp_path / "dist" / built.stdout.strip().splitlines()[-1]
    done = _run([str(python), "-m", "pip", "install", "--no-deps", str(wheel)], env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    where = json.loads(_run([str(python), "-c", "import importlib.util as u, json, sys\n"
                                                "print(json.dumps({n: getattr(u.find_spec(n), 'origin', None) "
                                                "for n in sys.argv[1:]}))", *PACKAGES, TOP],
                            env=env, cwd=tmp_path).stdout)
    assert where == {**{n: str(src / n / "__init__.py") for n in PACKAGES}, TOP: None}


def _setup_py():
    """The repository's setup.py as a module (setup() itself runs only as __main__)."""
    pytest.importorskip("setuptools")
    spec = importlib.util.spec_from_file_location("rnn_bptt_setup", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_build_rewrites_import_statements_only():
    source = '''"""Prose stays: from derive import x.

    import generated
"""
import os, generated
import derive.locations
import codegen.build as build
import verify as v
from derive.parse import (X,
                          parse_expression)
from interop import \\
    kernels
from derived import y
text = "from derive import x"  # import codegen


def f():
    import generated
    if True: from derive import catalogue; import codegen
    return generated
'''
    assert _setup_py().rewrite_python(source, "example.py") == '''"""Prose stays: from derive import x.

    import generated
"""
import os; from rnn_bptt_derive import generated
import rnn_bptt_derive.derive.locations; from rnn_bptt_derive import derive
import rnn_bptt_derive.codegen.build as build
from rnn_bptt_derive import verify as v
from rnn_bptt_derive.derive.parse import (X,
                          parse_expression)
from rnn_bptt_derive.interop import \\
    kernels
from derived import y
text = "from derive import x"  # import codegen


def f():
    from rnn_bptt_derive import generated
    if True: from rnn_bptt_derive.derive import catalogue; from rnn_bptt_derive import codegen
    return generated
'''


def test_build_rewrites_the_import_lines_of_templates():
    setup_py = _setup_py()
    template = ('{% if scalar_imports %}\n'
                '    from generated._support import {{ scalar_imports }}\n'
                'from generated import load\n'
                '((* from "latex_macros.tex.jinja" import generic *))\n'
                '{% endif %}\n')
    assert setup_py.rewrite_template(template, "t.jinja") == template.replace(
        "from generated.", "from rnn_bptt_derive.generated.").replace(
        "from generated import", "from rnn_bptt_derive.generated import")
    with pytest.raises(setup_py.ImportRewriteError, match=r"t.jinja:2: .*'import generated'"):
        setup_py.rewrite_template("x = 1\nimport generated\n", "t.jinja")
