"""Run every check on a batch and gather the results into one Report, which also decides the exit code."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from gradcheck_cli import core, differences
from gradcheck_cli.checks import CheckResult, compare
from gradcheck_cli.errors import InputError
from gradcheck_cli.inputs import Batch
from gradcheck_cli.losses import Loss, squared_error, torch_cross_entropy

if TYPE_CHECKING:
    from gradcheck_cli.implementation import Implementation

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
    weights: tuple[float, ...] | None = None
    label_smoothing: float = 0.0
    ignore_index: int | None = None
    temperature: float = 1.0

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
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def exit_code(self) -> int:
        return EXIT_AGREE if self.passed else EXIT_DISAGREE


def build_loss(batch: Batch, settings: Settings, dtype: np.dtype = np.dtype(np.float64)) -> Loss:
    """The loss the settings describe, on this batch, in the given dtype; or an InputError saying why not."""
    classes = batch.logits.shape[1]
    weights = None if settings.weights is None else np.array(settings.weights)
    if weights is not None and weights.shape[0] != classes:
        raise InputError(f"--weights: {weights.shape[0]} weights for {classes} classes")
    if settings.loss == "mse":
        if weights is not None or settings.label_smoothing or settings.ignore_index is not None:
            raise InputError("--weights, --label-smoothing and --ignore-index apply to cross_entropy, not mse")
        return squared_error(batch.targets.astype(dtype), settings.reduction, settings.temperature)
    if batch.labels is None and settings.ignore_index is not None:
        raise InputError("--ignore-index applies to class labels, not to target distributions (as in torch)")
    loss = torch_cross_entropy(
        classes,
        labels=batch.labels,
        targets=None if batch.labels is not None else batch.targets,
        reduction=settings.reduction,
        weights=weights,
        label_smoothing=settings.label_smoothing,
        ignore_index=settings.ignore_index,
        temperature=settings.temperature,
    )
    if settings.reduction == "mean" and loss.normalizer == 0.0:
        raise InputError(
            "the mean divides by the summed weights of the rows not ignored, and that is 0 here "
            "(every row ignored, or only zero weights): use --reduction sum or none"
        )
    return replace(loss, coefficients=loss.coefficients.astype(dtype))


def run_check(batch: Batch, settings: Settings, implementation: Implementation | None = None) -> Report:
    """Compute the analytic quantities in the chosen dtype and check them against float64 references.

    In float32 the logits are first rounded to float32, and the reference is computed at those same
    rounded logits, so the check measures the float32 error of the formulas, not of the input.
    """
    settings = settings.resolved()
    assert settings.eps is not None and settings.atol is not None and settings.rtol is not None
    dtype = np.dtype(settings.dtype)
    temperature = settings.temperature
    low = batch.logits.astype(dtype)
    logits = low.astype(np.float64)
    reference_loss = build_loss(batch, settings)
    analytic_loss = build_loss(batch, settings, dtype)
    scaled = low / dtype.type(temperature)
    probabilities = core.softmax(scaled)
    jacobian = core.softmax_jacobian(probabilities, core.softmax_complement(scaled)) / dtype.type(temperature)
    analytic = analytic_loss.gradient(low)
    numeric = differences.numeric_gradient(reference_loss, logits, settings.eps, settings.method)
    numeric_jacobian = differences.numeric_jacobian(logits, settings.eps, settings.method, temperature)
    tolerances = {"atol": settings.atol, "rtol": settings.rtol}
    checks = [
        compare("gradient", analytic, numeric, **tolerances, description="dL/dz, analytic vs finite differences"),
        compare(
            "jacobian", jacobian, numeric_jacobian, **tolerances, description="ds/dz, analytic vs finite differences"
        ),
    ]
    if settings.order == 2:
        hessian = analytic_loss.hessian(low)
        numeric_hessian = differences.finite_difference(reference_loss.gradient, logits, settings.eps, settings.method)
        checks.append(
            compare("hessian", hessian, numeric_hessian, **tolerances,
                    description="d2L/dz2, analytic vs finite differences of the gradient")
        )
    loss_value = analytic_loss.loss(low)
    reference = {
        "probabilities": core.softmax(logits / temperature),
        "jacobian": core.softmax_jacobian(core.softmax(logits / temperature),
                                          core.softmax_complement(logits / temperature)) / temperature,
        "loss": reference_loss.loss(logits),
        "gradient": reference_loss.gradient(logits),
    }
    for name, supplied in batch.supplied.items():
        expected = np.asarray(reference[name])
        if supplied.size != expected.size:  # only the loss can get here: one number vs one per row
            raise InputError(f"the supplied loss has {supplied.size} values; --reduction {settings.reduction} "
                             f"gives {'one per row' if settings.reduction == 'none' else 'one number'}")
        checks.append(compare(f"supplied {name}", supplied.reshape(expected.shape), expected, **tolerances,
                              description=f"the {name} you supplied vs gradcheck's reference"))
    notes: list[str] = []
    if implementation is not None:
        checks += implementation.checks(logits, batch.targets, reference_loss, settings, notes)
    return Report(
        settings=settings,
        batch=batch,
        probabilities=probabilities,
        jacobian=jacobian,
        loss=loss_value,
        analytic_gradient=analytic,
        numeric_gradient=numeric,
        checks=checks,
        notes=notes,
    )
