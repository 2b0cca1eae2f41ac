"""Properties of the core math that hold for every batch of logits (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gradcheck_cli.batch import Batch
from gradcheck_cli.inputs.validate import one_hot
from gradcheck_cli.numerics import softmax as core
from gradcheck_cli.numerics.losses.cross_entropy import cross_entropy
from gradcheck_cli.pipeline import check_batch as run_check
from gradcheck_cli.settings import Settings


def batches(max_scale: float = 100.0):
    shapes = st.tuples(st.integers(1, 6), st.integers(2, 7))
    elements = st.floats(-max_scale, max_scale, allow_nan=False, allow_infinity=False)
    return shapes.flatmap(lambda shape: arrays(np.float64, shape, elements=elements))


@given(batches(1000.0))
def test_probabilities_are_a_distribution_in_rank_order(logits):
    s = core.softmax(logits)
    assert np.all(s >= 0) and np.all(s <= 1)
    np.testing.assert_allclose(s.sum(axis=1), 1.0, rtol=0, atol=1e-14)
    # Rank order: a larger logit never gets a smaller probability.
    for n in range(logits.shape[0]):
        order = np.argsort(logits[n], kind="stable")
        assert np.all(np.diff(s[n][order]) >= 0)


@given(batches(1000.0))
def test_jacobian_is_symmetric_and_its_rows_and_columns_sum_to_zero(logits):
    jacobian = core.softmax_jacobian(core.softmax(logits))
    np.testing.assert_array_equal(jacobian, np.swapaxes(jacobian, 1, 2))
    np.testing.assert_allclose(jacobian.sum(axis=2), 0.0, atol=1e-15)
    np.testing.assert_allclose(jacobian.sum(axis=1), 0.0, atol=1e-15)


@given(batches(1000.0), st.data())
def test_gradient_rows_sum_to_zero_for_one_hot_labels(logits, data):
    labels = np.array(data.draw(st.lists(st.integers(0, logits.shape[1] - 1), min_size=logits.shape[0],
                                         max_size=logits.shape[0])))
    gradient = cross_entropy(one_hot(labels, logits.shape[1])).gradient(logits)
    np.testing.assert_allclose(gradient.sum(axis=1), 0.0, atol=1e-15)


@settings(max_examples=60, deadline=None)
@given(batches(100.0), st.data())
def test_finite_differences_agree_with_the_analytic_gradient(logits, data):
    labels = np.array(data.draw(st.lists(st.integers(0, logits.shape[1] - 1), min_size=logits.shape[0],
                                         max_size=logits.shape[0])))
    batch = Batch(logits=logits, labels=labels, targets=one_hot(labels, logits.shape[1]))
    report = run_check(batch, Settings())
    assert report.passed, [c for c in report.checks if not c.passed]


def test_large_loss_does_not_swamp_a_small_gradient_element():
    """Found by hypothesis: loss 16.7 and a gradient element of 4.6e-4 in one row. Differencing the full
    row loss carries rounding of eps*16.7/h, about 6e-7 of that element, over the default rtol."""
    logits = np.array([[-9.0, 0.0, 7.0, 7.0]])
    batch = Batch(logits=logits, labels=np.array([0]), targets=one_hot(np.array([0]), 4))
    report = run_check(batch, Settings())
    assert report.passed, report.checks


def test_softmax_of_a_transposed_array_is_the_softmax_of_its_copy():
    """softmax_parts writes through flat indices: a non-contiguous input (a transpose) must give the same."""
    logits = np.random.default_rng(3).standard_normal((4, 6)) * 3
    transposed = logits.T
    assert not transposed.flags.c_contiguous
    for view, copy in zip(core.softmax_parts(transposed), core.softmax_parts(transposed.copy()), strict=True):
        assert np.array_equal(view, copy)
