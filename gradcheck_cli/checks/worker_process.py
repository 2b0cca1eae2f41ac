"""A worker process that answers requests over pipes: the mechanics of checks/worker.py, apart from what it serves.

Its descriptors 1 and 2 are one pipe this process copies to its own stderr as it waits, so nothing the
worker (or anything it starts) writes can reach stdout; its stdin is /dev/null. Every answer has a deadline;
past it, or when the worker ends without answering (os._exit, a crash, a signal), the worker's process
group is killed and an InputError says what happened. The worker runs in its own process group (so that a
timeout also stops what it started), ignores Ctrl-C (this process handles it, and stops the worker), and
dies with this process (PR_SET_PDEATHSIG, and end of file on its request pipe).

It is forked (fork_worker), or, where this process runs threads a fork would not carry, a new interpreter on
the same pipes (checks/worker_spawn.py). The frames and memory files on the pipes are checks/worker_wire.py's.
The parent closes a request's files at its answer, the worker an answer's AHEAD + 2 later.
"""

from __future__ import annotations

import codecs
import contextlib
import math
import os
import select
import signal
import subprocess
import sys
import time
import warnings
from collections import deque
from collections.abc import Callable
from typing import Any, NoReturn

from gradcheck_cli.checks.worker_wire import (
    PIPE_BYTES,
    Frames,
    close_all,
    decode,
    encode,
    read_frame,
)
from gradcheck_cli.errors import InputError
from gradcheck_cli.inputs.pipes import framed, write_all
from gradcheck_cli.inputs.readahead import keep_freed_memory

Handler = Callable[[Any], Any]
_GRACE = 2.0  # seconds an ended worker's exit status is waited for after its answer pipe closed
_CRASHED = 70  # the worker's own exit status when its loop itself fails (EX_SOFTWARE)
# Requests sent ahead of their answers: enough that the worker does not wait between calls, few enough that
# their answers (a loss each, a few hundred bytes) fit in the smallest pipe (64 KB) several times over.
AHEAD = 32
_STOPPED = "--impl {spec}: its process was stopped after an earlier error"


class WorkerProcess:
    """The parent's side: send a request, wait for its answer (relaying the worker's output meanwhile), close."""

    def __init__(self, spec: str, pid: int, requests: int, answers: int, output: int, timeout: float) -> None:
        self.spec, self.pid, self.timeout = spec, pid, timeout
        self.requests, self.answers, self.output = requests, answers, output
        self.poll = select.poll()
        self.poll.register(answers, select.POLLIN)
        self.poll.register(output, select.POLLIN)
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.output_open = True  # until every writer (the worker, and anything it started) has closed it
        self.received = Frames()
        # Requests not yet taken by the pipe: written as it takes them, while answers are read, so that
        # neither process can wait on a full pipe while the other waits on it.
        self.outgoing = bytearray()
        self.in_flight: deque[list[int]] = deque()  # each request's memory files, until its answer came
        self.closed = False
        self.spawned: subprocess.Popen[bytes] | None = None  # a spawned worker is reaped through its Popen
        self.unready: str | None = None  # started without waiting: its setup's answer, read before the first answer

    def _send(self, message: Any, activity: str) -> None:
        if self.closed:
            raise InputError(_STOPPED.format(spec=self.spec))
        payload, files = encode(message)
        self.in_flight.append(files)
        self.outgoing += framed(payload)
        self._write_some(activity)

    def _write_some(self, activity: str) -> None:
        """As much of the outgoing requests as the pipe takes now (it never blocks)."""
        try:
            written = os.write(self.requests, self.outgoing)
        except BlockingIOError:
            written = 0
        except BrokenPipeError:
            self._ended(activity)
        del self.outgoing[:written]

    def send(self, message: Any, activity: str) -> None:
        """Send one request without waiting for its answer (read later with outcome(), in the order sent)."""
        self._send(message, activity)

    def relay_output(self) -> None:
        """What the worker has printed so far, onto this process's stderr now."""
        self._relay_waiting()

    def answer(self, activity: str, timeout: float | None = None) -> Any:
        kind, value = self.outcome(activity, timeout)
        if kind == "error":
            raise InputError(value)
        return value

    def outcome(self, activity: str, timeout: float | None = None) -> tuple[str, Any]:
        """The next answer as (kind, value): an "error" answer (the user's code failed; the worker goes on) is
        returned, not raised; a timeout or the worker's end still raises (and closes it)."""
        if self.closed:  # an answer asked for after close (another worker's error ended the check)
            raise InputError(_STOPPED.format(spec=self.spec))
        if self.unready is not None:  # the setup's answer comes first (its requests wait in the pipe meanwhile)
            activity_ready, self.unready = self.unready, None
            ready(self, activity_ready)
        kind, value = decode(self._read_answer(activity, self.timeout if timeout is None else timeout))
        if self.in_flight and kind not in ("ready", "started"):  # the worker has mapped what the request sent
            close_all(self.in_flight.popleft())
        return kind, value

    def close(self) -> None:
        """Kill the worker's process group, reap it, pass on what it wrote last, close the pipes. Idempotent."""
        if self.closed:
            return
        self.closed = True
        _kill_group(self.pid)
        if self.spawned is not None:  # reaped through its Popen, which would otherwise warn that it still runs
            self.spawned.wait()
        else:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
        with contextlib.suppress(OSError, ValueError):  # stderr itself may be gone by now
            self._relay_waiting()
        for fd in (self.requests, self.answers, self.output):
            os.close(fd)
        while self.in_flight:
            close_all(self.in_flight.popleft())

    def _read_answer(self, activity: str, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while (frame := self.received.next()) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                self._timed_out(activity, timeout)
            if self.outgoing:
                self.poll.register(self.requests, select.POLLOUT)
            events = self.poll.poll(math.ceil(left * 1000))
            with contextlib.suppress(KeyError):
                self.poll.unregister(self.requests)
            for fd, _ in events:
                if fd == self.requests:
                    self._write_some(activity)
                elif fd == self.output:
                    self._relay(os.read(self.output, 1 << 16))
                else:
                    chunk = os.read(self.answers, PIPE_BYTES)
                    if not chunk:
                        self._ended(activity)
                    self.received.buffer += chunk
        return frame

    def _relay(self, data: bytes) -> None:
        """The worker's output, onto this process's stderr (whatever sys.stderr is: a terminal, a test's capture)."""
        if not data:
            self.output_open = False
            self.poll.unregister(self.output)
            return
        sys.stderr.write(self.decoder.decode(data))
        sys.stderr.flush()

    def _relay_waiting(self) -> None:
        with contextlib.suppress(BlockingIOError):  # nothing more waiting
            while self.output_open:
                self._relay(os.read(self.output, 1 << 16))

    def _timed_out(self, activity: str, timeout: float) -> NoReturn:
        self.close()
        option = " (--impl-timeout)" if timeout == self.timeout else ""
        raise InputError(f"--impl {self.spec}: {activity} took longer than {timeout:g} s{option}; "
                         f"its process was stopped")

    def _ended(self, activity: str) -> NoReturn:
        """The worker went away without answering: say how, and never let it pass for a result."""
        how = _how_it_ended(self.pid)
        self.close()
        raise InputError(f"--impl {self.spec}: {how} while {activity}; gradcheck takes that as an error, "
                         f"never as a pass")


def _how_it_ended(pid: int) -> str:
    """The worker's exit, read without reaping it (so its process group stays its own until killed)."""
    deadline = time.monotonic() + _GRACE
    while time.monotonic() < deadline:
        try:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            break
        if info is None:
            time.sleep(0.005)
            continue
        if info.si_code == os.CLD_EXITED:
            return f"your code ended the process running it with exit status {info.si_status} (os._exit?)"
        name = signal.Signals(info.si_status).name if info.si_status in signal.valid_signals() else info.si_status
        return f"the process running your code was killed by {name} (a crash in your code or a library it calls)"
    return "the process running your code closed its connection to gradcheck"


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # its own group was never made: the worker alone
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def fork_worker(setup: Callable[[], Handler], timeout: float, activity: str, spec: str,
                wait: bool = True) -> WorkerProcess | None:
    """Fork a worker that runs `setup()` (the import) and then answers each request with the handler it returns.

    Returns once the worker is ready (without `wait`: at once, requests may be sent, and the setup's answer is
    read before the first answer, its failure raised there); raises the InputError of a failed setup; None if no
    process can be made.
    """
    pipes = make_pipes()
    (requests_read, requests), (answers, answers_write), (output, output_write) = pipes
    sys.stdout.flush()  # nothing buffered here may be written twice
    sys.stderr.flush()
    parent = os.getpid()
    try:
        with warnings.catch_warnings():  # Python 3.12+ warns of fork with threads (numpy's BLAS pool): it is
            warnings.simplefilter("ignore", DeprecationWarning)  # deliberate, and the worker starts none of ours
            pid = os.fork()
    except OSError:
        for fd in (fd for pipe in pipes for fd in pipe):
            os.close(fd)
        return None
    if pid == 0:
        for fd in (requests, answers, output):
            os.close(fd)
        worker_main(setup, spec, parent, (requests_read, answers_write, output_write))
    for fd in (requests_read, answers_write, output_write):
        os.close(fd)
    with contextlib.suppress(OSError):  # also done by the worker: whichever runs first
        os.setpgid(pid, pid)
    process = WorkerProcess(spec, pid, requests, answers, output, timeout)
    if wait:
        return ready(process, activity)
    os.set_blocking(process.output, False)
    os.set_blocking(process.requests, False)
    process.unready = activity
    return process


def make_pipes() -> list[tuple[int, int]]:
    """The request, answer and output pipes (read end, write end), each as large as the kernel allows us."""
    pipes = [os.pipe() for _ in range(3)]
    for read_end, _ in pipes:
        with contextlib.suppress(AttributeError, OSError):  # a bigger pipe is only faster, and Linux only
            import fcntl

            fcntl.fcntl(read_end, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    return pipes


def ready(process: WorkerProcess, activity: str, started: float | None = None) -> WorkerProcess:
    """The process once its setup has answered (after a spawned one's "started", within `started` seconds)."""
    os.set_blocking(process.output, False)
    os.set_blocking(process.requests, False)
    try:
        if started is not None:
            process.answer("starting a Python process for it", started)
        process.answer(activity)
        process._relay_waiting()
    except BaseException:
        process.close()
        raise
    return process


# --- in the worker ---------------------------------------------------------------------------------------------


def worker_main(setup: Callable[[], Handler], spec: str, parent: int, ends: tuple[int, int, int],
                announce: bool = False) -> NoReturn:
    """The worker's whole life; it never returns into the code that forked it (a test runner, say). A spawned
    worker `announce`s that it has started before its setup (the user's import) runs on the user's deadline."""
    status = 0
    try:
        requests, answers, output = ends
        _isolate(parent, output)
        # The user's temporaries of the logits' size, freed by one call, kept for the next (glibc would trim
        # them and fault them in again: 2,300 faults, 40-45% of a numpy cross-entropy call at 8 x 50,257 in a
        # fresh process; a worker forked by the CLI inherits thresholds already raised): every worker alike.
        keep_freed_memory()
        me = os.getpid()
        if announce:
            _send(answers, ("started", None))
        try:
            handler = setup()
        except BaseException as error:  # noqa: BLE001 - whatever the import did, it is reported in one line
            _leave_if_forked(me)
            _send(answers, ("error", _message(error, spec)))
            os._exit(0)
        _leave_if_forked(me)
        _send(answers, ("ready", None))
        received = Frames()
        kept: deque[list[int]] = deque()  # the memory files of the last answers, which the parent may yet map
        while (request := read_frame(requests, received)) is not None:
            try:
                answer: tuple[str, Any] = ("ok", handler(request))
            except BaseException as error:  # noqa: BLE001 - every failure of the user's code is an answer
                answer = ("error", _message(error, spec))
            _leave_if_forked(me)
            kept.append(_send(answers, answer))
            if len(kept) > AHEAD + 2:
                close_all(kept.popleft())
    except BaseException:  # noqa: BLE001 - the worker's own failure: its exit status tells the parent
        status = _CRASHED
    finally:
        os._exit(status)


def _message(error: BaseException, spec: str) -> str:
    if isinstance(error, InputError):
        return str(error)
    return f"--impl {spec}: your code raised {type(error).__name__}: {error}"


def _leave_if_forked(worker: int) -> None:
    """A child the user's code forked has come back into this loop: it must not answer, nor run on."""
    if os.getpid() != worker:
        os._exit(0)


def _isolate(parent: int, output: int) -> None:
    """Own process group, no Ctrl-C, death with the parent, stdin from /dev/null, stdout and stderr to `output`."""
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's; it kills this process
    for number in (signal.SIGTERM, signal.SIGHUP):  # the parent's handlers (cleanup) are not this process's
        signal.signal(number, signal.SIG_DFL)
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG: killed when the parent dies
    if os.getppid() != parent:  # the parent died before that took effect
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(output, 1)
    os.dup2(output, 2)
    os.close(output)
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115 - lives as long as the process
    for name, fd in (("stdout", 1), ("stderr", 2)):
        stream = open(fd, "w", encoding="utf-8", errors="backslashreplace", buffering=1, closefd=False)  # noqa: SIM115
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def _send(fd: int, answer: tuple[str, Any]) -> list[int]:
    """Send one answer; its memory files, to be closed once the parent has mapped them."""
    sys.stdout.flush()  # what the call printed reaches the parent before its answer
    sys.stderr.flush()
    payload, files = encode(answer)
    write_all(fd, framed(payload))
    return files
