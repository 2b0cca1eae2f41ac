"""The Jacobian check decides all N C^2 elements from O(N C) of them; comparing every element must agree."""

from __future__ import annotations

import numpy as np
import pytest

from gradcheck_cli.checks.jacobian import jacobian_check as _jacobian_check
from gradcheck_cli.checks.jacobian import jacobian_check_by_element
from gradcheck_cli.numerics import differences
from gradcheck_cli.numerics import softmax as core
from gradcheck_cli.settings import Settings


def _by_element(logits: np.ndarray, settings: Settings):
    """The check as the definition says: every element of the analytic Jacobian against the numeric one."""
    parts = core.softmax_parts(logits / settings.temperature)
    h = differences.exact_step(settings.eps)  # the step the check takes
    factor, own = differences.softmax_derivative_factors(
        parts.s, parts.complement, h, settings.method, settings.temperature
    )
    return jacobian_check_by_element(parts, parts, factor, own, settings, logits)


def _fast(logits: np.ndarray, settings: Settings):
    parts = core.softmax_parts(logits / settings.temperature)
    return _jacobian_check(parts, parts, logits, settings)


def _logits(rows: int, classes: int, scale: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(rows, classes)) * scale
    logits[0] = 0.0  # every class tied
    if classes > 1:
        logits[1, :2] = logits[1].max() + 1.0  # two tied largest
        logits[2, 0] = 60.0  # s_0 within rounding of 1, the others tiny
    return logits


@pytest.mark.parametrize("method", differences.METHOD_NAMES)
@pytest.mark.parametrize("temperature", [1.0, 0.5, 3.0])
@pytest.mark.parametrize(("classes", "scale"), [(1, 1.0), (2, 3.0), (3, 0.1), (10, 3.0), (40, 30.0), (7, 300.0)])
def test_the_factored_check_equals_comparing_every_element(method, temperature, classes, scale):
    logits = _logits(64, classes, scale, seed=classes)
    settings = differences.resolve(Settings(method=method, temperature=temperature))
    fast, full = _fast(logits, settings), _by_element(logits, settings)
    # Off the diagonal the element-by-element errors of one column differ from s_i |s_j / T + factor| only by
    # the rounding of the two products (a few eps of the largest element, 0.25 / T); the factored check
    # reports one of them, so the two agree to that rounding and no better.
    # Each element's tolerance is at least rtol times its own size (no absolute floor by default, see
    # losses/base.py), and the rounding of its error at most 2 eps of that size, so the shares of the
    # tolerance agree to 2 eps / rtol.
    rounding = 4 * np.finfo(np.float64).eps * 0.25 / temperature
    assert fast.passed == full.passed
    assert fast.max_abs_error == pytest.approx(full.max_abs_error, rel=1e-12, abs=rounding)
    assert fast.max_rel_error == pytest.approx(full.max_rel_error, rel=1e-12, abs=4 * np.finfo(np.float64).eps)
    assert fast.worst_share == pytest.approx(full.worst_share, rel=1e-12, abs=2 * np.finfo(np.float64).eps / settings.rtol)


@pytest.mark.parametrize("where", ["off the diagonal", "on the diagonal"])
def test_a_wrong_numeric_element_fails_both_ways_at_the_same_place(monkeypatch, where):
    """A relative slip of 1e-6 in one (row, column) shows at the element of the row's largest other s_i."""
    logits = _logits(30, 5, 2.0, seed=3)
    settings = differences.resolve(Settings())
    exact = differences.softmax_derivative_factors

    def slipped(*args, **kwargs):
        factor, own = exact(*args, **kwargs)
        (factor if where == "off the diagonal" else own)[17, 3] *= 1 + 1e-6
        return factor, own

    monkeypatch.setattr(differences, "softmax_derivative_factors", slipped)
    fast, full = _fast(logits, settings), _by_element(logits, settings)
    assert not fast.passed and not full.passed
    others = np.delete(np.arange(5), 3)
    expected_i = 3 if where == "on the diagonal" else int(others[np.argmax(core.softmax(logits)[17, others])])
    assert fast.worst_index == full.worst_index == (17, expected_i, 3)
    assert fast.worst_elements[0].position == full.worst_elements[0].position == (17, expected_i, 3)
    assert (fast.actual, fast.expected) == (full.actual, full.expected)
    assert fast.max_abs_error == full.max_abs_error


def test_float32_compares_every_element():
    """In float32 the analytic s is rounded differently from the reference: nothing factors, all is compared."""
    logits = _logits(20, 6, 5.0, seed=1).astype(np.float32)
    settings = differences.resolve(Settings(dtype="float32"))
    low, reference = core.softmax_parts(logits), core.softmax_parts(logits.astype(np.float64))
    result = _jacobian_check(low, reference, logits.astype(np.float64), settings)
    assert result.passed and len(result.worst_index) == 3
