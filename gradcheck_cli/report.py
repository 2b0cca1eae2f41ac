"""Run every check on a batch and gather the results into one Report, which also decides the exit code."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from gradcheck_cli import core, differences
from gradcheck_cli.checks import CheckResult, ExactSum, compare, merge
from gradcheck_cli.errors import InputError
from gradcheck_cli.inputs import Batch
from gradcheck_cli.losses import Loss, squared_error, torch_cross_entropy

if TYPE_CHECKING:
    from gradcheck_cli.implementation import Implementation

EXIT_AGREE, EXIT_DISAGREE, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


class Settings(NamedTuple):
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
        return self._replace(
            # The reference is always float64, so its step is float64's whatever the analytic dtype.
            eps=differences.default_eps(self.method) if self.eps is None else self.eps,
            atol=atol if self.atol is None else self.atol,
            rtol=rtol if self.rtol is None else self.rtol,
        )


@dataclass(eq=False, repr=False)  # holds arrays: == has no truth value, and each method costs start-up
class Report:
    """Everything a run found. The per-row arrays are None when they were not kept (a big or streamed input)."""

    settings: Settings
    rows: int
    classes: int
    loss: float | np.ndarray | None
    checks: list[CheckResult]
    batch: Batch | None = None
    probabilities: np.ndarray | None = None
    jacobian: np.ndarray | None = None
    analytic_gradient: np.ndarray | None = None
    numeric_gradient: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    source: str | None = None
    # The file line each row came from (for annotations and worst-row tables), when the input was a file.
    line_of: Callable[[int], int | None] = lambda row: None

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def exit_code(self) -> int:
        return EXIT_AGREE if self.passed else EXIT_DISAGREE

    @property
    def full(self) -> bool:
        """Whether the per-row arrays are here (else the report is a summary)."""
        return self.probabilities is not None


def build_loss(
    batch: Batch, settings: Settings, dtype: np.dtype = np.dtype(np.float64), whole: bool = True
) -> Loss:
    """The loss the settings describe, on this batch, in the given dtype; or an InputError saying why not.

    `whole` is False for one chunk of a bigger input, whose mean divisor comes from the whole input.
    """
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
    if whole and settings.reduction == "mean" and loss.normalizer == 0.0:
        raise InputError(
            "the mean divides by the summed weights of the rows not ignored, and that is 0 here "
            "(every row ignored, or only zero weights): use --reduction sum or none"
        )
    return replace(loss, coefficients=loss.coefficients.astype(dtype))


@dataclass(eq=False, repr=False)  # holds arrays: == has no truth value, and each method costs start-up
class RowChecks:
    """The checks of a run of consecutive rows, and what a report or a per-row stream needs of them."""

    checks: list[CheckResult]
    row_losses: np.ndarray  # unscaled, in the analytic dtype
    softmax: core.Softmax  # in the analytic dtype
    analytic_gradient: np.ndarray
    numeric_gradient: np.ndarray

    @property
    def probabilities(self) -> np.ndarray:
        return self.softmax.s


def _jacobian_check(
    analytic_s: core.Softmax, reference: core.Softmax, logits: np.ndarray, settings: Settings
) -> CheckResult:
    """Every element of ds/dz, analytic vs finite differences, in O(N C) time and memory however large C is.

    Off the diagonal, column j of both Jacobians is s_i times one number per row: analytic -s_j / T, numeric
    factor[:, j] (see differences.softmax_derivative_factors). So in column j every off-diagonal element's
    error s_i |s_j / T + factor|, its share of the tolerance s_i e / (atol + rtol s_i |factor|) and its relative
    error grow with s_i (or stay level): the element of the largest other s_i is the worst of them. Comparing
    that one and the diagonal element of each (row, column) decides the check of all N C^2 elements, with
    the same values an element-by-element comparison computes for them. In float32 the analytic s is not the
    reference's, the columns do not factor, and jacobian_check_by_element compares every element.
    `analytic_s` and `reference` are softmax(z / T) in the analytic dtype and in float64.
    """
    assert settings.eps is not None and settings.atol is not None and settings.rtol is not None
    temperature = settings.temperature
    s, complement = reference.s, reference.complement
    h = differences.broadcast_steps(logits, settings.eps)
    factor, own = differences.softmax_derivative_factors(s, complement, h, settings.method, temperature)
    if analytic_s.s.dtype != np.float64:
        return jacobian_check_by_element(analytic_s, s, factor, own, settings)
    atol, rtol = settings.atol, settings.rtol
    rows, classes = s.shape
    columns = np.arange(classes)
    diagonal = compare("jacobian", s * complement / temperature, own, atol, rtol, _JACOBIAN)
    result = diagonal._replace(worst_index=(diagonal.worst_index[0], diagonal.worst_index[1], diagonal.worst_index[1]))
    if classes == 1:
        return result
    # For each (row, column j) the largest s_i with i != j: the row's largest, or its second where j is the largest.
    first, row_starts = reference.largest, np.arange(rows) * classes  # (flat indices: fast on short rows)
    rest = s.copy()
    rest.reshape(-1)[row_starts + first] = -np.inf
    second = rest.argmax(axis=1)
    top, runner_up = s.reshape(-1)[row_starts + first], s.reshape(-1)[row_starts + second]
    is_first = columns == first[:, None]
    s_other = np.where(is_first, runner_up[:, None], top[:, None])
    off = compare("jacobian", -s_other * s / temperature, s_other * factor, atol, rtol, _JACOBIAN)
    row, column = off.worst_index
    other = int(second[row] if is_first[row, column] else first[row])
    return merge(result, off._replace(worst_index=(row, other, column)), (0, 0, 0))


_JACOBIAN = "ds/dz, analytic vs finite differences"


def jacobian_check_by_element(
    analytic_s: core.Softmax, s: np.ndarray, factor: np.ndarray, own: np.ndarray, settings: Settings
) -> CheckResult:
    """The Jacobian check comparing every element, one column (N x C) at a time so memory stays O(N C).

    `analytic_s` is the softmax in the analytic dtype; s, factor and own are the reference's (see
    _jacobian_check). merge() picks the worst element numpy.argmax over the whole N x C x C arrays would.
    """
    assert settings.atol is not None and settings.rtol is not None
    low_s, low_complement = analytic_s.s, analytic_s.complement
    temperature = low_s.dtype.type(settings.temperature)
    result: CheckResult | None = None
    for j in range(s.shape[1]):
        analytic = -low_s * low_s[:, j : j + 1]
        analytic[:, j] = low_s[:, j] * low_complement[:, j]
        analytic /= temperature
        numeric = s * factor[:, j : j + 1]
        numeric[:, j] = own[:, j]
        part = compare("jacobian", analytic, numeric, settings.atol, settings.rtol, description=_JACOBIAN)
        result = merge(result, part._replace(worst_index=(*part.worst_index, j)), (0, 0, 0))
    assert result is not None
    return result


def check_rows(batch: Batch, settings: Settings, normalizer: float | None = None) -> RowChecks:
    # Overflow (huge weights, a temperature near 0) gives inf and NaN, which the checks report as failures;
    # numpy's warnings about them would only repeat that on stderr.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        return _check_rows(batch, settings, normalizer)


def _check_rows(batch: Batch, settings: Settings, normalizer: float | None = None) -> RowChecks:
    """The gradient, Jacobian (and Hessian) checks of some rows; `normalizer` is the whole input's mean divisor.

    In float32 the logits are first rounded to float32, and the reference is computed at those same
    rounded logits, so the check measures the float32 error of the formulas, not of the input.
    """
    assert settings.eps is not None and settings.atol is not None and settings.rtol is not None
    dtype = np.dtype(settings.dtype)
    low = batch.logits.astype(dtype, copy=False)
    logits = low.astype(np.float64, copy=False)
    reference_loss = build_loss(batch, settings, whole=normalizer is None)
    if normalizer is not None:
        reference_loss = replace(reference_loss, normalizer=normalizer)
    # softmax(z / T) once for every check of these rows (twice in float32: the analytic one and the reference)
    reference = core.softmax_parts(logits / settings.temperature)
    analytic_loss, analytic_s = reference_loss, reference
    if dtype != np.float64:
        analytic_loss = replace(build_loss(batch, settings, dtype, whole=False), normalizer=reference_loss.normalizer)
        analytic_s = core.softmax_parts(low / dtype.type(settings.temperature))
    analytic = analytic_loss.gradient(low, analytic_s)
    numeric = differences.numeric_gradient(reference_loss, logits, settings.eps, settings.method, reference)
    tolerances = {"atol": settings.atol, "rtol": settings.rtol}
    checks = [
        compare("gradient", analytic, numeric, **tolerances, description="dL/dz, analytic vs finite differences"),
        _jacobian_check(analytic_s, reference, logits, settings),
    ]
    if settings.order == 2:
        hessian = analytic_loss.hessian(low)
        numeric_hessian = differences.finite_difference(reference_loss.gradient, logits, settings.eps, settings.method)
        checks.append(compare("hessian", hessian, numeric_hessian, **tolerances,
                              description="d2L/dz2, analytic vs finite differences of the gradient"))
    return RowChecks(checks, analytic_loss.row_losses(low, analytic_s), analytic_s, analytic, numeric)


def normalizer_of(batches: Iterable[Batch], settings: Settings) -> float:
    """The mean's divisor over a whole input that arrives in pieces: the summed weights of the rows kept."""
    total, rows = ExactSum(), 0
    for batch in batches:
        build_loss(batch, settings._replace(reduction="sum"))  # refuses bad options for this piece
        rows += batch.logits.shape[0]
        if settings.loss == "cross_entropy" and batch.labels is not None:
            kept = np.ones(batch.labels.shape[0], dtype=bool)
            if settings.ignore_index is not None:
                kept = batch.labels != settings.ignore_index
            weights = np.ones(batch.logits.shape[1]) if settings.weights is None else np.array(settings.weights)
            total.add(np.where(kept, weights[np.where(kept, batch.labels, 0)], 0.0))
    if settings.loss == "cross_entropy" and (settings.weights is not None or settings.ignore_index is not None):
        return total.value()
    return float(rows)


def _reduced_loss(row_losses: ExactSum, settings: Settings, normalizer: float) -> float:
    total = row_losses.value()
    return total / normalizer if settings.reduction == "mean" else total


def stream_check(
    batches: Iterable[Batch],
    settings: Settings,
    normalizer: float | None,
    on_rows: Callable[[int, Batch, RowChecks], None],
) -> tuple[list[CheckResult], float | None, int, int]:
    """Check an input that arrives in batches of rows, keeping only the merged checks and an exact loss sum.

    Returns (checks, reduced loss or None for reduction none, rows, classes). `on_rows` sees each piece
    (its first row's index, the batch, its checks) as it is done, for per-row output and progress.
    """
    settings = settings.resolved()
    merged: list[CheckResult | None] = []
    losses, rows, classes = ExactSum(), 0, 0
    for batch in batches:
        part = check_rows(batch, settings, normalizer)
        merged = [merge(before, check, (rows,) + (0,) * (len(check.worst_index) - 1))
                  for before, check in zip(merged or [None] * len(part.checks), part.checks, strict=True)]
        losses.add(part.row_losses.astype(np.float64))
        on_rows(rows, batch, part)
        rows += batch.logits.shape[0]
        classes = batch.logits.shape[1]
    if rows == 0:
        raise InputError("no data rows")
    loss = None if settings.reduction == "none" else _reduced_loss(losses, settings, normalizer or float(rows))
    return [check for check in merged if check is not None], loss, rows, classes


def run_check(
    batch: Batch,
    settings: Settings,
    implementation: Implementation | None = None,
    keep_arrays: bool = True,
    keep_jacobian: bool = True,
) -> Report:
    """Check a batch held in memory; with keep_arrays the report carries every per-row array for output.

    The N x C x C Jacobian is built only with keep_jacobian (the checks never need it whole).
    """
    settings = settings.resolved()
    assert settings.eps is not None and settings.atol is not None and settings.rtol is not None
    result = check_rows(batch, settings)
    checks = list(result.checks)
    dtype = np.dtype(settings.dtype)
    temperature = settings.temperature
    logits = batch.logits.astype(dtype).astype(np.float64)
    reference_loss = build_loss(batch, settings)
    analytic_loss = build_loss(batch, settings, dtype)
    tolerances = {"atol": settings.atol, "rtol": settings.rtol}
    if batch.supplied:
        parts = core.softmax_parts(logits / temperature)
        reference = {
            "probabilities": parts.s,
            "jacobian": core.softmax_jacobian(parts.s, parts.complement) / temperature,
            "loss": reference_loss.loss(logits, parts),
            "gradient": reference_loss.gradient(logits, parts),
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
    with np.errstate(over="ignore", invalid="ignore"):
        loss = analytic_loss.reduce(result.row_losses)
    if not np.all(np.isfinite(loss)):  # a loss that overflows is a failure, never a NaN in JSON
        value = np.atleast_1d(np.asarray(loss, dtype=np.float64))
        checks.append(compare("loss", value, value, settings.atol, settings.rtol, description="the loss is finite"))
    row_lines = batch.row_lines
    report = Report(
        settings=settings,
        rows=batch.logits.shape[0],
        classes=batch.logits.shape[1],
        loss=loss,
        checks=checks,
        batch=batch,
        notes=notes,
        source=batch.source,
        line_of=(lambda row: row_lines[row] if row < len(row_lines) else None) if row_lines else (lambda row: None),
    )
    if keep_arrays:
        report.probabilities = result.probabilities
        if keep_jacobian:
            report.jacobian = core.softmax_jacobian(result.softmax.s, result.softmax.complement)
            report.jacobian /= dtype.type(temperature)
        report.analytic_gradient = result.analytic_gradient
        report.numeric_gradient = result.numeric_gradient
    return report
