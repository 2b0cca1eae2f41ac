"""Compare a quantity against its reference, decide pass or fail, and find the worst element."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from gradcheck_cli.numerics.losses.base import Allowance
from gradcheck_cli.report import WORST_SHOWN, CheckResult, Element

# Below this, a relative error means nothing: both values are zero for all practical purposes.
_TINY = float(np.finfo(np.float64).tiny)


def compare(
    name: str,
    actual: np.ndarray,
    expected: np.ndarray,
    atol: float | np.ndarray | Allowance,
    rtol: float,
    description: str = "",
) -> CheckResult:
    """numpy.isclose semantics: every |actual - expected| <= atol + rtol |expected|.

    The worst element is the one that uses the largest share of its tolerance, so that a failing check
    points at the element that fails it most. A non-finite value anywhere fails the check and is the worst.
    `atol` may be an Allowance of `expected` (losses/base.py): computed here a block at a time, the same numbers.
    """
    scalar = np.ndim(actual) == 0 and np.ndim(expected) == 0
    lazy = atol if isinstance(atol, Allowance) else None
    if lazy is not None and not lazy.blocks_with(expected, np.broadcast_shapes(np.shape(actual), np.shape(expected))):
        atol, lazy = lazy.whole(), None
    actual, expected, atol = _broadcast(actual, expected, None if lazy is not None else atol)  # type: ignore[arg-type]
    scan = _scan(actual, expected, atol, rtol, lazy)
    worst_index = tuple(int(i) for i in np.unravel_index(scan.worst, actual.shape))
    worst_share = scan.worst_share
    actual_value, expected_value = float(actual[worst_index]), float(expected[worst_index])
    if scalar:
        worst_index = ()
    # The worst share is the first NaN if there is one, else the largest (inf if any): so it decides both.
    all_finite = bool(np.isfinite(worst_share))
    passed = all_finite and worst_share <= 1.0
    mismatches, worst = (0, ()) if passed else _mismatches(_shares(actual, expected, atol, rtol, lazy), actual,
                                                           expected, scalar)
    return CheckResult(
        name=name,
        passed=passed,
        max_abs_error=scan.max_abs_error if all_finite else None,
        max_rel_error=scan.max_rel_error if all_finite else None,
        worst_index=worst_index,
        actual=actual_value,
        expected=expected_value,
        description=description,
        worst_share=worst_share if all_finite else float("inf"),
        elements=int(actual.size),
        mismatches=mismatches,
        worst_elements=worst,
    )


# Elements per block of _scan: its six temporaries of one block (128 KB each) stay in a core's L2 cache (512 KB
# on the machine of the README's figures) or next to it, so every pass after the first reads the inputs from
# there; few enough blocks that numpy's per-call cost (a microsecond or two, some twenty calls a block) stays small.
_BLOCK = 1 << 14


class _Scan:
    """What a passing check needs of its shares: the worst one (numpy.argmax's pick over all of them: the first
    NaN, else the first largest) and the largest absolute and relative errors. A plain class, as the records
    below settings.py on a check's path: a NamedTuple costs start-up some 0.2 ms to make."""

    __slots__ = ("max_abs_error", "max_rel_error", "worst", "worst_share")

    def __init__(self, worst: int, worst_share: float, max_abs_error: float, max_rel_error: float) -> None:
        self.worst = worst  # flat index
        self.worst_share, self.max_abs_error, self.max_rel_error = worst_share, max_abs_error, max_rel_error


def _broadcast(actual: np.ndarray, expected: np.ndarray, atol: float | np.ndarray | None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three at least 1-d and broadcast to their common shape (views: nothing copied; arrays of that shape
    as they are). No atol (an Allowance's, computed in _scan) stands in as expected."""
    actual, expected = np.atleast_1d(np.asarray(actual)), np.atleast_1d(np.asarray(expected))
    given = expected if atol is None else np.atleast_1d(np.asarray(atol))
    if actual.shape == expected.shape == given.shape:  # the usual case, without numpy's broadcasting machinery
        return actual, expected, given
    shape = np.broadcast_shapes(actual.shape, expected.shape, given.shape)
    return tuple(x if x.shape == shape else np.broadcast_to(x, shape)  # type: ignore[return-value]
                 for x in (actual, expected, given))


def _scan(actual: np.ndarray, expected: np.ndarray, atol: np.ndarray, rtol: float, lazy: Allowance | None,
          kept: np.ndarray | None = None) -> _Scan:
    """Each element's share of its tolerance, |a - e| / (rtol |e| + atol), and its relative error
    |a - e| / max(|e|, |a|), all in float64, a block at a time, keeping only the worst share and the largest
    errors: nothing as big as the inputs is made (atol too, when it is an Allowance: `lazy`), unless `kept`
    (the inputs' shape) is given to receive every share. Every value is the one a whole-array computation
    gives, operation for operation. The largest errors are meaningful only where every share is finite (a NaN
    or infinite error makes its share so)."""
    if actual.size == 0:
        np.argmax(np.empty(0))  # an empty input: argmax says so, as ever
    bound = None if lazy is not None else _scalar_bound(atol)
    views: dict[tuple[int, ...], tuple[np.ndarray, ...]] = {}  # per block shape: buffers reused by every block
    worst, worst_share, largest_abs, largest_rel = 0, -np.inf, -np.inf, -np.inf
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        for offset, index in _blocks(actual.shape):
            a, e = actual[index], expected[index]
            if a.shape not in views:  # the first block is the largest: the others' are views of its buffers
                buffers = next(iter(views.values()), ()) or tuple(np.empty(a.size) for _ in range(5))
                views[a.shape] = tuple(b.reshape(-1)[: a.size].reshape(a.shape) for b in buffers)
            error, magnitude, share, other, spare = views[a.shape]
            if kept is not None:
                share = kept[index]
            np.subtract(a, e, out=error, dtype=np.float64)
            np.abs(error, out=error)
            np.abs(e, out=magnitude, dtype=np.float64)
            if lazy is not None:
                tolerance = lazy.block(index, magnitude, other, spare)
            np.multiply(magnitude, rtol, out=share)
            if bound is not None:
                share += bound
            else:  # atol + tiny in the dtype atol has, as whole arrays add it
                share += np.add(atol[index] if lazy is None else tolerance, _TINY, out=other)
            np.divide(error, share, out=share)
            at = int(share.argmax())
            value = float(share.reshape(-1)[at])
            if worst_share == worst_share and (value > worst_share or value != value):  # the first NaN stays
                worst, worst_share = offset + at, value
            np.maximum(magnitude, np.abs(a, out=other, dtype=np.float64), out=magnitude)
            np.maximum(magnitude, _TINY, out=magnitude)
            rel_error = np.divide(error, magnitude, out=magnitude)
            largest_abs = max(largest_abs, float(_largest(error, axis=None)))
            largest_rel = max(largest_rel, float(_largest(rel_error, axis=None)))
    return _Scan(worst, worst_share, largest_abs, largest_rel)


_largest = np.maximum.reduce  # what ndarray.max calls, without its Python wrapper (NaN propagates the same)


def _scalar_bound(atol: np.ndarray) -> float | None:
    """atol + tiny when atol is one number broadcast (as float64, computed in atol's dtype as each element's
    would be), else None: then it is added element by element."""
    if atol.size == 0 or any(atol.strides):
        return None
    first = atol[(slice(0, 1),) * atol.ndim].reshape(1)  # every stride 0: every element is this one
    return float(np.add(first, _TINY, out=np.empty(1))[0])


def _blocks(shape: tuple[int, ...]) -> Iterator[tuple[int, tuple[slice, ...]]]:
    """Blocks of about _BLOCK elements of an array of this shape, in row-major order, each a run of consecutive
    elements: (its first element's flat index, its index). Leading-axis slices, or pieces of one row of a
    2-d array whose rows are longer than _BLOCK."""
    width = int(np.prod(shape[1:]))  # elements per leading index
    if len(shape) == 2 and width > _BLOCK:
        for row in range(shape[0]):
            for start in range(0, width, _BLOCK):
                yield row * width + start, (slice(row, row + 1), slice(start, start + _BLOCK))
        return
    rows = max(1, _BLOCK // max(1, width))
    for start in range(0, shape[0], rows):
        yield start * width, (slice(start, start + rows),)


def _shares(actual: np.ndarray, expected: np.ndarray, atol: np.ndarray, rtol: float, lazy: Allowance | None
            ) -> np.ndarray:
    """Every element's share of its tolerance (a failing check counts them): _scan's values, kept."""
    share = np.empty(actual.shape)
    _scan(actual, expected, atol, rtol, lazy, kept=share)
    return share


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
