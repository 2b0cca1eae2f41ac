"""`--impl MODULE:FUNCTION`: a user's loss-and-gradient function, and the checks of it.

The function is called as FUNCTION(logits, targets) -> (loss, gradient), with N x C float64 logits and
N x C target rows, the loss for the chosen reduction. `Implementation.load(spec)` imports it in a worker
process (checks/worker.py: its output, exits, crashes, forks and endless loops cannot reach the verdict);
`Implementation(spec, function)` calls a Python function in this process. Close it (or use it in a `with`).
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from gradcheck_cli.checks.compare import compare
from gradcheck_cli.checks.own_loss import UsersLoss, own_loss_check
from gradcheck_cli.checks.returned import Returned
from gradcheck_cli.checks.worker import DEFAULT_TIMEOUT, Caller, Edit, InProcess, start
from gradcheck_cli.errors import InputError
from gradcheck_cli.report import CheckResult

if TYPE_CHECKING:
    from gradcheck_cli.numerics.losses.base import Loss
    from gradcheck_cli.settings import Settings

# A scalar loss gives one number per evaluation, so its finite differences take one perturbation per
# element; past this many elements the first rows up to it are differenced (and a note says so).
MAX_SCALAR_ELEMENTS = 4096


class Implementation:
    """The user's FUNCTION(logits, targets) -> (loss, gradient), however it is called, and its checks."""

    def __init__(self, spec: str, function: Callable[..., Any] | None = None, caller: Caller | None = None) -> None:
        if caller is None:
            if function is None:
                raise TypeError("Implementation needs the function, or a caller that runs it")
            caller = InProcess(spec, function)
        self.spec, self.function, self.caller = spec, function, caller
        self.calls = 0

    @classmethod
    def load(cls, spec: str, timeout: float | None = None) -> Implementation:
        """Import MODULE:FUNCTION (or path/to/file.py:FUNCTION) in a worker; `timeout` bounds the import and
        each call (None: DEFAULT_TIMEOUT)."""
        return cls(spec, caller=start(spec, DEFAULT_TIMEOUT if timeout is None else timeout))

    def close(self) -> None:
        """Stop the worker, if the function runs in one."""
        self.caller.close()

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
        self, logits: np.ndarray, targets: np.ndarray, reduction: str, at: Edit | None = None, loss_only: bool = False
    ) -> Returned:
        """One call (on `logits` with `at` set in a copy), its values as float64, their shapes checked."""
        self.calls += 1
        return self._checked(self.caller.call(logits, targets, at, loss_only), logits, reduction)

    def losses(self, logits: np.ndarray, targets: np.ndarray, reduction: str, edits: list[Edit]) -> list[np.ndarray]:
        """The loss of one call per edit (each set in a copy of `logits`), shapes checked."""
        self.calls += len(edits)
        return [self._checked(answer, logits, reduction).loss for answer in self.caller.losses(logits, targets, edits)]

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
        assert settings.atol is not None and settings.rtol is not None
        reduction = settings.reduction
        first = self.answer(logits, targets, reduction)
        again = self.answer(logits, targets, reduction)
        assert first.gradient is not None and again.gradient is not None
        users_loss = UsersLoss(
            losses_at=lambda point, edits: self.losses(point, targets, reduction, edits),
            answer_at=lambda point: self.answer(point, targets, reduction),
        )
        rows = logits.shape[0]
        if reduction != "none":
            rows = max(1, min(rows, MAX_SCALAR_ELEMENTS // logits.shape[1]))
            if rows < logits.shape[0]:
                notes.append(f"--impl: a scalar loss is differenced one element at a time; the first {rows} of "
                             f"{logits.shape[0]} rows were (use --reduction none to difference every row at once)")
        return [
            *_reference_checks(first, logits, reference, settings),
            own_loss_check(users_loss, logits, first, reference, settings, rows, notes),
            _determinism(first, again),
        ]


def _reference_checks(first: Returned, logits: np.ndarray, reference: Loss, settings: Settings) -> list[CheckResult]:
    """The user's loss and gradient against gradcheck's reference, held to --dtype as supplied values are.

    Nothing is differenced: each element may be off by rtol |n| plus the rounding of a straightforward
    computation in --dtype (losses/base.py's allowance, as rows.supplied_checks uses). A reduced loss is
    scale * sum_n l_n: each row within its allowance, and the sum of N rows rounded as numpy and torch sum
    (pairwise), u (2 + log2 N) scale sum_n |l_n| more.
    """
    from gradcheck_cli.numerics.losses.base import allowance, rounding_factor, unit_roundoff

    assert first.gradient is not None and settings.rtol is not None
    rho = rounding_factor(logits, settings.temperature)
    gradient = reference.gradient(logits)
    scales = reference.gradient_scales(logits)
    gradient_tolerance = allowance(gradient, scales._replace(scale=np.abs(gradient)), settings, rho,
                                   unit=reference.scale)
    rows = reference.row_losses(logits)
    row_scales = reference.loss_scales(logits)
    row_tolerance = allowance(rows, row_scales._replace(scale=np.abs(rows)), settings, rho[:, 0],
                              unit=reference.scale)
    expected, loss_tolerance = rows, row_tolerance
    if settings.reduction != "none":
        expected = np.asarray(reference.loss(logits))
        summed = unit_roundoff(settings.dtype) * (2.0 + np.log2(rows.size)) * np.abs(rows).sum()
        loss_tolerance = reference.scale * (row_tolerance.sum() + summed)
    return [
        compare("impl loss", first.loss, expected, loss_tolerance, settings.rtol,
                description="your loss vs gradcheck's reference"),
        compare("impl gradient", first.gradient, gradient, gradient_tolerance, settings.rtol,
                description="your gradient vs gradcheck's reference"),
    ]


def _determinism(first: Returned, again: Returned) -> CheckResult:
    """Two calls on the same input must give identical loss and gradient (as torch's nondet_tol = 0 would)."""
    assert first.gradient is not None and again.gradient is not None
    same = np.array_equal(first.loss, again.loss, equal_nan=True) and np.array_equal(
        first.gradient, again.gradient, equal_nan=True
    )
    with np.errstate(invalid="ignore"):  # inf - inf: a changed infinity counts as an infinite change
        changed = np.abs(np.nan_to_num(first.gradient - again.gradient, nan=np.inf))
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
        description="two calls on the same input give identical loss and gradient",
    )
