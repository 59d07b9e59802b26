"""The whole pipeline, stage by stage: activations -> derivations -> files -> generated/.

    # [Activation] -> [Derivation]        derive.recurrence.derive, one process per core
    # [Derivation] -> {path: text}        codegen.render.render (printers + Jinja templates)
    # {path: text} -> generated/          codegen.write.write_tree (one transaction, under a lock)
"""
import difflib
import os
from pathlib import Path

from codegen.render import render
from codegen.write import locked, write_tree
from codegen.workers import DEFAULT_TIMEOUT, FROM_ENV, TIMEOUT_ENV, derive_in_workers, resolve_timeout
from derive.catalogue import CATALOGUE, USER_FILE, all_activations
from derive.cell import CELL_DIRS, derive_cell, read_cells
from derive.cellparse import Cell
from derive.locations import generated_dir
from derive.recurrence import derive

__all__ = ["DEFAULT_TIMEOUT", "FROM_ENV", "TIMEOUT_ENV", "build", "derive_all", "derive_cells", "drift", "emit"]

ROOT = Path(__file__).resolve().parent.parent
GENERATED = generated_dir()  # ROOT / "generated" in a checkout, the data folder when installed


def derive_all(activations, workers=None, timeout=FROM_ENV):
    """[Activation] -> [Derivation], in the same order (Cells among them give CellDerivations). SymPy is
    single-threaded: one process per core.

    ``timeout`` is the limit in seconds on each derivation: left out, $RNN_BPTT_DERIVE_TIMEOUT (0 or none: no
    limit), else DEFAULT_TIMEOUT (60 s); None: no limit. Under a limit every derivation runs in a spawned worker
    process, ``workers=1`` included, since only a process can be stopped in the middle of SymPy. Raises
    DerivationError for the first activation refused, or out of time (naming the step that ran out); no worker
    outlives the call.
    """
    activations = list(activations)
    timeout = resolve_timeout(timeout)
    workers = workers or min(len(activations), os.cpu_count() or 1)
    if not activations:
        return []
    if timeout is None and (workers <= 1 or len(activations) <= 1):
        return [derive_cell(a) if isinstance(a, Cell) else derive(a) for a in activations]
    return derive_in_workers(activations, max(1, workers), timeout)


def derive_cells(cell_dirs=CELL_DIRS, workers=None, timeout=FROM_ENV, cells=None):
    """The cells defined in ``cell_dirs`` (or the parsed ``cells`` given), derived, in name order, under the same
    time limit as derive_all (a user's equations can keep SymPy busy for minutes: twenty intermediates each a
    function of the one before did)."""
    cells = sorted(read_cells(cell_dirs) if cells is None else cells, key=lambda c: c.name)
    return derive_all(cells, workers, timeout)


def emit(user_file=USER_FILE, workers=None, base=CATALOGUE, cell_dirs=CELL_DIRS, timeout=FROM_ENV):
    """Everything ``make derive`` writes, as {path relative to generated/: text}; writes nothing.

    ``base`` is the built-in catalogue (tests pass a shorter one to stay fast); ``cell_dirs`` hold the cells'
    definitions (``*.cell``); ``timeout`` as in ``derive_all``.
    """
    # [Activation] -> [Derivation]
    activations, cells = list(all_activations(user_file, base)), list(read_cells(cell_dirs))
    # [Activation] -> [Derivation] and [Cell] -> [CellDerivation], in one pool of workers
    derived = derive_all(activations + cells, workers, timeout)
    derivations, cells = derived[:len(activations)], derived[len(activations):]
    # [Derivation], [CellDerivation] -> {path: text}
    return render(derivations, cells)


def build(root=GENERATED, user_file=USER_FILE, workers=None, base=CATALOGUE, cell_dirs=CELL_DIRS,
          timeout=FROM_ENV):
    """Regenerate ``root`` from the catalogue and the cells; returns the relative paths that changed."""
    # the lock spans the read of user_file too: an `add` finishing meanwhile would otherwise be undone
    with locked(root, [user_file, Path(cell_dirs[-1])]):
        files = emit(user_file, workers, base, cell_dirs, timeout)
        # {path: text} -> generated/
        return write_tree(files, root)


def drift(files, root=GENERATED):
    """Unified diffs between the files the engine emits now and those under ``root`` ('' when none)."""
    root = Path(root)
    out = []
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()
               and "__pycache__" not in p.parts}
    for rel in sorted(set(files) | on_disk):
        new = files.get(rel, "")
        path = root / rel
        old = path.read_text(encoding="utf-8") if path.exists() else ""
        if old != new:
            out.extend(difflib.unified_diff(old.splitlines(True), new.splitlines(True),
                                            f"generated/{rel} (committed)", f"generated/{rel} (emitted now)"))
    return "".join(out)
