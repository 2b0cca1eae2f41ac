"""The leaner passes of a batch's checks give, bit for bit, what the straightforward whole-array computations give:
compare() a block at a time with one temporary as big as its inputs, the Jacobian's numeric factors and the
numeric gradient summed in place, and the float64 Jacobian's off-diagonal candidates without gathering."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from gradcheck_cli.checks import compare as compare_module
from gradcheck_cli.checks.compare import compare
from gradcheck_cli.checks.jacobian import jacobian_check, jacobian_check_by_element
from gradcheck_cli.numerics import differences
from gradcheck_cli.numerics.losses.cross_entropy import torch_cross_entropy
from gradcheck_cli.numerics.softmax import softmax_parts
from gradcheck_cli.settings import Settings

_TINY = float(np.finfo(np.float64).tiny)


def _whole_array_compare(actual, expected, atol, rtol):
    """compare()'s numbers as first written, on whole arrays: (shares, largest abs error, largest rel error)."""
    actual = np.atleast_1d(np.asarray(actual, dtype=np.float64))
    expected = np.atleast_1d(np.asarray(expected, dtype=np.float64))
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        abs_error = np.abs(actual - expected)
        share = abs_error / (np.abs(expected) * rtol + (atol + _TINY))
        rel_error = abs_error / np.maximum(np.maximum(np.abs(expected), np.abs(actual)), _TINY)
    return share, float(abs_error.max()), float(rel_error.max())


def _same(a: float | None, b: float | None) -> bool:
    return a == b or (a is not None and b is not None and np.isnan(a) and np.isnan(b))


@pytest.mark.parametrize("shape", [(), (7,), (5, 3), (3, 7001), (4, 5, 6)])
@pytest.mark.parametrize("plant", ["nothing", "nan", "inf", "zeros", "failing"])
def test_compare_in_blocks_is_the_whole_array_computation(monkeypatch, shape, plant):
    """Protects compare()'s blocked evaluation: shares, worst element, largest errors and the failing elements
    must be exactly those of the whole-array formulas, across block boundaries (blocks of 1,000 elements here)."""
    monkeypatch.setattr(compare_module, "_BLOCK", 1000)
    rng = np.random.default_rng(len(shape) * 31 + len(plant))
    expected = rng.normal(size=shape)
    actual = expected * (1 + rng.normal(scale=1e-9, size=shape))
    atol = np.abs(rng.normal(scale=1e-9, size=shape))
    flat = actual.reshape(-1)
    if plant == "nan":
        flat[flat.size // 2] = np.nan
    elif plant == "inf":
        flat[-1] = np.inf
    elif plant == "zeros":
        actual = np.zeros(shape)
        expected = np.zeros(shape)
    elif plant == "failing":
        flat[:: max(1, flat.size // 7)] *= 1.5
    result = compare("x", actual, expected, atol, 1e-7)
    share, largest_abs, largest_rel = _whole_array_compare(actual, expected, atol, 1e-7)
    worst = np.unravel_index(int(np.argmax(share)), share.shape)
    assert result.worst_index == (() if shape == () else tuple(int(i) for i in worst))
    assert _same(result.worst_share, float(share[worst]) if np.isfinite(share[worst]) else float("inf"))
    assert result.passed == bool(np.all(share <= 1.0))
    assert result.mismatches == int(np.count_nonzero(~(share <= 1.0)))
    if np.isfinite(share[worst]):
        assert result.max_abs_error == largest_abs and result.max_rel_error == largest_rel
    else:
        assert result.max_abs_error is None and result.max_rel_error is None


def test_compare_holds_one_array_as_big_as_its_inputs():
    """Protects compare()'s memory: on a streamed file or a whole --impl batch it runs over every gradient and
    Jacobian element, and each temporary as big as the inputs costs that much again (1 GB at 1,024 x 128,256).
    Allowed: the shares (one input's size) and a block's few temporaries (6 of _BLOCK float64 each, 3 MB)."""
    rng = np.random.default_rng(0)
    expected = rng.normal(size=(1000, 2000))
    actual, atol = expected + 1e-12, np.full(expected.shape, 1e-9)
    tracemalloc.start()
    try:
        assert compare("x", actual, expected, atol, 1e-7).passed
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= expected.nbytes + 6 * 8 * compare_module._BLOCK + (1 << 20), peak


def _factors_as_first_written(s, complement, h, method, temperature):
    """softmax_derivative_factors as first written: the stencil over the exact changes, out of place."""
    spec = differences.METHODS[method]

    def change(offsets):
        q = np.expm1(offsets / temperature)
        moved = s * q
        others = moved / (1.0 + moved)
        return -others, others * complement

    if spec.complex_step:
        factor, own = (part.imag for part in change(1j * h))
    else:
        factor = own = np.zeros(())
        for offset, weight in zip(spec.offsets, spec.weights, strict=True):
            others, mine = change(offset * h)
            factor, own = factor + weight * others, own + weight * mine
    return factor / h, own / h


@pytest.mark.parametrize("method", differences.METHOD_NAMES)
@pytest.mark.parametrize("temperature", [1.0, 0.3])
@pytest.mark.parametrize("per_logit", [False, True])
def test_the_jacobian_factors_in_place_are_the_stencil_bit_for_bit(method, temperature, per_logit):
    """Protects softmax_derivative_factors' in-place sums: every factor the same bits as the out-of-place stencil
    (a verdict or a worst element must not move), with one step for all or one per logit."""
    rng = np.random.default_rng(3)
    logits = rng.normal(scale=5.0, size=(6, 40))
    logits[0, :3] = 50.0  # s within rounding of 0 and of 1
    parts = softmax_parts(logits / temperature)
    eps = differences.default_eps(method, temperature=temperature)
    h = differences.steps(logits, eps) if per_logit else differences.exact_step(eps)
    got = differences.softmax_derivative_factors(parts.s, parts.complement, h, method, temperature)
    want = _factors_as_first_written(parts.s, parts.complement, h, method, temperature)
    for a, b in zip(got, want, strict=True):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("method", differences.METHOD_NAMES)
def test_the_numeric_gradient_summed_in_place_is_the_stencil_bit_for_bit(method):
    """Protects numeric_gradient's in-place stencil: the same bits as column_derivative's out-of-place sum times
    the reduction's scale, zeros' signs included (a -0.0 gradient element prints as -0.0)."""
    rng = np.random.default_rng(5)
    logits = rng.normal(scale=4.0, size=(5, 30))
    labels = rng.integers(0, 30, 5)
    loss = torch_cross_entropy(30, labels=labels, label_smoothing=0.1, temperature=0.7)
    eps = differences.default_eps(method, temperature=0.7)
    got = differences.numeric_gradient(loss, logits, eps, method)
    want = differences.column_derivative(loss.perturbation(logits), differences.exact_step(eps), slice(None),
                                         method) * loss.scale
    assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize("tied", [False, True])
def test_the_largest_class_column_is_decided_at_the_second_largest_row_element(monkeypatch, tied):
    """Protects the float64 off-diagonal candidates: in the column of a row's largest class the row's largest
    other s_i is the second largest (with two tied largest, the other of the two). A slip there of half the
    tolerance passes, and the factored check reports it at (row, second largest, column) with the share that
    comparing every element finds (its elements in that column differ only by rounding)."""
    rng = np.random.default_rng(9)
    logits = rng.normal(scale=2.0, size=(8, 12))
    if tied:
        logits[4, [2, 7]] = logits[4].max() + 1.0
    row, column = 4, int(np.argmax(logits[4]))
    settings = differences.resolve(Settings())
    exact = differences.softmax_derivative_factors

    def slipped(*args, **kwargs):
        factor, own = exact(*args, **kwargs)
        factor[row, column] *= 1 + 0.5 * settings.rtol
        return factor, own

    monkeypatch.setattr(differences, "softmax_derivative_factors", slipped)
    parts = softmax_parts(logits)
    fast = jacobian_check(parts, parts, logits, settings)
    full = jacobian_check_by_element(parts, parts, settings, logits)
    second = int(np.argsort(-parts.s[row], kind="stable")[1])
    assert fast.passed and full.passed
    assert fast.worst_index == (row, second, column)
    assert full.worst_index[::2] == (row, column)
    # The shares of one column's elements differ by the rounding of their two products: each is off by eps of
    # its size, and the tolerance is at least rtol times that size, so each share by 2 eps / rtol; two shares
    # compared, 4 eps / rtol.
    assert fast.worst_share == pytest.approx(full.worst_share, rel=0, abs=4 * np.finfo(np.float64).eps / settings.rtol)
