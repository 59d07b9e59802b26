"""Derivations kept between commands, so `add` and `remove` derive only what changed.

    cached_derive_all(activations, root)    # [Activation] -> [Derivation], like build.derive_all

Each derivation is pickled into ``<root>/../.derivations/<key>.pickle``, where the key is the SHA-256 of the
engine (every .py file under derive/, the SymPy and Python versions) and of the activation (its name, its
expression and parameters as ``sympy.srepr``, and ``keep_input``): a change to either derives again. The folder sits beside the
generated/ it serves (the repository in a checkout, the per-user data folder when installed) and is trusted as
that generated/ is, whose modules are imported anyway: it is created 0700 and used only while it belongs to the
user and no one else can write it (a pickle runs code when loaded). A file that fails to load is derived again.
"""
import functools
import hashlib
import os
import pickle
import stat
import sys
import tempfile
from pathlib import Path

import sympy as sp

from codegen.build import FROM_ENV, derive_all

FOLDER = ".derivations"


@functools.cache
def engine_key():
    """SHA-256 (hex) of derive/'s sources and the SymPy and Python versions: what a derivation depends on
    besides its activation."""
    import derive

    root = Path(derive.__file__).resolve().parent
    digest = hashlib.sha256(f"sympy {sp.__version__} python {sys.version_info[:2]}\n".encode())
    for path in sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts):
        data = path.read_bytes()
        digest.update(f"{path.relative_to(root).as_posix()} {len(data)}\n".encode())
        digest.update(data)
    return digest.hexdigest()


def activation_key(activation):
    """The cache key of one activation under this engine."""
    params = sorted((sp.srepr(k), sp.srepr(v)) for k, v in activation.params.items())
    text = f"{engine_key()}\n{activation.name}\n{sp.srepr(activation.expr)}\n{params}\n{activation.keep_input}"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def cache_folder(root):
    """The folder of the cached derivations for the generated tree ``root``, or None when it cannot be trusted
    or made (then nothing is cached: every activation is derived, as without the cache)."""
    folder = Path(root).resolve().parent / FOLDER
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.stat(folder)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        return None
    if os.name == "posix" and (st.st_uid != os.geteuid() or st.st_mode & 0o022):
        return None
    return folder


def cached_derive_all(activations, root, workers=None, timeout=FROM_ENV):
    """[Activation] -> [Derivation] in the same order, deriving (with build.derive_all, under ``timeout`` as there)
    only the activations whose key has no readable entry in the cache of ``root``; the new ones are stored."""
    activations = list(activations)
    folder = cache_folder(root)
    if folder is None:
        return derive_all(activations, workers, timeout)
    keys = [activation_key(a) for a in activations]
    found = {}
    for key in set(keys):
        try:
            with open(folder / f"{key}.pickle", "rb") as fh:
                found[key] = pickle.load(fh)
        except Exception:  # missing, cut short, from another version: derive it again
            continue
    missing = [a for a, k in zip(activations, keys) if k not in found]
    for activation, derivation in zip(missing, derive_all(missing, workers, timeout) if missing else []):
        key = activation_key(activation)
        found[key] = derivation
        _store(folder / f"{key}.pickle", derivation)
    return [found[k] for k in keys]


def _store(path, derivation):
    """Write one entry atomically (a private temporary file renamed); a failure only loses the entry."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(derivation, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except (OSError, pickle.PicklingError):
        try:
            os.unlink(tmp)
        except (OSError, UnboundLocalError):
            pass
