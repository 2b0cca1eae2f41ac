"""`--impl MODULE:FUNCTION`: a user's loss-and-gradient function, and the checks of it.

The function is called as FUNCTION(logits, targets) -> (loss, gradient), with N x C float64 logits and
N x C target rows, the loss for the chosen reduction (checks/returned.py: torch or JAX tensors, class labels,
only the loss and the framework's autograd). Its gradient is taken to be sum_n g_n grad l_n, g the upstream
gradient (--grad-output), when it comes from autograd or a grad_output parameter, and of the plain sum
(g = 1) when the function makes it without g. `Implementation.load(spec)` imports it in a worker
process (checks/worker.py: its output, exits, crashes, forks and endless loops cannot reach the verdict);
`Implementation(spec, function)` calls a Python function in this process. Close it (or use it in a `with`).

Where the machine has a core to spare, the Taylor check's calls run on a second worker of the same kind, beside
the first (Implementation.start_taylor_side: its conditions), but for the share that evens out the two
(FIRST_WORKER_TAYLOR); the first computes the directional check's calls while the reference is checked
(Session), then that share. Both compute the same function on the same points, so the answers, and every verdict
and number, are those of one worker; only the time changes.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from gradcheck_cli.checks.impl_rows import RowsCompared
from gradcheck_cli.checks.own_loss import DirectionalPlan, directional_plan, own_loss_check
from gradcheck_cli.checks.own_loss_model import RowLosses, UsersLoss
from gradcheck_cli.checks.returned import NUMPY_CALLING, Along, Calling, Returned
from gradcheck_cli.checks.worker import DEFAULT_TIMEOUT, Caller, InProcess, start, start_another
from gradcheck_cli.checks.worker_keys import Edit
from gradcheck_cli.errors import InputError
from gradcheck_cli.report import CheckResult

if TYPE_CHECKING:
    from gradcheck_cli.numerics.losses.base import Loss
    from gradcheck_cli.settings import Settings

# A second worker holds its own copy of the logits and targets, and makes the user's function's temporaries (a few
# arrays of the logits' size) beside the first's. Up to 64 MB of logits and targets (8 x 50,257 float64 with
# their targets is 6.4 MB; 32 rows of 128k classes, 64 MB) that is at most a few hundred MB more, while the
# check itself already holds several arrays of the logits' size (the gradient, the reference); past it the
# calls (each as long as the function, which grows with the logits) stay on one worker and memory as it was.
TAYLOR_SIDE_BYTES = 64 * 2**20
# The Taylor points along these signed directions (taylor_points' positions: v1, -v1, v2, ..., -v3) go to the first
# worker even where a second runs: 8 of the 48, asked after the directional check's calls, which leaves 43 calls
# on the first worker and 41 on the second (35 and 49 without), so that both end about together. -v3: the Taylor
# check reads its points last (their answers as they come), so this process works on the second worker's 40
# while the first computes these 8, and has one remainder left when the last comes (it had all 48 when the first
# worker answered -v1). To reach v3 the first worker draws v1 and v2 and drops them (returned.Points: 16 ms at
# 8 x 50,257).
FIRST_WORKER_TAYLOR = frozenset({5})


class Implementation:
    """The user's FUNCTION(logits, targets) -> (loss, gradient), however it is called, and its checks."""

    def __init__(self, spec: str, function: Callable[..., Any] | None = None, caller: Caller | None = None,
                 calling: Calling = NUMPY_CALLING, another: Callable[[], Caller | None] | None = None) -> None:
        if caller is None:
            if function is None:
                raise TypeError("Implementation needs the function, or a caller that runs it")
            caller = InProcess(spec, function, calling=calling)
        self.spec, self.function, self.caller = spec, function, caller
        self.another = another  # starts a second worker (None: the function has only `caller`)
        self.taylor_caller: Caller | None = None  # that second worker, once started: the Taylor check's calls
        self.calls = 0
        self.first: Returned | None = None  # what the last checks() was answered: the values it judged
        self.steady = False  # inside unchanged(): each array given is fingerprinted once

    @classmethod
    def load(cls, spec: str, timeout: float | None = None, calling: Calling = NUMPY_CALLING) -> Implementation:
        """Import MODULE:FUNCTION (or path/to/file.py:FUNCTION) in a worker; `timeout` bounds the import and
        each call (None: DEFAULT_TIMEOUT); `calling` says with what it is called (--framework, --device). A second
        worker may be started for the numpy calling only: torch's and JAX's own threads and device memory are
        not doubled."""
        seconds = DEFAULT_TIMEOUT if timeout is None else timeout
        another = functools.partial(start_another, spec, seconds, calling) if calling.framework == "numpy" else None
        return cls(spec, caller=start(spec, seconds, calling), another=another)

    def close(self) -> None:
        """Stop the workers, if the function runs in any."""
        try:
            if self.taylor_caller is not None:
                self.taylor_caller.close()
        finally:
            self.caller.close()

    @contextlib.contextmanager
    def unchanged(self) -> Iterator[None]:
        """Within it, the arrays given to the function's workers are never changed in place (a check's own logits,
        targets and points): each is fingerprinted once, not at every call (worker_keys.Prints), and those still alive
        at the end are checked unchanged (a change is a bug of ours: an error, exit 3, never a stale answer)."""
        self.steady = True
        for caller in self._callers():
            caller.remember()
        try:
            yield
        except BaseException:
            self._forget(check=False)
            raise
        self._forget(check=True)

    def _forget(self, check: bool) -> None:
        self.steady = False
        for caller in self._callers():
            caller.forget(check)

    def _callers(self) -> list[Caller]:
        return [self.caller] if self.taylor_caller is None else [self.caller, self.taylor_caller]

    def start_taylor_side(self, logits: np.ndarray, targets: np.ndarray) -> bool:
        """Start the second worker the Taylor check's calls go to (asked ahead with `taylor`, then answered there),
        where all hold: a worker can be forked for it (worker.start_another; `another`: the numpy calling), at
        least 2 CPUs are ours, and the logits and targets are at most TAYLOR_SIDE_BYTES. Whether it runs."""
        if self.taylor_caller is None and self.another is not None and _spare_cpu() and \
                logits.nbytes + targets.nbytes <= TAYLOR_SIDE_BYTES:
            self.taylor_caller = self.another()
            if self.taylor_caller is not None and self.steady:
                self.taylor_caller.remember()
        return self.taylor_caller is not None

    def _on(self, logits: np.ndarray, targets: np.ndarray, at: Edit | None, loss_only: bool) -> Caller:
        """Where a call goes: the Taylor check's (_taylor_ahead: its points, and its loss at uniform logits if
        asked there) to the second worker, if one runs; every other to the first, as with one worker. Only the
        time depends on it: each worker answers any call, asked ahead or not, with the same function."""
        side = self.taylor_caller
        if side is None or not loss_only:
            return self.caller
        if isinstance(at, Along):  # a Taylor point: only the Taylor check moves the logits along one
            return self.caller if _first_worker_taylor(at) else side
        # the uniform logits' call: zeros tested first, which costs less than the worker's fingerprints
        uniform = at is None and not logits.any() and side.waiting(logits, targets, at)
        return side if uniform else self.caller

    def __enter__(self) -> Implementation:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def call(self, logits: np.ndarray, targets: np.ndarray, reduction: str) -> tuple[np.ndarray, np.ndarray]:
        """The function's (loss, gradient) on these logits, checked for shape."""
        answer = self.answer(logits, targets, reduction)
        assert answer.gradient is not None
        return answer.loss, answer.gradient

    def answer(
        self, logits: np.ndarray, targets: np.ndarray, reduction: str, at: Edit | None = None, loss_only: bool = False,
        upstream: np.ndarray | None = None, narrow: bool = False,
    ) -> Returned:
        """One call (on `logits` with `at` set in a copy), its values as float64, their shapes checked. `upstream`
        is g for the gradient (None: 1 per loss value); calls for the loss only keep the last one. `narrow`: a
        large gradient computed in float32 or coarser stays float32 (returned.NARROW_FROM; the same values)."""
        self.calls += 1
        if upstream is None and not loss_only:
            upstream = np.ones(logits.shape[0]) if reduction == "none" else np.ones(())
        caller = self._on(logits, targets, at, loss_only)
        answer = self._checked(caller.call(logits, targets, at, loss_only, upstream), logits, reduction)
        if narrow or answer.gradient is None or answer.gradient.dtype == np.float64:
            return answer
        return answer._replace(gradient=answer.gradient.astype(np.float64))

    def arriving(self, logits: np.ndarray, targets: np.ndarray, reduction: str,
                 edits: Sequence[Edit]) -> Iterator[np.ndarray]:
        """The loss of one call per edit (each set in a copy of `logits`), shapes checked, each as it comes: the
        caller works on one while the function computes the next. Each goes where it was asked ahead (_on: the
        Taylor points split between the workers), read in the order given."""
        self.calls += len(edits)
        callers = [self._on(logits, targets, at, True) for at in edits]
        streams = {caller: caller.arriving(logits, targets, [at for at, to in zip(edits, callers, strict=True)
                                                             if to is caller])
                   for caller in dict.fromkeys(callers)}  # each worker's answers, in the order it was asked
        return (self._checked(next(streams[caller]), logits, reduction).loss for caller in callers)

    def ahead(self, logits: np.ndarray, targets: np.ndarray, edits: Sequence[Edit | None], loss_only: bool,
              upstream: np.ndarray | None = None, taylor: bool = False) -> None:
        """Calls a check will ask for later with these same arguments (answer(), arriving()), started now where
        the function runs in a worker: it computes them while this process does its own arithmetic. `taylor`:
        on the second worker, where one runs (loss-only calls: they are answered from where they were asked)."""
        caller = self.taylor_caller if taylor and self.taylor_caller is not None else self.caller
        caller.ahead(logits, targets, list(edits), loss_only, upstream)

    def _checked(self, answer: Returned, logits: np.ndarray, reduction: str) -> Returned:
        loss, gradient = answer.loss, answer.gradient
        rows = logits.shape[0]
        if reduction == "none" and loss.shape != (rows,):
            raise InputError(f"--impl {self.spec}: with --reduction none the loss must have {rows} values, "
                             f"got shape {loss.shape}")
        if reduction != "none" and loss.size != 1:
            raise InputError(f"--impl {self.spec}: with --reduction {reduction} the loss must be one number, "
                             f"got shape {loss.shape}")
        if gradient is not None and gradient.shape != logits.shape:
            raise InputError(f"--impl {self.spec}: the gradient must be {rows} x {logits.shape[1]}, "
                             f"got shape {gradient.shape}")
        return answer._replace(loss=loss if reduction == "none" else loss.reshape(()))

    def checks(
        self, logits: np.ndarray, targets: np.ndarray, reference: Loss, settings: Settings, notes: list[str]
    ) -> list[CheckResult]:
        """Every check of one call on these logits, all rows at once (runner.py does the same a chunk at a time)."""
        with self.unchanged():
            session = Session(self, logits, targets, settings, notes, taylor=False)  # no Taylor check here
            gradient = session.chunk(slice(0, logits.shape[0]), logits, reference)
            return session.finish(gradient, notes)


class Session:
    """One answer of the function on a whole input, checked: called twice there (the second call only for the
    determinism check), compared with the reference a chunk of rows at a time (chunk(), as runner.py's chunks
    come; impl_rows.py), then differenced along its own loss (finish()). The two calls, and with `taylor` the
    Taylor check's (users.taylor_check, which runner.py runs next), are asked ahead at the start: a worker
    computes them while the reference is checked here. `rows` computes the reference's row losses up front
    (runner.reference_rows), while the worker makes the first call: the directional check's calls are then asked
    too, and the chunks need not compute them; where it is not given or gives None, the chunks compute them.

    The reference checks hold the user's loss and gradient to --dtype as supplied values are
    (rows.supplied_reference: the rounding allowance of losses/base.py), the gradient being sum_n g_n grad l_n.
    At bfloat16 and float16 both verdicts supplied values get: the dtype's tolerance, and the error no worse
    than gradcheck's plain same-dtype implementation's (checks/precision.py). Nothing is differenced there. A
    reduced loss is scale * sum_n l_n: each row within its tolerance, and the sum of N rows rounded as numpy
    and torch sum (pairwise), u (2 + log2 N) scale sum_n |l_n| more.
    """

    def __init__(self, implementation: Implementation, logits: np.ndarray, targets: np.ndarray, settings: Settings,
                 notes: list[str], taylor: bool = True, rows: Callable[[], RowLosses | None] | None = None) -> None:
        from gradcheck_cli.numerics.losses.base import upstream_gradient

        assert settings.atol is not None and settings.rtol is not None
        self.implementation, self.logits, self.targets, self.settings = implementation, logits, targets, settings
        reduction = settings.reduction
        self.upstream = upstream = upstream_gradient(settings, logits.shape[0])
        # Both calls on the logits, and (`taylor`: runner.py runs the Taylor check after these) its calls, asked
        # now: the worker computes them while this process checks the reference a chunk at a time.
        implementation.ahead(logits, targets, [None, None], loss_only=False, upstream=upstream)
        taylor_later = _taylor_ahead(implementation, logits, targets, settings) if taylor else []
        known = None if rows is None else rows()  # the reference's row losses, while the first call runs
        first = implementation.first = implementation.answer(logits, targets, reduction, upstream=upstream, narrow=True)
        self.g = upstream if first.weighted else np.ones_like(upstream)
        self.planned: DirectionalPlan | None = None  # the directional check's plan, its calls asked ahead
        if known is not None:
            self.planned = _directional_ahead(implementation, logits, targets, first, known, settings, self.g,
                                              upstream)
        # the first worker's share of the Taylor points, after the directional check's calls
        implementation.ahead(logits, targets, taylor_later, loss_only=True)
        # The second answer is let go at once: at 128k classes its gradient is half a GB or more.
        self.determinism = _determinism(first, implementation.answer(logits, targets, reduction, upstream=upstream,
                                                                     narrow=True))
        assert first.gradient is not None
        if not first.weighted and not np.all(upstream == 1.0):
            notes.append(f"--impl: {implementation.spec} makes its gradient itself and takes no grad_output "
                         f"parameter, so it is checked as the gradient of the plain sum of its losses "
                         f"(--grad-output ones)")
        self.compared = RowsCompared(first, settings, self.g, logits.shape[0])
        self.from_chunks = known is None  # the row losses, filled by chunk() where they were not known up front
        self.rows = known if known is not None else RowLosses(np.zeros(logits.shape[0]), np.zeros(logits.shape[0]),
                                                              1.0)

    @property
    def first(self) -> Returned:
        return self.compared.first

    def values(self, rows: slice) -> dict[str, np.ndarray]:
        """What the function returned for these rows (the loss whole when it is one number), for the report."""
        first = self.first
        assert first.gradient is not None
        loss = first.loss[rows] if self.settings.reduction == "none" else first.loss
        return {"loss": loss, "gradient": np.asarray(first.gradient[rows], dtype=np.float64)}

    def chunk(self, rows: slice, logits: np.ndarray, reference: Loss) -> CheckResult:
        """The gradient against the reference on these rows (the check's indices within them); `logits` are the
        rows' as the function was given them, `reference` gradcheck's loss of these rows."""
        if self.from_chunks:
            self.rows.uniform[rows] = np.abs(reference.row_losses(np.zeros_like(logits)))
            self.rows.losses[rows] = np.abs(reference.row_losses(logits))
            self.rows = self.rows._replace(scale=reference.scale)
        return self.compared.chunk(rows, logits, reference)

    def finish(self, gradient: CheckResult, notes: list[str]) -> list[CheckResult]:
        """The loss's checks, `gradient` (the chunks' checks merged), the gradient's baseline verdict in half
        precision, the check against the function's own loss, and determinism: the order of the report."""
        implementation, targets, reduction = self.implementation, self.targets, self.settings.reduction
        upstream = self.upstream
        users_loss = UsersLoss(
            losses_at=lambda point, edits: implementation.arriving(point, targets, reduction, edits),
            answer_at=lambda point: implementation.answer(point, targets, reduction, upstream=upstream, narrow=True),
        )
        settings = self.settings
        plan, self.planned = self.planned, None  # its point is the size of the logits: not kept past the check
        own = own_loss_check(users_loss, self.logits, self.first, self.rows, settings, notes, self.g,
                             settings.directions, settings.seed or 0,  # None: the command line's default seed, 0
                             plan=plan)
        return [*self.compared.finish(gradient), own, self.determinism]


def _taylor_ahead(implementation: Implementation, logits: np.ndarray, targets: np.ndarray,
                  settings: Settings) -> list[Along]:
    """The calls users.taylor_check will make, when it will run (taylor.taylor_plan): the loss at uniform logits,
    then the Taylor points, on a second worker where one can start (Implementation.start_taylor_side), but for
    those along FIRST_WORKER_TAYLOR's directions: returned, for the first worker, to be asked after the calls
    the check makes first. Its loss at the logits is the first call's (worker.py), on the first worker. Were it
    to ask for other calls, these would be answered and never used: time lost, never a wrong answer (each answer
    is kept under everything it depends on)."""
    from gradcheck_cli.checks.taylor import taylor_plan, taylor_points

    scale = taylor_plan(logits, settings)
    if scale is None:
        return []
    two = implementation.start_taylor_side(logits, targets)
    points = taylor_points(scale)
    later = [point for point in points if two and _first_worker_taylor(point)]
    implementation.ahead(np.zeros_like(logits), targets, [None], loss_only=True, taylor=True)
    implementation.ahead(logits, targets, [point for point in points if point not in later], loss_only=True,
                         taylor=True)
    return later


def _directional_ahead(implementation: Implementation, logits: np.ndarray, targets: np.ndarray, first: Returned,
                       rows: RowLosses, settings: Settings, g: np.ndarray,
                       upstream: np.ndarray) -> DirectionalPlan | None:
    """The calls of the directional check (own_loss.directional_plan: the gradient at z~, then 2 per direction),
    asked ahead of the reference's chunks on the first worker, where the check will ask for them. `rows` are the
    reference's row losses (runner.reference_rows), the ones Session.finish then gives the check: the same plan."""
    plan = directional_plan(logits, first, rows, settings, g, settings.directions, settings.seed or 0)
    if plan is not None:
        if not np.array_equal(plan.point, logits):
            implementation.ahead(plan.point, targets, [None], loss_only=False, upstream=upstream)
        implementation.ahead(plan.point, targets, plan.moves(plan.seeds, 0, plan.point.size), loss_only=True)
    return plan


def _first_worker_taylor(at: Edit | None) -> bool:
    """A Taylor point answered by the first worker where a second runs (FIRST_WORKER_TAYLOR)."""
    return isinstance(at, Along) and at.position in FIRST_WORKER_TAYLOR


def _spare_cpu() -> bool:
    """At least 2 CPUs this process may run on (its affinity, not the machine's count: a container's limit)."""
    return hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) >= 2


_SAME_TWICE = "two calls on the same input give identical loss and gradient"


def _identical(one: np.ndarray, other: np.ndarray) -> bool:
    """array_equal with NaN equal to NaN: the plain comparison first (one pass, where the NaN-aware one makes four
    at 8 x 50,257), which says True only where the NaN-aware one does."""
    return np.array_equal(one, other) or np.array_equal(one, other, equal_nan=True)


def _determinism(first: Returned, again: Returned) -> CheckResult:
    """Two calls on the same input must give identical loss and gradient (as torch's nondet_tol = 0 would)."""
    assert first.gradient is not None and again.gradient is not None
    same = _identical(first.loss, again.loss) and _identical(first.gradient, again.gradient)
    if same:  # what follows would find every change 0, and the first element the worst: said without N x C arrays
        corner = (0,) * first.gradient.ndim
        value = float(first.gradient[corner]) if first.gradient.size else float("nan")
        return CheckResult("impl determinism", True, 0.0, 0.0, corner, value, value, _SAME_TWICE)
    with np.errstate(invalid="ignore"):  # inf - inf: a changed infinity counts as an infinite change
        changed = np.abs(np.nan_to_num(first.gradient.astype(np.float64) - again.gradient, nan=np.inf))
    # The same value twice (the same NaN or infinity included) is no change.
    changed[(first.gradient == again.gradient) | (np.isnan(first.gradient) & np.isnan(again.gradient))] = 0.0
    worst = np.unravel_index(int(np.argmax(changed)), changed.shape)
    return CheckResult(
        name="impl determinism",
        passed=bool(same),
        max_abs_error=float(changed.max()) if np.isfinite(changed).all() else None,
        max_rel_error=None if not same else 0.0,
        worst_index=tuple(int(i) for i in worst),
        actual=float(again.gradient[worst]),
        expected=float(first.gradient[worst]),
        description=_SAME_TWICE,
    )
