"""Run every check on a batch and gather the results into one Report, which also decides the exit code."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from gradcheck_cli import core, differences
from gradcheck_cli.checks import CheckResult, compare
from gradcheck_cli.inputs import Batch
from gradcheck_cli.losses import cross_entropy

EXIT_AGREE, EXIT_DISAGREE, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


@dataclass(frozen=True)
class Settings:
    """How to check. None means 'the default for the method', filled in by `resolved`."""

    method: str = "central"
    eps: float | None = None
    atol: float | None = None
    rtol: float | None = None
    dtype: str = "float64"
    loss: str = "cross_entropy"
    reduction: str = "mean"
    order: int = 1

    def resolved(self) -> Settings:
        atol, rtol = differences.default_tolerances(self.method, self.dtype)
        return replace(
            self,
            # The reference is always float64, so its step is float64's whatever the analytic dtype.
            eps=differences.default_eps(self.method) if self.eps is None else self.eps,
            atol=atol if self.atol is None else self.atol,
            rtol=rtol if self.rtol is None else self.rtol,
        )


@dataclass
class Report:
    settings: Settings
    batch: Batch
    probabilities: np.ndarray
    jacobian: np.ndarray
    loss: float | np.ndarray
    analytic_gradient: np.ndarray
    numeric_gradient: np.ndarray
    checks: list[CheckResult]

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def exit_code(self) -> int:
        return EXIT_AGREE if self.passed else EXIT_DISAGREE


def run_check(batch: Batch, settings: Settings) -> Report:
    """Compute the analytic quantities in the chosen dtype and check them against float64 references.

    In float32 the logits are first rounded to float32, and the reference is computed at those same
    rounded logits, so the check measures the float32 error of the formulas, not of the input.
    """
    settings = settings.resolved()
    assert settings.eps is not None and settings.atol is not None and settings.rtol is not None
    dtype = np.dtype(settings.dtype)
    low = batch.logits.astype(dtype)
    logits = low.astype(np.float64)
    loss = cross_entropy(batch.targets, settings.reduction)
    analytic_loss = cross_entropy(batch.targets.astype(dtype), settings.reduction)
    probabilities = core.softmax(low)
    jacobian = core.softmax_jacobian(probabilities, core.softmax_complement(low))
    analytic = analytic_loss.gradient(low)
    numeric = differences.numeric_gradient(loss, logits, settings.eps, settings.method)
    numeric_jacobian = differences.numeric_jacobian(logits, settings.eps, settings.method)
    tolerances = {"atol": settings.atol, "rtol": settings.rtol}
    checks = [
        compare("gradient", analytic, numeric, **tolerances, description="dL/dz, analytic vs finite differences"),
        compare(
            "jacobian", jacobian, numeric_jacobian, **tolerances, description="ds/dz, analytic vs finite differences"
        ),
    ]
    if settings.order == 2:
        hessian = analytic_loss.hessian(low)
        numeric_hessian = differences.finite_difference(loss.gradient, logits, settings.eps, settings.method)
        checks.append(
            compare("hessian", hessian, numeric_hessian, **tolerances,
                    description="d2L/dz2, analytic vs finite differences of the gradient")
        )
    return Report(
        settings=settings,
        batch=batch,
        probabilities=probabilities,
        jacobian=jacobian,
        loss=analytic_loss.loss(low),
        analytic_gradient=analytic,
        numeric_gradient=numeric,
        checks=checks,
    )
