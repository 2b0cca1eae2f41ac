"""Compare a quantity against its reference, decide pass or fail, and find the worst element."""

from __future__ import annotations

import numpy as np

from gradcheck_cli.report import WORST_SHOWN, CheckResult, Element

# Below this, a relative error means nothing: both values are zero for all practical purposes.
_TINY = float(np.finfo(np.float64).tiny)


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
    scalar = np.ndim(actual) == 0 and np.ndim(expected) == 0
    actual = np.atleast_1d(np.asarray(actual, dtype=np.float64))
    expected = np.atleast_1d(np.asarray(expected, dtype=np.float64))
    # Written with in-place operations: on a streamed file this runs over every Jacobian element.
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        abs_error = np.subtract(actual, expected)
        np.abs(abs_error, out=abs_error)
        magnitude = np.abs(expected)
        tolerance = magnitude * rtol
        tolerance += atol + _TINY
        share = abs_error / tolerance
        np.maximum(magnitude, np.abs(actual), out=magnitude)
        np.maximum(magnitude, _TINY, out=magnitude)
        rel_error = np.divide(abs_error, magnitude, out=magnitude)
    # A NaN or infinity in either input makes the share NaN or infinite: argmax picks the first NaN, and
    # the check fails. (Two finite values whose difference overflows count as not finite too.)
    flat = int(np.argmax(share))
    worst_index = tuple(int(i) for i in np.unravel_index(flat, share.shape))
    worst_share = float(share[worst_index])
    actual_value, expected_value = float(actual[worst_index]), float(expected[worst_index])
    if scalar:
        worst_index = ()
    # argmax returns the first NaN if there is one, else the largest share (inf if any): one pass suffices.
    all_finite = bool(np.isfinite(worst_share))
    passed = all_finite and worst_share <= 1.0
    mismatches, worst = (0, ()) if passed else _mismatches(share, actual, expected, scalar)
    return CheckResult(
        name=name,
        passed=passed,
        max_abs_error=float(abs_error.max()) if all_finite else None,
        max_rel_error=float(rel_error.max()) if all_finite else None,
        worst_index=worst_index,
        actual=actual_value,
        expected=expected_value,
        description=description,
        worst_share=worst_share if all_finite else float("inf"),
        elements=int(share.size),
        mismatches=mismatches,
        worst_elements=worst,
    )


def _mismatches(
    share: np.ndarray, actual: np.ndarray, expected: np.ndarray, scalar: bool
) -> tuple[int, tuple[Element, ...]]:
    """How many elements are outside their tolerance (NaN shares included), and the worst WORST_SHOWN of them:
    NaN first, then the largest shares, ties in row-major order (as numpy.argmax would pick them)."""
    flat_share = share.reshape(-1)
    failing = np.flatnonzero(~(flat_share <= 1.0))
    shares = flat_share[failing]
    order = np.lexsort((failing, -np.nan_to_num(shares, nan=np.inf), ~np.isnan(shares)))[:WORST_SHOWN]
    worst = []
    for flat in failing[order].tolist():
        index = tuple(int(i) for i in np.unravel_index(flat, share.shape))
        worst.append(Element(() if scalar else index, float(actual[index]), float(expected[index]),
                             float(share[index])))
    return int(failing.size), tuple(worst)


def _worst_first(element: Element) -> tuple[bool, float, tuple[int, ...]]:
    nan = element.share != element.share
    return (not nan, 0.0 if nan else -element.share, element.position)


def _sum(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else a + b


def _larger(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else max(a, b)


def merge(earlier: CheckResult | None, later: CheckResult, offset: tuple[int, ...]) -> CheckResult:
    """One check over a whole batch from its checks over consecutive pieces, exactly as if done at once.

    `later` covers the elements whose index is `offset` beyond its own (the rows of a later chunk, or a
    later column). The worst element is the one with the largest share of its tolerance, and of equal
    shares the first in row-major order, which is what numpy.argmax over the whole array picks.
    """
    def moved(index: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(i + o for i, o in zip(index, offset, strict=True)) if index else index

    shifted = later._replace(
        worst_index=moved(later.worst_index),
        worst_elements=tuple(e._replace(position=moved(e.position)) for e in later.worst_elements),
    )
    if earlier is None:
        return shifted
    later_wins = shifted.worst_share > earlier.worst_share or (
        shifted.worst_share == earlier.worst_share and shifted.worst_index < earlier.worst_index
    )
    worst = shifted if later_wins else earlier
    return worst._replace(
        passed=earlier.passed and shifted.passed,
        max_abs_error=_larger(earlier.max_abs_error, shifted.max_abs_error),
        max_rel_error=_larger(earlier.max_rel_error, shifted.max_rel_error),
        elements=_sum(earlier.elements, shifted.elements),
        mismatches=_sum(earlier.mismatches, shifted.mismatches),
        worst_elements=tuple(sorted((*earlier.worst_elements, *shifted.worst_elements), key=_worst_first))[
            :WORST_SHOWN],
    )
