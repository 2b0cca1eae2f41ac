"""The checks of one batch of rows: gradient, Jacobian and Hessian against finite differences, and the
values the user supplied for these rows against the reference.

Every tolerance is the error analysis' (losses/base.py and differences.py), element by element: the loss's
scales carry the temperature, weights, smoothing and reduction, the rounding allowance the dtype.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from gradcheck_cli.batch import Batch
from gradcheck_cli.checks.compare import compare
from gradcheck_cli.checks.jacobian import jacobian_check, jacobian_scales
from gradcheck_cli.errors import InputError
from gradcheck_cli.numerics import differences
from gradcheck_cli.numerics.losses.base import Loss, LossKind, Scales, allowance, rounding_factor
from gradcheck_cli.numerics.softmax import Softmax, softmax_jacobian, softmax_parts
from gradcheck_cli.report import CheckResult, RowChecks
from gradcheck_cli.settings import Settings


def check_rows(batch: Batch, settings: Settings, kind: LossKind, normalizer: float) -> RowChecks:
    """Every check of these rows; `normalizer` is the whole input's mean divisor, `settings` resolved.

    In float32 the logits are first rounded to float32, and the reference is computed at those same
    rounded logits, so the check measures the float32 error of the formulas, not of the input.
    """
    # Overflow (huge weights, say) gives inf and NaN, which the checks report as failures; numpy's warnings
    # about them would only repeat that on stderr.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        return _check_rows(batch, settings, kind, normalizer)


def _check_rows(batch: Batch, settings: Settings, kind: LossKind, normalizer: float) -> RowChecks:
    assert settings.eps is not None and settings.atol is not None and settings.rtol is not None
    dtype = np.dtype(settings.dtype)
    low = batch.logits.astype(dtype, copy=False)
    logits = low.astype(np.float64, copy=False)
    _refuse_overflow(logits, settings.temperature, dtype)
    reference_loss = replace(kind.build(batch, settings, np.dtype(np.float64)), normalizer=normalizer)
    # softmax(z / T) once for every check of these rows (twice in float32: the analytic one and the reference)
    reference = softmax_parts(logits / settings.temperature)
    analytic_loss, analytic_s = reference_loss, reference
    if dtype != np.float64:
        analytic_loss = replace(kind.build(batch, settings, dtype), normalizer=normalizer)
        analytic_s = softmax_parts(low / dtype.type(settings.temperature))
    analytic = analytic_loss.gradient(low, analytic_s)
    numeric = differences.numeric_gradient(reference_loss, logits, settings.eps, settings.method, reference)
    rho = rounding_factor(logits, settings.temperature)  # once for every check of these rows
    eta = float(differences.exact_step(settings.eps)) / settings.temperature  # the step in u = z / T
    scales = reference_loss.gradient_scales(logits, reference)
    tolerance = allowance(numeric, scales, settings, rho, eta, unit=reference_loss.scale)
    checks = [
        compare("gradient", analytic, numeric, tolerance, settings.rtol,
                description="dL/dz, analytic vs finite differences"),
        jacobian_check(analytic_s, reference, logits, settings, rho),
    ]
    if settings.order == 2:
        hessian = analytic_loss.hessian(low)
        change = reference_loss.gradient_perturbation(logits, reference)
        numeric_hessian = differences.numeric_hessian(change, batch.classes, settings.eps, settings.method)
        scales = reference_loss.hessian_scales(logits, reference)
        tolerance = allowance(numeric_hessian, scales, settings, rho[:, :, None], eta)
        checks.append(compare("hessian", hessian, numeric_hessian, tolerance, settings.rtol,
                              description="d2L/dz2, analytic vs finite differences of the gradient"))
    checks += supplied_checks(batch, settings, logits, reference, reference_loss, rho)
    return RowChecks(checks, analytic_loss.row_losses(low, analytic_s), analytic_s, analytic, numeric,
                     logits, reference_loss)


def _refuse_overflow(logits: np.ndarray, temperature: float, dtype: np.dtype) -> None:
    """z / T must be finite in the dtype the softmax is computed in, or no derivative is left to check."""
    largest = float(np.abs(logits).max()) if logits.size else 0.0
    if largest / temperature > float(np.finfo(dtype).max):
        raise InputError(f"--temperature {temperature:g}: a logit of size {largest:g} divided by it overflows "
                         f"{dtype}; use a larger temperature")


def supplied_checks(
    batch: Batch, settings: Settings, logits: np.ndarray, reference: Softmax, loss: Loss, rho: np.ndarray | None = None
) -> list[CheckResult]:
    """The user's values for these rows against the reference; a loss of one number is the runner's to check.

    Nothing is differenced here, so the tolerance is rtol |n| plus the rounding allowance of --dtype (a
    value computed straightforwardly in it is off by at most that much; see losses/base.py).
    """
    assert settings.atol is not None and settings.rtol is not None
    checks = []
    rho = rounding_factor(logits, settings.temperature) if rho is None else rho
    for name, supplied in batch.supplied.items():
        if name == "loss":
            per_row = settings.reduction == "none"
            if supplied.size != (batch.rows if per_row else 1):
                raise InputError(f"the supplied loss has {supplied.size} values; --reduction {settings.reduction} "
                                 f"gives {'one per row' if per_row else 'one number'}")
            if not per_row:
                continue
        expected, scales = _reference(name, logits, reference, loss, settings.temperature)
        width = rho.reshape(rho.shape[:1] + (1,) * (expected.ndim - 1))
        unit = loss.scale if name in ("gradient", "loss") else 1.0
        tolerance = allowance(expected, scales._replace(scale=np.abs(expected)), settings, width, unit=unit)
        checks.append(compare(f"supplied {name}", supplied.reshape(expected.shape), expected, tolerance,
                              settings.rtol, description=f"the {name} you supplied vs gradcheck's reference"))
    return checks


def row_loss_allowance(loss: Loss, logits: np.ndarray, settings: Settings) -> tuple[np.ndarray, np.ndarray]:
    """For a supplied loss of one number: each row's rounding allowance and |l_n| (N each), to be summed over
    the input. The total's tolerance is then atol + rtol |L| + scale (sum allowance + u (2 + log2 N) sum |l|),
    the last term the rounding of a pairwise sum of N rows (as numpy and torch sum)."""
    rows = loss.row_losses(logits)
    scales = loss.loss_scales(logits)
    exact = settings._replace(atol=0.0, rtol=0.0)  # only the allowance: atol and rtol apply to the total once
    rho = rounding_factor(logits, settings.temperature)[:, 0]
    return allowance(rows, scales._replace(scale=np.abs(rows)), exact, rho), np.abs(rows)


def _reference(name: str, logits: np.ndarray, reference: Softmax, loss: Loss, temperature: float
               ) -> tuple[np.ndarray, Scales]:
    """gradcheck's value of a supplied quantity, and its scales."""
    if name == "probabilities":
        s = reference.s
        return s, Scales(s, s, np.ones((s.shape[0], 1)))
    if name == "jacobian":
        jacobian = softmax_jacobian(reference.s, reference.complement) / temperature
        return jacobian, jacobian_scales(reference.s, reference.complement, temperature)
    if name == "gradient":
        return loss.gradient(logits, reference), loss.gradient_scales(logits, reference)
    return loss.row_losses(logits, reference), loss.loss_scales(logits, reference)
