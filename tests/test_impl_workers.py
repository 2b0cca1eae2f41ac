"""The Taylor check's calls on a second worker (issue 13, the --impl row at 8 x 50,257): where a core is spare, the
Taylor calls asked ahead run in a second worker process beside the first (impl.Implementation.start_taylor_side),
with the same answers, so the same reports byte for byte; it starts only where its conditions hold; and it has
the first worker's guarantees: output to stderr, --impl-timeout, a crash, exit or exception is exit 2 with one
line, and no process is left after a run, a failing run, a crash of it, or SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gradcheck_cli.checks import impl, worker, worker_keys
from gradcheck_cli.checks.impl import Implementation
from gradcheck_cli.checks.returned import Along, Calling
from gradcheck_cli.checks.worker_process import WorkerProcess
from gradcheck_cli.errors import InputError
from gradcheck_cli.inputs import fork_safety

# Forked workers are what these tests watch: run before any test brings torch's or JAX's threads (conftest.py).
pytestmark = pytest.mark.forks
ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "my_softmax.py"
TWO_CPUS = pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2
                              or not worker.can_fork(), reason="a second worker needs 2 CPUs and fork (Linux)")
SMALL = ("--logits", "1.1,2.2,0.2,-1.7", "--logits", "1,2,3,0.5", "--labels", "2,1")

# The user's module: every call appends the pid of the process running it to $PIDS; at uniform logits (the Taylor
# check's first call on the second worker, and only there) it does what $WHAT says.
WATCHED = textwrap.dedent("""
    import os, signal, sys, time
    import numpy as np

    if os.environ.get("MARK"):  # imported once only: the second import (the second worker's) fails
        if os.path.exists(os.environ["MARK"]):
            raise ImportError("imported a second time")
        open(os.environ["MARK"], "w").close()

    def correct(z, t):
        m = z.max(1, keepdims=True)
        ls = z - m - np.log(np.exp(z - m).sum(1, keepdims=True))
        return -(t * ls).sum() / len(z), (np.exp(ls) - t) / len(z)

    def f(z, t):
        with open(os.environ["PIDS"], "a") as pids:
            pids.write(f"{os.getpid()}\\n")
        what = os.environ.get("WHAT", "")
        if not z.any():
            if what == "crash":
                os.kill(os.getpid(), signal.SIGSEGV)
            if what == "exit":
                os._exit(3)
            if what == "raise":
                raise RuntimeError("at uniform logits")
            if what == "sleep":
                time.sleep(600)
            if what == "print":
                print("printed at uniform logits")
        loss, gradient = correct(z, t)
        if what == "slip":
            gradient[0, 0] *= 1.001
        return loss, gradient
""")


def _watched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, what: str = "") -> str:
    path = tmp_path / "watched.py"
    path.write_text(WATCHED)
    monkeypatch.setenv("PIDS", str(tmp_path / "pids"))
    monkeypatch.setenv("WHAT", what)
    return f"{path}:f"


def _pids(tmp_path: Path) -> list[int]:
    """The processes that ran the function, in the order of their first call."""
    path = tmp_path / "pids"
    seen = path.read_text().split() if path.exists() else []
    return list(dict.fromkeys(int(pid) for pid in seen))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _assert_gone(pids: list[int], seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    left = [pid for pid in pids if _alive(pid)]
    for pid in left:  # processes this test started: leave nothing behind, then fail
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes {left} outlived gradcheck"


def _gradcheck_process(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-P", "-m", "gradcheck_cli", "check", *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL, cwd=ROOT)


def _json_input(tmp_path: Path, rows: int, classes: int, scale: float = 3.0) -> Path:
    rng = np.random.default_rng(rows * 31 + classes)
    path = tmp_path / f"n{rows}_c{classes}.json"
    logits = np.round(rng.standard_normal((rows, classes)) * scale, 6)
    path.write_text(json.dumps({"logits": logits.tolist(), "labels": rng.integers(0, classes, rows).tolist()}))
    return path


def _started(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The second workers started (worker.start_another's answers), recorded."""
    started: list[Any] = []
    start_another = impl.start_another

    def recorded(*args: Any) -> Any:
        started.append(start_another(*args))
        return started[-1]

    monkeypatch.setattr(impl, "start_another", recorded)
    return started


# --- the same calls, the same answers: the same reports ---------------------------------------------------------

@TWO_CPUS
@pytest.mark.parametrize("function", [
    f"{EXAMPLE}:softmax_cross_entropy", f"{EXAMPLE}:forgot_one_over_n", f"{EXAMPLE}:naive_softmax_cross_entropy",
    "slips:one_element", "slips:loss_scaled",
])
@pytest.mark.parametrize("shape", [(2, 40), (3, 7)])
def test_one_and_two_workers_give_byte_identical_reports(gradcheck: Callable[..., Any], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch, function: str,
                                                         shape: tuple[int, int], planted_slips: Path) -> None:
    """Protects "nothing changes but the time": the JSON report of a check with the Taylor calls on a second
    worker is byte for byte the one-worker report, for a passing function and planted slips (examples/my_softmax.py's
    and conftest's), with the directional check (2 x 40) and the elementwise one (3 x 7); the second worker did
    start, and the Taylor check ran."""
    function = function.replace("slips:", f"{planted_slips}:")
    path = _json_input(tmp_path, *shape, scale=300.0 if "naive" in function else 3.0)  # naive overflows there
    arguments = ("check", "-i", str(path), "--impl", function, "-f", "json")
    started = _started(monkeypatch)
    two = gradcheck(*arguments)
    assert len(started) == 1 and started[0] is not None
    monkeypatch.setattr(impl, "_spare_cpu", lambda: False)
    one = gradcheck(*arguments)
    assert len(started) == 1  # not asked again: one worker
    assert two.exit_code == one.exit_code and two.stdout == one.stdout and two.stderr == one.stderr
    names = [check["name"] for check in json.loads(one.stdout)["checks"]]
    assert "impl taylor" in names or "naive" in function, names  # naive: a loss that is not finite there


@TWO_CPUS
def test_the_taylor_calls_run_on_the_second_worker_and_every_other_on_the_first(
        gradcheck: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Protects the routing: of the 84 calls of a 2 x 40 check, 41 of the Taylor check's 49 (its loss at uniform
    logits and the 40 points along v1, -v1, v2, -v2, v3) are sent to the second worker, and 43 to the first: the two
    at the logits, the directional check's point and 2 x 16 directions, then the 8 Taylor points along -v3
    (impl.FIRST_WORKER_TAYLOR: both workers end about together, and -v3 is read last), in that order; no call is
    made twice (the Taylor check's loss at the logits is still the first call's)."""
    sent: dict[int, list[Any]] = {}
    send = WorkerProcess.send

    def sending(self: WorkerProcess, message: Any, activity: str) -> None:
        sent.setdefault(self.pid, []).append(message)
        send(self, message, activity)

    monkeypatch.setattr(WorkerProcess, "send", sending)
    run = gradcheck("check", "-i", str(_json_input(tmp_path, 2, 40)), "--impl", f"{EXAMPLE}:softmax_cross_entropy")
    assert run.exit_code == 0, run
    first, second = sent.values()  # in the order each worker was first sent a request
    assert len(first) == 43 and len(second) == 41
    assert not any(isinstance(message[2], Along) for message in first[:35])
    assert all(isinstance(message[2], Along) and message[2].position == 5 for message in first[35:])
    assert sum(isinstance(message[2], Along) and message[2].position != 5 for message in second) == 40
    uniform = second[0]  # the loss at uniform logits, loss only, asked first
    assert uniform[2] is None and uniform[3] and not np.any(uniform[0])


def _one_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})


def _small_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(impl, "TAYLOR_SIDE_BYTES", 2 * 40 * 8 * 2 - 1)  # one byte under these logits and targets


def _threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fork_safety, "fork_is_safe", lambda: False)


@TWO_CPUS
@pytest.mark.parametrize(("condition", "options"), [
    (_one_cpu, ()), (_small_bound, ()), (_threads, ()), (None, ("--loss", "mse")), (None, ("--dtype", "bfloat16")),
])
def test_no_second_worker_where_a_condition_fails(gradcheck: Callable[..., Any], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch, condition: Any,
                                                  options: tuple[str, ...]) -> None:
    """Protects the conditions of Implementation.start_taylor_side: one CPU ours, logits and targets over
    TAYLOR_SIDE_BYTES, threads a fork would lose (a spawned interpreter costs what it would save), or no Taylor
    check (--loss mse; bfloat16 steps the dtype cannot resolve): every call on the one worker, as before."""
    if condition is not None:
        condition(monkeypatch)
    started = _started(monkeypatch)
    spec = _watched(tmp_path, monkeypatch)
    function = spec if "mse" not in options else f"{EXAMPLE}:mse"
    run = gradcheck("check", "-i", str(_json_input(tmp_path, 2, 40)), "--impl", function, *options)
    assert run.exit_code == 0, run
    assert all(caller is None for caller in started)
    assert len(_pids(tmp_path)) <= 1  # the one worker (mse: not the watched function)


def test_an_empty_ask_hashes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Protects worker._Worker.ahead with no edits (the first worker's share of the Taylor points where no second
    worker runs): it returns before any fingerprint, which would hash the logits and targets for nothing (a GB of
    them at a 128k vocabulary)."""
    def hashed(array: np.ndarray) -> Any:
        raise AssertionError("fingerprinted for an empty ask")

    monkeypatch.setattr(worker_keys, "fingerprint", hashed)
    nobody: Any = None  # returned before the worker itself is touched
    worker._Worker.ahead(nobody, np.zeros((2, 3)), np.zeros((2, 3)), [], loss_only=True)


def test_torch_and_jax_functions_never_get_a_second_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Protects the numpy-only rule: with --framework torch or jax (their own threads and device memory are not
    doubled) Implementation.load gives no way to start a second worker; with numpy it does."""
    monkeypatch.setattr(impl, "start", lambda spec, seconds, calling: worker.InProcess(spec, lambda z, t: (0, z)))
    for framework, expected in (("numpy", True), ("torch", False), ("jax", False)):
        implementation = Implementation.load("mod:f", calling=Calling(framework=framework))
        assert (implementation.another is not None) == expected
        assert implementation.start_taylor_side(np.zeros((1, 2)), np.zeros((1, 2))) == (expected and
                                                                                        worker.can_fork())
        implementation.close()


# --- the second worker's guarantees -----------------------------------------------------------------------------


@TWO_CPUS
@pytest.mark.parametrize(("what", "code"), [("", 0), ("slip", 1)])
def test_no_process_is_left_after_a_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, what: str,
                                        code: int) -> None:
    """Protects closing both workers: after a passing run (exit 0) and a failing one (exit 1), both processes that
    ran the function are gone."""
    run = _gradcheck_process(*SMALL, "--impl", _watched(tmp_path, monkeypatch, what), "-q")
    assert run.returncode == code, run
    pids = _pids(tmp_path)
    assert len(pids) == 2, pids
    _assert_gone(pids)


@TWO_CPUS
@pytest.mark.parametrize(("what", "said"), [
    ("crash", ("the process running your code was killed by SIGSEGV (a crash in your code or a library it calls) "
               "while running f; gradcheck takes that as an error, never as a pass")),
    ("exit", "your code ended the process running it with exit status 3 (os._exit?) while running f"),
    ("raise", "f raised RuntimeError: at uniform logits"),
])
def test_a_crash_exit_or_exception_in_the_second_worker_is_exit_2_with_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, what: str, said: str) -> None:
    """Protects the second worker's failures: they end the run with exit 2 and one line saying what happened
    (never a verdict, never a traceback), and no process is left."""
    spec = _watched(tmp_path, monkeypatch, what)
    run = _gradcheck_process(*SMALL, "--impl", spec)
    assert run.returncode == 2 and run.stdout == "", run
    assert run.stderr.count("\n") == 1 and said in run.stderr and run.stderr.startswith(f"gradcheck: error: --impl {spec}: "), run
    pids = _pids(tmp_path)
    assert len(pids) == 2, pids
    _assert_gone(pids)


@TWO_CPUS
def test_a_call_of_the_second_worker_over_the_timeout_is_stopped(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Protects --impl-timeout on the second worker: a call that never ends there is stopped at the timeout,
    exit 2 with one line, and no process is left."""
    spec = _watched(tmp_path, monkeypatch, "sleep")
    started = time.monotonic()
    run = _gradcheck_process(*SMALL, "--impl", spec, "--impl-timeout", "1")
    assert time.monotonic() - started < 60
    assert run.returncode == 2 and run.stdout == "", run
    assert f"--impl {spec}: running f took longer than 1 s (--impl-timeout); its process was stopped" in run.stderr
    _assert_gone(_pids(tmp_path))


@TWO_CPUS
def test_what_the_second_worker_prints_goes_to_stderr(gradcheck: Callable[..., Any], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Protects the second worker's output: what the function prints there reaches stderr, and the JSON on
    stdout is the report of a function that prints nothing."""
    quiet = gradcheck("check", *SMALL, "--impl", _watched(tmp_path, monkeypatch), "-f", "json")
    printing = gradcheck("check", *SMALL, "--impl", _watched(tmp_path, monkeypatch, "print"), "-f", "json")
    assert printing.exit_code == quiet.exit_code == 0
    assert printing.stdout == quiet.stdout
    assert printing.stderr == "printed at uniform logits\n"


@TWO_CPUS
def test_an_import_failing_in_the_second_worker_is_exit_2_with_one_line(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Protects the second worker's import, which is not waited for when it starts: a module whose second import
    fails ends the run with exit 2 and one line at the second worker's first answer, and no process is left."""
    monkeypatch.setenv("MARK", str(tmp_path / "imported"))
    spec = _watched(tmp_path, monkeypatch)
    run = _gradcheck_process(*SMALL, "--impl", spec)
    assert run.returncode == 2 and run.stdout == "", run
    assert run.stderr == f"gradcheck: error: --impl {spec}: cannot import {spec[:-2]}: ImportError: imported a second time\n"
    _assert_gone(_pids(tmp_path))


@TWO_CPUS
@pytest.mark.parametrize(("stop", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_or_ctrl_c_while_the_second_worker_computes_stops_both(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop: signal.Signals, code: int) -> None:
    """Protects the cleanup on SIGTERM and Ctrl-C: with the second worker in a call, gradcheck exits 143 or 130
    as anywhere else, nothing on stdout, and both workers are gone."""
    spec = _watched(tmp_path, monkeypatch, "sleep")
    process = subprocess.Popen([sys.executable, "-m", "gradcheck_cli", "check", *SMALL, "--impl", spec],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                               cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while len(_pids(tmp_path)) < 2:  # the second worker is in its sleeping call once it has written its pid
            assert time.monotonic() < deadline and process.poll() is None, "the second worker never ran"
            time.sleep(0.02)
        process.send_signal(stop)
        stdout, _ = process.communicate(timeout=30)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == code and stdout == ""
    _assert_gone(_pids(tmp_path))


@TWO_CPUS
def test_close_stops_both_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Protects Implementation.close: both workers are killed and reaped, the second even while it computes."""
    monkeypatch.setenv("WHAT", "sleep")
    spec = _watched(tmp_path, monkeypatch, "sleep")
    logits, targets = np.array([[1.0, 2.0, 0.5]]), np.array([[0.0, 1.0, 0.0]])
    implementation = Implementation.load(spec)
    try:
        assert implementation.start_taylor_side(logits, targets)
        implementation.answer(logits, targets, "mean")
        implementation.ahead(np.zeros_like(logits), targets, [None], loss_only=True, taylor=True)
        deadline = time.monotonic() + 30
        while len(_pids(tmp_path)) < 2:
            assert time.monotonic() < deadline, "the second worker never ran"
            time.sleep(0.02)
    finally:
        implementation.close()
    _assert_gone(_pids(tmp_path), seconds=0.5)  # reaped by close: gone at once
    with pytest.raises(InputError, match="its process was stopped"):
        implementation.answer(np.zeros_like(logits), targets, "mean", loss_only=True)

