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
    actual, expected, atol = _broadcast(actual, expected, atol)
    share, max_abs_error, max_rel_error = _shares(actual, expected, atol, rtol)
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
        max_abs_error=max_abs_error if all_finite else None,
        max_rel_error=max_rel_error if all_finite else None,
        worst_index=worst_index,
        actual=actual_value,
        expected=expected_value,
        description=description,
        worst_share=worst_share if all_finite else float("inf"),
        elements=int(share.size),
        mismatches=mismatches,
        worst_elements=worst,
    )


# Elements per block of _shares: its few temporaries of one block stay in the caches.
_BLOCK = 1 << 16


def _broadcast(actual: np.ndarray, expected: np.ndarray, atol: float | np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three at least 1-d and broadcast to their common shape (views: nothing copied)."""
    actual, expected, atol = (np.atleast_1d(np.asarray(x)) for x in (actual, expected, atol))
    shape = np.broadcast_shapes(actual.shape, expected.shape, atol.shape)
    return tuple(np.broadcast_to(x, shape) for x in (actual, expected, atol))  # type: ignore[return-value]


def _shares(actual: np.ndarray, expected: np.ndarray, atol: np.ndarray, rtol: float) -> tuple[np.ndarray, float, float]:
    """Each element's share of its tolerance, |a - e| / (rtol |e| + atol), and the largest absolute error and
    relative error |a - e| / max(|e|, |a|), all in float64. A block of leading-axis slices at a time: the share
    is the one array as big as the inputs (the rest is a block's), and every value is the one a whole-array
    computation gives, operation for operation. The largest errors are meaningful only where every share is
    finite (a NaN or infinite error makes its share so)."""
    share = np.empty(actual.shape)
    leading, width = len(share), int(np.prod(share.shape[1:]))  # leading indices, and elements per one
    rows = max(1, _BLOCK // max(1, width))
    # Four buffers of a block, reused by every block (views of their first elements for the last one).
    buffers = np.empty((4, min(rows, leading) * width))
    largest_abs = largest_rel = -np.inf
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        for start in range(0, leading, rows):
            piece = slice(start, start + rows)
            a, e = actual[piece], expected[piece]
            abs_error, magnitude, tolerance, other = (b[: a.size].reshape(a.shape) for b in buffers)
            np.subtract(a, e, out=abs_error, dtype=np.float64)
            np.abs(abs_error, out=abs_error)
            np.abs(e, out=magnitude, dtype=np.float64)
            np.multiply(magnitude, rtol, out=tolerance)
            tolerance += np.add(atol[piece], _TINY, out=other)  # in the dtype atol has, as atol + tiny is
            np.divide(abs_error, tolerance, out=share[piece])
            np.maximum(magnitude, np.abs(a, out=other, dtype=np.float64), out=magnitude)
            np.maximum(magnitude, _TINY, out=magnitude)
            rel_error = np.divide(abs_error, magnitude, out=magnitude)
            if abs_error.size:  # an empty input: argmax says so, as ever
                largest_abs = max(largest_abs, float(abs_error.max()))
                largest_rel = max(largest_rel, float(rel_error.max()))
    return share, largest_abs, largest_rel


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
