"""Compare a quantity against its reference, decide pass or fail, and find the worst element."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Below this, a relative error means nothing: both values are zero for all practical purposes.
_TINY = float(np.finfo(np.float64).tiny)


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    max_abs_error: float | None
    max_rel_error: float | None
    worst_index: tuple[int, ...]
    actual: float
    expected: float
    description: str = ""


def compare(
    name: str,
    actual: np.ndarray,
    expected: np.ndarray,
    atol: float | np.ndarray,
    rtol: float,
    description: str = "",
) -> CheckResult:
    """numpy.isclose semantics: every |actual - expected| <= atol + rtol |expected|.

    The worst element is the one that uses the largest share of its tolerance, so that a failing check
    points at the element that fails it most. A non-finite value anywhere fails the check and is the worst.
    """
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        abs_error = np.abs(actual - expected)
        rel_error = abs_error / np.maximum(np.maximum(np.abs(actual), np.abs(expected)), _TINY)
        share = abs_error / (atol + rtol * np.abs(expected) + _TINY)
    finite = np.isfinite(actual) & np.isfinite(expected)
    share = np.where(finite, share, np.inf)
    flat = int(np.argmax(share))
    worst_index = tuple(int(i) for i in np.unravel_index(flat, share.shape))
    all_finite = bool(finite.all())
    return CheckResult(
        name=name,
        passed=all_finite and bool((share <= 1.0).all()),
        max_abs_error=float(abs_error.max()) if all_finite else None,
        max_rel_error=float(rel_error.max()) if all_finite else None,
        worst_index=worst_index,
        actual=float(actual[worst_index]),
        expected=float(expected[worst_index]),
        description=description,
    )
