"""The finite-difference methods: accuracy, the steps they take, float32, the Hessian, and what they catch."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gradcheck_cli import settings as registry
from gradcheck_cli.batch import Batch
from gradcheck_cli.checks.compare import compare
from gradcheck_cli.inputs.validate import one_hot
from gradcheck_cli.numerics import differences
from gradcheck_cli.numerics import softmax as core
from gradcheck_cli.numerics.losses.base import allowance, rounding_factor
from gradcheck_cli.numerics.losses.cross_entropy import cross_entropy
from gradcheck_cli.pipeline import check_batch as run_check
from gradcheck_cli.settings import Settings

TARGETS = differences.ACCURACY_TARGETS


def random_case(scale: float, rows: int = 64, classes: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((rows, classes)) * scale
    labels = rng.integers(0, classes, rows)
    return logits, labels, cross_entropy(one_hot(labels, classes))


def test_the_cli_offers_exactly_the_methods_the_engine_has():
    assert tuple(differences.METHODS) == registry.METHOD_NAMES


@pytest.mark.parametrize("scale", [1.0, 10.0, 100.0])
@pytest.mark.parametrize("method", list(TARGETS))
def test_each_method_meets_its_accuracy_target(method, scale):
    logits, _, loss = random_case(scale)
    analytic = loss.gradient(logits)
    numeric = differences.numeric_gradient(loss, logits, differences.default_eps(method), method)
    error = np.max(np.abs(numeric - analytic)) / np.max(np.abs(analytic))
    assert error <= TARGETS[method], f"{method} at scale {scale}: {error:.2e}"


@pytest.mark.parametrize("method", list(TARGETS))
def test_each_method_differentiates_a_re_evaluated_function(method):
    """The generic path (a user's own function) on a smooth function with a known derivative."""
    logits = np.array([[0.3, -1.2, 2.0]])
    numeric = differences.finite_difference(lambda z: np.sin(z).sum(axis=-1), logits, differences.default_eps(method), method)
    np.testing.assert_allclose(numeric, np.cos(logits), rtol=10 * TARGETS[method] + 1e-15, atol=0)


def test_steps_are_powers_of_two_that_move_z_exactly():
    logits = np.array([[0.1, 3.7, -1e3, 123456.789]])
    h = differences.steps(logits, 6e-6)
    assert np.all(np.log2(h) == np.round(np.log2(h)))
    for k in (0.25, 0.5, 1.0, 2.0):
        assert np.all((logits + k * h) - logits == k * h)


def test_steps_never_fall_below_the_spacing_of_huge_logits():
    logits = np.array([[1e12, 0.0]])
    h = differences.steps(logits, 6e-6)
    assert (logits + h)[0, 0] != logits[0, 0]


def test_richardson_stencil_is_exact_for_polynomials_up_to_degree_six():
    method = differences.METHODS["richardson"]
    for degree in range(1, 7):
        # sum w_k (o_k)^degree must be 1 for degree 1 and 0 otherwise (f'(0) of x^degree, unit step).
        moment = sum(w * o**degree for o, w in zip(method.offsets, method.weights, strict=True))
        assert moment == pytest.approx(1.0 if degree == 1 else 0.0, abs=1e-12), degree


@pytest.mark.parametrize("method", list(TARGETS))
def test_a_gradient_off_by_1e_6_relative_fails_under_every_method_s_defaults(method):
    """One-sided differences resolve 1e-6 too: their exact perturbations truncate by eta/2 = 7.5e-9 of the
    element's scale, and their default rtol (1e-7) follows that bound (it was 1e-5, above the slip)."""
    logits, _, loss = random_case(10.0)
    numeric = differences.numeric_gradient(loss, logits, differences.default_eps(method), method)
    atol, rtol = differences.default_tolerances(method)
    wrong = loss.gradient(logits) * (1 + 1e-6)
    assert not compare("gradient", wrong, numeric, atol, rtol).passed
    assert compare("gradient", loss.gradient(logits), numeric, atol, rtol).passed


@pytest.mark.parametrize("method", list(TARGETS))
def test_every_method_passes_a_correct_gradient_through_the_cli(gradcheck, method):
    run = gradcheck("check", "--logits", "1.1,2.2,0.2,-1.7", "--logits", "100,-50,3,99.5", "--labels", "2,0",
                    "--method", method, "--order", "2", "-f", "json")
    assert run.exit_code == 0, run
    report = json.loads(run.stdout)
    assert report["settings"]["method"] == method
    assert [check["name"] for check in report["checks"]] == ["gradient", "jacobian", "hessian"]


def test_complex_step_is_exact_to_rounding():
    logits, _, loss = random_case(30.0)
    numeric = differences.numeric_gradient(loss, logits, differences.default_eps("complex-step"), "complex-step")
    np.testing.assert_allclose(numeric, loss.gradient(logits), rtol=1e-15, atol=1e-300)


# --- float32 ---------------------------------------------------------------------------------------------------


def test_float32_really_computes_in_float32_and_passes():
    logits, labels, _ = random_case(10.0, rows=8)
    batch = Batch(logits=logits, labels=labels, targets=one_hot(labels, logits.shape[1]))
    report = run_check(batch, Settings(dtype="float32"))
    assert report.probabilities.dtype == np.float32
    assert report.analytic_gradient.dtype == np.float32
    assert report.jacobian.dtype == np.float32
    assert report.passed, report.checks
    # The float32 analytic gradient differs from the float64 one by float32 rounding, not by nothing.
    in_float64 = run_check(batch, Settings())
    difference = np.max(np.abs(report.analytic_gradient - in_float64.analytic_gradient))
    assert 1e-10 < difference < 1e-5


def test_float32_tolerances_catch_a_gradient_wrong_beyond_float32_rounding():
    """The float32 tolerance is the analysis' rounding allowance, element by element (losses/base.py)."""
    logits, _, loss = random_case(10.0, rows=8)
    settings = differences.resolve(Settings(dtype="float32"))
    numeric = differences.numeric_gradient(loss, logits, settings.eps, "central")
    eta = float(differences.exact_step(settings.eps))
    atol = allowance(numeric, loss.gradient_scales(logits), settings, rounding_factor(logits, 1.0), eta)
    right = cross_entropy(loss.coefficients.astype(np.float32)).gradient(logits.astype(np.float32))
    assert compare("gradient", right, numeric, atol, settings.rtol).passed
    assert not compare("gradient", right * np.float32(1 + 1e-3), numeric, atol, settings.rtol).passed


def test_dtype_is_reported(gradcheck):
    run = gradcheck("check", "--logits", "1,2,3", "--labels", "0", "--dtype", "float32", "-f", "json")
    assert run.exit_code == 0, run
    assert json.loads(run.stdout)["settings"]["dtype"] == "float32"


# --- the Hessian ----------------------------------------------------------------------------------------------


def test_hessian_of_cross_entropy_is_the_jacobian_scaled_by_the_target_mass():
    logits = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
    targets = np.array([[0.2, 0.3, 0.5], [0.0, 2.0, 0.0]])
    loss = cross_entropy(targets, "mean")
    jacobian = core.softmax_jacobian(core.softmax(logits))
    expected = jacobian * (targets.sum(axis=1) / 2)[:, None, None]
    np.testing.assert_allclose(loss.hessian(logits), expected, rtol=1e-14, atol=1e-17)


def test_hessian_check_fails_for_a_wrong_hessian(monkeypatch):
    """The factor-2 slip in the analytic Hessian (its m of m ds/dz, the structured path) fails the hessian
    check alone. The analytic side is the float32 loss (in float64 it is the reference's own object)."""
    from gradcheck_cli.numerics.losses.cross_entropy import CrossEntropy

    original = CrossEntropy.hessian_multiple

    def slipped(self, logits, given=None):
        multiple = original(self, logits, given)
        return multiple * 2 if self.coefficients.dtype == np.float32 else multiple

    monkeypatch.setattr(CrossEntropy, "hessian_multiple", slipped)
    logits, labels, _ = random_case(1.0, rows=4)
    report = run_check(Batch(logits, labels, one_hot(labels, 10)), Settings(order=2, dtype="float32"))
    failed = [check.name for check in report.checks if not check.passed]
    assert failed == ["hessian"]


def test_order_1_has_no_hessian_check(gradcheck):
    run = gradcheck("check", "--logits", "1,2,3", "--labels", "0", "-f", "json")
    assert [check["name"] for check in json.loads(run.stdout)["checks"]] == ["gradient", "jacobian"]
    assert json.loads(run.stdout)["settings"]["order"] == 1
