"""The sweep's curve at vocabulary size: its errors computed in place (api/sweeping.py's _point) and beside the
Taylor test on a second thread (api/beside.py), with the numbers of the plain formulas and of running in turn."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from gradcheck_cli.api.beside import Beside
from gradcheck_cli.api.checking import batch_from_arrays
from gradcheck_cli.api.sweeping import CURVE_THREAD, _point, _point_not_finite, curve, sweep_batch
from gradcheck_cli.numerics import differences
from gradcheck_cli.numerics.losses import accepted_kind
from gradcheck_cli.settings import Settings

# The curve's point as the formulas write it (NaN an infinite error, as nan_to_num reads it): the sweep's own
# path for non-finite errors, which keeps every array operation as written.
_plain_point = _point_not_finite


@pytest.mark.parametrize("spoil", [None, np.nan, np.inf, -np.inf])
def test_a_point_has_the_numbers_of_the_plain_formulas(spoil):
    """Protects _point's in-place shortcut: the same three numbers as the plain formulas, bit for bit, for
    finite values (zeros included, where tiny is the scale) and with a non-finite value of the user's."""
    rng = np.random.default_rng(1)
    studied = rng.standard_normal((4, 300)) * 10.0 ** rng.integers(-12, 3, (4, 300))
    studied[0, :5] = 0.0
    numeric = studied * (1 + rng.standard_normal((4, 300)) * 1e-9)
    numeric[0, :3] = 0.0
    if spoil is not None:
        studied[2, 7] = spoil
    expected = _plain_point(1e-3, studied, numeric.copy(), 2.5)
    size = np.maximum(np.abs(studied), np.finfo(np.float64).tiny)
    got = _point(1e-3, studied, size, numeric.copy(), 2.5)
    assert np.array_equal(np.array(got), np.array(expected), equal_nan=True)


def test_the_sweep_gives_the_numbers_of_the_curve_run_alone():
    """Protects running the curve beside the Taylor test: sweep_batch's points equal curve() run alone in this
    thread, with the loss computing its own softmax (the shared one changes nothing)."""
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((3, 2000)) * 3
    batch = batch_from_arrays(logits, rng.integers(0, 2000, 3), None, {}, None, None, None)
    settings = Settings()
    built = accepted_kind(settings).build(batch, settings, np.dtype(np.float64))
    alone = curve(built, batch.logits, built.row_gradients(batch.logits), differences.SWEEP_STEPS)
    assert sweep_batch(batch, settings).points == alone


def test_the_work_beside_returns_its_result_and_raises_its_error():
    """Protects Beside: the result comes back; an error of the work is raised where the result is asked for."""
    with Beside(lambda: 41 + 1, "test") as pending:
        pass
    assert pending.result() == 42

    def fails() -> int:
        raise ValueError("from the curve")

    with Beside(fails, "test") as failing:
        pass
    with pytest.raises(ValueError, match="from the curve"):
        failing.result()


def test_leaving_on_an_error_waits_for_the_work():
    """Protects 'nothing left behind': an error in the with block (the Taylor test or the check failing) still
    waits for the curve's thread, so no thread outlives the sweep."""
    finished = threading.Event()

    def slow() -> None:
        time.sleep(0.2)
        finished.set()

    with pytest.raises(RuntimeError), Beside(slow, "test-slow"):
        raise RuntimeError("the Taylor test failed")
    assert finished.is_set()
    assert not [thread for thread in threading.enumerate() if thread.name == "test-slow"]


def test_the_curve_thread_is_named_for_what_it_runs(monkeypatch):
    """The sweep starts exactly one helper thread, the curve's, and it has ended when sweep_batch returns."""
    started: list[str] = []
    original = Beside.__enter__

    def spy(self: Beside[object]) -> Beside[object]:
        started.append(self._thread.name)
        return original(self)

    monkeypatch.setattr(Beside, "__enter__", spy)
    batch = batch_from_arrays([[1.1, 2.2, 0.2, -1.7]], [2], None, {}, None, None, None)
    sweep_batch(batch, Settings())
    assert started == [CURVE_THREAD]
    assert not [thread for thread in threading.enumerate() if thread.name == CURVE_THREAD]


def test_an_infinite_value_of_the_users_gives_no_warning(recwarn):
    """Protects the quiet shortcut: inf - inf (the user's infinity where the differences are infinite too) is
    an infinite error, as before, with no RuntimeWarning on stderr."""
    studied = np.array([[np.inf, 1.0]])
    numeric = np.array([[np.inf, 1.0]])
    size = np.maximum(np.abs(studied), np.finfo(np.float64).tiny)
    got = _point(1e-3, studied, size, numeric.copy(), 1.0)
    assert np.array_equal(np.array(got), np.array(_plain_point(1e-3, studied, numeric, 1.0)), equal_nan=True)
    assert got.max_abs_error == np.inf
    assert not [warning for warning in recwarn if issubclass(warning.category, RuntimeWarning)]
