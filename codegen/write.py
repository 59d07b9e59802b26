"""{path: text} -> files on disk, all or nothing: the last stage of the pipeline.

One regeneration changes many files: modules and LaTeX under ``generated/``, and for ``add``/``remove`` the user
file ``derive/user_activations.json`` as well. They change together, as one transaction, under an exclusive lock
(``fcntl.flock`` on ``<root>/.codegen.lock``) that every writer and ``--check`` takes:

1. recover: a journal left by a killed writer is rolled forward, then stray temporary files are removed;
2. stage: each changed file is written in full to a temporary ``.<name>.<hex>.tmp`` beside its target and synced;
3. journal: the renames and deletions are written atomically to ``<root>/.codegen-journal.json``;
   from here on the change is decided;
4. apply: the renames (modules and LaTeX first, ``__init__.py`` after them, the user file last), then the
   deletions; the compiled copies of every module replaced or deleted (its ``__pycache__`` entries: Python's
   bytecode and Numba's cached loops) are deleted with it;
5. the journal is removed.

A kill before step 3 leaves the old files plus temporaries, which the next command removes; a kill after it
leaves a journal, which the next command finishes (the compiled copies of what it names included).

Why the compiled copies go: Python takes ``__pycache__/<module>.*.pyc`` for a module whose source has the size and
the modification second the .pyc records, and Numba's cache index checks the same stamp. A module replaced by one
of the same size within the same second (``remove`` then ``add`` with another expression of the same length)
would be served from the old one's bytecode by every process that had not imported it yet.
 An error before step 3 (a full disk) removes the temporaries
and leaves every file as it was. New files get the mode of any new file, 0o666 & ~umask.
"""
import fcntl
import glob
import importlib.util
import json
import os
import re
import secrets
import stat
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = ".codegen.lock"
JOURNAL_NAME = ".codegen-journal.json"
STALE = ("rnn_*.py", "cell_*.py", "latex/rnn_*.tex", "latex/cell_*.tex")  # per-activation and per-cell files: removed with their entry
TEMP = re.compile(r"\..+\.tmp")  # every temporary this module (or an older mkstemp version) writes

_HELD = {}  # lock path -> [threading.RLock, depth, fd]: flock is per open file, so a nested take must reuse it
_HELD_GUARD = threading.Lock()


class WriteError(OSError):
    """A file could not be written or a journal could not be read; the message names the path."""


def _checkpoint(step):
    """Called after each step of a write; a no-op. The kill tests replace it to stop the process after step k."""


@contextmanager
def locked(root, extra=()):
    """Hold the lock on ``root`` (created if missing) and recover from a killed writer first.

    ``extra`` lists the files outside ``root`` that transactions may write (the user file), or folders whose files
    they may write (the user cells'): a journal may name them. Re-entrant within a process, so ``write_tree``
    inside a ``with locked(root)`` block does not deadlock.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = (root / LOCK_NAME).resolve()
    with _HELD_GUARD:
        entry = _HELD.setdefault(path, [threading.RLock(), 0, None])
    with entry[0]:
        if entry[1] == 0:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
            except OSError as e:
                raise WriteError(f"cannot open the lock file {path}: {e.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                recover(root, extra)
            except BaseException:
                os.close(fd)
                raise
            entry[2] = fd
        entry[1] += 1
        try:
            yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                os.close(entry[2])  # releases the flock
                entry[2] = None


def _rel(path, root):
    return Path(os.path.relpath(path, root)).as_posix()


def _sync_dir(directory):
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_new(path, content):
    """Write ``content`` to the new file ``path`` (mode 0o666 & ~umask, as open() gives) and sync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    with open(fd, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(content)
        fh.flush()
        os.fsync(fh.fileno())


def _new_file_mode():
    """0o666 & ~umask: the mode a new file gets."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0o022)  # no /proc: the portable way to read it sets it, so set it back at once
    os.umask(umask)
    return 0o666 & ~umask


def _needs_write(target, text, mode):
    """Whether ``target`` must be (re)written to hold ``text``."""
    if not target.exists() or target.read_text(encoding="utf-8") != text:
        return True
    # older versions wrote every file 0600 (mkstemp), which keeps other users of a shared install out
    return stat.S_IMODE(target.stat().st_mode) == 0o600 != mode


def _temp_beside(target):
    return target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")


def _drop_compiled(path):
    """Delete what was compiled from the Python file ``path``: ``__pycache__/<stem>.*`` beside it (bytecode for
    every interpreter and optimization level, Numba's index and data files) and, under a PYTHONPYCACHEPREFIX,
    this interpreter's bytecode there. Call after ``path`` is replaced or deleted, so nothing can compile the old
    text again."""
    path = Path(path)
    if path.suffix != ".py":
        return
    found = glob.glob(os.path.join(glob.escape(str(path.parent / "__pycache__")), glob.escape(path.stem) + ".*"))
    try:
        found.append(importlib.util.cache_from_source(str(path)))
    except (NotImplementedError, ValueError):  # no cache tag (an interpreter without bytecode caching)
        pass
    for name in found:
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass
        except OSError as e:  # left behind it would shadow the new source: the write is not done
            raise WriteError(f"cannot delete {name}, compiled from the replaced {path}: {e.strerror}") from None


def _forget_imported(path):
    """Drop from sys.modules every module imported from the deleted file ``path``: `remove` in this process, then
    ``generated.load`` of the name, imports afresh and finds it gone (it no longer looks at the folder each call)."""
    target = os.path.abspath(path)
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and os.path.abspath(file) == target:
            del sys.modules[name]


def _distinct_stamp(temp, target):
    """Give the staged ``temp`` another modification second than ``target`` (which it replaces) when both have
    the same size and second: then even bytecode that a process compiles from the old text while this write runs,
    and caches after _drop_compiled, cannot pass for the new text's. One second earlier: no file is dated ahead."""
    if target.suffix != ".py":
        return
    try:
        old, new = target.stat(), temp.stat()
    except FileNotFoundError:
        return
    if old.st_size == new.st_size and int(old.st_mtime) == int(new.st_mtime):
        earlier = (int(old.st_mtime) - 1) * 10**9
        os.utime(temp, ns=(earlier, earlier))


def recover(root, extra=()):
    """Finish the transaction a killed writer left in ``root`` (if any), then remove stray temporaries.

    Call with the lock held. Returns the paths it renamed, deleted or removed, relative to ``root``.
    """
    root = Path(root)
    allowed_outside = {Path(p).resolve() for p in extra}
    done = []
    journal = root / JOURNAL_NAME
    if journal.exists():
        try:
            plan = json.loads(journal.read_text(encoding="utf-8"))
            renames, deletions = plan["renames"], plan["deletions"]
        except (ValueError, KeyError, TypeError) as e:
            raise WriteError(f"{journal} is not a journal this version wrote ({e}); check the files it names, "
                             f"then delete it and run `make derive`") from None
        targets = [t for _, t in renames] + list(deletions)
        for rel in targets:
            target = (root / rel).resolve()
            if root.resolve() not in target.parents and not allowed_outside & {target, target.parent}:
                raise WriteError(f"{journal} names {rel}, which is neither under {root} nor a file this command "
                                 f"writes; check it, then delete the journal and run `make derive`")
        for temp_rel, target_rel in renames:
            temp, target = root / temp_rel, root / target_rel
            if temp.parent != target.parent or not TEMP.fullmatch(temp.name):
                raise WriteError(f"{journal} renames {temp_rel}, which is not a temporary beside {target_rel}")
            if temp.exists():  # a missing one was renamed before the kill
                os.replace(temp, target)
                done.append(target_rel)
            _drop_compiled(target)  # the kill may have come between the rename and this
        for rel in deletions:
            if (root / rel).exists():
                (root / rel).unlink()
                done.append(rel)
            _drop_compiled(root / rel)
        for directory in {(root / t).parent for t in targets}:
            _sync_dir(directory)
        journal.unlink()
        done.append(JOURNAL_NAME)
    strays = [p for p in root.rglob(".*.tmp") if "__pycache__" not in p.parts and TEMP.fullmatch(p.name)]
    for outside in allowed_outside:  # a file (the user file) or a folder (the user cells')
        strays += outside.glob(".*.tmp") if outside.is_dir() else outside.parent.glob(f".{outside.name}.*.tmp")
    for stray in sorted(set(strays)):
        stray.unlink(missing_ok=True)
        done.append(_rel(stray, root))
    return done


def write_tree(files, root, pattern=STALE, extra=None):
    """Write {path relative to ``root``: text} and ``extra`` {path: text} as one transaction; remove the files
    under ``root`` that match ``pattern`` (globs; None: none) and are not in ``files``, and the ``extra`` files
    whose text is None (a user cell's file, on ``remove-cell``).

    Takes the lock on ``root`` (see ``locked``); unchanged files are not touched. Returns the paths under ``root``
    that changed, relative to it (``extra`` files not included).
    """
    root = Path(root)
    extra = {Path(p): text for p, text in (extra or {}).items()}
    for rel in files:
        path = Path(rel)
        ours = path.name in (LOCK_NAME, JOURNAL_NAME) or TEMP.fullmatch(path.name)
        if path.is_absolute() or ".." in path.parts or ours:
            raise ValueError(f"write_tree: {rel!r} is not a plain path inside {root}")
    with locked(root, extra):
        writes = {root / rel: text for rel, text in files.items()}
        writes.update((p, text) for p, text in extra.items() if text is not None)
        mode = _new_file_mode()
        changed = sorted(t for t, text in writes.items() if _needs_write(t, text, mode))
        stale = sorted(p for pat in (pattern or ()) for p in root.glob(pat)
                       if p.relative_to(root).as_posix() not in files)
        stale += sorted(p for p, text in extra.items() if text is None and p.exists())
        if not changed and not stale:
            return []
        # __init__.py lists the modules, the user file the activations: each moves in after what it names
        order = sorted(changed, key=lambda t: (t in extra, t.name == "__init__.py", str(t)))
        journal = root / JOURNAL_NAME
        journal_temp = _temp_beside(journal)
        staged = []
        try:
            for target in order:
                target.parent.mkdir(parents=True, exist_ok=True)
                temp = _temp_beside(target)
                staged.append((temp, target))
                _write_new(temp, writes[target])
                _distinct_stamp(temp, target)
                _checkpoint(f"staged {_rel(target, root)}")
            plan = {"renames": [[_rel(t, root), _rel(g, root)] for t, g in staged],
                    "deletions": [_rel(p, root) for p in stale]}
            _write_new(journal_temp, json.dumps(plan, indent=1) + "\n")
        except BaseException:
            for temp in [t for t, _ in staged] + [journal_temp]:
                temp.unlink(missing_ok=True)
            raise
        os.replace(journal_temp, journal)
        # decided: an error from here on leaves the journal, and the next command (or `make derive`) finishes it
        _sync_dir(root)
        _checkpoint("journal written")
        for temp, target in staged:
            os.replace(temp, target)
            _drop_compiled(target)
            _checkpoint(f"renamed {_rel(target, root)}")
        for path in stale:
            path.unlink(missing_ok=True)
            _drop_compiled(path)
            _forget_imported(path)
            _checkpoint(f"deleted {_rel(path, root)}")
        for directory in {t.parent for _, t in staged} | {p.parent for p in stale}:
            _sync_dir(directory)
        journal.unlink()
        _checkpoint("journal removed")
        return sorted(_rel(t, root) for t in changed if t not in extra) + [_rel(p, root) for p in stale
                                                                          if p not in extra]
