"""A generated module for any activation: a catalogue name, or an expression in x generated on first use.

Expressions run through the whole pipeline (parse_expression -> derive -> codegen) into a cache directory
(``$RNN_BPTT_CACHE``, else ~/.cache/rnn-bptt-derive), one module per expression, and are imported from there.
"""
import hashlib
import importlib.util
import os
from pathlib import Path

import generated

_LOADED = {}


def cache_dir():
    return Path(os.environ.get("RNN_BPTT_CACHE", Path.home() / ".cache" / "rnn-bptt-derive"))


def kernel_module(activation):
    """The generated module for ``activation``: a name in generated.ACTIVATIONS, or an expression in x."""
    if activation in generated.ACTIVATIONS:
        return generated.load(activation)
    if activation in _LOADED:
        return _LOADED[activation]
    from codegen.render import render, write_tree
    from derive import Activation, derive, parse_expression

    name = "expr_" + hashlib.sha256(activation.encode()).hexdigest()[:16]
    path = cache_dir() / f"rnn_{name}.py"
    if not path.exists():
        derivation = derive(Activation(name, parse_expression(activation)))
        files = render([derivation])
        write_tree({path.name: files[path.name]}, path.parent, pattern=None)
    spec = importlib.util.spec_from_file_location(f"rnn_bptt_cache.{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _LOADED[activation] = module
    return module
