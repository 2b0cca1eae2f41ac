"""The --impl worker starts safely whatever threads this process runs (checks/worker_spawn.py).

A fork copies one thread: a process that has imported torch or JAX (a test runner, a notebook, a program using
the Python API), or runs any other thread, is not forked; the worker is then a new interpreter on the same pipes.
These cases force that path and hold it to the forked worker's rules (tests/test_impl_isolation.py): the same
report, stdout untouched, exits and timeouts reported, memory files, nothing left running.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
from test_impl_isolation import ARGS, alive, assert_gone, interrupted_cleanly, module, wait_for_file

from gradcheck_cli.checks import worker, worker_spawn
from gradcheck_cli.checks.impl import Implementation
from gradcheck_cli.errors import InputError
from gradcheck_cli.inputs import fork_safety

# The worker says how it started: a spawned one has never seen pytest (this process, or a fork of it, has).
HOW_STARTED = "import sys\nsys.stderr.write('spawned\\n' if '_pytest' not in sys.modules else 'with pytest\\n')\n"
# The start of a function that writes its process's id where the test reads it.
WRITE_PID = "import os\ndef f(z, t):\n    open(os.environ['PID_FILE'], 'w').write(str(os.getpid()))\n"
# gradcheck run by a process that has a thread of its own (as a program embedding it may): never forked.
THREADED_GRADCHECK = ("import sys, threading; threading.Thread(target=threading.Event().wait, daemon=True).start(); "
                      "from gradcheck_cli.cli import main; main(prog_name='gradcheck')")


@pytest.fixture
def spawned(monkeypatch):
    """Every worker of the test is a new interpreter, as when this process has imported torch or JAX."""
    monkeypatch.setattr(fork_safety, "fork_is_safe", lambda: False)


def threaded_gradcheck(*args: str, **popen: object) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", THREADED_GRADCHECK, "check", *args], text=True,
                            stdin=subprocess.DEVNULL, **popen)  # type: ignore[call-overload]


@pytest.mark.parametrize(("prelude", "safe"), [
    ("", True),
    ("import threading; threading.Thread(target=threading.Event().wait, daemon=True).start()", False),
    ("import sys, types; sys.modules['jax'] = types.ModuleType('jax')", False),
    ("import sys, types; sys.modules['torch'] = types.ModuleType('torch')", False),
])
def test_fork_only_where_no_thread_would_be_lost(prelude, safe):
    """Protects the choice: a fork where the process runs one thread and no threaded runtime is loaded, never else
    (JAX warns at every fork, an error under -W error; torch's thread pool deadlocks in a forked child)."""
    code = f"{prelude}\nfrom gradcheck_cli.inputs.fork_safety import fork_is_safe; print(fork_is_safe())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == str(safe)


def test_a_spawned_worker_gives_the_same_report_as_a_call_in_this_process(gradcheck, tmp_path, monkeypatch):
    """The new interpreter calls the same function on the same values: the JSON report is identical, bit for bit,
    to that of the function called in this process (worker.can_fork False); only where it ran differs."""
    path = module(tmp_path, HOW_STARTED)
    monkeypatch.setattr(worker, "can_fork", lambda: False)
    here = gradcheck("check", *ARGS, "--impl", f"{path}:correct", "-f", "json")
    monkeypatch.setattr(worker, "can_fork", lambda: True)
    monkeypatch.setattr(fork_safety, "fork_is_safe", lambda: False)
    spawned = gradcheck("check", *ARGS, "--impl", f"{path}:correct", "-f", "json")
    assert here.exit_code == spawned.exit_code == 0, (here, spawned)
    assert here.stderr == "with pytest\n" and spawned.stderr == "spawned\n", (here, spawned)
    assert json.loads(here.stdout) == json.loads(spawned.stdout)


def test_a_spawned_worker_keeps_stdout_clean_and_reports_an_exit(gradcheck, tmp_path, spawned):
    """Output of the user's code (print, descriptor 1) goes to stderr; os._exit in a call is exit 2 saying so."""
    printing = module(tmp_path, "import os\nprint('at import')\nos.write(1, b'fd 1\\n')\nf = correct\n", "printing")
    run = gradcheck("check", *ARGS, "--impl", f"{printing}:f", "-f", "json")
    assert run.exit_code == 0 and json.loads(run.stdout)["passed"] is True, run
    assert "at import" in run.stderr and "fd 1" in run.stderr, run
    exiting = module(tmp_path, "import os\ndef f(z, t):\n    os._exit(3)\n", "exiting")
    run = gradcheck("check", *ARGS, "--impl", f"{exiting}:f")
    assert run.exit_code == 2 and run.stdout == "", run
    assert "ended the process running it with exit status 3 (os._exit?) while running f" in run.stderr, run


def test_the_interpreter_start_is_not_on_the_users_deadline(gradcheck, tmp_path, spawned, monkeypatch):
    """Starting the interpreter (slowed here to 1.5 s) has its own deadline: --impl-timeout 1 still passes, since
    it times the user's import and calls alone; an endless call still stops at it."""
    monkeypatch.setattr(worker_spawn, "_BOOT", "import time; time.sleep(1.5); " + worker_spawn._BOOT)
    quick = module(tmp_path, "")
    started = time.monotonic()
    run = gradcheck("check", *ARGS, "--impl", f"{quick}:correct", "--impl-timeout", "1")
    assert run.exit_code == 0 and time.monotonic() - started > 1.5, run
    looping = module(tmp_path, "def f(z, t):\n    while True:\n        pass\n", "looping")
    run = gradcheck("check", *ARGS, "--impl", f"{looping}:f", "--impl-timeout", "1")
    assert run.exit_code == 2 and "running f took longer than 1 s (--impl-timeout)" in run.stderr, run


def test_a_spawned_worker_shares_large_arrays_in_memory_files_and_is_reaped(tmp_path, spawned):
    """300 x 1,000 logits cross in memory files bit for bit (-0.0, a subnormal) both ways; closing kills and reaps
    the worker through its Popen (no ResourceWarning, an error here) and leaves no memory file open."""
    path = module(tmp_path, "import os\ndef echo(z, t):\n    return float(os.getpid()), z.copy()\n")
    logits = np.random.default_rng(5).standard_normal((300, 1000))
    logits[0, :2] = [-0.0, 5e-324]
    targets = np.eye(1000)[np.arange(300) % 1000]
    with Implementation.load(f"{path}:echo") as implementation:
        loss, gradient = implementation.call(logits, targets, "mean")
        assert np.array_equal(gradient.view(np.uint64), logits.view(np.uint64))
        worker_pid = int(loss)
        assert worker_pid != os.getpid() and alive(worker_pid)
    del gradient
    gc.collect()  # a Popen never waited for would warn here
    assert not alive(worker_pid)
    assert not any("memfd:" in os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
                   if os.path.exists(f"/proc/self/fd/{fd}"))


def test_a_threaded_gradcheck_killed_takes_its_spawned_worker_and_what_it_started(tmp_path, monkeypatch):
    """gradcheck in a process with a thread (so the worker is spawned), SIGKILLed while the user's function runs:
    the worker dies with it (PR_SET_PDEATHSIG), as a forked one does."""
    monkeypatch.setenv("PID_FILE", str(tmp_path / "pid"))
    source = HOW_STARTED + WRITE_PID + "    while True:\n        pass\n"
    process = threaded_gradcheck(*ARGS, "--impl", f"{module(tmp_path, source)}:f", stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE)
    try:
        worker_pid = int(wait_for_file(tmp_path / "pid", 60))
    finally:
        process.kill()
        _, stderr = process.communicate(timeout=30)
    assert "spawned" in stderr
    assert_gone(worker_pid)


def test_ctrl_c_stops_a_spawned_worker_and_exits_130(tmp_path, monkeypatch):
    """Ctrl-C while the spawned worker's function runs: exit 130, nothing on stdout, the worker gone."""
    monkeypatch.setenv("PID_FILE", str(tmp_path / "pid"))
    source = "import time\n" + WRITE_PID + "    time.sleep(600)\n"
    process = threaded_gradcheck(*ARGS, "--impl", f"{module(tmp_path, source)}:f", stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
    interrupted_cleanly(process, tmp_path / "pid", 60)


def test_a_spawned_worker_that_cannot_set_up_says_so_in_one_line(monkeypatch):
    """Protects spawned_main's own failure: a setup the new interpreter cannot unpickle (its module exists only in
    this process) is one InputError naming the new process, and that process is gone."""
    only_here = types.ModuleType("gradcheck_test_only_here")
    exec("def setup():\n    return lambda request: request\n", only_here.__dict__)
    monkeypatch.setitem(sys.modules, only_here.__name__, only_here)
    before = set(_children())
    with pytest.raises(InputError, match=r"^--impl: the Python process started to run it could not set up: "
                                         r"ModuleNotFoundError: No module named 'gradcheck_test_only_here'$"):
        worker_spawn.spawn_worker(only_here.setup, 10.0, "importing it", "it:f")
    gc.collect()
    assert set(_children()) == before


def _children() -> list[int]:
    """This process's children, live or zombie."""
    tasks = Path(f"/proc/{os.getpid()}/task")
    return [int(pid) for task in tasks.iterdir() for pid in (task / "children").read_text().split()]
