"""Derivations in worker processes, each under a time limit, with no process left behind.

    derive_in_workers([Activation or Cell], workers, timeout) -> [Derivation or CellDerivation]   (same order)

SymPy cannot be interrupted inside a computation, so a derivation that runs past its limit is stopped by killing
the process it runs in. Each worker is a fresh Python started with ``subprocess`` (never a fork of the caller, which
may hold threads, JAX's or BLAS's; and not multiprocessing's spawn, which re-runs the caller's main script in the
child: a training script without ``if __name__ == "__main__"`` would start training again there). It takes the
caller's sys.path, then one activation at a time over a pipe, and reports each step's name as it starts
(``derive(activation, progress)``); the parent waits on the pipes with a deadline per derivation. On a time limit,
an error, Ctrl-C or SIGTERM the parent kills every worker before it returns or raises, and a worker whose parent
died without that (SIGKILL) exits on its own: the kernel signals it (Linux's PR_SET_PDEATHSIG) and, elsewhere, a
thread that watches the parent's pid ends it within a second.
"""
import math
import os
import signal
import subprocess
import sys
import threading
import time
from multiprocessing import connection

from derive.cell import derive_cell
from derive.cellparse import Cell, CellError
from derive.errors import DerivationError
from derive.recurrence import derive

DEFAULT_TIMEOUT = 60.0  # seconds per derivation; the whole catalogue takes 0.1-3 s each on a 2-core machine
TIMEOUT_ENV = "RNN_BPTT_DERIVE_TIMEOUT"
STARTUP_LIMIT = 60.0  # seconds a new worker may take to import SymPy and take its first task
FROM_ENV = object()  # the default of every ``timeout=``: $RNN_BPTT_DERIVE_TIMEOUT, else DEFAULT_TIMEOUT


def resolve_timeout(timeout=FROM_ENV):
    """The time limit in seconds (a positive float), or None for none.

    ``timeout`` left out reads $RNN_BPTT_DERIVE_TIMEOUT (seconds; "0" or "none" for no limit), else
    DEFAULT_TIMEOUT. Raises ValueError naming the argument or the variable for anything but a positive number.
    """
    source = "timeout"
    if timeout is FROM_ENV:
        text = os.environ.get(TIMEOUT_ENV, "").strip()
        if not text:
            return DEFAULT_TIMEOUT
        if text.lower() in ("0", "none", "off"):
            return None
        source = f"${TIMEOUT_ENV}"
        try:
            timeout = float(text)
        except ValueError:
            raise ValueError(f"{source} must be a number of seconds, or 0 or none for no limit, got {text!r}") from None
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) \
            or timeout <= 0:
        raise ValueError(f"{source} must be a positive number of seconds (or None for no limit), got {timeout!r}")
    return float(timeout)


def derive_one(task, progress=None):
    """An Activation's Derivation (``derive``) or a Cell's CellDerivation (``derive_cell``), here."""
    if isinstance(task, Cell):
        if progress is not None:
            progress("differentiating the equations")
        return derive_cell(task)
    return derive(task, progress) if progress is not None else derive(task)


def _what(task):
    """What deriving ``task`` means, for messages: its expression, or the cell's equations."""
    return f"the equations of the cell {task.name!r}" if isinstance(task, Cell) else _short(task.expr)


def derive_in_workers(activations, workers, timeout):
    """[Activation or Cell] -> [Derivation or CellDerivation] in ``workers`` worker processes, each derivation
    limited to ``timeout`` seconds (None: no limit). Raises DerivationError (CellError for a cell's own refusal) for
    the first one refused, failed or out of time; the message of a time limit names the activation and
    its expression, or the cell, and the step that ran out."""
    activations = list(activations)
    restore = _raise_on_sigterm()  # before any worker exists: no moment where SIGTERM would orphan one
    pool = _Pool()
    try:
        pool.start(min(workers, len(activations)))
        return pool.run(activations, timeout)
    finally:
        pool.close()
        restore()


# The worker's whole command: read sys.path from the task pipe, then serve. Its text marks it in a process list.
# this module by its own name: codegen.workers in the checkout, rnn_bptt_derive.codegen.workers when installed
_BOOT = ("import sys; from multiprocessing.connection import Connection; tasks = Connection(int(sys.argv[1])); "
         f"sys.path[:] = tasks.recv(); from {__name__} import _worker; "
         "_worker(tasks, Connection(int(sys.argv[2])), int(sys.argv[3]))")


class _Slot:
    """One worker process, the two pipes to it (tasks in, messages out), and the task it is on."""

    def __init__(self):
        task_r, task_w = os.pipe()
        msg_r, msg_w = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _BOOT, str(task_r), str(msg_w), str(os.getpid())],
                pass_fds=(task_r, msg_w), stdin=subprocess.DEVNULL)
        except BaseException:
            for fd in (task_r, task_w, msg_r, msg_w):
                os.close(fd)
            raise
        os.close(task_r)
        os.close(msg_w)
        self.tasks, self.conn = connection.Connection(task_w), connection.Connection(msg_r)
        self.index = self.deadline = self.step = None
        try:
            self.tasks.send(list(sys.path))
        except BaseException:  # not yet in the pool, so nothing else would stop it
            self.process.kill()
            self.process.wait()
            raise

    def give(self, index, activation, timeout):
        self.tasks.send((index, activation))
        self.index, self.step = index, "starting"
        # until the worker says it started, it may still be importing SymPy
        self.deadline = time.monotonic() + STARTUP_LIMIT + (timeout or 0) if timeout else None


class _Pool:
    def __init__(self):
        self.slots = []

    def start(self, count):
        for _ in range(count):
            self.slots.append(_Slot())

    def run(self, activations, timeout):
        results, pending = [None] * len(activations), list(range(len(activations)))[::-1]
        for slot in self.slots:
            if pending:
                i = pending.pop()
                slot.give(i, activations[i], timeout)
        busy = [s for s in self.slots if s.index is not None]
        while busy:
            deadlines = [s.deadline for s in busy if s.deadline is not None]
            wait = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            for conn in connection.wait([s.conn for s in busy], timeout=wait):
                slot = next(s for s in busy if s.conn is conn)
                a = activations[slot.index]
                try:
                    kind, index, value = conn.recv()
                except (EOFError, OSError):
                    raise DerivationError(f"{a.name}: the process deriving {_what(a)} ended unexpectedly "
                                          f"(exit code {_exit_code(slot.process)}) in step {slot.step!r}") from None
                if kind == "step":
                    if slot.step == "starting" and timeout:
                        slot.deadline = time.monotonic() + timeout
                    slot.step = value
                elif kind == "error":
                    raise value[0](value[1])
                else:
                    results[index] = value
                    slot.index = slot.deadline = slot.step = None
                    if pending:
                        i = pending.pop()
                        slot.give(i, activations[i], timeout)
            now = time.monotonic()
            for slot in busy:
                if slot.deadline is not None and now >= slot.deadline:
                    a = activations[slot.index]
                    raise DerivationError(
                        f"{a.name}: deriving {_what(a)} ran past the time limit of {timeout:g} s in step "
                        f"{slot.step!r}; allow more with timeout= ({__package__}.build.derive_all), --timeout "
                        f"(python -m {__package__}) or ${TIMEOUT_ENV}")
            busy = [s for s in self.slots if s.index is not None]
        return results

    def close(self):
        """Stop every worker: asked to, when idle; killed, when busy or slow to go."""
        for slot in self.slots:
            if slot.index is None:
                try:
                    slot.tasks.send(None)
                except OSError:
                    pass
            else:
                slot.process.kill()
        for slot in self.slots:
            try:
                slot.process.wait(2)
            except subprocess.TimeoutExpired:
                slot.process.kill()
                slot.process.wait()
            slot.tasks.close()
            slot.conn.close()


def _exit_code(process):
    try:
        return process.wait(1)
    except subprocess.TimeoutExpired:
        return "none yet"


def _short(expr, limit=120):
    text = str(expr)
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


def _raise_on_sigterm():
    """Turn SIGTERM into SystemExit while workers run, so that ``finally`` kills them; returns the undo.

    Python's default SIGTERM ends the process without unwinding. Signal handlers can only be set from the main
    thread: elsewhere nothing changes (the workers still notice a dead parent)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGTERM)
    if previous not in (signal.SIG_DFL, None):
        return lambda: None  # the program handles SIGTERM itself; do not take that from it

    def on_sigterm(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    return lambda: signal.signal(signal.SIGTERM, previous)


def _worker(tasks, conn, parent_pid):
    """A worker's life: take (index, Activation) from ``tasks`` until None or EOF; send each step, then the result or
    the error, on ``conn``."""
    # Ctrl-C reaches the whole process group; the parent decides what happens and kills the workers itself
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent(parent_pid)
    while True:
        try:
            task = tasks.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        index, activation = task

        def progress(step, index=index):
            conn.send(("step", index, step))

        try:
            progress("starting")
            reply = ("done", index, derive_one(activation, progress))
        except (DerivationError, CellError) as e:  # its own class, so the caller raises the same
            reply = ("error", index, (type(e), str(e)))
        except Exception as e:  # derive wraps SymPy's own failures; anything else is still reported, not lost
            reply = ("error", index, (DerivationError, f"{activation.name}: {type(e).__name__} while deriving "
                                                       f"{_what(activation)}: {e}"))
        conn.send(reply)


def _exit_with_parent(parent_pid):
    """End this process when ``parent_pid`` dies, however it dies (SIGKILL included)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            PR_SET_PDEATHSIG = 1
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="parent watch", daemon=True).start()
