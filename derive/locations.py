"""Where the files a user adds live: beside the sources in a checkout, in a per-user data folder when installed.

A checkout (the repository, or an editable install of it) keeps the user's activations in
derive/user_activations.json and everything generated in generated/, under version control. An installed copy
(``pip install .``, a wheel) never writes into its own folders: pip would not remove what it did not install, and
other users of a shared install cannot write there. It keeps them in ``$XDG_DATA_HOME/rnn-bptt-derive``
(``~/.local/share/rnn-bptt-derive`` when XDG_DATA_HOME is unset or not absolute): user_activations.json,
user_cells/ and generated/, where ``generated.load`` finds them. The generated package repeats this rule (it
must not import derive); a test checks the two agree.
"""
import os
from pathlib import Path

PROJECT = "rnn-bptt-derive"
# the repository in a checkout; site-packages/rnn_bptt_derive when installed (setup.py puts the packages there)
SOURCE_ROOT = Path(__file__).resolve().parent.parent


def is_checkout(root=SOURCE_ROOT):
    """Whether ``root`` is the source tree (setup.cfg beside the packages), not an installed copy."""
    return (root / "setup.cfg").is_file() and (root / "derive" / "catalogue.py").is_file()


def data_dir():
    """The per-user data folder of an installed copy (not created here)."""
    base = os.environ.get("XDG_DATA_HOME", "")
    return (Path(base) if os.path.isabs(base) else Path.home() / ".local" / "share") / PROJECT


def user_file():
    """The JSON file of the user's activations: derive/user_activations.json in a checkout."""
    if is_checkout():
        return SOURCE_ROOT / "derive" / "user_activations.json"
    return data_dir() / "user_activations.json"


def user_cells_dir():
    """The folder of the user's cell files: derive/user_cells in a checkout."""
    return SOURCE_ROOT / "derive" / "user_cells" if is_checkout() else data_dir() / "user_cells"


def generated_dir():
    """Where ``python -m codegen`` writes the generated modules: generated/ in a checkout."""
    return SOURCE_ROOT / "generated" if is_checkout() else data_dir() / "generated"
