"""The user's own values (supplied, or returned by --impl): kept to be diagnosed when their check fails, and
the Taylor check of an implementation's own loss and gradient.

Diagnosis involves the whole input (the mean's divisor, a transposition over the batch, a label shift), so
UsersValues keeps the rows of the input with the user's arrays while the input is at most `limit`
(DIAGNOSIS_LIMIT) logits (and a supplied Jacobian at most limit x JACOBIAN_PER_LOGIT numbers): a few MB at
most. Past it the input is still checked in full, and diagnosed on a bounded sample of its rows
(slip_sample.RowSample: the failing checks' worst rows, ignored and overflowing rows, rows spread across the
input), with the whole input's numbers (N, the divisors) summed as its rows pass; the diagnosis then says
on how many of the rows, and which, it was decided. A reduced loss, one number, is diagnosed by the
hypotheses that scale it, against the reference and tolerance its check used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from gradcheck_cli.batch import Batch
from gradcheck_cli.checks.rows import row_loss_allowance, supplied_reference
from gradcheck_cli.numerics.losses import loss_kind
from gradcheck_cli.numerics.losses.base import rounding_factor, unit_roundoff, upstream_gradient
from gradcheck_cli.report import CheckResult, Diagnosis
from gradcheck_cli.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Iterator

    from gradcheck_cli.checks.impl import Implementation
    from gradcheck_cli.checks.returned import Along
    from gradcheck_cli.checks.slip_context import Totals
    from gradcheck_cli.checks.slip_sample import RowSample

# Up to this many logits the user's values are kept whole for a diagnosis: runner.FULL_LIMIT, what tables show.
DIAGNOSIS_LIMIT = 20_000
JACOBIAN_PER_LOGIT = 50  # as runner's: 1e6 numbers of a supplied Jacobian at most
# The user's values each failing check compares, by its name: (where they come from, the quantity).
DIAGNOSED = {f"{source} {quantity}": (source, quantity) for source in ("supplied", "impl")
             for quantity in ("loss", "gradient", "probabilities", "jacobian", "lse")}


class _Part(NamedTuple):
    logits: np.ndarray  # float64, as rounded to --dtype: where the checks take the reference
    labels: np.ndarray | None
    targets: np.ndarray
    teacher: np.ndarray | None
    values: dict[str, np.ndarray]  # "supplied gradient", "impl loss", ...: the user's per-row arrays
    checks: list[CheckResult]  # the batch's own checks (its worst elements), for a sample begun later


class UsersValues:
    """The rows and the user's values kept for diagnosing: whole within `limit` logits, else a sample of at most
    `sample_logits` logits' rows (module docstring; None: slip_sample.SAMPLE_LOGITS). The sample's modules are
    imported only when an input outgrows the limit: a plain check's start-up does not pay for them."""

    def __init__(self, settings: Settings, limit: int = DIAGNOSIS_LIMIT, sample_logits: int | None = None) -> None:
        self.settings, self.limit, self.sample_logits = settings, limit, sample_logits
        self.parts: list[_Part] = []
        self.rows = 0
        self.scalars: dict[str, np.ndarray] = {}  # a reduced loss: one number for the whole input
        self.sample: RowSample | None = None
        self.unsampled: set[str] = set()  # a Jacobian too wide for the sample's rows

    def add(self, batch: Batch, logits: np.ndarray, impl: dict[str, np.ndarray],
            checks: list[CheckResult] | None = None) -> None:
        """The batch's rows and the user's values of them; `checks`, the batch's checks, pick its worst rows for
        a sample (without them a sample holds the other pools' rows only)."""
        values = {f"supplied {name}": value for name, value in batch.supplied.items()}
        values.update({f"impl {name}": value for name, value in impl.items()})
        if self.settings.reduction != "none":  # one number for the input, never per row
            self.scalars.update({key: values.pop(key) for key in ("supplied loss", "impl loss") if key in values})
        if not values and not self.scalars:
            return
        start, self.rows = self.rows, self.rows + batch.rows
        if self.sample is None and self._fits(batch.classes, "supplied jacobian" in values):
            self.parts.append(_Part(logits, batch.labels, batch.targets, batch.teacher_logits, values, checks or []))
            return
        if self.sample is None:  # the input has just outgrown the limit: what was kept whole starts the sample
            self.sample = self._begin_sample()
        self.sample.add(batch, logits, self._sampled(values, batch.classes, self.sample), start, checks)

    def _begin_sample(self) -> RowSample:
        """A sample holding the rows kept whole so far, which it replaces."""
        from gradcheck_cli.checks.slip_sample import SAMPLE_LOGITS, RowSample

        budget = SAMPLE_LOGITS if self.sample_logits is None else self.sample_logits
        sample, offset = RowSample(self.settings, budget), 0
        for part in self.parts:
            kept = Batch(part.logits, part.labels, part.targets, teacher_logits=part.teacher)
            sample.add(kept, part.logits, self._sampled(part.values, kept.classes, sample), offset, part.checks)
            offset += kept.rows
        self.parts = []
        return sample

    def _fits(self, classes: int, jacobian: bool) -> bool:
        logits_kept = self.rows * classes
        return logits_kept <= self.limit and not (jacobian and logits_kept * classes > self.limit * JACOBIAN_PER_LOGIT)

    def _sampled(self, values: dict[str, np.ndarray], classes: int, sample: RowSample) -> dict[str, np.ndarray]:
        """The values a sample keeps: a Jacobian only while the sample's rows of it fit the Jacobian's limit."""
        rows = sample.budget(classes)
        wide = rows * classes * classes > self.limit * JACOBIAN_PER_LOGIT
        self.unsampled |= {name for name in values if name.endswith(" jacobian") and wide}
        return {name: value for name, value in values.items() if name not in self.unsampled}

    def diagnoses(self, checks: list[CheckResult], notes: list[str]) -> list[Diagnosis]:
        """A Diagnosis of each failing check of the user's values, in the order of the checks."""
        failing = [check for check in checks if not check.passed and check.name in DIAGNOSED]
        if not failing or (self.sample is None and not self.parts):
            return []
        sample = self.sample
        whole, totals = (self._whole(), None) if sample is None else (sample.batch(), sample.totals())
        found = []
        for check in failing:
            if check.name in self.unsampled:
                notes.append(f"diagnosis of {check.name}: not tried, a sample of rows of your Jacobian would be "
                             f"over the {self.limit * JACOBIAN_PER_LOGIT:,} numbers it looks at")
                continue
            try:
                found.append(self._diagnosis(check, whole, totals))
            except ArithmeticError as error:  # a hypothesis' recomputed reference divides by 0 (every row ignored)
                notes.append(f"diagnosis of {check.name}: not finished ({type(error).__name__}: {error})")
        if sample is not None:
            notes.append(f"diagnosis: {sample.described()}")
        return found

    def _diagnosis(self, check: CheckResult, whole: Batch, totals: Totals | None) -> Diagnosis:
        from gradcheck_cli.checks.diagnose import diagnose, verdict
        from gradcheck_cli.checks.slip_context import context_for

        quantity = DIAGNOSED[check.name][1]
        settings = self._settings(totals)
        actual, expected, tolerance = self._compared(check, quantity, whole, totals, settings)
        context = context_for(quantity, whole, settings, upstream=self._upstream(whole.rows, totals),
                              teacher_logits=whole.teacher_logits, totals=totals)
        assert settings.rtol is not None
        findings = diagnose(quantity, actual, expected, tolerance, settings.rtol, context, check=check.name)
        if totals is None:
            return Diagnosis(check.name, verdict(findings, quantity), tuple(findings))
        on = (f"on a sample of {whole.rows} of the {totals.rows:,} rows (see the notes)" if whole.rows < totals.rows
              else f"on all {totals.rows:,} rows")
        if not findings:  # the sample's values all agree: the failing elements were not among its rows
            return Diagnosis(check.name, f"not diagnosed: your {quantity} agrees with the reference {on}", ())
        sentence = verdict(findings, quantity)
        findings = [finding._replace(description=f"{finding.description} ({on})") for finding in findings]
        return Diagnosis(check.name, f"{sentence} ({on})", tuple(findings))

    def _settings(self, totals: Totals | None) -> Settings:
        """The check's settings; for a sample, with its rows' own upstream gradients (reduction none)."""
        settings = self.settings
        if totals is None or settings.reduction != "none" or settings.grad_output in (None, "ones"):
            return settings
        upstream = upstream_gradient(settings, totals.rows)[totals.sample_rows]
        return settings._replace(grad_output=tuple(upstream.tolist()))

    def _upstream(self, rows: int, totals: Totals | None) -> np.ndarray | None:
        """--grad-output's g (None for ones): the reference gradient is sum_n g_n grad l_n, as rows.py takes it;
        for a sample, its rows' g_n of the whole input's."""
        if self.settings.grad_output in (None, "ones"):
            return None
        if totals is None:
            return upstream_gradient(self.settings, rows)
        whole = upstream_gradient(self.settings, totals.rows)
        return whole[totals.sample_rows] if whole.ndim else whole

    def _whole(self) -> Batch:
        parts = self.parts
        labels = None if parts[0].labels is None else np.concatenate([part.labels for part in parts])
        teacher = None if parts[0].teacher is None else np.concatenate([part.teacher for part in parts])
        return Batch(np.concatenate([part.logits for part in parts]), labels,
                     np.concatenate([part.targets for part in parts]).astype(np.float64), teacher_logits=teacher)

    def _compared(self, check: CheckResult, quantity: str, whole: Batch, totals: Totals | None, settings: Settings
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The user's values, gradcheck's float64 reference, and the tolerance the check held them to."""
        import dataclasses

        name = check.name
        if name in self.scalars and totals is not None:
            return self.scalars[name].reshape(()), np.asarray(check.expected), self._check_tolerance(check)
        loss = loss_kind(settings.loss).build(whole, settings, np.dtype(np.float64))
        if totals is not None:
            loss = dataclasses.replace(loss, normalizer=totals.divisors[""])
        reference = loss.softmax(whole.logits)  # the loss's own: transformed logits, or a sigmoid
        if name in self.scalars:
            return self.scalars[name].reshape(()), np.asarray(loss.loss(whole.logits, reference)), \
                self._reduced_tolerance(loss, whole.logits)
        actual = self.sample.values(name) if self.sample is not None else \
            np.concatenate([part.values[name] for part in self.parts])
        rho = rounding_factor(loss.entering(whole.logits), settings.temperature)
        expected, tolerance = supplied_reference(quantity, whole.logits, reference, loss, settings, rho)
        return actual.reshape(expected.shape), expected, tolerance

    def _check_tolerance(self, check: CheckResult) -> np.ndarray:
        """The atol a reduced loss's check held it to, from its numbers: |a - e| = share (atol + rtol |e|). A
        share that is not finite and positive (a NaN) leaves --atol."""
        settings = self.settings
        assert settings.atol is not None and settings.rtol is not None
        share, error = float(check.worst_share), abs(float(check.actual) - float(check.expected))
        if not (np.isfinite(share) and share > 0 and np.isfinite(error)):
            return np.asarray(settings.atol)
        return np.asarray(max(error / share - settings.rtol * abs(float(check.expected)), 0.0))

    def _reduced_tolerance(self, loss: object, logits: np.ndarray) -> np.ndarray:
        """A loss of one number: as the runner holds it, atol + the rows' rounding allowances and their pairwise
        sum's rounding, u (2 + log2 N) sum |l_n|, times the reduction's scale."""
        settings = self.settings
        assert settings.atol is not None
        allowance, size = row_loss_allowance(loss, logits, settings)  # type: ignore[arg-type]
        summed = unit_roundoff(settings.dtype) * (2.0 + np.log2(logits.shape[0])) * float(size.sum())
        scale = float(loss.scale)  # type: ignore[attr-defined]
        return np.asarray(settings.atol + abs(scale * (float(allowance.sum()) + summed)))


def impl_values(implementation: Implementation) -> tuple[dict[str, np.ndarray], float]:
    """What the user's function returned to the checks just made (the values they judged, the same twice), and
    the machine epsilon it computed in (own_loss.detected_precision). Not a call of it again."""
    from gradcheck_cli.checks.own_loss import detected_precision

    answer = implementation.first
    assert answer is not None and answer.gradient is not None
    # float32 values cast back to float64 round like float32: the Taylor floor must be float32's
    return {"loss": answer.loss, "gradient": answer.gradient}, detected_precision(answer)


def taylor_check(implementation: Implementation, logits: np.ndarray, targets: np.ndarray, settings: Settings,
                 values: dict[str, np.ndarray], precision: float, notes: list[str]) -> list[CheckResult]:
    """The step-free verdict (taylor.py): the slopes of the Taylor remainder of the user's own loss with their own
    gradient; passes when every direction's slope is at least PASSING_SLOPE. No fitted slope (a loss that is not
    finite, or remainders under the rounding floor) is no evidence either way: a note, and no check."""
    from gradcheck_cli.checks.taylor import (
        HALVINGS,
        PASSING_SLOPE,
        TOP_STEP,
        steps_resolved,
        taylor_applies,
        taylor_scale,
        taylor_test,
    )

    if not taylor_applies(settings):
        notes.append(f"impl taylor: not run for --loss {settings.loss} with these options (its error analysis, "
                     "checks/taylor.py, covers cross-entropy and forward KL without z-loss, soft-capping or "
                     "--grad-output)")
        return []
    scale = taylor_scale(settings)
    if not steps_resolved(logits, settings.dtype, scale):
        smallest = scale * TOP_STEP / 2**HALVINGS
        notes.append(f"impl taylor: not run at --dtype {settings.dtype}: its smallest step ({smallest:.2g}) "
                     f"is below the spacing of {settings.dtype} at your largest logit, so your function would see "
                     "rounded steps; the directional check of your own loss covers the gradient")
        return []
    reduction = settings.reduction

    # Answered where impl._taylor_ahead asked them: the loss at the logits is the first call's (the first worker),
    # the loss at uniform logits and the points the second worker's, where one runs (Implementation._on).
    def users_loss(point: np.ndarray) -> np.ndarray:
        return implementation.answer(point, targets, reduction, loss_only=True).loss

    def losses_at(points: list[Along]) -> Iterator[np.ndarray]:  # sent ahead as edits: the worker moves its logits
        return implementation.arriving(base, targets, reduction, points)  # each worked on as it comes

    base = np.asarray(logits, dtype=np.float64)  # the z of taylor_test
    result = taylor_test(users_loss, base, values["gradient"], scale=scale, precision=precision, losses_at=losses_at)
    slopes = [slope for slope in result.slopes if slope is not None]
    if not slopes:
        notes.append("impl taylor: inconclusive (your loss is not finite, or its remainders are under the rounding "
                     "floor along every direction), so not reported")
        return []
    low, high = min(slopes), max(slopes)
    passed = low >= PASSING_SLOPE
    description = (f"Taylor remainder of your loss with your gradient: slopes {low:.3f} to {high:.3f} over "
                   f"{len(slopes)} directions (2 when the gradient is the loss's, 1 when not; passes at >= "
                   f"{PASSING_SLOPE})")
    return [CheckResult("impl taylor", passed, abs(2.0 - low), abs(2.0 - low) / 2.0, (), low, 2.0, description,
                        worst_share=(2.0 - low) / (2.0 - PASSING_SLOPE), elements=len(slopes),
                        mismatches=sum(slope < PASSING_SLOPE for slope in slopes))]
