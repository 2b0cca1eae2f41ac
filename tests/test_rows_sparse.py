"""The streamed check's shortcuts (issue 18's 6x target): with class labels the cross-entropy gradient and its
scales compute the a_j terms only where a label is, and the allowance skips max(S, S) when a check's two
scales are one array. Each must give the general formula's numbers bit for bit, or a verdict could move."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from gradcheck_cli.numerics.losses.base import Scales, allowance, rounding_factor
from gradcheck_cli.numerics.losses.cross_entropy import CrossEntropy, cross_entropy
from gradcheck_cli.settings import Settings


def _one_hot(rows: int, classes: int, seed: int, *, ignored: tuple[int, ...] = ()) -> np.ndarray:
    """One label a row (weights 0.5 to 2, as class weights give), rows `ignored` all 0 (ignore_index)."""
    rng = np.random.default_rng(seed)
    coefficients = np.zeros((rows, classes))
    coefficients[np.arange(rows), rng.integers(0, classes, rows)] = rng.uniform(0.5, 2.0, rows)
    coefficients[list(ignored)] = 0.0
    return coefficients


def _logits(rows: int, classes: int, seed: int) -> np.ndarray:
    logits = np.random.default_rng(seed + 100).normal(scale=4.0, size=(rows, classes))
    logits[0, 0] = 60.0  # a confident row: 1 - s at its label is where the accurate complement matters
    return logits


def test_labelled_places_are_nonzero_places() -> None:
    """_labelled names exactly numpy.nonzero's places, in its order: by argmax for one a row, by nonzero for
    more, and None for dense coefficients (label smoothing), where the general formula runs."""
    one = _one_hot(6, 9, 0, ignored=(2,))
    found = cross_entropy(one)._labelled
    assert found is not None
    for mine, numpys in zip(found, np.nonzero(one), strict=True):
        np.testing.assert_array_equal(mine, numpys)
    two = one.copy()
    two[3, :2] = 0.25  # a row with three non-zero coefficients: nonzero's places, still sparse
    found = cross_entropy(two)._labelled
    assert found is not None
    for mine, numpys in zip(found, np.nonzero(two), strict=True):
        np.testing.assert_array_equal(mine, numpys)
    assert cross_entropy(np.full((4, 5), 0.2))._labelled is None


def _dense(loss: CrossEntropy, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The general formulas, term for term (MATH.md): the gradient (s (A - a) - a (1 - s)) / T and the scales
    A s (1 - s) and s A + a times the reduction's scale over T."""
    parts = loss.softmax(logits)
    a = loss.coefficients
    gradient = (parts.s * (a.sum(axis=-1, keepdims=True) - a) - a * parts.complement) / loss.temperature
    mass = a.sum(axis=-1, keepdims=True) * loss.factor
    return gradient, mass * parts.s * parts.complement, parts.s * mass + a * loss.factor


@pytest.mark.parametrize("temperature", [1.0, 0.5, 3.0])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_sparse_gradient_and_scales_are_the_general_formula(temperature: float, reduction: str) -> None:
    """With class labels (ignored rows included) the gradient and its scales equal the general formula bit for
    bit: off the labels a_j x is +0 and x - 0, x + 0 are x exactly, so skipping those terms moves nothing."""
    coefficients = _one_hot(7, 300, 1, ignored=(4,))
    loss = CrossEntropy(reduction, 7.0, temperature, coefficients=coefficients)
    assert loss._labelled is not None  # the shortcut is what is under test
    logits = _logits(7, 300, 1)
    gradient, size, gross = _dense(loss, logits)
    assert loss.row_gradients(logits).tobytes() == gradient.tobytes()
    scales = loss.gradient_scales(logits)
    assert scales.scale.tobytes() == size.tobytes()
    assert scales.gross.tobytes() == gross.tobytes()


def test_sparse_gradient_with_a_z_loss() -> None:
    """The z-loss's term is added to the shortcut's gradient as to the general one: the same bits."""
    coefficients = _one_hot(5, 200, 2)
    loss = CrossEntropy("mean", 5.0, 1.0, coefficients=coefficients, z_weights=np.full(5, 1e-3))
    dense = replace(loss)  # a fresh loss whose _labelled is then forced off: the general formula
    dense.__dict__["_labelled"] = None
    logits = _logits(5, 200, 2)
    assert loss.row_gradients(logits).tobytes() == dense.row_gradients(logits).tobytes()
    for mine, general in zip(loss.gradient_scales(logits), dense.gradient_scales(logits), strict=True):
        assert np.asarray(mine).tobytes() == np.asarray(general).tobytes()


def test_allowance_with_one_scale_array_is_the_maximum_form() -> None:
    """allowance(S, S) takes S for max(N, S) without the pass: the same bits as two equal arrays give."""
    settings = Settings(atol=1e-12, rtol=1e-6)
    rng = np.random.default_rng(3)
    expected = rng.normal(size=(4, 50)) * 1e-3
    size = np.abs(rng.normal(size=(4, 50))) * 1e-3
    rho = rounding_factor(rng.normal(size=(4, 50)), 1.0)
    row = np.full((4, 1), 2.0)
    one = allowance(expected, Scales(size, size, row), settings, rho, eta=1e-4)
    two = allowance(expected, Scales(size.copy(), size.copy(), row), settings, rho, eta=1e-4)
    assert one.tobytes() == two.tobytes()



def test_sparse_gradient_in_mixed_dtypes_is_the_general_formula() -> None:
    """float32 coefficients with a float64 softmax: the product is float64 as in the general formula (written
    over the float32 coefficients' buffer it would be rounded to float32)."""
    coefficients = _one_hot(4, 60, 5).astype(np.float32)
    loss = CrossEntropy("sum", 4.0, 1.0, coefficients=coefficients)
    logits = _logits(4, 60, 5)
    gradient, _, _ = _dense(loss, logits)
    mine = loss.row_gradients(logits)
    assert mine.dtype == np.float64
    assert mine.tobytes() == gradient.tobytes()
