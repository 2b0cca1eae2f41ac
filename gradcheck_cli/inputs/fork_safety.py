"""Whether this process can fork safely: the read-ahead (inputs/readahead.py) and the --impl worker
(checks/worker_spawn.py) fork only then.

A fork copies only the thread that called it. Where another thread runs (a Python thread, or the thread pools of
torch's or JAX's runtime, started when imported or first used by a test runner, a notebook or a program using the
Python API), the child inherits locks that thread held and nobody will release: torch's OpenMP pool deadlocks in
the child's first parallel op, and JAX warns at every fork that it may deadlock (an error under -W error).
"""

from __future__ import annotations

import sys
import threading

# Modules whose runtimes start threads of their own: where one is loaded, nothing forks.
THREADED_MODULES = ("torch", "jax", "jaxlib", "tensorflow")


def fork_is_safe() -> bool:
    """No thread a fork would lose: no other Python thread, and no threaded runtime loaded."""
    return threading.active_count() == 1 and not any(name in sys.modules for name in THREADED_MODULES)
