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
the user's function itself. Without fork (Windows) or outside Linux (where forking a process that has
loaded numpy's BLAS is not safe), or when no process can be started, the function runs in this process:
sys.exit and exceptions are still exit 2 and descriptor 1 is still redirected, but os._exit, a crash or a
fork cannot be caught there and the timeout is not enforced.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

from gradcheck_cli.checks.returned import (
    NUMPY_CALLING,
    Along,
    Calling,
    Direction,
    Points,
    Refused,
    Returned,
    Signature,
    call_function,
    framework_module,
    labels_of,
    read_signature,
)
from gradcheck_cli.checks.worker_process import WorkerProcess
from gradcheck_cli.checks.worker_spawn import start_worker
from gradcheck_cli.errors import InputError

# The longest the import of the module, or one call of the function, may take (--impl-timeout). Generous:
# importing torch on a cold CI machine can take ten seconds, and JAX compiles on its first call.
DEFAULT_TIMEOUT = 60.0

# Flat indices into the logits and the values they take, or a move along a direction (returned.Direction), or a
# Taylor point (returned.Along).
Edit = tuple[np.ndarray, np.ndarray] | Direction | Along


class Caller(Protocol):
    """Calls the user's function: on `logits` with `at` (if given) set in a copy, and `targets`; `upstream` is the
    gradient flowing into its loss (g: one number, or one per row), kept for the calls after it (None: unchanged)."""

    def call(self, logits: np.ndarray, targets: np.ndarray, at: Edit | None, loss_only: bool,
             upstream: np.ndarray | None = None) -> Returned: ...

    def losses(self, logits: np.ndarray, targets: np.ndarray, edits: list[Edit]) -> list[Returned]:
        """One call per edit, each answering with the loss only (a finite difference's evaluations)."""
        ...

    def close(self) -> None: ...


class Target(NamedTuple):
    """What --impl names: a module (dotted name, or a file path) and the function in it."""

    spec: str
    module: str
    function: str
    path: Path | None  # for path/to/file.py:FUNCTION

    @property
    def directory(self) -> Path:
        """Where the module's own imports are looked for first: its file's directory, or the current one."""
        return (self.path.parent if self.path is not None else Path.cwd()).resolve()


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


def can_fork() -> bool:
    """Whether the worker can be forked: Linux only, as the read-ahead (elsewhere numpy's BLAS is not fork-safe)."""
    return sys.platform.startswith("linux") and hasattr(os, "fork")


class _Worker:
    """The parent's side of a forked worker: sends only what changed, reads the answer or the failure."""

    def __init__(self, target: Target, process: WorkerProcess) -> None:
        self.target, self.process = target, process
        # What the worker holds, as fingerprints (a copy of 131M logits would be a GB more in this process).
        self.sent_logits: Fingerprint | None = None
        self.sent_targets: Fingerprint | None = None
        self.sent_upstream: Fingerprint | None = None

    def call(self, logits: np.ndarray, targets: np.ndarray, at: Edit | None, loss_only: bool,
             upstream: np.ndarray | None = None) -> Returned:
        # The worker keeps what it is sent before it calls the function, whatever the call then does.
        logits_now, targets_now = fingerprint(logits), fingerprint(targets)
        upstream_now = None if upstream is None else fingerprint(upstream)
        send_logits = None if logits_now == self.sent_logits else logits
        send_targets = None if targets_now == self.sent_targets else targets
        send_upstream = None if upstream is None or upstream_now == self.sent_upstream else upstream
        self.sent_logits, self.sent_targets = logits_now, targets_now
        if upstream_now is not None:
            self.sent_upstream = upstream_now
        request = (send_logits, send_targets, _edit_on_wire(at), loss_only, send_upstream)
        return _returned_from_wire(self.process.request(request, f"running {self.target.function}"))

    def losses(self, logits: np.ndarray, targets: np.ndarray, edits: list[Edit]) -> list[Returned]:
        """The calls sent ahead of their answers: the worker goes from one to the next without waiting."""
        if not edits:
            return []
        first = self.call(logits, targets, edits[0], True)  # sends the logits and targets, if they changed
        rest = [(None, None, _edit_on_wire(at), True, None) for at in edits[1:]]
        answers = self.process.requests_ahead(rest, f"running {self.target.function}")
        return [first, *(_returned_from_wire(answer) for answer in answers)]

    def close(self) -> None:
        self.process.close()


# Pickling a small numpy array costs some 20 us, a list of a few numbers 1: a perturbation's edit and a loss
# of one number cross the pipe as plain Python numbers (exactly: float64 <-> float is lossless).
_SMALL = 64


def _edit_on_wire(at: Edit | None) -> Any:
    if at is None or isinstance(at, Direction | Along) or at[0].size > _SMALL:
        return at
    return at[0].tolist(), at[1].tolist()


def _returned_on_wire(answer: Returned) -> tuple[Any, np.ndarray | None, float, bool]:
    loss = answer.loss.item() if answer.loss.ndim == 0 else answer.loss
    return loss, answer.gradient, answer.precision, answer.weighted


def _returned_from_wire(wire: tuple[Any, np.ndarray | None, float, bool]) -> Returned:
    loss, gradient, precision, weighted = wire
    return Returned(np.asarray(loss, dtype=np.float64), gradient, precision, weighted)


Fingerprint = tuple[tuple[int, ...], str, bytes]


def fingerprint(array: np.ndarray) -> Fingerprint:
    """What tells whether the worker already holds exactly these values: shape, dtype and a 128-bit BLAKE2 digest
    of the bytes (bit for bit: -0.0 is not 0.0 to every function), as fast as comparing with a kept copy
    (about 1 GB/s) without the copy."""
    import hashlib

    digest = hashlib.blake2b(np.ascontiguousarray(array).reshape(-1).view(np.uint8).data, digest_size=16).digest()
    return array.shape, array.dtype.str, digest


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
        return _returned_on_wire(returned)

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


def import_function(target: Target, keep_path: bool) -> Callable[..., Any]:
    """Import the module with its own directory first on sys.path (removed again unless `keep_path`)."""
    directory = str(target.directory)
    sys.path.insert(0, directory)
    try:
        module = _import_module(target)
    finally:
        if not keep_path and directory in sys.path:
            sys.path.remove(directory)
    function = getattr(module, target.function, None)
    if function is None:
        raise InputError(f"--impl {target.spec}: {target.module} has no attribute {target.function!r}")
    if not callable(function):
        raise InputError(f"--impl {target.spec}: {target.module}.{target.function} is not callable")
    return function


def _import_module(target: Target) -> Any:
    import importlib
    import importlib.util

    cannot = f"--impl {target.spec}: cannot import {target.module}"
    name = target.path.stem if target.path is not None else target.module
    try:
        if target.path is None:
            return importlib.import_module(target.module)
        module_spec = importlib.util.spec_from_file_location(name, target.path)
        if module_spec is None or module_spec.loader is None:
            raise InputError(f"{cannot}: not a Python source file")
        module = importlib.util.module_from_spec(module_spec)
        # Registered while it runs (a dataclass looks its module up there), under its name unless taken.
        registered = name not in sys.modules
        if registered:
            sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        finally:
            if registered:
                del sys.modules[name]
        return module
    except InputError:
        raise
    except SystemExit as error:
        raise InputError(f"{cannot}: it called sys.exit({error.code!r}) while being imported") from None
    except Exception as error:  # noqa: BLE001 - any failure to import the user's code is their input error
        raise InputError(f"{cannot}: {type(error).__name__}: {error}") from None


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

    def losses(self, logits: np.ndarray, targets: np.ndarray, edits: list[Edit]) -> list[Returned]:
        return [self.call(logits, targets, at, True) for at in edits]

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
