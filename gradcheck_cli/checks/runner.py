"""The one check runner: every check of a run happens here, batch by batch, folded into one Report.

An input read whole is one batch; a big file is many. The merged checks, the exactly summed loss and the
worst elements come out the same either way (merge and ExactSum are exact), so how an input was read never
changes a verdict. What else a run keeps is bounded whatever its length: arrays up to the Keep limits (or
in temporary files with --full), and file lines as runs of consecutive lines and each check's worst row.
The user's values (supplied, or returned by --impl) are kept with the arrays, for the tables and JSON, and
for a diagnosis of their failed checks: whole up to users.DIAGNOSIS_LIMIT logits, past it on a bounded
sample of rows (users.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import numpy as np

from gradcheck_cli.batch import Batch
from gradcheck_cli.checks.compare import compare, merge
from gradcheck_cli.checks.kept import Kept as _Kept
from gradcheck_cli.checks.kept import Lines as _Lines
from gradcheck_cli.checks.kept import jacobian_blocks as _jacobian_blocks  # noqa: F401  (where tests look for it)
from gradcheck_cli.checks.rows import check_rows, reference_inputs, row_loss_allowance
from gradcheck_cli.errors import InputError
from gradcheck_cli.numerics import differences
from gradcheck_cli.numerics.exact import ExactSum
from gradcheck_cli.numerics.losses import accepted_kind
from gradcheck_cli.numerics.losses.base import LossKind, unit_roundoff
from gradcheck_cli.report import CheckResult, Report, RowChecks
from gradcheck_cli.settings import DIVIDING_REDUCTIONS, LOW_PRECISION, Settings

if TYPE_CHECKING:
    from gradcheck_cli.checks.impl import Implementation
    from gradcheck_cli.checks.own_loss_model import RowLosses
    from gradcheck_cli.checks.users import UsersValues

# Up to this many logits (rows x classes) the report carries every per-row array, in tables and JSON;
# above it, a summary (checks, loss, worst rows) unless --full. 20,000 logits with C = 10 is already
# 2,000 Jacobians, some 4 MB of JSON.
FULL_LIMIT = 20_000
# The N x C x C Jacobian is counted too: by default at most this many entries per logit of the limit (1e6, 8 MB:
# the most the tables kept before, 400 rows of 50 classes). JSON, which shows it with the arrays, summarises
# wider rows; tables, which can do without it, leave only the Jacobian out.
JACOBIAN_PER_LOGIT = 50
# Kept arrays beyond this many bytes (only with --full: the default limits keep some 9 MB at most) go to
# unlinked temporary files, read back a block at a time: memory stays that of a chunk, whatever the output.
SPILL_BYTES = 32 << 20
# What --full leaves free in the temporary directory; a run needing more is refused before it starts.
SPILL_RESERVE = 256 << 20

OnRows = Callable[[int, Batch, RowChecks], None]


class Keep:
    """Which per-row arrays the report keeps for its output. A plain class: a NamedTuple (its string annotations
    compiled) costs every run's start-up some 0.2 ms to make."""

    __slots__ = ("arrays", "jacobian_classes", "limit")

    def __init__(self, arrays: bool = True, jacobian_classes: int | None = None, limit: int | None = FULL_LIMIT
                 ) -> None:
        self.arrays = arrays
        # The N x C x C Jacobian too, up to this many classes (None: any; the format then needs it with the arrays).
        self.jacobian_classes = jacobian_classes
        self.limit = limit  # past this many logits nothing is kept; None: keep whatever the size

    def keeps(self, rows: int, classes: int) -> tuple[bool, bool]:
        """Whether the arrays, and the Jacobian with them, are kept for an input of rows x classes."""
        jacobian = self.jacobian_classes is None or classes <= self.jacobian_classes
        if not self.arrays or (self.limit is not None and rows * classes > self.limit):
            return False, False
        if jacobian and self.limit is not None and rows * classes * classes > self.limit * JACOBIAN_PER_LOGIT:
            return self.jacobian_classes is not None, False
        return True, jacobian

    def summary_note(self, rows: int, classes: int) -> str | None:
        """Why the arrays of rows x classes were left out (None when they are kept or were never asked for)."""
        arrays, _ = self.keeps(rows, classes)
        if arrays or not self.arrays or self.limit is None:
            return None
        if rows * classes > self.limit:
            return (f"per-row arrays left out: {rows} x {classes} logits, over the {self.limit:,} kept by default; "
                    "--full keeps them, -f ndjson streams them row by row")
        return (f"per-row arrays left out: the {rows} x {classes} x {classes} Jacobian is "
                f"{rows * classes * classes:,} numbers, over the {self.limit * JACOBIAN_PER_LOGIT:,} kept by "
                "default; --full keeps them, -f ndjson streams the rows without the Jacobian")


KEEP_ALL = Keep()  # every array up to the limit, the Jacobian included


def run(
    batches: Iterable[Batch],
    settings: Settings,
    normalizer: float,
    implementation: Implementation | None = None,
    keep: Keep = KEEP_ALL,
    on_rows: OnRows | None = None,
    expected_rows: int | None = None,
) -> Report:
    """Check every batch and fold the results. `normalizer` is the whole input's mean divisor.

    `on_rows` sees each batch as it is done (its first row's index, the batch, its checks): per-row output
    and progress. An implementation is called on each batch whole (its input is read as one batch), and its
    answer checked with the reference's checks a chunk of rows at a time (_check_implementation), each chunk
    seen by `on_rows` as a batch of its own.
    `expected_rows`, the input's row count when known, lets --full refuse an input too big to keep before
    its first batch is checked (otherwise before the batch that would not fit).
    """
    settings = differences.resolve(settings)
    kind = accepted_kind(settings)
    fold = _Fold(settings, keep, normalizer)
    if settings.dtype in LOW_PRECISION:
        from gradcheck_cli.checks.precision import precision_notes  # only the half precisions have them

        fold.notes += precision_notes(settings)
    for batch in batches:
        fold.admit(batch, expected_rows)
        if implementation is not None:
            _check_implementation(implementation, batch, kind, fold, on_rows)
            continue
        part = check_rows(batch, settings, kind, normalizer)
        start = fold.rows
        fold.add(batch, part, list(part.checks), {})
        if on_rows is not None:
            on_rows(start, batch, part)
    return fold.report()


# The rows of an --impl input checked at once hold about this many logits (at least one row): each float64
# temporary of the reference's checks and of the comparisons of the function's answer is then 8 MB, a few
# dozen of them at most beside the input and the answer, whatever N x C (128k classes: 8 rows a chunk).
CHUNK_LOGITS = 1 << 20


def _check_implementation(implementation: Implementation, batch: Batch, kind: LossKind, fold: _Fold,
                          on_rows: OnRows | None) -> None:
    """The function called on the whole batch (its loss is the batch's) and its answer checked a chunk of rows at
    a time beside the reference's checks of those rows (impl.Session); then the checks of its own loss."""
    from gradcheck_cli.checks.impl import Session
    from gradcheck_cli.checks.users import impl_values, taylor_check

    settings = fold.settings
    if not batch.rows:
        return  # nothing to call the function on: the report says there are no data rows
    logits = rounded_logits(batch.logits, settings.dtype)
    with implementation.unchanged():  # the logits, targets and points given are never changed here
        session = Session(implementation, logits, batch.targets, settings, fold.notes,
                          rows=lambda: reference_rows(batch, logits, kind, settings, fold.normalizer))
        for rows in row_chunks(batch.rows, batch.classes):
            chunk = rows_of(batch, rows)
            part = check_rows(chunk, settings, kind, fold.normalizer)
            start = fold.rows
            fold.add(chunk, part, [*part.checks, session.chunk(rows, part.logits, part.reference_loss)],
                     session.values(rows))
            if on_rows is not None:
                on_rows(start, chunk, part)
        checks = session.finish(fold.merged.pop("impl gradient"), fold.notes)  # in the report's order
        impl, precision = impl_values(implementation)
        checks += taylor_check(implementation, logits, batch.targets, settings, impl, precision, fold.notes)
    for check in checks:
        fold.merged[check.name] = check


def reference_rows(batch: Batch, logits: np.ndarray, kind: LossKind, settings: Settings,
                   normalizer: float) -> RowLosses | None:
    """The reference's |row loss| at zero logits and at `logits` (rounded as check_rows rounds them), and its
    scale, built from the rows check_rows builds its reference from (rows.reference_inputs) a chunk at a time:
    what impl.Session would take from those chunks, known before them, so that the directional check's calls can
    be asked ahead (and the chunks compute them no more). None where the reference cannot be built (check_rows
    will say why)."""
    from dataclasses import replace

    from gradcheck_cli.checks.own_loss_model import RowLosses

    uniform, losses, scale = np.empty(batch.rows), np.empty(batch.rows), 1.0
    try:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            for rows in row_chunks(batch.rows, batch.classes):
                chunk, reference = reference_inputs(rows_of(batch, rows), settings)
                loss = replace(kind.build(chunk, reference, np.dtype(np.float64)), normalizer=normalizer)
                uniform[rows] = np.abs(loss.row_losses(np.zeros_like(logits[rows])))
                losses[rows] = np.abs(loss.row_losses(logits[rows]))
                scale = loss.scale
    except InputError:
        return None
    return RowLosses(uniform, losses, scale)


def row_chunks(rows: int, classes: int) -> list[slice]:
    """Consecutive rows of about CHUNK_LOGITS logits each (at least one row), covering all `rows`."""
    step = max(1, CHUNK_LOGITS // max(classes, 1))
    return [slice(start, min(start + step, rows)) for start in range(0, rows, step)]


def rows_of(batch: Batch, rows: slice) -> Batch:
    """These rows of a batch: its arrays of rows cut (a loss of one number for the whole input kept)."""
    from dataclasses import replace

    def cut(values: np.ndarray | None) -> np.ndarray | None:
        return None if values is None else np.asarray(values[rows])

    supplied = {name: value[rows] if value.ndim and value.shape[0] == batch.rows else value
                for name, value in batch.supplied.items()}
    return replace(batch, logits=batch.logits[rows], labels=cut(batch.labels), targets=batch.targets[rows],
                   row_lines=cut(batch.row_lines), supplied=supplied, teacher_logits=cut(batch.teacher_logits))


def rounded_logits(logits: np.ndarray, dtype: str) -> np.ndarray:
    """The logits as checks/rows.py rounds them to --dtype, as float64 (what the function is called with), a
    chunk of rows at a time: no temporary of the whole input's size but the result."""
    from gradcheck_cli.numerics.precision import round_to

    if dtype == "float64":
        return np.asarray(logits, dtype=np.float64)
    rounded = np.empty(logits.shape)
    for rows in row_chunks(logits.shape[0], logits.shape[1]):
        part = logits[rows]
        rounded[rows] = round_to(part, dtype) if dtype in LOW_PRECISION else part.astype(np.float32)
    return rounded


class _Fold:
    """What a run keeps of its batches: merged checks, exact loss sums, and the arrays and lines it shows."""

    def __init__(self, settings: Settings, keep: Keep, normalizer: float) -> None:
        self.settings, self.keep, self.normalizer = settings, keep, normalizer
        self.merged: dict[str, CheckResult] = {}
        self.rows = self.classes = 0
        self.losses, self.reference_losses = ExactSum(), ExactSum()
        self.loss_allowance, self.loss_size = ExactSum(), ExactSum()  # for a supplied loss of one number
        self.supplied_loss: tuple[int, np.ndarray] | None = None  # (its place among the checks, the value)
        self.finite_rows: CheckResult | None = None
        self.kept: _Kept | None = _Kept(SPILL_BYTES, SPILL_RESERVE) if keep.arrays else None
        self.lines = _Lines()
        # The user's values, for a diagnosis of their failed checks: made with the first batch that has any, so
        # that a plain check does not import users.py (nor its diagnosis machinery).
        self.users: UsersValues | None = None
        self.notes: list[str] = []
        self.source: str | None = None

    def admit(self, batch: Batch, expected_rows: int | None) -> None:
        """Refuse, before checking it, a batch whose arrays --full could not keep (see _Kept.refuse_beyond)."""
        if self.kept is not None and self.keep.limit is None:
            rows = max(expected_rows or 0, self.rows + batch.rows)
            self.kept.refuse_beyond(rows, batch.classes, self.keep.keeps(rows, batch.classes)[1])

    def add(self, batch: Batch, part: RowChecks, checks: list[CheckResult], impl: dict[str, np.ndarray]) -> None:
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
            allowance, size = row_loss_allowance(part.reference_loss, part.logits, self.settings)
            self.loss_allowance.add(allowance)
            self.loss_size.add(size)
            references = len(part.checks) - (len(batch.supplied) - 1)
            self.supplied_loss = (references + list(batch.supplied).index("loss"), batch.supplied["loss"])
        if batch.row_lines is not None:
            worst = [*self.merged.values(), *([self.finite_rows] if self.finite_rows is not None else [])]
            self.lines.add(self.rows, np.asarray(batch.row_lines), worst)
        self.source = batch.source
        self.rows += batch.rows
        self.classes = batch.classes
        if batch.supplied or impl or self.users is not None:  # (a later batch counts once any had values)
            self._users().add(batch, part.logits, impl, checks)  # the checks pick the rows a diagnosis samples
        self._keep_arrays(part, {"supplied": batch.supplied, "impl": impl})

    def _users(self) -> UsersValues:
        if self.users is None:
            from gradcheck_cli.checks import users

            self.users = users.UsersValues(self.settings)
        return self.users

    def _keep_arrays(self, part: RowChecks, users: dict[str, dict[str, np.ndarray]]) -> None:
        if self.kept is None:
            return
        arrays, jacobian = self.keep.keeps(self.rows, self.classes)
        if not arrays:
            self.kept.close()
            self.kept = None  # too big to show whole: a summary, in memory bounded by the limit
            return
        kept = {"probabilities": part.probabilities, "analytic_gradient": part.analytic_gradient,
                "numeric_gradient": part.numeric_gradient, "row_losses": part.row_losses}
        lse = row_lse(part, self.settings.temperature)
        if lse is not None:
            kept["lse"] = lse
        for key, array in kept.items():
            self.kept.add(key, array)
        for source, values in users.items():  # the user's per-row arrays, shown beside the reference
            for name, array in values.items():
                if array.ndim and (jacobian or name != "jacobian"):
                    self.kept.add(f"{source} {name}", array)
        if jacobian:
            self.kept.add_jacobian(part.softmax.s, part.softmax.complement, self.settings.temperature,
                                   coupled=part.reference_loss.activation == "softmax")
        else:
            self.kept.drop("jacobian")  # the rows grew past the Jacobian's limit: the tables do without it
            self.kept.drop("supplied jacobian")

    def report(self) -> Report:
        if self.rows == 0:
            raise InputError("no data rows")
        settings = self.settings
        checks = list(self.merged.values())
        loss: float | np.ndarray | None = None
        kept = self.kept.arrays() if self.kept is not None else {}
        note = self.keep.summary_note(self.rows, self.classes)
        notes = self.notes if note is None else [*self.notes, note]
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
            # The rounding of the row losses and of their sum (a float32 loss rounds like float32 throughout).
            summed = unit_roundoff(settings.dtype) * (2.0 + np.log2(self.rows)) * self.loss_size.value()
            atol = settings.atol + abs(self._reduced_sum(self.loss_allowance.value() + summed))
            checks.insert(place, compare("supplied loss", value.reshape(()), np.asarray(expected), atol,
                                         settings.rtol, description="the loss you supplied vs gradcheck's reference"))
        users = {source: {key.split(" ")[1]: value for key, value in kept.items() if key.startswith(source + " ")}
                 for source in ("supplied", "impl")}
        scalars = self.users.scalars if self.users is not None else {}
        for key, value in scalars.items():  # a reduced loss: one number, kept whatever the size
            users[key.split(" ")[0]]["loss"] = value.reshape(())
        return Report(settings=settings, rows=self.rows, classes=self.classes, loss=loss, checks=checks,
                      probabilities=kept.get("probabilities"), jacobian=kept.get("jacobian"),
                      analytic_gradient=kept.get("analytic_gradient"), numeric_gradient=kept.get("numeric_gradient"),
                      lse=kept.get("lse"), notes=notes, source=self.source, line_of=self.lines.lookup(self.rows),
                      supplied=users["supplied"], impl=users["impl"],
                      diagnoses=self.users.diagnoses(checks, notes) if self.users is not None else [])

    def _reduced(self, losses: ExactSum) -> float:
        return self._reduced_sum(losses.value())

    def _reduced_sum(self, total: float) -> float:
        return total / self.normalizer if self.settings.reduction in DIVIDING_REDUCTIONS else total


def row_lse(part: RowChecks, temperature: float) -> np.ndarray | None:
    """Each row's log-sum-exp of the logits entering the softmax, over T, in float64: max(u) + log sum exp(u - max(u))
    with u = g(z) / T (g the logit scale and soft-cap); what --z-loss squares and a supplied lse is checked against
    (rows.py's reference). None for a loss without a softmax (bce). From the batch's own softmax when that is the
    float64 reference (float64 and the half precisions), else (float32) from the float64 reference's, at the same
    logits: one exp per logit more, and only while the arrays are kept."""
    loss = part.reference_loss
    if loss.activation != "softmax":
        return None
    given = part.softmax if part.softmax.s.dtype == np.float64 else None
    entering = loss.entering(part.logits) / temperature
    return entering.max(axis=-1) + loss.softmax(part.logits, given).log_total[:, 0]


def _finite(name: str, values: np.ndarray) -> CheckResult:
    """A check that fails where a value is not finite (compared with itself: NaN never equals NaN)."""
    value = np.atleast_1d(np.asarray(values, dtype=np.float64))
    return compare(name, value, value, 0.0, 0.0, description="the loss is finite")
