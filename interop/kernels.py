"""A generated module for any activation: a catalogue name, or an expression in x generated on first use.

    kernel_module("gelu")                  # generated.load("gelu")
    kernel_module("x*tanh(softplus(x))")   # parse_expression -> derive -> render, once; then read from the cache

Expressions go through the whole pipeline into the expression cache (``$RNN_BPTT_CACHE``, else
~/.cache/rnn-bptt-derive), one file per expression and engine, and are loaded from there:

- A file's name is a digest of the expression text and of the engine (the source of derive/ and codegen/ with its
  templates, and the SymPy version), so after any change to the engine the expression is derived again.
- Every file ends with the SHA-256 of the text above it, checked before the text runs: an empty, cut-short,
  edited or planted file is derived and written again, never run.
- The folder must be a directory owned by the user and not writable by group or others (what ssh asks of ~/.ssh),
  and so must its ``__pycache__``, where Numba keeps its compiled loops as pickles. Otherwise, or when the folder
  cannot be written, the kernels go to a private temporary folder for this process, with a ``CacheWarning``.
- A module is registered in ``sys.modules`` under a name made from its file name before its code runs: Numba's
  on-disk cache imports the module by that name when it loads a compiled loop in a later process.
"""
import atexit
import contextlib
import functools
import hashlib
import os
import shutil
import stat
import sys
import tempfile
import types
import warnings
from pathlib import Path

import generated

CACHE_ENV = "RNN_BPTT_CACHE"
ENGINE = ("derive", "codegen")  # the packages whose source decides what a cached file holds
# the package holding interop and ENGINE: none in the checkout, rnn_bptt_derive when installed
_PARENT = __package__.rpartition(".")[0]
ENGINE_SUFFIXES = (".py", ".jinja")
TRAILER = b"# rnn-bptt-derive expression cache, sha256 of the lines above: "
MODULE_PREFIX = "rnn_bptt_cache_"  # + rnn_expr_<digest>: the name in sys.modules

_LOADED = {}  # ($RNN_BPTT_CACHE, $HOME, engine fingerprint, expression) -> module
_PRIVATE = []  # this process's private fallback folder, once made


class CacheWarning(UserWarning):
    """The expression cache folder was not used; the kernels went to a private temporary folder instead."""


def cache_dir():
    """The configured cache folder, ``$RNN_BPTT_CACHE`` or ~/.cache/rnn-bptt-derive (checked only when used)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "rnn-bptt-derive")


def fingerprint(roots, sympy_version):
    """SHA-256 (hex) of every .py and .jinja file under the folders ``roots`` (relative path and bytes, sorted),
    and of ``sympy_version``: what a cached module depends on besides its expression."""
    digest = hashlib.sha256(f"sympy {sympy_version}\n".encode())
    for root in map(Path, roots):
        files = sorted(p for p in root.rglob("*") if p.suffix in ENGINE_SUFFIXES and p.is_file()
                       and "__pycache__" not in p.relative_to(root).parts)
        for path in files:
            data = path.read_bytes()
            rel = f"{root.name}/{path.relative_to(root).as_posix()}"
            digest.update(f"{rel} {len(data)}\n".encode())
            digest.update(data)
    return digest.hexdigest()


@functools.cache
def engine_fingerprint():
    """fingerprint() of this installation's derive/ and codegen/ and SymPy, computed once per process."""
    import importlib.metadata
    import importlib.util

    roots = [Path(importlib.util.find_spec(f"{_PARENT}.{package}" if _PARENT else package).origin).parent
             for package in ENGINE]
    try:  # the installed version, without importing SymPy (a cache hit imports neither SymPy nor the engine)
        version = importlib.metadata.version("sympy")
    except importlib.metadata.PackageNotFoundError:
        import sympy

        version = sympy.__version__
    return fingerprint(roots, version)


def cache_name(expression):
    """The activation name of ``expression`` in the cache, ``expr_<digest of the engine and the text>``."""
    key = f"{engine_fingerprint()}\n{expression}".encode("utf-8", "surrogatepass")
    return "expr_" + hashlib.sha256(key).hexdigest()[:16]


def kernel_module(activation):
    """The generated module for ``activation``: a name in generated.ACTIVATIONS, or an expression in x.

    An expression is parsed, derived and rendered on first use (seconds), then read from the cache.
    Raises derive.ExpressionError or derive.DerivationError (ValueErrors) for an expression the engine refuses.
    """
    if not isinstance(activation, str):
        raise TypeError(f"activation must be a catalogue name or an expression in x (a str), "
                        f"got {type(activation).__name__}")
    if activation in generated.ACTIVATIONS:
        return generated.load(activation)
    # what decides the file, in a form cheap to look up: rnn() calls this on every forward
    memo = (os.environ.get(CACHE_ENV), os.environ.get("HOME"), engine_fingerprint(), activation)
    if memo in _LOADED:
        return _LOADED[memo]
    configured = cache_dir()
    name = cache_name(activation)
    stem = f"rnn_{name}"
    problem = _folder_problem(configured)
    folder = configured if problem is None else _fall_back(configured, problem)
    path = folder / f"{stem}.py"
    data = _read_checked(path)
    if data is None:  # missing, or failed its check: derive it again and replace it
        data = _generate(name, activation)
        try:
            _write(path, data)
        except OSError as error:
            if folder != configured:
                raise RuntimeError(f"the kernels for {activation!r} cannot be written to {path}: "
                                   f"{error.strerror or error}") from None
            path = _fall_back(configured, f"it cannot be written ({error.strerror or error})") / path.name
            _write(path, data)
    module = _load(path, stem, data)
    _LOADED[memo] = module
    return module


def _folder_problem(folder):
    """Why ``folder`` cannot hold the cache, in words; None when it can. Creates it (mode 0700) when missing."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        return f"it cannot be created ({error.strerror or error})"
    pycache = folder / "__pycache__"
    for path, follow in ((folder, True), (pycache, False)):  # the folder may be a link; its __pycache__ may not
        problem = _unsafe(path, follow)
        if problem:
            return problem
    try:
        # Numba writes its compiled loops beside the module: made private before Numba makes it with the umask
        pycache.mkdir(mode=0o700, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        return f"it cannot be written ({error.strerror or error})"
    return None


def _unsafe(path, follow):
    """Why the directory ``path`` must not be trusted (another owner, writable by group or others), or None."""
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as error:
        return f"{path} cannot be read ({error.strerror or error})"
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a directory"
    if os.name != "posix":  # owners and mode bits as checked here exist only on POSIX
        return None
    if st.st_uid != os.geteuid():
        return f"{path} belongs to another user (uid {st.st_uid})"
    if st.st_mode & 0o022:
        return (f"{path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o}); "
                f"`chmod 700 {path}` makes it private")
    return None


def _fall_back(configured, problem):
    """The private folder of this process, after a CacheWarning saying why ``configured`` was not used."""
    if not _PRIVATE:
        try:
            private = Path(tempfile.mkdtemp(prefix="rnn-bptt-derive-"))  # mode 0700, ours
            (private / "__pycache__").mkdir(mode=0o700)
        except OSError as error:
            raise RuntimeError(f"the expression cache {configured} cannot be used: {problem}; and no private "
                               f"temporary folder could be made ({error}): set {CACHE_ENV} to a folder only "
                               f"you can write") from None
        atexit.register(shutil.rmtree, private, ignore_errors=True)
        _PRIVATE.append(private)
    warnings.warn(f"the expression cache {configured} is not used: {problem}. Kernels for expressions go to "
                  f"{_PRIVATE[0]} for this process, and are derived again in each process; set {CACHE_ENV} to a "
                  f"folder only you can write to keep them", CacheWarning, stacklevel=3)
    return _PRIVATE[0]


def _read_checked(path):
    """The bytes of the cached file at ``path`` when it is a regular file of ours whose digest matches; None
    when it is missing, or anything else (empty, cut short, edited, planted, a link): then it is regenerated."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)  # no links, no waiting on a fifo
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or (os.name == "posix" and st.st_uid != os.geteuid()):
            return None
        data = fh.read()
    return data if _digest_matches(data) else None


def _digest_matches(data):
    """Whether ``data`` ends with TRAILER + the SHA-256 of everything before that last line."""
    if not data.endswith(b"\n"):
        return False
    cut = data.rfind(b"\n", 0, len(data) - 1) + 1
    body, last = data[:cut], data[cut:-1]
    return last == TRAILER + hashlib.sha256(body).hexdigest().encode()


def _generate(name, expression):
    """expression -> the text of its module (bytes), ending with the digest line."""
    # [text] -> [Activation] -> [Derivation] -> {path: text}, the pipeline of codegen.build
    from codegen.build import derive_all
    from codegen.render import render
    from derive import Activation, parse_expression

    (derivation,) = derive_all([Activation(name, parse_expression(expression))], workers=1)
    body = render([derivation])[f"rnn_{name}.py"].encode("utf-8")
    return body + TRAILER + hashlib.sha256(body).hexdigest().encode() + b"\n"


def _write(path, data):
    """Write ``data`` to ``path`` atomically: in full to a private temporary file beside it, then renamed."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _load(path, stem, data):
    """Run the checked ``data`` (not a second read of ``path``) as the module MODULE_PREFIX + stem."""
    name = MODULE_PREFIX + stem
    module = types.ModuleType(name)
    module.__file__ = str(path)  # Numba's cache finds its __pycache__, and checks its stamp, through this path
    code = compile(data, str(path), "exec")
    # Registered before it runs: Numba finds a function's module through sys.modules, and for a module missing
    # there it writes its placeholder name '<dynamic>' into the compiled loop it caches; a later process loading
    # that loop imports the name and fails ("No module named '<dynamic>'"). Registered, the loop records ``name``,
    # which the later process has in sys.modules by the time the loop is first called.
    sys.modules[name] = module
    try:
        exec(code, module.__dict__)  # the engine's own output, checked above; user text reached it only as SymPy
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module
