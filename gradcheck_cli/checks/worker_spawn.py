"""How the worker process starts: forked when that is safe, otherwise a new interpreter on the same pipes.

A fork is not safe where this process runs other threads (inputs/fork_safety.py: torch's or JAX's runtime, any
Python thread). There the worker is a fresh interpreter started by subprocess (fork-exec with no Python code in
between: no at-fork handler runs, no lock is inherited), with the parent's sys.path and working directory,
speaking the same frames on the same three pipes, so that its isolation, deadlines, memory files and cleanup are
worker_process's. It costs an interpreter start (about a second under load: numpy and gradcheck imported
again); that has its own deadline, so --impl-timeout still times the user's import alone.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from gradcheck_cli.checks.worker_process import Handler, WorkerProcess, fork_worker, make_pipes, ready, worker_main
from gradcheck_cli.checks.worker_wire import Frames, encode, read_frame
from gradcheck_cli.inputs import fork_safety
from gradcheck_cli.inputs.pipes import framed, write_all

# Seconds a new interpreter has to import numpy and gradcheck and say it has started (a cold, loaded CI machine).
START_TIMEOUT = 120.0
_BOOT = ("import sys; sys.path.insert(0, sys.argv[5]); "
         "from gradcheck_cli.checks.worker_spawn import spawned_main; spawned_main(sys.argv[1:5])")


def start_worker(setup: Callable[[], Handler], timeout: float, activity: str, spec: str) -> WorkerProcess | None:
    """A ready worker running `setup` (picklable where it is spawned); None if no process can be made."""
    if fork_safety.fork_is_safe():
        return fork_worker(setup, timeout, activity, spec)
    return spawn_worker(setup, timeout, activity, spec)


def spawn_worker(setup: Callable[[], Handler], timeout: float, activity: str, spec: str) -> WorkerProcess | None:
    """A worker in a new interpreter: sent `setup` as its first frame; raises the InputError of a failed setup."""
    import os

    first = framed(encode(("setup", spec, list(sys.path), pickle.dumps(setup)))[0])  # before any process starts
    (requests_read, requests), (answers, answers_write), (output, output_write) = make_pipes()
    ends = (requests_read, answers_write, output_write)
    root = str(Path(__file__).resolve().parents[2])  # the directory this gradcheck_cli is imported from
    command = [sys.executable, "-c", _BOOT, str(os.getpid()), *(str(fd) for fd in ends), root]
    try:
        popen = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output_write, stderr=output_write,
                                 pass_fds=ends, start_new_session=True)
    except (OSError, subprocess.SubprocessError):  # no interpreter to start: the caller runs the function here
        for fd in (*ends, requests, answers, output):
            os.close(fd)
        return None
    for fd in ends:
        os.close(fd)
    process = WorkerProcess(spec, popen.pid, requests, answers, output, timeout)
    process.spawned = popen
    process.outgoing += first
    return ready(process, activity, started=START_TIMEOUT)


def spawned_main(arguments: list[str]) -> None:
    """In the new interpreter: take the parent's sys.path and the setup, then live as a forked worker would. A
    failure before that is one "error" answer naming this process, not a traceback on the parent's stderr."""
    import os

    parent, requests, answers, output = (int(argument) for argument in arguments)
    try:
        message = read_frame(requests, Frames())
        if message is None:  # the parent went away before sending anything
            os._exit(0)
        _, spec, path, blob = message
        sys.path[:] = path
        setup = pickle.loads(blob)
    except Exception as error:  # noqa: BLE001 - whatever it is, the parent says it in one line
        failed = f"--impl: the Python process started to run it could not set up: {type(error).__name__}: {error}"
        write_all(answers, framed(encode(("error", failed))[0]))
        os._exit(0)
    worker_main(setup, spec, parent, (requests, answers, output), announce=True)
