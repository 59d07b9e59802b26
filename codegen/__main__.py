"""Command line of the code generator.

    python -m codegen                 regenerate generated/ from the catalogue (what `make derive` runs)
    python -m codegen --check         exit 1 with a unified diff when generated/ differs from what is emitted now
    python -m codegen add NAME EXPR   add a user activation (derived and rendered first; nothing changes on error);
                                      --keep-input: f' from E_t, not from h_t (accuracy over memory)
    python -m codegen remove NAME     remove a user activation
    python -m codegen list            the activations and their derivatives
"""
import argparse
import json
import sys
import time

from codegen.build import GENERATED, build, derive_all, drift, emit
from codegen.render import render, write_tree
from derive.catalogue import CATALOGUE, USER_FILE, Activation, all_activations, check_name, read_user_file
from derive.parse import parse_expression


def _add(name, text, user_file=USER_FILE, root=GENERATED, base=CATALOGUE, keep_input=False):
    """Derive and render the new activation with the whole catalogue before touching any file."""
    entries = read_user_file(user_file)
    check_name(name, {a.name for a in base} | set(entries))
    new = Activation(name, parse_expression(text), keep_input=keep_input)  # refuses bad text before the slow part
    entries[name] = {"expression": text, "keep_input": True} if keep_input else text
    content = json.dumps(dict(sorted(entries.items())), indent=2) + "\n"
    files = render(derive_all(all_activations(user_file, base) + (new,)))
    write_tree({user_file.name: content}, user_file.parent, pattern=None)  # the data file, atomically
    return write_tree(files, root)


def _remove(name, user_file=USER_FILE, root=GENERATED, base=CATALOGUE):
    entries = read_user_file(user_file)
    if name not in entries:
        raise SystemExit(f"error: {name!r} is not a user activation; user activations: {', '.join(entries) or 'none'}")
    del entries[name]
    content = json.dumps(dict(sorted(entries.items())), indent=2) + "\n"
    write_tree({user_file.name: content}, user_file.parent, pattern=None)
    return build(root, user_file, base=base)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m codegen", description=__doc__.splitlines()[1])
    parser.add_argument("--check", action="store_true", help="compare generated/ with what is emitted now")
    sub = parser.add_subparsers(dest="command")
    add = sub.add_parser("add", help="add a user activation, e.g. add swish2 'x*sigmoid(2*x)'")
    add.add_argument("name")
    add.add_argument("expression")
    add.add_argument("--keep-input", action="store_true",
                     help="keep E_t and take f' from it, not from h_t: accuracy over memory (see README)")
    rm = sub.add_parser("remove", help="remove a user activation")
    rm.add_argument("name")
    sub.add_parser("list", help="list the activations")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        if args.command == "add":
            changed = _add(args.name, args.expression, keep_input=args.keep_input)
            print(f"added {args.name!r}; {len(changed)} file(s) changed in generated/")
        elif args.command == "remove":
            changed = _remove(args.name)
            print(f"removed {args.name!r}; {len(changed)} file(s) changed in generated/")
        elif args.command == "list":
            for d in derive_all(all_activations()):
                form = f"  f'(h) = {d.df_h}" if d.uses_output else ""
                print(f"{d.name:12s} f = {d.f}   f' = {d.df}{form}")
        elif args.check:
            diff = drift(emit())
            if diff:
                sys.stdout.write(diff)
                print("\ngenerated/ differs from what the engine emits now: run `make derive` and commit the result.")
                return 1
            print("generated/ is up to date")
        else:
            changed = build()
            print(f"make derive: {len(changed)} file(s) changed in generated/ "
                  f"({time.perf_counter() - start:.1f} s)")
    except ValueError as e:  # ExpressionError and DerivationError: the user's input, said plainly
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
