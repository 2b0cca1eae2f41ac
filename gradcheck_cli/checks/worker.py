"""Where the user's function runs: a worker process, so that nothing it does can change the verdict.

`start(spec, timeout)` starts a worker (forked, or a new interpreter where this process runs threads a fork would
not carry: checks/worker_spawn.py) that imports MODULE:FUNCTION and answers calls over a pipe. In it:
file descriptor 1 (and 2) is a pipe this process copies to its stderr, during the import and every call, so
a print, a C library's write(1, ...) or a subprocess never reaches stdout; stdin is /dev/null; the module's
own directory is put first on the worker's sys.path only (a ./rich.py is never imported by gradcheck itself).
sys.exit(), os._exit(), an exception or a crash of the worker ends the run with exit 2 and one line saying
what happened, never exit 0. A child forked by the user's code that returns into the worker's loop exits
at once. The import and each call have `timeout` seconds; past it the worker's process group is killed. The
worker dies with this process (and is killed when the check closes it).

Each call sends the logits only when they changed since the last call, and otherwise the elements to set in
a copy of them (a perturbation for finite differences is one element), so a call costs little more than
the user's function itself. Calls a check will make can be asked ahead (Caller.ahead): the worker computes
them while this process does other work, each answer kept until its call is asked for (worker_queue.py); a
loss-only call where a full call was made is that call's loss.

Without fork (Windows) or outside Linux (where forking a process that has loaded numpy's BLAS is not safe), or
when no process can be started, the function runs in this process: sys.exit and exceptions are still exit 2
and descriptor 1 is still redirected, but os._exit, a crash or a fork cannot be caught there and the timeout
is not enforced.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

from gradcheck_cli.checks import worker_keys
from gradcheck_cli.checks.returned import (
    NUMPY_CALLING,
    Calling,
    Points,
    Refused,
    Returned,
    Signature,
    call_function,
    framework_module,
    labels_of,
    read_signature,
)
from gradcheck_cli.checks.worker_import import Target, import_function
from gradcheck_cli.checks.worker_keys import Edit, Fingerprint, Prints, edit_key
from gradcheck_cli.checks.worker_process import WorkerProcess, fork_worker
from gradcheck_cli.checks.worker_queue import AnswerQueue
from gradcheck_cli.checks.worker_spawn import start_worker
from gradcheck_cli.checks.worker_wire import edit_on_wire, returned_from_wire, returned_on_wire
from gradcheck_cli.errors import InputError

# The longest the import of the module, or one call of the function, may take (--impl-timeout). Generous:
# importing torch on a cold CI machine can take ten seconds, and JAX compiles on its first call.
DEFAULT_TIMEOUT = 60.0


class Caller(Protocol):
    """Calls the user's function: on `logits` with `at` (if given) set in a copy, and `targets`; `upstream` is the
    gradient flowing into its loss (g: one number, or one per row), kept for the calls after it (None: unchanged)."""

    def call(self, logits: np.ndarray, targets: np.ndarray, at: Edit | None, loss_only: bool,
             upstream: np.ndarray | None = None) -> Returned: ...

    def arriving(self, logits: np.ndarray, targets: np.ndarray, edits: list[Edit]) -> Iterator[Returned]:
        """One call per edit, each answering with the loss only (a finite difference's evaluations), each answer
        as it comes (the caller works on one while the next is computed)."""
        ...

    def ahead(self, logits: np.ndarray, targets: np.ndarray, edits: list[Edit | None], loss_only: bool,
              upstream: np.ndarray | None = None) -> None:
        """Calls that will be asked for (by call() or arriving(), with the same arguments), started now where
        the function runs in a process of its own; nothing where it runs in this one."""
        ...

    def waiting(self, logits: np.ndarray, targets: np.ndarray, at: Edit | None) -> bool:
        """Whether this loss-only call was asked ahead (and not yet answered): where a call is answered."""
        ...

    def remember(self) -> None:
        """From now on the arrays given are not changed in place: each is fingerprinted once (Prints)."""
        ...

    def forget(self, check: bool) -> None:
        """Fingerprint at every call again; `check`: first make sure no array still alive was changed."""
        ...

    def close(self) -> None: ...


def parse_spec(spec: str) -> Target:
    """MODULE:FUNCTION or path/to/file.py:FUNCTION, checked before anything is imported."""
    module, _, function = spec.rpartition(":")
    if not module or not function:
        raise InputError(f"--impl {spec!r}: expected MODULE:FUNCTION or path/to/file.py:FUNCTION")
    if module.endswith(".py") or "/" in module or os.sep in module:
        path = Path(module)
        if not path.is_file():
            raise InputError(f"--impl {spec}: no such file {module}")
        return Target(spec, module, function, path)
    return Target(spec, module, function, None)


def start(spec: str, timeout: float = DEFAULT_TIMEOUT, calling: Calling = NUMPY_CALLING) -> Caller:
    """The function named by `spec`, imported in a worker process (or in this one where that cannot be)."""
    target = parse_spec(spec)
    if can_fork():
        setup = functools.partial(serve, target, calling)  # picklable, for a worker that is spawned
        process = start_worker(setup, timeout, f"importing {target.module}", spec)
        if process is not None:
            return _Worker(target, process)
    with _stdout_to_stderr(descriptors=True):
        function = import_function(target, keep_path=False)
        if calling.framework != "numpy":
            framework_module(calling.framework)
    return InProcess(spec, function, descriptors=True, calling=calling)


def start_another(spec: str, timeout: float, calling: Calling) -> Caller | None:
    """A second worker for the function `spec` names (impl.py's Taylor side), forked and not waited for: it imports
    the module while requests already go into its pipe, and its first answer waits for that import (its failure
    raised there). None where it could only be spawned (a new interpreter's start, about a second under load, is
    what it would save at the sizes it is used for) or no process can be made."""
    from gradcheck_cli.inputs import fork_safety

    if not (can_fork() and fork_safety.fork_is_safe()):
        return None
    target = parse_spec(spec)
    setup = functools.partial(serve, target, calling)
    process = fork_worker(setup, timeout, f"importing {target.module}", spec, wait=False)
    return None if process is None else _Worker(target, process)


def can_fork() -> bool:
    """Whether the worker can be forked: Linux only, as the read-ahead (elsewhere numpy's BLAS is not fork-safe)."""
    return sys.platform.startswith("linux") and hasattr(os, "fork")


class _Worker:
    """The parent's side of a forked worker: sends only what changed, reads the answers (worker_queue.py)."""

    def __init__(self, target: Target, process: WorkerProcess) -> None:
        self.target, self.process = target, process
        self.queue = AnswerQueue(process, f"running {target.function}")
        # What the worker will hold once every request put so far is answered, as fingerprints (a copy of 131M
        # logits would be a GB more in this process).
        self.sent_logits: Fingerprint | None = None
        self.sent_targets: Fingerprint | None = None
        self.sent_upstream: Fingerprint | None = None
        self.full_losses: dict[_Key, Returned] = {}  # the loss of each full answer, under its loss-only key
        self.prints: Prints | None = None  # while remembering: each array's fingerprint, made once

    def call(self, logits: np.ndarray, targets: np.ndarray, at: Edit | None, loss_only: bool,
             upstream: np.ndarray | None = None) -> Returned:
        key, prints = self._key(logits, targets, at, loss_only, upstream)
        if loss_only and key in self.full_losses and not self.queue.waiting(key):
            return self.full_losses[key]  # the same call's loss, already made with its gradient
        if not self.queue.waiting(key):
            self._put(key, prints, logits, targets, at, loss_only, upstream)
        answer = self._get(key)
        if not loss_only:
            self.full_losses[(*key[:-1], True)] = answer._replace(gradient=None)
        return answer

    def ahead(self, logits: np.ndarray, targets: np.ndarray, edits: list[Edit | None], loss_only: bool,
              upstream: np.ndarray | None = None) -> None:
        """Calls asked for now and answered when a call() or arriving() asks for them (worker_queue.py)."""
        if not edits:
            return  # nothing asked: not even the fingerprints (a GB of logits hashed at a 128k vocabulary)
        prints = self._prints(logits, targets, upstream)
        for at in edits:  # the arrays' fingerprints made once (15 ms for 3 MB on a loaded machine), not per edit
            key = self._key(logits, targets, at, loss_only, upstream, prints)[0]
            self._put(key, prints, logits, targets, at, loss_only, upstream)

    def arriving(self, logits: np.ndarray, targets: np.ndarray, edits: list[Edit]) -> Iterator[Returned]:
        """The loss of one call per edit, each as it comes: every call is sent (up to AHEAD ahead) before the
        first is read, so the worker goes from one to the next while this process works on those in."""
        prints = self._prints(logits, targets, None)
        keys = []
        claimed: dict[_Key, int] = {}
        for at in edits:
            key = self._key(logits, targets, at, True, None, prints)[0]
            claimed[key] = claimed.get(key, 0) + 1
            if self.queue.waiting(key) < claimed[key]:  # not asked ahead (or not as often): asked now
                self._put(key, prints, logits, targets, at, True, None)
            keys.append(key)
        return (self._get(key) for key in keys)

    def waiting(self, logits: np.ndarray, targets: np.ndarray, at: Edit | None) -> bool:
        return self.queue.waiting(self._key(logits, targets, at, True, None)[0]) > 0

    def remember(self) -> None:
        self.prints = Prints()

    def forget(self, check: bool) -> None:
        prints, self.prints = self.prints, None
        if check and prints is not None:
            prints.check_unchanged()

    def close(self) -> None:
        self.process.close()

    def _prints(self, logits: np.ndarray, targets: np.ndarray, upstream: np.ndarray | None) -> _Prints:
        made = worker_keys.fingerprint if self.prints is None else self.prints.of
        return made(logits), made(targets), None if upstream is None else made(upstream)

    def _key(self, logits: np.ndarray, targets: np.ndarray, at: Edit | None, loss_only: bool,
             upstream: np.ndarray | None, prints: _Prints | None = None) -> tuple[_Key, _Prints]:
        """What the answer depends on: the logits, targets and upstream gradient (None: the one the worker will
        hold), the edit, loss only or not."""
        if prints is None:
            prints = self._prints(logits, targets, upstream)
        held = self.sent_upstream if prints[2] is None else prints[2]
        return (prints[0], prints[1], held, edit_key(at), loss_only), prints

    def _put(self, key: _Key, prints: _Prints, logits: np.ndarray, targets: np.ndarray, at: Edit | None,
             loss_only: bool, upstream: np.ndarray | None) -> None:
        # The worker keeps what it is sent before it calls the function, whatever the call then does.
        logits_now, targets_now, upstream_now = prints
        send_logits = None if logits_now == self.sent_logits else logits
        send_targets = None if targets_now == self.sent_targets else targets
        send_upstream = None if upstream is None or upstream_now == self.sent_upstream else upstream
        self.sent_logits, self.sent_targets = logits_now, targets_now
        if upstream_now is not None:
            self.sent_upstream = upstream_now
        self.queue.put(key, (send_logits, send_targets, edit_on_wire(at), loss_only, send_upstream))

    def _get(self, key: _Key) -> Returned:
        answer = returned_from_wire(self.queue.get(key))
        self.process.relay_output()  # what the call printed, before the results it led to are written
        return answer


_Prints = tuple[Fingerprint, Fingerprint, Fingerprint | None]  # the logits', targets' and upstream's (None: not given)
_Key = tuple[Fingerprint, Fingerprint, Fingerprint | None, Hashable, bool]  # and the edit's, and loss only


# --- the worker's side -----------------------------------------------------------------------------------------


def serve(target: Target, calling: Calling = NUMPY_CALLING) -> Callable[[Any], Any]:
    """In the worker: import the function (the worker's sys.path only), then answer each request with it."""
    function = import_function(target, keep_path=True)
    if calling.framework != "numpy":
        framework_module(calling.framework)  # a framework that is not installed is said once, at the import
    signature = read_signature(function)
    state: dict[str, np.ndarray] = {}
    points = Points()  # buffers re-filled before each call, the directions' signs kept (returned.Points)

    def answer(request: Any) -> Any:
        logits, targets, at, loss_only, upstream = request
        for key, value in (("logits", logits), ("targets", targets), ("upstream", upstream)):
            if value is not None:
                state[key] = value
        if targets is not None or "second" not in state:  # labels read once per targets, not once per call
            state["second"] = second_argument(target.spec, signature, calling, state["targets"])
        given = _Given(points.logits(state["logits"], at), points.refilled("second", state["second"]),
                       state.get("upstream"), loss_only)
        returned = _call(target.spec, target.function, function, signature, calling, given)
        return returned_on_wire(returned)

    return answer


def second_argument(spec: str, signature: Signature, calling: Calling, targets: np.ndarray) -> np.ndarray:
    """The function's second argument: the target rows, or the class labels of a labels signature."""
    if not signature.labels:
        return targets
    try:
        return labels_of(targets, calling.ignore_index)
    except Refused as error:
        raise InputError(f"--impl {spec}: {error}") from None


class _Given(NamedTuple):
    """What one call gives the function: logits, its second argument (targets or labels, a copy), the upstream
    gradient (None: 1 per loss value)."""

    logits: np.ndarray
    second: np.ndarray
    upstream: np.ndarray | None
    loss_only: bool


def _call(spec: str, name: str, function: Callable[..., Any], signature: Signature, calling: Calling,
          given: _Given) -> Returned:
    """One call, its answer read; what goes wrong is an InputError saying what (KeyboardInterrupt aside)."""
    upstream = np.ones(()) if given.upstream is None else given.upstream.copy()
    try:
        return call_function(function, signature, calling, given.logits, given.second, upstream, given.loss_only)
    except InputError:
        raise
    except Refused as error:
        raise InputError(f"--impl {spec}: {error}") from None
    except SystemExit as error:
        raise InputError(f"--impl {spec}: {name} called sys.exit({error.code!r}); gradcheck takes that as an "
                         f"error, never as a pass") from None
    except Exception as error:  # noqa: BLE001 - the user's code failing on valid input is reported, one line
        raise InputError(f"--impl {spec}: {name} raised {type(error).__name__}: {error}") from None


# --- in this process -----------------------------------------------------------------------------------------------


class InProcess:
    """Calls a function in this process, its stdout sent to stderr (and descriptor 1 too, if `descriptors`)."""

    def __init__(self, spec: str, function: Callable[..., Any], descriptors: bool = False,
                 calling: Calling = NUMPY_CALLING) -> None:
        self.spec, self.function, self.descriptors, self.calling = spec, function, descriptors, calling
        self.name = getattr(function, "__name__", "the function")
        self.signature = read_signature(function)
        self.upstream: np.ndarray | None = None
        self.points = Points(keep=False)  # fresh arrays each call: no copy of the logits kept in this process

    def call(self, logits: np.ndarray, targets: np.ndarray, at: Edit | None, loss_only: bool,
             upstream: np.ndarray | None = None) -> Returned:
        if upstream is not None:
            self.upstream = upstream.copy()
        second = second_argument(self.spec, self.signature, self.calling, targets)
        given = _Given(self.points.logits(logits, at), second.copy(), self.upstream, loss_only)
        with _stdout_to_stderr(self.descriptors):
            return _call(self.spec, self.name, self.function, self.signature, self.calling, given)

    def arriving(self, logits: np.ndarray, targets: np.ndarray, edits: list[Edit]) -> Iterator[Returned]:
        return (self.call(logits, targets, at, True) for at in edits)

    def ahead(self, logits: np.ndarray, targets: np.ndarray, edits: list[Edit | None], loss_only: bool,
              upstream: np.ndarray | None = None) -> None:
        """Nothing: in this process a call is made when it is asked for."""

    def waiting(self, logits: np.ndarray, targets: np.ndarray, at: Edit | None) -> bool:
        return False

    def remember(self) -> None:
        """Nothing: no fingerprints here."""

    def forget(self, check: bool) -> None:
        """Nothing: no fingerprints here."""

    def close(self) -> None:
        """Nothing to stop."""


@contextlib.contextmanager
def _stdout_to_stderr(descriptors: bool) -> Iterator[None]:
    """sys.stdout to stderr; with `descriptors`, file descriptor 1 to descriptor 2 as well (C code, os.write)."""
    if not descriptors:
        with contextlib.redirect_stdout(sys.stderr):
            yield
        return
    sys.stdout.flush()  # what was written before goes out before the redirection
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 1)
        os.close(saved)
