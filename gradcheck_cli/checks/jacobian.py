"""The Jacobian check: every element of ds/dz against finite differences, without building N x C x C arrays."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gradcheck_cli.checks.compare import compare, merge
from gradcheck_cli.numerics import differences
from gradcheck_cli.numerics.losses.base import Scales, allowance, rounding_factor
from gradcheck_cli.numerics.softmax import Softmax
from gradcheck_cli.report import CheckResult
from gradcheck_cli.settings import Settings


def jacobian_check(
    analytic_s: Softmax, reference: Softmax, logits: np.ndarray, settings: Settings, rho: np.ndarray | None = None
) -> CheckResult:
    """Every element of ds/dz, analytic vs finite differences, in O(N C) time and memory however large C is.

    Off the diagonal, column j of both Jacobians is s_i times one number per row: analytic -s_j / T, numeric
    factor[:, j] (see softmax_derivative_factors). So in column j every off-diagonal element's error
    s_i |s_j / T + factor|, and its tolerance (a row's constant floor plus terms proportional to s_i: see
    losses/base.py) make a share of the tolerance that grows with s_i, as does its relative error: the element
    of the largest other s_i is the worst of them. Comparing that one and the diagonal element of each
    (row, column) decides the check of all N C^2 elements, with the same values an element-by-element
    comparison computes for them. A failing check is redone element by element (O(N C^2) time, O(N C)
    memory), the same values again, to count its failing elements and keep the worst few. In float32 the
    analytic s is not the reference's, the columns do not factor, and jacobian_check_by_element compares
    every element. `analytic_s` and `reference` are
    softmax(z / T) in the analytic dtype and in float64; rho the rows' rounding factor, if the caller has it.
    """
    assert settings.eps is not None and settings.atol is not None and settings.rtol is not None
    temperature = settings.temperature
    s, complement = reference.s, reference.complement
    h = differences.exact_step(settings.eps)
    factor, own = differences.softmax_derivative_factors(s, complement, h, settings.method, temperature)
    if analytic_s.s.dtype != np.float64:
        return jacobian_check_by_element(analytic_s, reference, factor, own, settings, logits, rho)
    rho = rounding_factor(logits, temperature) if rho is None else rho
    eta, bound = float(h) / temperature, np.asarray(1.0 / temperature)
    rows, classes = s.shape
    columns = np.arange(classes)
    size = s * complement / temperature
    diagonal = compare("jacobian", size, own, allowance(own, Scales(size, s / temperature, bound), settings, rho, eta),
                       settings.rtol, _JACOBIAN)
    result = _placed(diagonal, lambda at: (at[0], at[1], at[1]))
    if classes == 1:
        return _decided(result, rows)
    # For each (row, column j) the largest s_i with i != j: the row's largest, or its second where j is the largest.
    first, row_starts = reference.largest, np.arange(rows) * classes  # (flat indices: fast on short rows)
    rest = s.copy()
    rest.reshape(-1)[row_starts + first] = -np.inf
    second = rest.argmax(axis=1)
    top, runner_up = s.reshape(-1)[row_starts + first], s.reshape(-1)[row_starts + second]
    is_first = columns == first[:, None]
    s_other = np.where(is_first, runner_up[:, None], top[:, None])
    numeric, size = s_other * factor, s_other * s / temperature
    atol = allowance(numeric, Scales(size, size, bound), settings, rho, eta)
    off = compare("jacobian", -s_other * s / temperature, numeric, atol, settings.rtol, _JACOBIAN)
    off = _placed(off, lambda at: (at[0], int(second[at[0]] if is_first[at] else first[at[0]]), at[1]))
    result = merge(result, off, (0, 0, 0))
    if not result.passed:  # how many of all N C^2 fail, and the worst few: counted element by element
        return jacobian_check_by_element(reference, reference, factor, own, settings, logits, rho)
    return _decided(result, rows * classes * classes)


_JACOBIAN = "ds/dz, analytic vs finite differences"


def _placed(check: CheckResult, place: Callable[[tuple[int, ...]], tuple[int, ...]]) -> CheckResult:
    """The check with its worst elements' positions (row, column) placed in the N x C x C Jacobian."""
    return check._replace(worst_index=place(check.worst_index),
                          worst_elements=tuple(e._replace(position=place(e.position)) for e in check.worst_elements))


def _in_column(column: int) -> Callable[[tuple[int, ...]], tuple[int, ...]]:
    """(row, i) of one column's comparison -> (row, i, column) in the Jacobian."""
    return lambda at: (*at, column)


def _decided(check: CheckResult, elements: int) -> CheckResult:
    """A passing factored check: all N C^2 elements judged (2 N C of them compared), none failing."""
    return check._replace(elements=elements, mismatches=0)


def jacobian_scales(s: np.ndarray, complement: np.ndarray, temperature: float) -> Scales:
    """Of every element of J / T (N x C x C): S = |J| / T; N = (s_i s_j, or s_j on the diagonal) / T, the terms
    of the straightforward s_j - s_j^2; G = 1 / T."""
    size = s[:, :, None] * s[:, None, :]
    diagonal = np.arange(s.shape[-1])
    gross = size.copy()
    size[:, diagonal, diagonal] = s * complement
    gross[:, diagonal, diagonal] = s
    return Scales(size / temperature, gross / temperature, np.asarray(1.0 / temperature))


def jacobian_check_by_element(
    analytic_s: Softmax, reference: Softmax, factor: np.ndarray, own: np.ndarray, settings: Settings,
    logits: np.ndarray, rho: np.ndarray | None = None,
) -> CheckResult:
    """The Jacobian check comparing every element, one column (N x C) at a time so memory stays O(N C).

    `analytic_s` is the softmax in the analytic dtype; `reference` (float64), factor and own are the
    reference's (see jacobian_check), at `logits`. merge() picks the worst element numpy.argmax over the whole N x C x C
    arrays would.
    """
    assert settings.eps is not None and settings.atol is not None and settings.rtol is not None
    low_s, low_complement = analytic_s.s, analytic_s.complement
    s, complement = reference.s, reference.complement
    temperature = low_s.dtype.type(settings.temperature)
    rho = rounding_factor(logits, settings.temperature) if rho is None else rho
    eta = float(differences.exact_step(settings.eps)) / settings.temperature
    bound = np.asarray(1.0 / settings.temperature)
    result: CheckResult | None = None
    for j in range(s.shape[1]):
        analytic = -low_s * low_s[:, j : j + 1]
        analytic[:, j] = low_s[:, j] * low_complement[:, j]
        analytic /= temperature
        numeric = s * factor[:, j : j + 1]
        numeric[:, j] = own[:, j]
        size = s * s[:, j : j + 1] / settings.temperature
        gross = size.copy()
        size[:, j], gross[:, j] = s[:, j] * complement[:, j] / settings.temperature, s[:, j] / settings.temperature
        atol = allowance(numeric, Scales(size, gross, bound), settings, rho, eta)
        part = compare("jacobian", analytic, numeric, atol, settings.rtol, description=_JACOBIAN)
        result = merge(result, _placed(part, _in_column(j)), (0, 0, 0))
    assert result is not None
    return result
