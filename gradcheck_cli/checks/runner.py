"""The one check runner: every check of a run happens here, batch by batch, folded into one Report.

An input read whole is one batch; a big file is many. The merged checks, the exactly summed loss and the
worst elements come out the same either way (merge and ExactSum are exact), so how an input was read never
changes a verdict.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from gradcheck_cli.batch import Batch
from gradcheck_cli.checks.compare import compare, merge
from gradcheck_cli.checks.rows import check_rows
from gradcheck_cli.errors import InputError
from gradcheck_cli.numerics import differences
from gradcheck_cli.numerics.exact import ExactSum
from gradcheck_cli.numerics.losses import accepted_kind
from gradcheck_cli.numerics.softmax import softmax_jacobian
from gradcheck_cli.report import CheckResult, Report, RowChecks
from gradcheck_cli.settings import Settings

if TYPE_CHECKING:
    from gradcheck_cli.checks.impl import Implementation

# Up to this many logits (rows x classes) the report carries every per-row array, in tables and JSON;
# above it, a summary (checks, loss, worst rows) unless --full. 20,000 logits with C = 10 is already
# 2,000 Jacobians, some 4 MB of JSON.
FULL_LIMIT = 20_000

OnRows = Callable[[int, Batch, RowChecks], None]


class Keep(NamedTuple):
    """Which per-row arrays the report keeps for its output."""

    arrays: bool = True
    # The N x C x C Jacobian too, up to this many classes (None: any). The checks never need it whole.
    jacobian_classes: int | None = None
    limit: int | None = FULL_LIMIT  # past this many logits nothing is kept; None: keep whatever the size


KEEP_ALL = Keep()  # every array up to the limit, the Jacobian included


def run(
    batches: Iterable[Batch],
    settings: Settings,
    normalizer: float,
    implementation: Implementation | None = None,
    keep: Keep = KEEP_ALL,
    on_rows: OnRows | None = None,
) -> Report:
    """Check every batch and fold the results. `normalizer` is the whole input's mean divisor.

    `on_rows` sees each batch as it is done (its first row's index, the batch, its checks): per-row output
    and progress. An implementation is called on each batch, so its input is read whole (one batch).
    """
    settings = differences.resolve(settings)
    kind = accepted_kind(settings)
    fold = _Fold(settings, keep, normalizer)
    for batch in batches:
        part = check_rows(batch, settings, kind, normalizer)
        checks = list(part.checks)
        if implementation is not None:
            checks += implementation.checks(part.logits, batch.targets, part.reference_loss, settings, fold.notes)
        start = fold.rows
        fold.add(batch, part, checks)
        if on_rows is not None:
            on_rows(start, batch, part)
    return fold.report()


class _Fold:
    """What a run keeps of its batches: merged checks, exact loss sums, and the arrays and lines it shows."""

    def __init__(self, settings: Settings, keep: Keep, normalizer: float) -> None:
        self.settings, self.keep, self.normalizer = settings, keep, normalizer
        self.merged: dict[str, CheckResult] = {}
        self.rows = self.classes = 0
        self.losses, self.reference_losses = ExactSum(), ExactSum()
        self.supplied_loss: tuple[int, np.ndarray] | None = None  # (its place among the checks, the value)
        self.finite_rows: CheckResult | None = None
        self.kept: dict[str, list[np.ndarray]] | None = {} if keep.arrays else None
        self.lines: list[np.ndarray] = []
        self.notes: list[str] = []
        self.source: str | None = None

    def add(self, batch: Batch, part: RowChecks, checks: list[CheckResult]) -> None:
        offset = (self.rows,)
        for check in checks:  # a check's index starts with the row, if it has one
            shift = (offset + (0,) * (len(check.worst_index) - 1)) if check.worst_index else ()
            self.merged[check.name] = merge(self.merged.get(check.name), check, shift)
        losses = part.row_losses.astype(np.float64)
        self.losses.add(losses)
        if self.settings.reduction == "none":  # a row loss that overflows fails the 'loss is finite' check
            self.finite_rows = merge(self.finite_rows, _finite("loss", losses), offset)
        if "loss" in batch.supplied and self.settings.reduction != "none":
            # One number for the whole input: checked once its sum is known, in its place among the supplied
            # checks (which follow the reference's own, one per supplied value but this one).
            self.reference_losses.add(part.reference_loss.row_losses(part.logits))
            references = len(part.checks) - (len(batch.supplied) - 1)
            self.supplied_loss = (references + list(batch.supplied).index("loss"), batch.supplied["loss"])
        if batch.row_lines is not None:
            self.lines.append(np.asarray(batch.row_lines))
        self.source = batch.source
        self.rows += batch.rows
        self.classes = batch.classes
        self._keep_arrays(part)

    def _keep_arrays(self, part: RowChecks) -> None:
        if self.kept is None:
            return
        if self.keep.limit is not None and self.rows * self.classes > self.keep.limit:
            self.kept = None  # too big to show whole: a summary, in memory bounded by the limit
            return
        arrays = {"probabilities": part.probabilities, "analytic_gradient": part.analytic_gradient,
                  "numeric_gradient": part.numeric_gradient, "row_losses": part.row_losses}
        if self.keep.jacobian_classes is None or self.classes <= self.keep.jacobian_classes:
            jacobian = softmax_jacobian(part.softmax.s, part.softmax.complement)
            jacobian /= part.softmax.s.dtype.type(self.settings.temperature)
            arrays["jacobian"] = jacobian
        for key, array in arrays.items():
            self.kept.setdefault(key, []).append(array)

    def report(self) -> Report:
        if self.rows == 0:
            raise InputError("no data rows")
        settings = self.settings
        checks = list(self.merged.values())
        loss: float | np.ndarray | None = None
        kept = {key: np.concatenate(parts) for key, parts in self.kept.items()} if self.kept is not None else {}
        if settings.reduction == "none":
            loss = kept.get("row_losses")
            if self.finite_rows is not None and not self.finite_rows.passed:
                checks.append(self.finite_rows._replace(description="the loss is finite"))
        else:
            loss = self._reduced(self.losses)
            if not np.isfinite(loss):  # a loss that overflows is a failure, never a NaN in JSON
                checks.append(_finite("loss", np.asarray(loss)))
        if self.supplied_loss is not None:
            place, value = self.supplied_loss
            expected = self._reduced(self.reference_losses)
            assert settings.atol is not None and settings.rtol is not None
            checks.insert(place, compare("supplied loss", value.reshape(()), np.asarray(expected), settings.atol,
                                         settings.rtol, description="the loss you supplied vs gradcheck's reference"))
        return Report(settings=settings, rows=self.rows, classes=self.classes, loss=loss, checks=checks,
                      probabilities=kept.get("probabilities"), jacobian=kept.get("jacobian"),
                      analytic_gradient=kept.get("analytic_gradient"), numeric_gradient=kept.get("numeric_gradient"),
                      notes=self.notes, source=self.source, line_of=line_lookup(self.lines))

    def _reduced(self, losses: ExactSum) -> float:
        total = losses.value()
        return total / self.normalizer if self.settings.reduction == "mean" else total


def _finite(name: str, values: np.ndarray) -> CheckResult:
    """A check that fails where a value is not finite (compared with itself: NaN never equals NaN)."""
    value = np.atleast_1d(np.asarray(values, dtype=np.float64))
    return compare(name, value, value, 0.0, 0.0, description="the loss is finite")


def line_lookup(pieces: list[np.ndarray]) -> Callable[[int], int | None]:
    """Row index -> file line, from the line numbers of each chunk (kept only as int64: 8 bytes a row)."""
    if not pieces:
        return lambda row: None
    starts = np.cumsum([0] + [len(piece) for piece in pieces])

    def line_of(row: int) -> int | None:
        k = int(np.searchsorted(starts, row, side="right")) - 1
        return int(pieces[k][row - starts[k]]) if 0 <= k < len(pieces) else None

    return line_of
