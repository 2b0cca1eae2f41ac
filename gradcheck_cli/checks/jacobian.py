"""The Jacobian check: every element of ds/dz against finite differences, without building N x C x C arrays."""

from __future__ import annotations

import numpy as np

from gradcheck_cli.checks.compare import compare, merge
from gradcheck_cli.numerics import differences
from gradcheck_cli.numerics.softmax import Softmax
from gradcheck_cli.report import CheckResult
from gradcheck_cli.settings import Settings


def jacobian_check(
    analytic_s: Softmax, reference: Softmax, logits: np.ndarray, settings: Settings
) -> CheckResult:
    """Every element of ds/dz, analytic vs finite differences, in O(N C) time and memory however large C is.

    Off the diagonal, column j of both Jacobians is s_i times one number per row: analytic -s_j / T, numeric
    factor[:, j] (see softmax_derivative_factors). So in column j every off-diagonal element's
    error s_i |s_j / T + factor|, its share of the tolerance s_i e / (atol + rtol s_i |factor|) and its relative
    error grow with s_i (or stay level): the element of the largest other s_i is the worst of them. Comparing
    that one and the diagonal element of each (row, column) decides the check of all N C^2 elements, with
    the same values an element-by-element comparison computes for them. In float32 the analytic s is not the
    reference's, the columns do not factor, and jacobian_check_by_element compares every element.
    `analytic_s` and `reference` are softmax(z / T) in the analytic dtype and in float64.
    """
    assert settings.eps is not None and settings.atol is not None and settings.rtol is not None
    temperature = settings.temperature
    s, complement = reference.s, reference.complement
    h = differences.broadcast_steps(logits, settings.eps)
    factor, own = differences.softmax_derivative_factors(s, complement, h, settings.method, temperature)
    if analytic_s.s.dtype != np.float64:
        return jacobian_check_by_element(analytic_s, s, factor, own, settings)
    atol, rtol = settings.atol, settings.rtol
    rows, classes = s.shape
    columns = np.arange(classes)
    diagonal = compare("jacobian", s * complement / temperature, own, atol, rtol, _JACOBIAN)
    result = diagonal._replace(worst_index=(diagonal.worst_index[0], diagonal.worst_index[1], diagonal.worst_index[1]))
    if classes == 1:
        return result
    # For each (row, column j) the largest s_i with i != j: the row's largest, or its second where j is the largest.
    first, row_starts = reference.largest, np.arange(rows) * classes  # (flat indices: fast on short rows)
    rest = s.copy()
    rest.reshape(-1)[row_starts + first] = -np.inf
    second = rest.argmax(axis=1)
    top, runner_up = s.reshape(-1)[row_starts + first], s.reshape(-1)[row_starts + second]
    is_first = columns == first[:, None]
    s_other = np.where(is_first, runner_up[:, None], top[:, None])
    off = compare("jacobian", -s_other * s / temperature, s_other * factor, atol, rtol, _JACOBIAN)
    row, column = off.worst_index
    other = int(second[row] if is_first[row, column] else first[row])
    return merge(result, off._replace(worst_index=(row, other, column)), (0, 0, 0))


_JACOBIAN = "ds/dz, analytic vs finite differences"


def jacobian_check_by_element(
    analytic_s: Softmax, s: np.ndarray, factor: np.ndarray, own: np.ndarray, settings: Settings
) -> CheckResult:
    """The Jacobian check comparing every element, one column (N x C) at a time so memory stays O(N C).

    `analytic_s` is the softmax in the analytic dtype; s, factor and own are the reference's (see
    _jacobian_check). merge() picks the worst element numpy.argmax over the whole N x C x C arrays would.
    """
    assert settings.atol is not None and settings.rtol is not None
    low_s, low_complement = analytic_s.s, analytic_s.complement
    temperature = low_s.dtype.type(settings.temperature)
    result: CheckResult | None = None
    for j in range(s.shape[1]):
        analytic = -low_s * low_s[:, j : j + 1]
        analytic[:, j] = low_s[:, j] * low_complement[:, j]
        analytic /= temperature
        numeric = s * factor[:, j : j + 1]
        numeric[:, j] = own[:, j]
        part = compare("jacobian", analytic, numeric, settings.atol, settings.rtol, description=_JACOBIAN)
        result = merge(result, part._replace(worst_index=(*part.worst_index, j)), (0, 0, 0))
    assert result is not None
    return result

