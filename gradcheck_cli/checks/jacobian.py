"""The Jacobian check, and the Hessian check of a loss whose Hessian is a per-row multiple of it: every element
of m (diag(s) - s s^T) / T against finite differences, without building N x C x C arrays."""

from collections.abc import Callable

import numpy as np

from gradcheck_cli.checks.compare import compare, merge
from gradcheck_cli.checks.hull import BLOCK as _BLOCK
from gradcheck_cli.checks.hull import hull as _hull
from gradcheck_cli.errors import InputError
from gradcheck_cli.numerics import differences
from gradcheck_cli.numerics.losses.base import Allowance, Loss, Scales, allowance, rounding_factor
from gradcheck_cli.numerics.softmax import Softmax
from gradcheck_cli.report import CheckResult
from gradcheck_cli.settings import Settings

JACOBIAN = ("jacobian", "ds/dz, analytic vs finite differences")
HESSIAN = ("hessian", "d2L/dz2, analytic vs finite differences of the gradient")


class Sides:
    """Both sides of a check of per-row matrices m_n (diag(s) - s s^T) / T, factored (N x C each).

    Analytic: a_ij = -low_i column_j off the diagonal, diagonal_j on it. Numeric: n_ij = s_i factor_j off the
    diagonal, own_j on it. `weight` (N x 1) multiplies every scale: 1 for the Jacobian, |m| for a Hessian.
    `low` is the analytic s in float64 (its dtype's values: exact), `s` the float64 reference; diagonal_is_size:
    diagonal is s (1 - s) of s and complement itself (float64, T = 1, the Jacobian). A plain class, as this
    module's other record: a NamedTuple costs start-up some 0.2 ms to make.
    """

    __slots__ = ("column", "complement", "diagonal", "diagonal_is_size", "factor", "low", "own", "s", "weight")

    def __init__(self, low: np.ndarray, column: np.ndarray, diagonal: np.ndarray, s: np.ndarray,
                 complement: np.ndarray, factor: np.ndarray, own: np.ndarray, weight: np.ndarray,
                 diagonal_is_size: bool = False) -> None:
        self.low, self.column, self.diagonal, self.s, self.complement = low, column, diagonal, s, complement
        self.factor, self.own, self.weight, self.diagonal_is_size = factor, own, weight, diagonal_is_size

    def _replace(self, **changes: object) -> "Sides":
        """A copy with these fields changed, as a NamedTuple's _replace."""
        unknown = set(changes) - set(self.__slots__)
        if unknown:
            raise TypeError(f"Sides has no field {sorted(unknown)[0]!r}")
        copied = object.__new__(Sides)
        for name in self.__slots__:
            setattr(copied, name, changes.get(name, getattr(self, name)))
        return copied


def jacobian_sides(analytic_s: Softmax, reference: Softmax, settings: Settings,
                   multiples: tuple[np.ndarray, np.ndarray] | None = None) -> Sides:
    """The sides of the Jacobian check, or with `multiples` (analytic m in its dtype, reference m: N each) of a
    Hessian m J / T. The numeric side is softmax_derivative_factors': the method's stencil over the exact
    change of s (see differences.py). In float32 the analytic column factor is float32's s_j / T, and a_ij its
    product with float32's s_i, exact in float64 (24 + 24 bits): one rounding short of float32's own product,
    which errs by u |a_ij|, inside the allowance u rho N of every element."""
    assert settings.eps is not None
    h = differences.exact_step(settings.eps)
    factor, own = differences.softmax_derivative_factors(reference.s, reference.complement, h, settings.method,
                                                         settings.temperature)
    low_s = analytic_s.s
    temperature = low_s.dtype.type(settings.temperature)
    unit = settings.temperature == 1.0  # x / 1 is x: no pass over the batch for it
    column = np.asarray(low_s if unit else low_s / temperature, dtype=np.float64)
    diagonal = low_s * analytic_s.complement
    diagonal = np.asarray(diagonal if unit else np.divide(diagonal, temperature, out=diagonal), dtype=np.float64)
    weight = np.ones((low_s.shape[0], 1))
    if multiples is not None:
        analytic, numeric = (np.asarray(m, dtype=np.float64).reshape(-1, 1) for m in multiples)
        column, diagonal, factor, own, weight = column * analytic, diagonal * analytic, factor * numeric, \
            own * numeric, np.abs(numeric)
    same = analytic_s is reference and unit and multiples is None  # diagonal is s * complement then, bit for bit
    return Sides(low_s.astype(np.float64, copy=False), column, diagonal, reference.s, reference.complement, factor, own,
                 weight, same)


def jacobian_check(
    analytic_s: Softmax, reference: Softmax, logits: np.ndarray, settings: Settings, rho: np.ndarray | None = None
) -> CheckResult:
    """Every element of ds/dz, analytic vs finite differences, in O(N C) memory however large C is (see
    structured_check). `analytic_s` and `reference` are softmax(z / T) in the analytic dtype and in float64;
    rho the rows' rounding factor, if the caller has it."""
    return structured_check(jacobian_sides(analytic_s, reference, settings), logits, settings, rho, JACOBIAN)


def structured_check(sides: Sides, logits: np.ndarray, settings: Settings, rho: np.ndarray | None,
                     naming: tuple[str, str]) -> CheckResult:
    """All N C^2 elements of the sides decided from O(N C) of them (O(N C H) in float32, H a few tens).

    Off the diagonal, in column j of row n, element i's error |a_ij - n_ij| = |s_i (column_j + factor_j) +
    d_i column_j| (d_i = low_i - s_i) is linear in the point (s_i, d_i), and its tolerance (atol, the row's
    underflow floor, and terms proportional to s_i: see losses/base.py) is c + s_i K_j, positive. So its share
    of the tolerance, either sign, is a linear-fractional function of the point: at most t wherever a linear
    function of the point is, and the largest over the row's points is at a vertex of their convex hull (the
    error itself likewise). Its relative error depends on r_i = d_i / s_i only, and is largest at the extreme
    r or next to the one r where its denominator switches (_ratio_neighbours). Where low is s (float64) every
    d_i is 0, error and share grow with s_i, and the largest s_i other than j is the worst. Comparing those
    elements and the diagonal decides the check, with the values comparing every element computes (up to
    the rounding of the products: ties at that level may pick another element of the same share); for a
    column whose own class is a candidate, the candidates of the points without it (_candidates). A failing
    check is redone element by element, to count its failures.
    """
    assert settings.eps is not None and settings.atol is not None and settings.rtol is not None
    rho = rounding_factor(logits, settings.temperature) if rho is None else rho
    rows, classes = sides.s.shape
    if not all(np.isfinite(part).all() for part in (sides.low, sides.column, sides.factor)):
        return by_element(sides, logits, settings, rho, naming)  # nothing to factor: every element counts
    result = _diagonal(sides, settings, rho, naming)
    if classes > 1 and sides.low is sides.s:  # float64: one candidate per (row, column), the row's largest other
        result = merge(result, _largest_others(sides, settings, rho, naming), (0, 0, 0))
    elif classes > 1:
        for part in _off_diagonal_candidates(sides, settings, rho, naming):
            result = merge(result, part, (0, 0, 0))
    if not result.passed:  # how many of all N C^2 fail, and the worst few: counted element by element
        return by_element(sides, logits, settings, rho, naming)
    return result._replace(elements=rows * classes * classes, mismatches=0)


def by_element(sides: Sides, logits: np.ndarray, settings: Settings, rho: np.ndarray | None = None,
               naming: tuple[str, str] = JACOBIAN) -> CheckResult:
    """The check comparing every element, a block of columns at a time so memory stays bounded (O(N C) and
    _BLOCK). merge() picks the worst element numpy.argmax over the whole N x C x C arrays would."""
    rho = rounding_factor(logits, settings.temperature) if rho is None else rho
    rows, classes = sides.s.shape
    result = _diagonal(sides, settings, rho, naming)
    every_row, step = np.arange(rows)[:, None, None], max(1, _BLOCK // max(1, rows * classes))
    for start in range(0, classes, step):  # N x C x (a block of columns j): row-major is (n, i, j) order
        j = np.arange(start, min(classes, start + step))[None, None, :]
        result = merge(result, _elements(sides, every_row, None, j, settings, rho, naming), (0, 0, 0))
    return result._replace(elements=rows * classes * classes)  # the diagonal once, not again in its column


def jacobian_check_by_element(analytic_s: Softmax, reference: Softmax, settings: Settings, logits: np.ndarray,
                              rho: np.ndarray | None = None) -> CheckResult:
    """The Jacobian check comparing every element (by_element): the definition the structured check meets."""
    return by_element(jacobian_sides(analytic_s, reference, settings), logits, settings, rho)


def _diagonal(sides: Sides, settings: Settings, rho: np.ndarray, naming: tuple[str, str]) -> CheckResult:
    """The diagonal elements (N x C): S = m s_j (1 - s_j) / T, N = m s_j / T (the straightforward s_j - s_j^2)."""
    assert settings.rtol is not None
    scale = sides.weight / settings.temperature
    size = _scaled(sides.diagonal if sides.diagonal_is_size else sides.s * sides.complement, scale)
    gross = _scaled(sides.s, scale)
    eta = float(differences.exact_step(settings.eps or 0.0)) / settings.temperature
    atol = Allowance(sides.own, Scales(size, gross, scale), settings, rho, eta)  # computed by compare, in blocks
    check = compare(naming[0], sides.diagonal, sides.own, atol, settings.rtol, naming[1])
    return _placed(check, lambda at: (at[0], at[1], at[1]))


def _scaled(values: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """values * scale (N x 1); values itself where every scale is 1 (the Jacobian's, at T = 1): x * 1 is x, so
    that pass over the batch is skipped."""
    if bool((scale == 1.0).all()):
        return values
    return values * scale


def _elements(sides: Sides, n: np.ndarray, i: np.ndarray | None, j: np.ndarray | slice | None, settings: Settings,
              rho: np.ndarray, naming: tuple[str, str]) -> CheckResult:
    """Off-diagonal elements (row n, i, j), index arrays that broadcast together, compared as an array of their
    broadcast shape (each side gathered at its own shape first: the i side of a row's candidates is small).
    i or j None is every class, j a slice a run of them, along the middle axis (_at). An index with i == j
    stands for nothing (the diagonal is checked apart): both its sides are 0."""
    assert settings.rtol is not None
    scale = sides.weight[:, 0] / settings.temperature
    every = np.arange(sides.s.shape[1])[None, :, None]
    s_i = _at(sides.s, n, i)
    low_i = s_i if sides.low is sides.s else _at(sides.low, n, i)
    analytic = -(low_i * _at(sides.column, n, j))
    numeric = s_i * _at(sides.factor, n, j)
    size = s_i * (_at(sides.s, n, j) * scale[n])
    i, j = every if i is None else i, every[:, j] if isinstance(j, slice) else every if j is None else j
    same = np.broadcast_to(i == j, analytic.shape)
    if same.any():
        analytic[same], numeric[same], size[same] = 0.0, 0.0, 0.0
    eta = float(differences.exact_step(settings.eps or 0.0)) / settings.temperature
    atol = allowance(numeric, Scales(size, size, scale[n]), settings, rho[n, 0], eta)
    check = compare(naming[0], analytic, numeric, atol, settings.rtol, naming[1])
    shape = analytic.shape
    return _placed(check, lambda at: tuple(int(np.broadcast_to(k, shape)[at]) for k in (n, i, j)))


def _largest_others(sides: Sides, settings: Settings, rho: np.ndarray, naming: tuple[str, str]) -> CheckResult:
    """Where low is s (float64), the off-diagonal element of each (row n, column j) that decides the check: i the
    row's largest s_i other than j (structured_check), the same for every column but the row's largest class.
    So s_i is one number per row (two at that column): N x C products, with nothing gathered. The values and
    the allowance are _elements' for the same (n, i, j), product for product."""
    assert settings.rtol is not None
    s, rows = sides.s, np.arange(sides.s.shape[0])
    first = s.argmax(axis=1)
    rest = s.copy()
    rest[rows, first] = -np.inf
    second = rest.argmax(axis=1)
    del rest
    s_first, s_second = s[rows, first][:, None], s[rows, second]
    scale = sides.weight / settings.temperature  # N x 1
    analytic = np.multiply(s_first, sides.column)
    np.negative(analytic, out=analytic)
    numeric = np.multiply(s_first, sides.factor)
    size = np.multiply(_scaled(s, scale), s_first)
    # The row's largest class: its largest other is the second largest.
    analytic[rows, first] = -(s_second * sides.column[rows, first])
    numeric[rows, first] = s_second * sides.factor[rows, first]
    size[rows, first] = s_second * (s[rows, first] * scale[:, 0])
    eta = float(differences.exact_step(settings.eps or 0.0)) / settings.temperature
    atol = Allowance(numeric, Scales(size, size, scale), settings, rho, eta)  # computed by compare, in blocks
    del size
    check = compare(naming[0], analytic, numeric, atol, settings.rtol, naming[1])
    return _placed(check, lambda at: (at[0], int(second[at[0]] if at[1] == first[at[0]] else first[at[0]]), at[1]))


def _at(values: np.ndarray, n: np.ndarray, k: np.ndarray | slice | None) -> np.ndarray:
    """values[n, k]; k None is every class of every row, along the middle axis (N x C x 1), and a slice a run
    of classes of every row (n is every row) the same way: views, nothing gathered."""
    if k is None or isinstance(k, slice):
        return values[:, slice(None) if k is None else k, None]
    return values[n, k]


class _Candidates:
    """The off-diagonal elements that decide a check (see structured_check and _candidates)."""

    __slots__ = ("first", "neighbours", "second", "whole")

    def __init__(self, first: np.ndarray, second: np.ndarray, neighbours: np.ndarray, whole: np.ndarray) -> None:
        self.first = first  # N x K: classes i whose elements can be the worst of any column but their own
        self.second = second  # N x K2: with `first`, those that can be for a column among `first`
        self.neighbours = neighbours  # N x C x k: per (row, column), more (whose relative error can be the worst)
        self.whole = whole  # N x C: the (row, column) pairs whose own class is among `first`


def _off_diagonal_candidates(sides: Sides, settings: Settings, rho: np.ndarray,
                             naming: tuple[str, str]) -> list[CheckResult]:
    """The off-diagonal elements that decide the check (see structured_check), compared in blocks."""
    rows, classes = sides.s.shape
    chosen = _candidates(sides)
    every_row = np.arange(rows)[:, None, None]
    parts = []
    step = max(1, _BLOCK // max(1, rows * (chosen.first.shape[1] + chosen.neighbours.shape[2])))
    for start in range(0, classes, step):
        j = slice(start, start + step)  # a run of columns of every row: views, nothing gathered (_at)
        if chosen.first.size:
            parts.append(_elements(sides, every_row, chosen.first[:, None, :], j, settings, rho, naming))
        parts.append(_elements(sides, every_row, chosen.neighbours[:, j, :], j, settings, rho, naming))
    pair_rows, pair_columns = np.nonzero(chosen.whole)
    if pair_rows.size:
        others = np.concatenate([chosen.first, chosen.second], axis=1)[pair_rows]
        parts.append(_elements(sides, pair_rows[:, None], others, pair_columns[:, None], settings, rho, naming))
    return parts


def _candidates(sides: Sides) -> _Candidates:
    """The classes whose elements decide the check where low is not s (where it is, _largest_others): the
    vertices of the hull of the points (s_i, d_i) and the extreme r_i = d_i / s_i (`first`), and per (row,
    column) the two r_i next to r*_j (ratio_neighbours). Without one point j of
    `first`, a hull vertex is one of the others or a vertex of the hull of the points inside (a vertex of a
    set's hull is one of any subset holding it): `second`, that inner hull and the next extreme r_i."""
    s, low = sides.s, sides.low
    d = low - s
    outer = _hull(s, d)
    inner = _inner_hull(s, d, outer)
    ratio = np.where(s > 0, d / np.where(s > 0, s, 1.0), np.nan)  # no r for a zero s: its elements are all 0
    for pick in (np.nanargmin, np.nanargmax):
        index = pick(ratio, axis=1)[:, None]
        np.put_along_axis(outer, index, True, axis=1)
        rest = ratio.copy()
        np.put_along_axis(rest, index, np.nan, axis=1)
        if np.isfinite(rest).any(axis=1).all():
            np.put_along_axis(inner, pick(rest, axis=1)[:, None], True, axis=1)
    inner &= ~outer
    return _Candidates(_listed(outer), _listed(inner), _ratio_neighbours(sides, ratio), outer)


def _inner_hull(s: np.ndarray, d: np.ndarray, outer: np.ndarray) -> np.ndarray:
    """The vertices of the hull of each row's points that are not in `outer` (N x C mask). Those points stand
    in for one that is (a repeated point changes no hull), and mark it if they are found."""
    stand_in = np.argmin(outer, axis=1)[:, None]  # the first point not in outer (0 if there is none)
    found = _hull(np.where(outer, np.take_along_axis(s, stand_in, axis=1), s),
                  np.where(outer, np.take_along_axis(d, stand_in, axis=1), d))
    np.put_along_axis(found, stand_in, (found & outer).any(axis=1, keepdims=True) | np.take_along_axis(
        found, stand_in, axis=1), axis=1)
    return found & ~outer


def _listed(mask: np.ndarray) -> np.ndarray:
    """The classes set in each row of a mask, padded with others to the longest row's count (N x K)."""
    return np.argsort(~mask, axis=1, kind="stable")[:, : int(mask.sum(axis=1).max())]


def _ratio_neighbours(sides: Sides, ratio: np.ndarray) -> np.ndarray:
    """Per (row, column j) the classes i != j of the largest r_i <= r*_j and of the smallest above (N x C x 2).

    For s_i > 0 element i's relative error is |x + r_i b| / max((1 + r_i) b, |f|) (b = column_j, f = factor_j,
    x = b + f): over r <= r* = |f| / b - 1 a convex function of r, above it the absolute value of a monotone
    one; so the largest is at the extreme r (candidates of every column) or at these two. (A zero s_i, NaN
    here, sorts last and is never one: its elements are 0.)
    """
    rows, classes = ratio.shape
    with np.errstate(divide="ignore", invalid="ignore"):
        switch = np.abs(sides.factor) / sides.column - 1.0
    switch = np.where(np.isnan(switch), np.inf, switch)
    order = np.argsort(ratio, axis=1, kind="stable")
    counts = _counts_at_most(np.take_along_axis(ratio, order, axis=1), switch)
    last = np.isfinite(ratio).sum(axis=1, keepdims=True) - 1
    at_row, column = np.arange(rows)[:, None], np.arange(classes)[None, :]
    below, above = counts - 1, counts
    below = np.where(order[at_row, np.clip(below, 0, last)] == column, below - 1, below)  # i = j: the next one
    above = np.where(order[at_row, np.clip(above, 0, last)] == column, above + 1, above)
    ranks = np.stack([np.clip(below, 0, last), np.clip(above, 0, last)], axis=-1)
    return order[at_row[:, :, None], ranks]


def _counts_at_most(ranked: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """How many of each row's sorted values are <= each of its queries (N x Q), all rows at once."""
    rows, classes = ranked.shape
    values = np.concatenate([ranked, queries], axis=1)
    is_query = np.concatenate([np.zeros(ranked.shape, dtype=bool), np.ones(queries.shape, dtype=bool)], axis=1)
    order = np.lexsort((is_query, values), axis=-1)  # values, then a value before a query equal to it
    taken = np.take_along_axis(is_query, order, axis=1)
    before = np.cumsum(~taken, axis=1)
    counts = np.empty(queries.shape, dtype=np.intp)
    counts[np.repeat(np.arange(rows), queries.shape[1]), order[taken] - classes] = before[taken]
    return counts


def _placed(check: CheckResult, place: Callable[[tuple[int, ...]], tuple[int, ...]]) -> CheckResult:
    """The check with its worst elements' positions placed in the N x C x C matrix."""
    return check._replace(worst_index=place(check.worst_index),
                          worst_elements=tuple(e._replace(position=place(e.position)) for e in check.worst_elements))


def jacobian_scales(s: np.ndarray, complement: np.ndarray, temperature: float) -> Scales:
    """Of every element of J / T (N x C x C): S = |J| / T; N = (s_i s_j, or s_j on the diagonal) / T, the terms
    of the straightforward s_j - s_j^2; G = 1 / T."""
    size = s[:, :, None] * s[:, None, :]
    diagonal = np.arange(s.shape[-1])
    gross = size.copy()
    size[:, diagonal, diagonal] = s * complement
    gross[:, diagonal, diagonal] = s
    return Scales(size / temperature, gross / temperature, np.asarray(1.0 / temperature))


# The generic Hessian check holds several N x C x C arrays (the analytic and numeric Hessians, their scales,
# the tolerance, compare's temporaries: about a dozen, 8 bytes each): above this many elements per batch it
# is refused before it starts, rather than exhausting memory (12 x 8 x 2^22 bytes = 400 MB).
HESSIAN_ELEMENTS = 1 << 22


def hessian_check(analytic_loss: Loss, reference_loss: Loss, low: np.ndarray, logits: np.ndarray,
                  analytic_s: Softmax, reference: Softmax, settings: Settings, rho: np.ndarray) -> CheckResult:
    """d2L/dz2 against finite differences of the exact change of the gradient, every element.

    A loss whose Hessian is m_n ds/dz per row (cross-entropy: m = A / T times the reduction's scale, A the
    row's summed coefficients) says so through hessian_multiple(logits, given) -> m (N) or None, and is
    decided in O(N C) as the Jacobian is (structured_check; the numeric side is m times the Jacobian's exact
    differences, the same as differencing its gradient_perturbation). Any other loss builds N x C x C arrays,
    refused above HESSIAN_ELEMENTS per batch.
    """
    assert settings.eps is not None and settings.rtol is not None
    analytic_multiple = hessian_multiple(analytic_loss, low, analytic_s)
    reference_multiple = hessian_multiple(reference_loss, logits, reference)
    if analytic_multiple is not None and reference_multiple is not None:
        sides = jacobian_sides(analytic_s, reference, settings, (analytic_multiple, reference_multiple))
        return structured_check(sides, logits, settings, rho, HESSIAN)
    refuse_wide_hessian(logits.shape, settings)
    hessian = analytic_loss.hessian(low)
    change = reference_loss.gradient_perturbation(logits, reference)
    numeric = differences.numeric_hessian(change, logits.shape[1], settings.eps, settings.method)
    scales = reference_loss.hessian_scales(logits, reference)
    eta = float(differences.exact_step(settings.eps)) / settings.temperature
    tolerance = allowance(numeric, scales, settings, rho[:, :, None], eta)
    return compare(HESSIAN[0], hessian, numeric, tolerance, settings.rtol, description=HESSIAN[1])


def hessian_multiple(loss: Loss, logits: np.ndarray, given: Softmax | None = None) -> np.ndarray | None:
    """m per row where the loss's Hessian is m ds/dz (see hessian_check), or None: it has no such form."""
    multiple = getattr(loss, "hessian_multiple", None)
    return None if multiple is None else multiple(logits, given)


def refuse_wide_hessian(shape: tuple[int, ...], settings: Settings) -> None:
    """Exit 2 before a generic Hessian check that would hold more than HESSIAN_ELEMENTS elements per array."""
    rows, classes = shape
    if rows * classes * classes <= HESSIAN_ELEMENTS:
        return
    fits = HESSIAN_ELEMENTS // (classes * classes)
    way_out = (f"give at most {fits:,} rows per input, or check the gradient alone (--order 1)" if fits
               else "check the gradient alone (--order 1): not even one row fits")
    raise InputError(f"--order 2 with --loss {settings.loss}: the Hessian of {rows:,} rows x {classes:,} classes "
                     f"has {rows * classes * classes:,} elements, more than the {HESSIAN_ELEMENTS:,} gradcheck "
                     f"holds at once for a loss without a structured Hessian; {way_out}")
