"""Command line of the code generator.

    python -m codegen                 regenerate generated/ from the catalogue (what `make derive` runs)
    python -m codegen --check         exit 1 with a unified diff when generated/ differs from what is emitted now
    python -m codegen add NAME EXPR   add a user activation (derived and rendered first; nothing changes on error);
                                      --keep-input: f' from E_t, not from h_t (accuracy over memory)
    python -m codegen remove NAME     remove a user activation
    python -m codegen list            the activations and their derivatives, then the cells' equations
    python -m codegen add-cell FILE   add a user cell from a .cell file (derived and rendered first; nothing changes
                                      on error); remove-cell NAME removes one

--timeout S (before or after the command) limits each derivation to S seconds (0: no limit); the default is
$RNN_BPTT_DERIVE_TIMEOUT, else 60 s.
"""
import argparse
import json
import sys
import textwrap
import time
from pathlib import Path

from codegen.build import (FROM_ENV, GENERATED, TIMEOUT_ENV, build, derive_all, derive_cells, drift,  # noqa: F401
                           emit)
from codegen.derivations import cached_derive_all
from codegen.render import render
from codegen.write import locked, write_tree
from derive.catalogue import (CATALOGUE, USER_FILE, Activation, all_activations, check_name, read_user_file,
                              user_activations)
from derive.cell import CELL_DIRS, read_cells
from derive.cellparse import CellError, check_cell_name, parse_cell_file
from derive.parse import ARITY, CONSTANTS, FUNCTIONS, parse_expression

# how this CLI is started: `python -m codegen` in the checkout, `python -m rnn_bptt_derive.codegen` when installed
PROG = f"python -m {__package__}"


def _timeout(text):
    """--timeout's value: seconds > 0, or 0 / none for no limit (None)."""
    if text.strip().lower() in ("0", "none", "off"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds (0 for no limit), got {text!r}")
    return value


def _add(name, text, user_file=USER_FILE, root=GENERATED, base=CATALOGUE, workers=None, cell_dirs=CELL_DIRS,
         timeout=FROM_ENV, keep_input=False):
    """Derive and render the new activation with the whole catalogue, then write the user file and generated/
    together (one transaction). The lock is held throughout, so a concurrent ``add`` reads the JSON after this
    one has written it and keeps both."""
    check_name(name, {a.name for a in base})
    # refuses bad text before the lock and the slow part
    new = Activation(name, parse_expression(text), keep_input=keep_input)
    with locked(root, [user_file, Path(cell_dirs[-1])]):
        entries = read_user_file(user_file)
        # an entry without its module is an add that an older version left half done: this add finishes it
        unfinished = {n for n in entries if not (Path(root) / f"rnn_{n}.py").exists()}
        check_name(name, (set(entries) - unfinished) | {c.name for c in read_cells(cell_dirs)})
        entries[name] = {"expression": text, "keep_input": True} if keep_input else text
        content = json.dumps(dict(sorted(entries.items())), indent=2) + "\n"
        # in make derive's order (user entries sorted by name), so that a later `make check` finds no drift
        user = sorted([a for a in user_activations(user_file, base) if a.name != name] + [new], key=lambda a: a.name)
        activations = list(base) + user
        files = render(cached_derive_all(activations, root, workers, timeout),
                       derive_cells(cell_dirs, workers, timeout))
        return write_tree(files, root, extra={user_file: content})


def _remove(name, user_file=USER_FILE, root=GENERATED, base=CATALOGUE, workers=None, cell_dirs=CELL_DIRS,
            timeout=FROM_ENV):
    """Remove a user activation: the user file and generated/ change together (one transaction)."""
    with locked(root, [user_file, Path(cell_dirs[-1])]):
        entries = read_user_file(user_file)
        if name not in entries:
            raise SystemExit(f"error: {name!r} is not a user activation; user activations: "
                             f"{', '.join(entries) or 'none'}")
        del entries[name]
        content = json.dumps(dict(sorted(entries.items())), indent=2) + "\n"
        kept = [a for a in all_activations(user_file, base) if a.name != name]
        files = render(cached_derive_all(kept, root, workers, timeout), derive_cells(cell_dirs, workers, timeout))
        return write_tree(files, root, extra={user_file: content})


def _add_cell(path, cell_dirs=CELL_DIRS, root=GENERATED, user_file=USER_FILE, base=CATALOGUE, workers=None,
              timeout=FROM_ENV):
    """Parse, derive and render the cell in ``path`` with everything else before writing anything; then copy the
    file into the user cells' folder (the last of ``cell_dirs``) and write generated/, as one transaction."""
    cell = parse_cell_file(path)  # refuses bad text, naming the equation and the symbol
    target = Path(cell_dirs[-1]) / f"{cell.name}.cell"

    def existing_cells():  # refuses a taken name: checked before the lock (no folder made), again under it
        existing = read_cells(cell_dirs)
        taken = {c.name for c in existing} | {a.name for a in all_activations(user_file, base)}
        check_cell_name(cell.name, taken, where=Path(path).name)
        return existing

    existing_cells()
    with locked(root, [user_file, target.parent]):
        existing = existing_cells()
        cells = sorted(existing + (cell,), key=lambda c: c.name)
        derivations = cached_derive_all(all_activations(user_file, base), root, workers, timeout)
        files = render(derivations, derive_cells(workers=workers, timeout=timeout, cells=cells))
        return cell.name, write_tree(files, root, extra={target: cell.source})


def _remove_cell(name, cell_dirs=CELL_DIRS, root=GENERATED, user_file=USER_FILE, base=CATALOGUE, workers=None,
                 timeout=FROM_ENV):
    """Remove a user cell: its file and its module go together (one transaction)."""
    target = Path(cell_dirs[-1]) / f"{name}.cell"
    with locked(root, [user_file, target.parent]):
        if not target.exists():
            users = sorted(p.stem for p in Path(cell_dirs[-1]).glob("*.cell"))
            raise CellError(f"{name!r} is not a user cell; user cells: {', '.join(users) or 'none'}")
        rest = tuple(c for c in read_cells(cell_dirs) if c.name != name)
        derivations = cached_derive_all(all_activations(user_file, base), root, workers, timeout)
        files = render(derivations, derive_cells(workers=workers, timeout=timeout, cells=rest))
        return write_tree(files, root, extra={target: None})


def _check(user_file=USER_FILE, root=GENERATED, base=CATALOGUE, workers=None, cell_dirs=CELL_DIRS,
           timeout=FROM_ENV):
    """The drift of ``root`` ('' when none), read under the lock: never a half-written tree."""
    with locked(root, [user_file, Path(cell_dirs[-1])]):
        return drift(emit(user_file, workers, base, cell_dirs, timeout), root)


def _expression_help():
    """What an expression may contain, from the parser's own tables (so the help cannot drift from them)."""
    calls = ", ".join(f"{name}(a, b)" if ARITY.get(name, 1) == 2 else name for name in sorted(FUNCTIONS))
    constants = ", ".join(c for c in CONSTANTS if c != "x")
    text = (f"EXPRESSION is in x, with numbers, the constants {constants}, the operators + - * / ** and unary "
            f"minus, and calls of these functions: {calls}. Anything else (other names, attributes, strings, "
            f"keyword arguments) is refused, quoting the text and its column.")
    return textwrap.fill(text, 100) + f"\n\nexample: {PROG} add swish2 'x*sigmoid(2*x)'"


EXPRESSION_HELP = _expression_help()


def main(argv=None):
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[1])
    parser.add_argument("--check", action="store_true", help="compare generated/ with what is emitted now")
    timeout_help = (f"limit on each derivation, in seconds (0: none; default ${TIMEOUT_ENV}, else 60)")
    parser.add_argument("--timeout", type=_timeout, metavar="S", default=FROM_ENV, help=timeout_help)
    sub = parser.add_subparsers(dest="command")
    add = sub.add_parser("add", help="add a user activation, e.g. add swish2 'x*sigmoid(2*x)'",
                         description=textwrap.fill(
                             "Add a user activation: it is derived and rendered with the whole catalogue first, "
                             "then derive/user_activations.json and generated/ are written together; on any error "
                             "nothing changes.", 100),
                         epilog=EXPRESSION_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add.add_argument("name", help="the new activation's name: a lowercase identifier (a letter, then letters, "
                                  "digits or '_', at most 40 characters) not already taken")
    add.add_argument("expression", help="the activation as an expression in x (quote it for the shell)")
    add.add_argument("--keep-input", action="store_true",
                     help="keep E_t and take f' from it, not from h_t: accuracy over memory (see README)")
    rm = sub.add_parser("remove", help="remove a user activation")
    rm.add_argument("name", help="a name added with `add` (catalogue entries cannot be removed)")
    lst = sub.add_parser("list", help="list the activations, then the cells' equations")
    add_cell = sub.add_parser("add-cell", help="add a user cell from a .cell file (see README, Cells from equations)")
    add_cell.add_argument("path")
    rm_cell = sub.add_parser("remove-cell", help="remove a user cell")
    rm_cell.add_argument("name")
    for p in (add, rm, lst, add_cell, rm_cell):  # also after the command; SUPPRESS keeps one given before it
        p.add_argument("--timeout", type=_timeout, metavar="S", default=argparse.SUPPRESS, help=timeout_help)
    args = parser.parse_args(argv)
    limit = {"timeout": args.timeout}
    start = time.perf_counter()
    try:
        if args.command == "add":
            changed = _add(args.name, args.expression, keep_input=args.keep_input, **limit)
            print(f"added {args.name!r}; {len(changed)} file(s) changed in generated/")
        elif args.command == "remove":
            changed = _remove(args.name, **limit)
            print(f"removed {args.name!r}; {len(changed)} file(s) changed in generated/")
        elif args.command == "add-cell":
            name, changed = _add_cell(args.path, **limit)
            print(f"added cell {name!r}; {len(changed)} file(s) changed in generated/")
        elif args.command == "remove-cell":
            changed = _remove_cell(args.name, **limit)
            print(f"removed cell {args.name!r}; {len(changed)} file(s) changed in generated/")
        elif args.command == "list":
            for d in derive_all(all_activations(), **limit):
                form = f"  f'(h) = {d.df_h}" if d.uses_output else ""
                print(f"{d.name:12s} f = {d.f}   f' = {d.df}{form}")
            for c in read_cells():
                print(f"cell {c.name:7s} " + "; ".join(e.text for e in c.equations))
        elif args.check:
            diff = _check(**limit)
            if diff:
                sys.stdout.write(diff)
                print("\ngenerated/ differs from what the engine emits now: run `make derive` and commit the result.")
                return 1
            print("generated/ is up to date")
        else:
            changed = build(**limit)
            print(f"make derive: {len(changed)} file(s) changed in generated/ "
                  f"({time.perf_counter() - start:.1f} s)")
    except ValueError as e:  # ExpressionError and DerivationError: the user's input, said plainly
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file that cannot be written or read (full disk, permissions): no traceback
        print(f"error: {e.filename}: {e.strerror}" if e.filename else f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C: the workers are already stopped; no traceback
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
