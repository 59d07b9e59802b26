"""The writer (codegen/write.py): generated/ and the user file change together or not at all, even when the
process is killed at any step; concurrent writers serialise; written files have ordinary permissions.

The trees here hold only user activations (``base=()``) with cheap expressions, so each derivation takes ~0.1 s.
"""
import ast
import functools
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import codegen.build
import codegen.write as write
from codegen.__main__ import _add, _check, _remove, main
from codegen.build import build, drift, emit
from codegen.write import JOURNAL_NAME, LOCK_NAME, WriteError, locked, recover, write_tree
from derive.errors import DerivationError

REPO = Path(__file__).resolve().parent.parent
_derive_cached = functools.lru_cache(maxsize=None)(codegen.build.derive)

# Runs `add`, `remove` or `make derive` on copies of a scratch tree in one fresh process: first uninterrupted, to
# list the writer's steps, then once per step k in a forked child that dies (os._exit, no cleanup: as from SIGKILL)
# right after step k, leaving the tree it was writing in <dst>/killed<k>. Derivations are made once and reused
# (they are pure), so each child only renders and writes. Prints the list of steps.
KILL_SCRIPT = """
import json, os, shutil, sys
from functools import lru_cache
from pathlib import Path
import codegen.build
import codegen.build
import codegen.write as write
from codegen.__main__ import _add, _remove
from codegen.build import build
command, name, text, src, dst = sys.argv[1:6]
codegen.build.derive = lru_cache(maxsize=None)(codegen.build.derive)

def run(k):
    work = Path(dst) / f"killed{k}"
    shutil.copytree(src, work)
    user, root = work / "user_activations.json", work / "generated"
    if command == "add":
        _add(name, text, user, root, base=(), workers=1)
    elif command == "remove":
        _remove(name, user, root, base=(), workers=1)
    else:
        build(root, user, workers=1, base=())

steps = []
write._checkpoint = steps.append
run(0)
for k in range(1, len(steps) + 1):
    pid = os.fork()
    if pid == 0:
        seen = []
        def checkpoint(step):
            seen.append(step)
            if len(seen) == k:
                os._exit(17)
        write._checkpoint = checkpoint
        try:
            run(k)
        except BaseException:
            os._exit(3)
        os._exit(0)
    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if status != 17:
        sys.exit(f"the child for step {k} exited with {status}, not killed at that step")
print(json.dumps(steps))
"""


def snapshot(*paths):
    """{path relative to the first path's parent: bytes} of the given files and of every file under the given
    folders, the lock file and caches left out."""
    base = paths[0].parent
    files = [f for p in paths for f in ([p] if p.is_file() else sorted(p.rglob("*")))]
    return {f.relative_to(base).as_posix(): f.read_bytes() for f in files
            if f.is_file() and f.name != LOCK_NAME and "__pycache__" not in f.parts}


def listed_activations(root):
    """The names in ACTIVATIONS of root/__init__.py, read without importing it."""
    for node in ast.parse((root / "__init__.py").read_text()).body:
        if isinstance(node, ast.Assign) and node.targets[0].id == "ACTIVATIONS":
            return set(ast.literal_eval(node.value))
    raise AssertionError("no ACTIVATIONS in __init__.py")


def assert_no_leftovers(folder):
    leftovers = [p.name for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name == JOURNAL_NAME]
    assert not leftovers, f"left behind: {leftovers}"


def assert_consistent(user, root):
    """The user file, the modules, the LaTeX and ACTIVATIONS name the same activations; nothing half-written."""
    names = set(json.loads(user.read_text()))
    assert names == {p.name[4:-3] for p in root.glob("rnn_*.py")}
    assert names == {p.name[4:-4] for p in (root / "latex").glob("rnn_*.tex")}
    assert names == listed_activations(root)
    assert_no_leftovers(user.parent)
    assert drift(emit(user, workers=1, base=()), root) == ""


@pytest.fixture
def tree(tmp_path):
    """(user file, generated root) holding one user activation, 'kept'."""
    work = tmp_path / "work"
    work.mkdir()
    user, root = work / "user_activations.json", work / "generated"
    user.write_text('{\n  "kept": "x/2"\n}\n')
    build(root, user, workers=1, base=())
    return user, root


def copy_tree(src_dir, dst_dir):
    shutil.copytree(src_dir, dst_dir)
    return dst_dir / "user_activations.json", dst_dir / "generated"


def next_command(i, user, root):
    """One of the commands a user runs next, in turn: --check, make derive, the add again, a remove."""
    which = ("check", "derive", "add again", "remove")[i % 4]
    if which == "check":
        assert _check(user, root, base=(), workers=1) == ""
    elif which == "derive":
        build(root, user, workers=1, base=())
    elif which == "add again":
        try:
            _add("new", "sin(x)", user, root, base=(), workers=1)
        except DerivationError as e:  # the killed add had passed its commit point: it is there
            assert "already taken" in str(e)
    else:
        try:
            _remove("kept", user, root, base=(), workers=1)
        except SystemExit as e:  # the killed remove had passed its commit point: it is gone
            assert "not a user activation" in str(e)
    return which


@pytest.fixture(autouse=True)
def derive_once(monkeypatch):
    """Derivations are pure: make each once in this process (these tests run the same few many times)."""
    import codegen.build

    monkeypatch.setattr(codegen.build, "derive", _derive_cached)


@pytest.mark.parametrize("command, name, text", [("add", "new", "sin(x)"), ("remove", "kept", ""),
                                                 ("derive", "", "")])
def test_kill_at_every_step_leaves_the_old_or_the_new_state(tree, tmp_path, command, name, text):
    """Kill `add`, `remove` or `make derive` after each step of its write; recovery yields exactly the old or the
    new files, and the next command (check, derive, add, remove in turn; derive after a derive) finds them
    consistent and leaves no temporaries."""
    user, root = tree
    if command == "derive":  # an entry added by hand, which make derive generates
        user.write_text('{"kept": "x/2", "new": "sin(x)"}')
    old = snapshot(root, user)
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, command, name, text, str(user.parent), str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    steps = json.loads(proc.stdout)
    new = snapshot(tmp_path / "killed0" / "generated", tmp_path / "killed0" / "user_activations.json")
    assert new != old
    commit = steps.index("journal written") + 1
    assert steps[-1] == "journal removed" and commit >= 3

    for k in range(1, len(steps) + 1):
        killed = tmp_path / f"killed{k}"
        killed_user, killed_root = killed / "user_activations.json", killed / "generated"
        later_user, later_root = copy_tree(killed, tmp_path / f"later{k}")

        with locked(killed_root, [killed_user]):  # what every command does first
            pass
        assert snapshot(killed_root, killed_user) == (old if k < commit else new), f"killed after {steps[k - 1]}"
        assert_no_leftovers(killed)
        if command != "derive" or k >= commit:  # before, the hand-added entry still waits for make derive
            assert_consistent(killed_user, killed_root)

        which = next_command(1 if command == "derive" else k, later_user, later_root)
        try:
            assert_consistent(later_user, later_root)
        except AssertionError as e:
            raise AssertionError(f"{which} after a kill after {steps[k - 1]}: {e}") from e


@pytest.mark.parametrize("failing_write", range(1, 7))
def test_write_error_during_add_changes_nothing(tree, monkeypatch, failing_write):
    """A full disk at any of add's six writes (five files, then the journal) leaves every file as it was."""
    user, root = tree
    before = snapshot(root, user)
    real, calls = write._write_new, []

    def disk_full(path, content):
        calls.append(path)
        if len(calls) == failing_write:
            raise OSError(28, "No space left on device", str(path))
        real(path, content)

    monkeypatch.setattr(write, "_write_new", disk_full)
    with pytest.raises(OSError, match="No space"):
        _add("new", "sin(x)", user, root, base=(), workers=1)
    assert len(calls) == failing_write
    assert snapshot(root, user) == before
    assert not [p for p in user.parent.rglob("*.tmp")]
    monkeypatch.setattr(write, "_write_new", real)
    _add("new", "sin(x)", user, root, base=(), workers=1)
    assert_consistent(user, root)


def test_a_write_error_prints_one_line_not_a_traceback(monkeypatch, capsys):
    import codegen.__main__ as cli

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device", "generated/.rnn_x.py.0123.tmp")

    monkeypatch.setattr(cli, "_add", disk_full)
    assert main(["add", "x2", "2*x"]) == 1
    err = capsys.readouterr().err
    assert err == "error: generated/.rnn_x.py.0123.tmp: No space left on device\n"


# Two adds at once: each reads the user file, then waits (up to 3 s) until the other has read it too, so that
# without a lock both read the same old file and one activation is lost, every time.
CONCURRENT_SCRIPT = """
import sys, time
from pathlib import Path
import codegen.__main__ as cli
name, text, user, root, me, other = sys.argv[1:7]
real = cli.read_user_file
def read_then_wait(path):
    data = real(path)
    Path(me).touch()
    deadline = time.monotonic() + 3
    while not Path(other).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return data
cli.read_user_file = read_then_wait
changed = cli._add(name, text, Path(user), Path(root), base=(), workers=1)
print(f"added {name!r}; {len(changed)} file(s) changed")
"""


def test_two_adds_at_once_both_land(tree, tmp_path):
    user, root = tree
    flags = tmp_path / "read_a", tmp_path / "read_b"
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT_SCRIPT, name, text, str(user), str(root),
                               str(flags[i]), str(flags[1 - i])], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for i, (name, text) in enumerate([("first", "2*x"), ("second", "sin(x)")])]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    assert all(out.startswith("added") for out, _ in outs)
    assert set(json.loads(user.read_text())) == {"kept", "first", "second"}
    assert_consistent(user, root)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)],
                         ids=["umask022", "umask002", "umask077"])
def test_written_files_have_the_mode_the_umask_gives(tmp_path, umask, mode):
    user, root = tmp_path / "user.json", tmp_path / "generated"
    old = os.umask(umask)
    try:
        write_tree({"__init__.py": "A\n", "latex/rnn_a.tex": "B\n"}, root, extra={user: "{}\n"})
        write_tree({"__init__.py": "A2\n", "latex/rnn_a.tex": "B\n"}, root, extra={user: "{}\n"})  # a rewrite
    finally:
        os.umask(old)
    for path in (root / "__init__.py", root / "latex" / "rnn_a.tex", user, root / LOCK_NAME):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path


def test_files_an_older_version_wrote_0600_get_the_umask_mode(tmp_path):
    """A regeneration that changes no text still opens up the 0600 files the old writer (mkstemp) left."""
    root = tmp_path / "generated"
    write_tree({"__init__.py": "A\n", "rnn_a.py": "B\n"}, root)
    (root / "rnn_a.py").chmod(0o600)
    old = os.umask(0o022)
    try:
        changed = write_tree({"__init__.py": "A\n", "rnn_a.py": "B\n"}, root)
    finally:
        os.umask(old)
    assert changed == ["rnn_a.py"]
    assert stat.S_IMODE((root / "rnn_a.py").stat().st_mode) == 0o644


def test_add_finishes_an_add_an_older_version_left_half_done(tree):
    """The old crash states: a name in the user file without its module, and one in ACTIVATIONS without it."""
    user, root = tree
    user.write_text('{"kept": "x/2", "new": "sin(x)"}')  # the JSON written, generated/ not
    _add("new", "sin(x)", user, root, base=(), workers=1)  # the retry the old version refused: "already taken"
    assert_consistent(user, root)

    user.write_text('{"kept": "x/2", "other": "2*x"}')  # a retry may also change the expression
    (root / "rnn_other.py").unlink(missing_ok=True)
    _add("other", "x/3", user, root, base=(), workers=1)
    assert json.loads(user.read_text())["other"] == "x/3"
    with pytest.raises(DerivationError, match="already taken"):  # a finished one stays taken
        _add("other", "x/4", user, root, base=(), workers=1)

    (root / "rnn_other.py").unlink()  # ACTIVATIONS names a module that is not there
    build(root, user, workers=1, base=())
    assert_consistent(user, root)


def test_add_of_a_name_sorting_first_leaves_no_drift(tree):
    """add writes ACTIVATIONS in make derive's order (user entries by name), not the new one last."""
    user, root = tree
    _add("early", "2*x", user, root, base=(), workers=1)
    assert _check(user, root, base=(), workers=1) == ""


def test_stray_temporaries_are_removed_and_check_passes(tree):
    """Temporaries a killed older version left (mkstemp names) no longer count as drift forever."""
    user, root = tree
    strays = [root / ".rnn_kept.py.k3_x9q.tmp", root / "latex" / ".rnn_kept.tex.abcd.tmp",
              user.parent / f".{user.name}.zz12.tmp"]
    for s in strays:
        s.write_text("half a file")
    assert _check(user, root, base=(), workers=1) == ""
    assert not any(s.exists() for s in strays)
    assert_consistent(user, root)


def test_a_journal_naming_a_file_outside_is_refused(tree):
    user, root = tree
    (root / JOURNAL_NAME).write_text(json.dumps({"renames": [], "deletions": ["../../elsewhere.py"]}))
    with pytest.raises(WriteError, match="elsewhere.py"):
        recover(root, [user])


@pytest.mark.parametrize("bad", ["../x.py", "/tmp/x.py", "latex/.rnn_a.tex.1234.tmp", JOURNAL_NAME])
def test_write_tree_refuses_paths_outside_its_root(tmp_path, bad):
    with pytest.raises(ValueError, match="not a plain path"):
        write_tree({bad: "x"}, tmp_path)


def test_an_extra_file_given_none_is_deleted_in_the_same_transaction(tmp_path, monkeypatch):
    """remove-cell deletes the user's .cell file and the cell's module together: a kill after the journal is
    written leaves a journal that names both, and the next command (recovering with the folder allowed) finishes."""
    root, cells = tmp_path / "g", tmp_path / "cells"
    cells.mkdir()
    (cells / "mine.cell").write_text("cell mine\n")
    write_tree({"cell_mine.py": "x = 1\n", "keep.py": "y = 2\n"}, root, extra={cells / "mine.cell": "cell mine\n"})

    def die_after_journal(step):
        if step == "journal written":
            raise KeyboardInterrupt  # stands in for a kill: the transaction is decided but not applied

    monkeypatch.setattr(write, "_checkpoint", die_after_journal)
    with pytest.raises(KeyboardInterrupt):
        write_tree({"keep.py": "y = 2\n"}, root, extra={cells / "mine.cell": None})
    assert (root / JOURNAL_NAME).exists() and (cells / "mine.cell").exists()
    monkeypatch.setattr(write, "_checkpoint", lambda step: None)
    with locked(root, [cells]):  # what the next command does: roll the journal forward
        pass
    assert not (root / JOURNAL_NAME).exists()
    assert not (cells / "mine.cell").exists() and not (root / "cell_mine.py").exists()
    assert (root / "keep.py").read_text() == "y = 2\n"


# --- compiled copies of a replaced or removed module -------------------------------------------------------------
# Python takes __pycache__/<module>.*.pyc for a source with the size and modification second it records: a module
# replaced by one of the same size in the same second (forced here with os.utime) must not run the old code.

def _import_value(root, module="rnn_x"):
    """``module.VALUE`` as a new process imports it from ``root`` (writing its bytecode as usual)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    code = f"import sys; sys.path.insert(0, {str(root)!r}); import {module}; print({module}.VALUE)"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env=env).stdout.strip()


def _compiled(root, module="rnn_x"):
    return sorted(p.name for p in (root / "__pycache__").glob(f"{module}.*")) if (root / "__pycache__").is_dir() else []


def _same_stamp(path, like_ns):
    os.utime(path, ns=(like_ns, like_ns))


def test_a_module_replaced_with_the_same_size_and_second_is_not_served_from_the_old_bytecode(tmp_path):
    root = tmp_path / "gen"
    write_tree({"rnn_x.py": 'VALUE = "A"\n'}, root, pattern=None)
    assert _import_value(root) == "A" and _compiled(root)  # the old module's bytecode is cached
    old_ns = (root / "rnn_x.py").stat().st_mtime_ns
    assert write_tree({"rnn_x.py": 'VALUE = "B"\n'}, root, pattern=None) == ["rnn_x.py"]
    assert not _compiled(root)
    _same_stamp(root / "rnn_x.py", old_ns)  # the worst case: the stamp the old bytecode records
    assert _import_value(root) == "B"


def test_a_removed_module_leaves_no_compiled_copy_for_a_later_one_of_the_same_size(tmp_path):
    root = tmp_path / "gen"
    write_tree({"rnn_x.py": 'VALUE = "A"\n', "rnn_x_two.py": 'VALUE = "2"\n'}, root, pattern=None)
    assert _import_value(root) == "A" and _import_value(root, "rnn_x_two") == "2"
    numba_index = root / "__pycache__" / "rnn_x.step_loop-40.py311.nbi"  # Numba's cache checks the same stamp
    numba_index.write_bytes(b"")
    old_ns = (root / "rnn_x.py").stat().st_mtime_ns
    assert write_tree({"rnn_x_two.py": 'VALUE = "2"\n'}, root, pattern=("rnn_*.py",)) == ["rnn_x.py"]
    assert not _compiled(root) and _compiled(root, "rnn_x_two")  # only the removed module's
    (root / "rnn_x.py").write_text('VALUE = "B"\n')  # added again, as an older version of this writer would
    _same_stamp(root / "rnn_x.py", old_ns)
    assert _import_value(root) == "B"


def test_a_journal_rolled_forward_drops_the_compiled_copies_too(tmp_path, monkeypatch):
    root = tmp_path / "gen"
    write_tree({"rnn_x.py": 'VALUE = "A"\n'}, root, pattern=None)
    assert _import_value(root) == "A"
    old_ns = (root / "rnn_x.py").stat().st_mtime_ns

    class Killed(BaseException):
        pass

    def kill(step):
        if step == "renamed rnn_x.py":
            raise Killed

    monkeypatch.setattr(write, "_checkpoint", kill)
    monkeypatch.setattr(write, "_drop_compiled", lambda path: None, raising=False)  # killed before it ran
    with pytest.raises(Killed):
        write_tree({"rnn_x.py": 'VALUE = "B"\n'}, root, pattern=None)
    monkeypatch.undo()
    assert (root / JOURNAL_NAME).exists() and _compiled(root)
    recover(root)
    assert not _compiled(root)
    _same_stamp(root / "rnn_x.py", old_ns)
    assert _import_value(root) == "B"


def test_a_staged_module_never_shares_the_size_and_second_of_the_file_it_replaces(tmp_path):
    old, new = tmp_path / "rnn_x.py", tmp_path / ".rnn_x.py.0.tmp"
    old.write_text('VALUE = "A"\n')
    new.write_text('VALUE = "B"\n')
    _same_stamp(new, old.stat().st_mtime_ns)
    write._distinct_stamp(new, old)
    assert int(new.stat().st_mtime) == int(old.stat().st_mtime) - 1


def test_a_removed_module_is_forgotten_by_this_process(tmp_path):
    """A module deleted by write_tree leaves sys.modules too: `remove` then generated.load of the name in the same
    process imports afresh and finds it gone (load no longer looks at the folder on every call)."""
    import importlib.util
    import sys

    root = tmp_path / "gen"
    write_tree({"rnn_gone.py": "VALUE = 1\n", "rnn_kept.py": "VALUE = 2\n"}, root, pattern=None)
    for stem in ("rnn_gone", "rnn_kept"):
        spec = importlib.util.spec_from_file_location(f"forget_test.{stem}", root / f"{stem}.py")
        sys.modules[spec.name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[spec.name])
    try:
        write_tree({"rnn_kept.py": "VALUE = 2\n"}, root, pattern=("rnn_*.py",))
        assert "forget_test.rnn_gone" not in sys.modules and "forget_test.rnn_kept" in sys.modules
    finally:
        sys.modules.pop("forget_test.rnn_gone", None)
        sys.modules.pop("forget_test.rnn_kept", None)
