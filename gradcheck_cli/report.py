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

    def resolved(self) -> Settings:
        atol, rtol = differences.default_tolerances(self.method)
        return replace(
            self,
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
    settings = settings.resolved()
    assert settings.eps is not None and settings.atol is not None and settings.rtol is not None
    logits = batch.logits
    loss = cross_entropy(batch.targets, settings.reduction)
    probabilities = core.softmax(logits)
    jacobian = core.softmax_jacobian(probabilities, core.softmax_complement(logits))
    analytic = loss.gradient(logits)
    numeric = differences.numeric_gradient(loss, logits, settings.eps, settings.method)
    numeric_jacobian = differences.numeric_jacobian(logits, settings.eps, settings.method)
    tolerances = {"atol": settings.atol, "rtol": settings.rtol}
    checks = [
        compare("gradient", analytic, numeric, **tolerances, description="dL/dz, analytic vs finite differences"),
        compare(
            "jacobian", jacobian, numeric_jacobian, **tolerances, description="ds/dz, analytic vs finite differences"
        ),
    ]
    return Report(
        settings=settings,
        batch=batch,
        probabilities=probabilities,
        jacobian=jacobian,
        loss=loss.loss(logits),
        analytic_gradient=analytic,
        numeric_gradient=numeric,
        checks=checks,
    )
