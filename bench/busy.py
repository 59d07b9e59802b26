"""A busy neighbour for the benchmarks: separate processes that each keep one core spinning while the timings run.

    with busy(1):
        ...  # measurements beside one spinning core

What users' laptops and shared servers look like: another program holds a core, and a thread that waits for that
core (a BLAS worker, an OpenMP thread) stalls whatever waits for it. The spinners are killed and reaped when the
block ends, also on an exception or Ctrl-C; should this process die without running that (SIGKILL), each spinner
sees that its parent changed and exits within milliseconds, so none is left behind.
"""
import contextlib
import os
import subprocess
import sys

# Ctrl-C reaches the whole foreground process group: the spinner ignores it and is stopped by its parent instead
SPIN = """\
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
parent = int(sys.argv[1])
while os.getppid() == parent:
    for _ in range(100000):
        pass
"""


@contextlib.contextmanager
def busy(cores=1):
    """Run ``cores`` spinning processes (0: none) for the duration of the block; yields their Popen objects."""
    spinners = []
    try:
        for _ in range(cores):
            spinners.append(subprocess.Popen([sys.executable, "-I", "-S", "-c", SPIN, str(os.getpid())],
                                             stdin=subprocess.DEVNULL))
        yield spinners
    finally:
        for p in spinners:
            p.kill()
        for p in spinners:
            p.wait()


def describe(cores):
    """One line for a benchmark's header."""
    if not cores:
        return "busy neighbour: none"
    return f"busy neighbour: {cores} process(es) spinning on {cores} of {os.cpu_count()} cores (--busy)"
