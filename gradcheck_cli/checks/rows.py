"""The checks of one batch of rows: gradient, Jacobian and Hessian against finite differences, and the
values the user supplied for these rows against the reference."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from gradcheck_cli.batch import Batch
from gradcheck_cli.checks.compare import compare
from gradcheck_cli.checks.jacobian import jacobian_check
from gradcheck_cli.errors import InputError
from gradcheck_cli.numerics import differences
from gradcheck_cli.numerics.losses.base import Loss, LossKind
from gradcheck_cli.numerics.softmax import Softmax, softmax_jacobian, softmax_parts
from gradcheck_cli.report import CheckResult, RowChecks
from gradcheck_cli.settings import Settings


def check_rows(batch: Batch, settings: Settings, kind: LossKind, normalizer: float) -> RowChecks:
    """Every check of these rows; `normalizer` is the whole input's mean divisor, `settings` resolved.

    In float32 the logits are first rounded to float32, and the reference is computed at those same
    rounded logits, so the check measures the float32 error of the formulas, not of the input.
    """
    # Overflow (huge weights, a temperature near 0) gives inf and NaN, which the checks report as failures;
    # numpy's warnings about them would only repeat that on stderr.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        return _check_rows(batch, settings, kind, normalizer)


def _check_rows(batch: Batch, settings: Settings, kind: LossKind, normalizer: float) -> RowChecks:
    assert settings.eps is not None and settings.atol is not None and settings.rtol is not None
    dtype = np.dtype(settings.dtype)
    low = batch.logits.astype(dtype, copy=False)
    logits = low.astype(np.float64, copy=False)
    reference_loss = replace(kind.build(batch, settings, np.dtype(np.float64)), normalizer=normalizer)
    # softmax(z / T) once for every check of these rows (twice in float32: the analytic one and the reference)
    reference = softmax_parts(logits / settings.temperature)
    analytic_loss, analytic_s = reference_loss, reference
    if dtype != np.float64:
        analytic_loss = replace(kind.build(batch, settings, dtype), normalizer=normalizer)
        analytic_s = softmax_parts(low / dtype.type(settings.temperature))
    analytic = analytic_loss.gradient(low, analytic_s)
    numeric = differences.numeric_gradient(reference_loss, logits, settings.eps, settings.method, reference)
    tolerances = {"atol": settings.atol, "rtol": settings.rtol}
    checks = [
        compare("gradient", analytic, numeric, **tolerances, description="dL/dz, analytic vs finite differences"),
        jacobian_check(analytic_s, reference, logits, settings),
    ]
    if settings.order == 2:
        hessian = analytic_loss.hessian(low)
        numeric_hessian = differences.finite_difference(reference_loss.gradient, logits, settings.eps, settings.method)
        checks.append(compare("hessian", hessian, numeric_hessian, **tolerances,
                              description="d2L/dz2, analytic vs finite differences of the gradient"))
    checks += supplied_checks(batch, settings, logits, reference, reference_loss)
    return RowChecks(checks, analytic_loss.row_losses(low, analytic_s), analytic_s, analytic, numeric,
                     logits, reference_loss)


def supplied_checks(
    batch: Batch, settings: Settings, logits: np.ndarray, reference: Softmax, loss: Loss
) -> list[CheckResult]:
    """The user's values for these rows against the reference; a loss of one number is the runner's to check."""
    assert settings.atol is not None and settings.rtol is not None
    checks = []
    for name, supplied in batch.supplied.items():
        if name == "loss":
            per_row = settings.reduction == "none"
            if supplied.size != (batch.rows if per_row else 1):
                raise InputError(f"the supplied loss has {supplied.size} values; --reduction {settings.reduction} "
                                 f"gives {'one per row' if per_row else 'one number'}")
            if not per_row:
                continue
        expected = _reference(name, logits, reference, loss, settings.temperature)
        checks.append(compare(f"supplied {name}", supplied.reshape(expected.shape), expected, settings.atol,
                              settings.rtol, description=f"the {name} you supplied vs gradcheck's reference"))
    return checks


def _reference(name: str, logits: np.ndarray, reference: Softmax, loss: Loss, temperature: float) -> np.ndarray:
    if name == "probabilities":
        return reference.s
    if name == "jacobian":
        return softmax_jacobian(reference.s, reference.complement) / temperature
    if name == "gradient":
        return loss.gradient(logits, reference)
    return loss.row_losses(logits, reference)
