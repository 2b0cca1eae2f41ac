"""The Jacobian check decides all N C^2 elements from O(N C) of them; comparing every element must agree."""

from __future__ import annotations

import numpy as np
import pytest

from gradcheck_cli.checks import jacobian
from gradcheck_cli.checks.compare import compare
from gradcheck_cli.checks.jacobian import jacobian_check as _jacobian_check
from gradcheck_cli.checks.jacobian import jacobian_check_by_element
from gradcheck_cli.numerics import differences
from gradcheck_cli.numerics import softmax as core
from gradcheck_cli.settings import Settings


def _by_element(logits: np.ndarray, settings: Settings):
    """The check as the definition says: every element of the analytic Jacobian against the numeric one."""
    parts = core.softmax_parts(logits / settings.temperature)
    return jacobian_check_by_element(parts, parts, settings, logits)


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


def _float32_parts(logits: np.ndarray, temperature: float) -> tuple[core.Softmax, core.Softmax, np.ndarray]:
    """softmax(z / T) of float32 logits in float32 and, at the same rounded logits, in float64."""
    low = logits.astype(np.float32)
    reference_logits = low.astype(np.float64)
    return (core.softmax_parts(low / np.float32(temperature)), core.softmax_parts(reference_logits / temperature),
            reference_logits)


def _agree_to_rounding(fast, full, settings: Settings, classes: int) -> None:
    """The structured check reports the values comparing every element computes, up to the rounding of the
    numeric product s_i factor_j and of the difference (2 eps64 |a| each; the analytic product of two float32
    numbers is exact): the error of the same element may differ by 4 eps64 |a|, its share of a tolerance of at
    least u32 rho |a| (rho >= 2 (2 C + 16), losses/base.py) by 4 eps64 / (u32 rho)."""
    eps = np.finfo(np.float64).eps
    share = 4 * eps / (np.finfo(np.float32).eps / 2 * 2 * (2 * classes + 16))
    assert fast.passed == full.passed
    assert fast.worst_share == pytest.approx(full.worst_share, rel=1e-12, abs=share)
    assert fast.max_abs_error == pytest.approx(full.max_abs_error, rel=1e-12, abs=4 * eps / settings.temperature)
    assert fast.max_rel_error == pytest.approx(full.max_rel_error, rel=1e-12, abs=4 * eps)
    assert fast.elements == full.elements


@pytest.mark.parametrize("method", ["central", "forward", "complex-step"])
@pytest.mark.parametrize("temperature", [1.0, 3.0])
@pytest.mark.parametrize(("classes", "scale"), [(2, 3.0), (3, 0.1), (10, 3.0), (40, 30.0), (7, 300.0)])
def test_float32_structured_check_equals_comparing_every_element(method, temperature, classes, scale):
    """Protects the float32 path: the hull and ratio candidates find what comparing all N C^2 elements finds."""
    logits = _logits(40, classes, scale, seed=classes)
    settings = differences.resolve(Settings(method=method, temperature=temperature, dtype="float32"))
    low, reference, reference_logits = _float32_parts(logits, temperature)
    fast = _jacobian_check(low, reference, reference_logits, settings)
    full = jacobian_check_by_element(low, reference, settings, reference_logits)
    _agree_to_rounding(fast, full, settings, classes)


@pytest.mark.parametrize("curve", ["convex", "concave", "ratio"])
def test_float32_candidates_hold_when_every_point_is_a_hull_vertex(curve):
    """Adversarial analytic s: every (s_i, d_i) on a convex or concave curve (all hull vertices), or d_i / s_i
    spread over a wide range, still agree with comparing every element (and nothing is missed)."""
    classes = 60
    logits = _logits(8, classes, 2.0, seed=7)
    settings = differences.resolve(Settings(dtype="float32"))
    low, reference, reference_logits = _float32_parts(logits, 1.0)
    s = reference.s
    bend = {"convex": (s - 0.5) ** 2, "concave": -((s - 0.5) ** 2), "ratio": np.linspace(-1, 1, classes)}[curve]
    moved = s * (1 + 3e-7 * bend)  # a relative error like float32's, every point a vertex or an extreme ratio
    low = low._replace(s=moved.astype(np.float32), complement=(1 - moved).astype(np.float32))
    fast = _jacobian_check(low, reference, reference_logits, settings)
    full = jacobian_check_by_element(low, reference, settings, reference_logits)
    _agree_to_rounding(fast, full, settings, classes)


@pytest.mark.parametrize("where", ["off the diagonal", "on the diagonal"])
def test_a_wrong_float32_element_fails_both_ways_at_the_same_place(monkeypatch, where):
    """A relative slip of 1e-4 in one (row, column) of the numeric side fails the float32 check as comparing
    every element does, at the same element: a wrong value is never passed by the structured path."""
    logits = _logits(30, 50, 2.0, seed=3)
    settings = differences.resolve(Settings(dtype="float32"))
    exact = differences.softmax_derivative_factors

    def slipped(*args, **kwargs):
        factor, own = exact(*args, **kwargs)
        (factor if where == "off the diagonal" else own)[17, 3] *= 1 + 1e-4
        return factor, own

    monkeypatch.setattr(differences, "softmax_derivative_factors", slipped)
    low, reference, reference_logits = _float32_parts(logits, 1.0)
    fast = _jacobian_check(low, reference, reference_logits, settings)
    full = jacobian_check_by_element(low, reference, settings, reference_logits)
    assert not fast.passed and not full.passed
    assert fast.worst_index == full.worst_index and fast.worst_index[::2] == (17, 3)
    assert (fast.mismatches, fast.worst_elements) == (full.mismatches, full.worst_elements)


def test_the_hull_is_every_vertex_and_nothing_inside():
    """The vectorised quickhull finds exactly the vertices a textbook monotone chain finds."""
    rng = np.random.default_rng(5)
    points = rng.normal(size=(6, 300, 2))
    points[0] = np.stack([np.linspace(0, 1, 300), np.linspace(0, 1, 300) ** 2], axis=-1)  # every point a vertex
    mask = jacobian._hull(points[..., 0], points[..., 1])
    for row, found in zip(points, mask, strict=True):
        assert set(np.flatnonzero(found)) == _monotone_chain(row)


def _monotone_chain(points: np.ndarray) -> set[int]:
    """The hull's vertices (no point on an edge), by Andrew's algorithm: the independent computation."""
    order = sorted(range(len(points)), key=lambda k: (points[k, 0], points[k, 1]))

    def half(indices: list[int]) -> list[int]:
        chain: list[int] = []
        for k in indices:
            while len(chain) >= 2 and _turn(points[chain[-2]], points[chain[-1]], points[k]) <= 0:
                chain.pop()
            chain.append(k)
        return chain

    return set(half(order)) | set(half(order[::-1]))


def _turn(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return float((a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]))


def test_float32_check_of_a_wide_row_compares_o_n_c_elements(monkeypatch):
    """2 x 50,257 in float32 compares a few hundred elements per (row, column) at most, not all 2.5e9."""
    compared = []

    def counting(name, actual, expected, *args, **kwargs):
        compared.append(np.size(actual))
        return compare(name, actual, expected, *args, **kwargs)

    monkeypatch.setattr(jacobian, "compare", counting)
    logits = np.random.default_rng(11).normal(size=(2, 50_257)) * 3
    settings = differences.resolve(Settings(dtype="float32"))
    low, reference, reference_logits = _float32_parts(logits, 1.0)
    result = _jacobian_check(low, reference, reference_logits, settings)
    assert result.passed and result.elements == 2 * 50_257**2
    assert sum(compared) < 200 * 2 * 50_257


def test_float32_compares_every_element():
    """In float32 the analytic s is rounded differently from the reference: nothing factors, all is compared."""
    logits = _logits(20, 6, 5.0, seed=1).astype(np.float32)
    settings = differences.resolve(Settings(dtype="float32"))
    low, reference = core.softmax_parts(logits), core.softmax_parts(logits.astype(np.float64))
    result = _jacobian_check(low, reference, logits.astype(np.float64), settings)
    assert result.passed and len(result.worst_index) == 3
