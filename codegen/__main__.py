"""Command line of the code generator.

    python -m codegen                 regenerate generated/ from the catalogue (what `make derive` runs)
    python -m codegen --check         exit 1 with a unified diff when generated/ differs from what is emitted now
    python -m codegen add NAME EXPR   add a user activation (derived and rendered first; nothing changes on error)
    python -m codegen remove NAME     remove a user activation
    python -m codegen list            the activations and their derivatives

--timeout S (before or after the command) limits each derivation to S seconds (0: no limit); the default is
$RNN_BPTT_DERIVE_TIMEOUT, else 60 s.
"""
import argparse
import json
import sys
import time

from codegen.build import FROM_ENV, GENERATED, TIMEOUT_ENV, build, derive_all, drift, emit
from codegen.render import render, write_tree
from derive.catalogue import CATALOGUE, USER_FILE, Activation, all_activations, check_name, read_user_file
from derive.parse import parse_expression


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


def _add(name, text, user_file=USER_FILE, root=GENERATED, base=CATALOGUE, timeout=FROM_ENV):
    """Derive and render the new activation with the whole catalogue before touching any file."""
    entries = read_user_file(user_file)
    check_name(name, {a.name for a in base} | set(entries))
    new = Activation(name, parse_expression(text))  # refuses bad text before the slow part
    entries[name] = text
    content = json.dumps(dict(sorted(entries.items())), indent=2) + "\n"
    files = render(derive_all(all_activations(user_file, base) + (new,), timeout=timeout))
    write_tree({user_file.name: content}, user_file.parent, pattern=None)  # the data file, atomically
    return write_tree(files, root)


def _remove(name, user_file=USER_FILE, root=GENERATED, base=CATALOGUE, timeout=FROM_ENV):
    entries = read_user_file(user_file)
    if name not in entries:
        raise SystemExit(f"error: {name!r} is not a user activation; user activations: {', '.join(entries) or 'none'}")
    del entries[name]
    content = json.dumps(dict(sorted(entries.items())), indent=2) + "\n"
    write_tree({user_file.name: content}, user_file.parent, pattern=None)
    return build(root, user_file, base=base, timeout=timeout)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m codegen", description=__doc__.splitlines()[1])
    parser.add_argument("--check", action="store_true", help="compare generated/ with what is emitted now")
    timeout_help = (f"limit on each derivation, in seconds (0: none; default ${TIMEOUT_ENV}, else 60)")
    parser.add_argument("--timeout", type=_timeout, metavar="S", default=FROM_ENV, help=timeout_help)
    sub = parser.add_subparsers(dest="command")
    add = sub.add_parser("add", help="add a user activation, e.g. add swish2 'x*sigmoid(2*x)'")
    add.add_argument("name")
    add.add_argument("expression")
    rm = sub.add_parser("remove", help="remove a user activation")
    rm.add_argument("name")
    lst = sub.add_parser("list", help="list the activations")
    for p in (add, rm, lst):  # also after the command; SUPPRESS keeps a --timeout given before it
        p.add_argument("--timeout", type=_timeout, metavar="S", default=argparse.SUPPRESS, help=timeout_help)
    args = parser.parse_args(argv)
    limit = {"timeout": args.timeout}
    start = time.perf_counter()
    try:
        if args.command == "add":
            changed = _add(args.name, args.expression, **limit)
            print(f"added {args.name!r}; {len(changed)} file(s) changed in generated/")
        elif args.command == "remove":
            changed = _remove(args.name, **limit)
            print(f"removed {args.name!r}; {len(changed)} file(s) changed in generated/")
        elif args.command == "list":
            for d in derive_all(all_activations(), **limit):
                form = f"  f'(h) = {d.df_h}" if d.uses_output else ""
                print(f"{d.name:12s} f = {d.f}   f' = {d.df}{form}")
        elif args.check:
            diff = drift(emit(**limit))
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
    except KeyboardInterrupt:  # Ctrl-C: the workers are already stopped; no traceback
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
