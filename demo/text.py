"""The training text: English prose that ships with every Python, the docstrings of standard-library modules."""
import importlib
import inspect

MODULES = ("argparse", "collections", "difflib", "heapq", "json", "pathlib", "string", "textwrap", "functools",
           "itertools", "random", "statistics", "fractions", "decimal", "bisect", "csv", "logging", "unittest")


def stdlib_text():
    """The docstrings of MODULES and of their public classes and functions, in a fixed order."""
    parts = []
    for name in MODULES:
        module = importlib.import_module(name)
        parts.append(inspect.getdoc(module) or "")
        for attr in sorted(dir(module)):
            obj = getattr(module, attr, None)
            if attr.startswith("_") or not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            if getattr(obj, "__module__", None) != name:
                continue
            parts.append(inspect.getdoc(obj) or "")
    text = "\n\n".join(p for p in parts if p)
    return "".join(c for c in text if c == "\n" or 32 <= ord(c) < 127)  # plain ASCII: a small vocabulary
