"""Packaging: the repository's packages installed under one name, ``rnn_bptt_derive``, that cannot collide.

In the checkout the packages are top-level (``import generated``, ``from derive import ...``, ``python -m codegen``);
an installed copy (``pip install .``, the wheel) holds them as ``rnn_bptt_derive.derive``, ``.codegen``,
``.generated``, ``.interop`` and ``.verify``, so that another project's ``derive`` or ``generated`` can be installed
beside it. The sources stay as they are: ``build_py`` copies each package under ``rnn_bptt_derive/`` and rewrites
the import statements that name one of them (``from derive.parse import X`` -> ``from rnn_bptt_derive.derive.parse
import X``), in the .py files (located with ``ast``, and checked again after the rewrite) and in the code
templates, which write the same imports into every module they generate (the committed ones, those an installed
copy generates into the per-user data folder, and the expression cache's). Only import statements change: code
that builds a module name at run time takes it from its own ``__name__``/``__package__``.

An editable install (``pip install -e .``, what the Makefile does) serves the checkout itself, under the short
names, as before: there nothing is copied and nothing is rewritten.
"""
import ast
import re
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

ROOT = "rnn_bptt_derive"
PACKAGES = ("derive", "codegen", "generated", "interop", "verify")
# only what users import and what those packages read at run time: nothing is picked up from version control
PACKAGE_DATA = {"codegen": ["templates/*.jinja"], "derive": ["user_activations.json", "cells/*.cell"],
                "generated": ["latex/*.tex"]}
REWRITTEN = (".py", ".jinja")
INIT = f'''"""rnn-bptt-derive, installed: SymPy derives BPTT for a vanilla RNN with any activation, and for gated cells
written as equations, and emits NumPy kernels and LaTeX.

    from {ROOT} import generated                 # generated.load("tanh"); generated.ACTIVATIONS, generated.CELLS
    from {ROOT}.verify import gradcheck
    from {ROOT}.interop.torch_rnn import RNN     # with PyTorch installed
    python -m {ROOT}.codegen add NAME EXPR       # a user activation, into the per-user data folder

The repository's packages (derive, codegen, generated, interop, verify) are installed under this one name, so that
they cannot collide with other projects' packages.
"""
'''


class ImportRewriteError(Exception):
    """An import statement naming one of PACKAGES that the build cannot rewrite (it must not be installed as is)."""


def _short_root(name):
    """The package of PACKAGES that the dotted module ``name`` lies in, or None."""
    root = (name or "").partition(".")[0]
    return root if root in PACKAGES else None


def _byte_offsets(data):
    """Offset of the first byte of every line of ``data`` (ast reports columns in UTF-8 bytes)."""
    starts = [0]
    for match in re.finditer(rb"\n", data):
        starts.append(match.end())
    return starts


def _import_replacement(node):
    """The text of an ``import ...`` statement with the aliases that name our packages taken from ROOT; the name
    each alias binds stays the same (``import generated`` binds ``generated``, ``import derive.locations`` binds
    ``derive`` with ``derive.locations`` loaded)."""
    parts, plain = [], []
    for alias in node.names:
        root = _short_root(alias.name)
        if root is None:
            plain.append(alias.name + (f" as {alias.asname}" if alias.asname else ""))
        elif alias.asname and "." in alias.name:
            parts.append(f"import {ROOT}.{alias.name} as {alias.asname}")
        elif "." in alias.name:
            parts.append(f"import {ROOT}.{alias.name}; from {ROOT} import {root}")
        else:
            parts.append(f"from {ROOT} import {alias.name}" + (f" as {alias.asname}" if alias.asname else ""))
    return "; ".join(([f"import {', '.join(plain)}"] if plain else []) + parts)


def short_imports(tree):
    """(line, module) of every absolute import statement in the ast ``tree`` that names one of PACKAGES."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and _short_root(node.module):
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names if _short_root(a.name))
    return found


def rewrite_python(text, filename):
    """Python source ``text`` with every import statement naming one of PACKAGES taken from ROOT; nothing else
    (docstrings, comments, strings) changes. Raises ImportRewriteError when an import is left behind."""
    data = text.encode("utf-8")
    starts = _byte_offsets(data)
    edits = []  # (start, end, replacement bytes), in the byte offsets of data
    for node in ast.walk(ast.parse(data, filename=filename)):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        start = starts[node.lineno - 1] + node.col_offset
        if isinstance(node, ast.ImportFrom) and node.level == 0 and _short_root(node.module):
            root = _short_root(node.module).encode()
            keyword = re.compile(rb"from[ \t]+(?:\\\r?\n[ \t]*)*" + re.escape(root) + rb"(?=[.\s\\])")
            match = keyword.match(data, start)
            if match is None:
                raise ImportRewriteError(f"{filename}:{node.lineno}: cannot find the module name of "
                                         f"'from {node.module} import ...'")
            edits.append((match.end() - len(root), match.end(), f"{ROOT}.{root.decode()}".encode()))
        elif isinstance(node, ast.Import) and any(_short_root(a.name) for a in node.names):
            end = starts[node.end_lineno - 1] + node.end_col_offset
            edits.append((start, end, _import_replacement(node).encode()))
    for start, end, new in sorted(edits, reverse=True):
        data = data[:start] + new + data[end:]
    result = data.decode("utf-8")
    left = short_imports(ast.parse(result, filename=filename))
    if left:
        raise ImportRewriteError(f"{filename}: imports left unrewritten at lines {', '.join(str(n) for n, _ in left)}")
    return result


_TEMPLATE_FROM = re.compile(rf"^([ \t]*from[ \t]+)(?=(?:{'|'.join(PACKAGES)})(?:\.\w+)*[ \t]+import\b)", re.M)
_TEMPLATE_IMPORT = re.compile(rf"^[ \t]*import[ \t]+(?:{'|'.join(PACKAGES)})\b", re.M)


def rewrite_template(text, filename):
    """A code template's ``text`` with the lines ``from <package>... import ...`` naming one of PACKAGES taken from
    ROOT (a template is not Python, so its import lines are matched as whole lines: indentation, ``from``, a
    dotted name, ``import``). A plain ``import <package>`` line is refused: templates write ``from`` imports only."""
    plain = _TEMPLATE_IMPORT.search(text)
    if plain:
        line = text.count("\n", 0, plain.start()) + 1
        raise ImportRewriteError(f"{filename}:{line}: templates must use 'from <package> import ...', "
                                 f"got {plain.group(0).strip()!r}")
    return _TEMPLATE_FROM.sub(rf"\g<1>{ROOT}.", text)


class BuildPy(build_py):
    """build_py for the wheel: the packages copied under ROOT (package_dir maps them), their import statements
    rewritten, and ROOT's own __init__.py written. In editable mode the short names are served as they are."""

    def run(self):
        super().run()
        if self.editable_mode:
            return
        base = Path(self.build_lib) / ROOT
        for path in sorted(base.rglob("*")):
            if path.suffix in REWRITTEN and path.is_file() and "__pycache__" not in path.parts:
                text = path.read_text(encoding="utf-8")
                rewrite = rewrite_python if path.suffix == ".py" else rewrite_template
                new = rewrite(text, str(path.relative_to(self.build_lib)))
                if new != text:
                    path.write_text(new, encoding="utf-8")
        (base / "__init__.py").write_text(INIT, encoding="utf-8")

    def get_outputs(self, include_bytecode=True):
        outputs = super().get_outputs(include_bytecode)
        if self.editable_mode:
            return outputs
        return [*outputs, str(Path(self.build_lib) / ROOT / "__init__.py")]


class EditableWheel(editable_wheel):
    """``pip install -e .``: the checkout's packages under their own short names (the wheel's layout would put
    ``rnn_bptt_derive.derive`` on sources that import ``derive``)."""

    def finalize_options(self):
        dist = self.distribution
        dist.packages = list(PACKAGES)
        dist.package_dir = {}
        dist.package_data = dict(PACKAGE_DATA)
        super().finalize_options()


# setuptools runs this file as __main__; tests import it for the rewrite functions above
if __name__ == "__main__":
    setup(
        packages=[f"{ROOT}.{name}" for name in PACKAGES],
        package_dir={f"{ROOT}.{name}": name for name in PACKAGES},
        package_data={f"{ROOT}.{name}": globs for name, globs in PACKAGE_DATA.items()},
        include_package_data=False,
        cmdclass={"build_py": BuildPy, "editable_wheel": EditableWheel},
    )
