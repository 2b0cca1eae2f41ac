"""Whether this process can fork safely (the read-ahead, inputs/readahead.py, the ndjson rows' formatter,
render/forked_writer.py, and the --impl worker, checks/worker_spawn.py, fork only then), and how a forked helper
ends with the process that forked it.

A fork copies only the thread that called it. Where another thread runs (a Python thread, or the thread pools of
torch's or JAX's runtime, started when imported or first used by a test runner, a notebook or a program using the
Python API), the child inherits locks that thread held and nobody will release: torch's OpenMP pool deadlocks in
the child's first parallel op, and JAX warns at every fork that it may deadlock (an error under -W error).
"""

from __future__ import annotations

import os
import sys
import threading
from contextlib import suppress

# Modules whose runtimes start threads of their own: where one is loaded, nothing forks.
THREADED_MODULES = ("torch", "jax", "jaxlib", "tensorflow")


def fork_is_safe() -> bool:
    """No thread a fork would lose: no other Python thread, and no threaded runtime loaded."""
    return threading.active_count() == 1 and not any(name in sys.modules for name in THREADED_MODULES)


def follow_parent(parent: int, keep_stdout: bool = False) -> None:
    """Make this forked helper end with the process that forked it (`parent`, its process id), however that ends.

    Ctrl-C is the parent's to handle; SIGTERM and SIGHUP (which it turns into a clean exit, and sends on
    leaving) end this one at once; the kernel sends SIGKILL when the parent dies (PR_SET_PDEATHSIG), and a
    parent that died before that was asked for is caught by getppid(). stdout is let go unless the helper
    writes the results (`keep_stdout`), so a reader of our output (`| jq`) never waits on a helper that does not.
    """
    import ctypes
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for stop in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop, signal.SIG_DFL)
    with suppress(OSError, AttributeError):  # no prctl: the helper's own checks of getppid() still notice
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(0)
    if not keep_stdout:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
