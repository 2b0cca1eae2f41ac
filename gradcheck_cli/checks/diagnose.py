"""Name the slip: which known mistake or convention, applied to the reference, gives the user's numbers.

diagnose() takes a failed comparison (the quantity, the user's values, the reference, the check's
tolerances) and its SlipContext, tries every hypothesis of CATALOGUE, and returns one Finding per
hypothesis that applies, best first. A hypothesis matches when its candidate values equal the user's within
the check's own tolerance on every element (atol times |k| for a slip that scales by k: the rounding the
values carry scales with them). One that explains more rows than the reference does, but not all, is a
partial match and says which rows it leaves unexplained. A candidate that cannot be told from the reference
on this input (N = 1, T = 1, ...) is not tried: it could not explain a failure. When nothing matches, no
Finding has `matched` and none is guessed. Plain data out; nothing prints.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from gradcheck_cli.checks import slip_conventions as conventions
from gradcheck_cli.checks import slip_scales as scales
from gradcheck_cli.checks.slip_context import Candidate, Evidence, Hypothesis, SlipContext

_ALL = ("loss", "gradient", "probabilities", "jacobian", "lse")
_REDUCED = ("loss", "gradient")
_TINY = float(np.finfo(np.float64).tiny)
# A number fitted to the user's values (constant-scale's k, a fitted eps) is evidence only where it is
# over-determined: at least MIN_SUPPORT of the elements it explains must each tell it from the reference
# (differ from the reference's value by more than their tolerance), and the reference must miss one of them
# by MIN_DEVIATION tolerances. Errors of D tolerances that are not a slip agree with a fitted number on an
# element beyond those it was fitted to with a chance of about 1/D each: at most 1e-3 for three elements
# beyond one at D >= 10, far less at the D of real slips (thousands: x N, eps/(C-1) for eps/C). One or two
# values, or a difference of the order of the tolerance, fit any number and name nothing.
MIN_SUPPORT = 4
MIN_DEVIATION = 10.0

# Stable ids, in the order that breaks ties: when two slips predict the same numbers on an input (N = 2 makes
# 'x N' and 'x 2' one), both match and the earlier is named first. constant-scale, the generic one, is last.
CATALOGUE: tuple[Hypothesis, ...] = (
    Hypothesis("missing-mean", _REDUCED, scales.missing_mean),
    Hypothesis("extra-mean", _REDUCED, scales.extra_mean),
    Hypothesis("batchmean-vs-mean", _REDUCED, scales.batchmean_vs_mean),
    Hypothesis("mean-over-elements", _REDUCED, scales.mean_over_elements),
    Hypothesis("divisor-convention", _REDUCED, scales.divisor_convention),
    Hypothesis("factor-two", ("loss", "gradient", "jacobian"), scales.factor_two),
    Hypothesis("sign-flip", _ALL, scales.sign_flip),
    Hypothesis("missing-temperature", _ALL, scales.missing_temperature),
    Hypothesis("temperature-squared", _REDUCED, scales.temperature_squared),
    Hypothesis("smoothing-convention", _REDUCED, conventions.smoothing_convention),
    Hypothesis("ignored-rows-not-zeroed", _REDUCED, conventions.ignored_rows_not_zeroed),
    Hypothesis("grad-output-broadcast", ("gradient",), conventions.grad_output_broadcast),
    Hypothesis("double-softmax", _ALL, conventions.double_softmax),
    Hypothesis("log-probabilities-as-logits", _ALL, conventions.log_probabilities_as_logits),
    Hypothesis("softmax-instead-of-log", _REDUCED, conventions.softmax_instead_of_log),
    Hypothesis("transposed", _ALL, conventions.transposed),
    Hypothesis("label-shift", _REDUCED, conventions.label_shift),
    Hypothesis("kl-direction", _REDUCED, conventions.kl_direction),
    Hypothesis("no-max-subtraction", _ALL, conventions.no_max_subtraction),
    Hypothesis("constant-scale", _ALL, scales.constant_scale),
)


class Finding(NamedTuple):
    """One hypothesis tried on one failed check: what it says, and how much of the user's values it explains."""

    id: str
    check: str
    description: str
    residual: float | None  # largest relative error left after the transformation (None: not finite)
    rows_explained: int
    rows: int  # of the input, or of its sample (users.py says so in the description)
    matched: bool
    partial: bool  # explains more rows than the reference does, not all (the rest are unexplained_rows)
    unexplained_rows: tuple[int, ...] = ()
    parameter: float | None = None  # the slip's number where it has one (k of a scale, eps of a smoothing)

    @property
    def explains_rows(self) -> float:
        """The share of rows (samples) whose every element the hypothesis explains."""
        return self.rows_explained / self.rows

    def to_dict(self) -> dict[str, object]:
        """The JSON `diagnosis` entry: plain numbers, null for a residual that is not finite, at most 20 rows."""
        return {"id": self.id, "check": self.check, "description": self.description, "residual": self.residual,
                "explains_rows": self.explains_rows, "matched": self.matched, "partial": self.partial,
                "unexplained_rows": list(self.unexplained_rows[:20])}


class _Judge:
    """The check's tolerance applied to candidates: |actual - predicted| <= slack atol + rtol |predicted|."""

    def __init__(self, actual: np.ndarray, reference: np.ndarray, atol: float | np.ndarray, rtol: float) -> None:
        self.actual, self.reference, self.rtol = actual, reference, rtol
        self.atol = float(atol) if np.ndim(atol) == 0 else np.broadcast_to(np.asarray(atol, np.float64), actual.shape)
        self.rows = actual.shape[0] if actual.ndim else 1
        self.reference_rows = self.row_close(reference, 1.0, reference=actual)
        with np.errstate(invalid="ignore", over="ignore"):  # how many tolerances the reference misses each by
            share = np.abs(actual - reference) / (self.atol + rtol * np.abs(reference) + _TINY)
        share = np.where(actual == reference, 0.0, np.nan_to_num(share, nan=np.inf))
        self.reference_share = share.reshape(self.rows, -1)

    def close(self, predicted: np.ndarray, slack: float, reference: np.ndarray | None = None) -> np.ndarray:
        """Element by element (in place where it can: a Jacobian has N C C elements)."""
        values = np.atleast_1d(self.actual if reference is None else reference)
        predicted = np.atleast_1d(predicted)
        with np.errstate(invalid="ignore", over="ignore"):
            difference = np.subtract(values, predicted)
            np.abs(difference, out=difference)
            bound = np.abs(predicted)
            bound *= self.rtol
            bound += slack * self.atol
            within = np.asarray(difference <= bound)
            within |= values == predicted  # equal infinities are equal
        return within

    def row_close(self, predicted: np.ndarray, slack: float, reference: np.ndarray | None = None) -> np.ndarray:
        return np.asarray(self.close(predicted, slack, reference).reshape(self.rows, -1).all(axis=1))

    def telling(self, candidate: Candidate) -> np.ndarray:
        """The elements where the candidate differs from the reference beyond the tolerance."""
        return ~self.close(candidate.predicted, candidate.slack, reference=self.reference)

    def supports(self, telling: np.ndarray, explained: np.ndarray) -> bool:
        """Whether the explained rows hold MIN_SUPPORT elements that tell the candidate from the reference, one
        of them missed by the reference by MIN_DEVIATION tolerances (the evidence a fitted number needs)."""
        telling = telling.reshape(self.rows, -1)[explained]
        if np.count_nonzero(telling) < MIN_SUPPORT:
            return False
        return bool(self.reference_share[explained][telling].max() >= MIN_DEVIATION)

    def misses(self, rows: np.ndarray) -> bool:
        """Whether the reference misses an element of these rows by MIN_DEVIATION tolerances or more."""
        return bool(rows.any()) and bool(self.reference_share[rows].max() >= MIN_DEVIATION)

    def residual(self, predicted: np.ndarray, rows: np.ndarray) -> float | None:
        """The largest relative difference |a - p| / max(|a|, |p|, tiny) over the given rows."""
        every = bool(rows.all())
        actual = self.actual.reshape(self.rows, -1) if every else self.actual.reshape(self.rows, -1)[rows]
        predicted = predicted.reshape(self.rows, -1) if every else predicted.reshape(self.rows, -1)[rows]
        if not actual.size:
            return 0.0
        with np.errstate(invalid="ignore", over="ignore"):
            error = np.subtract(actual, predicted)
            np.abs(error, out=error)
            error[actual == predicted] = 0.0  # equal infinities
            size = np.maximum(np.abs(actual), np.abs(predicted))
            np.maximum(size, _TINY, out=size)
            error /= size
        largest = float(error.max())
        return largest if np.isfinite(largest) else None


class _Outcome(NamedTuple):
    candidate: Candidate
    explained: np.ndarray  # rows (bool)
    residual: float | None
    stands: bool  # False when its unpredicted rows do not look as the slip says

    def rank(self, judge: _Judge) -> tuple[bool, bool, int, float]:
        residual = np.inf if self.residual is None else self.residual
        return self.stands and bool(self.explained.all()), self.partial(judge), int(self.explained.sum()), -residual

    def partial(self, judge: _Judge) -> bool:
        """Explains more rows than the reference does, or every row it predicts while the rest differ as said;
        either way the rows it accounts for and the reference does not are missed by the reference by
        MIN_DEVIATION tolerances somewhere (a row off by about its tolerance fits many a slip)."""
        if not self.stands or self.explained.all() or not self.explained.any():
            return False
        free = self.candidate.unpredicted
        if free is not None:
            return bool(self.explained[~free].all()) and judge.misses(free)
        gained = self.explained & ~judge.reference_rows
        return int(self.explained.sum()) > int(judge.reference_rows.sum()) and judge.misses(gained)


def _evaluate(candidate: Candidate, judge: _Judge) -> _Outcome:
    explained = judge.row_close(candidate.predicted, candidate.slack)
    free = candidate.unpredicted
    if free is None:
        return _Outcome(candidate, explained, judge.residual(candidate.predicted, np.ones(judge.rows, bool)), True)
    actual_rows = judge.actual.reshape(judge.rows, -1)
    if candidate.expects == "non-finite":
        shows = ~np.isfinite(actual_rows).all(axis=1)
        explained = np.where(free, shows | explained, explained)
    else:
        shows = ~judge.reference_rows
        explained = explained & ~free
    stands = bool(shows[free].any()) if candidate.expects == "non-finite" else bool(shows[free].all())
    return _Outcome(candidate, explained, judge.residual(candidate.predicted, ~free), stands and bool(free.any()))


def diagnose(
    quantity: str,
    actual: np.ndarray,
    reference: np.ndarray,
    atol: float | np.ndarray,
    rtol: float,
    context: SlipContext,
    check: str | None = None,
) -> list[Finding]:
    """Every applicable hypothesis tried on the user's `actual` against `reference`, best first.

    First the matches (in catalogue order), then partial matches (most rows explained first), then the rest
    (smallest residual first). An empty list when the values agree with the reference: nothing to diagnose.
    `check` names the failed check in each Finding (the quantity when not given).
    """
    actual = np.asarray(actual, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if actual.shape != reference.shape:
        raise ValueError(f"diagnose: the {quantity} is {actual.shape}, the reference {reference.shape}")
    judge = _Judge(actual, reference, atol, rtol)
    if judge.reference_rows.all():
        return []
    evidence = Evidence(context, actual, reference)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        tried = [(order, hypothesis, outcome) for order, hypothesis in enumerate(CATALOGUE)
                 if quantity in hypothesis.quantities and (outcome := _best(hypothesis, evidence, judge))]
    findings = [(order, _finding(hypothesis.id, check or quantity, outcome, judge, context))
                for order, hypothesis, outcome in tried]
    return [finding for _, finding in sorted(findings, key=lambda pair: _ranking(*pair))]


def _best(hypothesis: Hypothesis, evidence: Evidence, judge: _Judge) -> _Outcome | None:
    """The hypothesis' best candidate, leaving out those the reference's own values cannot be told from (they
    could not explain a failure) and fitted ones without the evidence a fitted number needs."""
    try:
        candidates = hypothesis.propose(evidence)
    except ArithmeticError:  # a convention with no meaning on this input (labels shifted onto the ignored one)
        return None
    outcomes = []
    for candidate in candidates:
        if candidate.predicted.shape != evidence.actual.shape:
            continue
        telling = judge.telling(candidate)
        if candidate.unpredicted is None and not telling.any():
            continue
        outcome = _evaluate(candidate, judge)
        if not candidate.fitted or judge.supports(telling, outcome.explained):
            outcomes.append(outcome)
    # max keeps the first of equals: candidates are listed most specific first
    return max(outcomes, key=lambda outcome: outcome.rank(judge)) if outcomes else None


def _ranking(order: int, finding: Finding) -> tuple[int, float, float]:
    if finding.matched:
        return 0, order, 0.0
    if finding.partial:
        return 1, -finding.rows_explained, order
    return 2, np.inf if finding.residual is None else finding.residual, order


def _finding(identifier: str, check: str, outcome: _Outcome, judge: _Judge, context: SlipContext) -> Finding:
    candidate = outcome.candidate
    matched = outcome.stands and bool(outcome.explained.all())
    partial = outcome.partial(judge)
    unexplained = tuple(context.input_rows(np.flatnonzero(~outcome.explained)).tolist()) if judge.actual.ndim else ()
    subject = f"your {context.quantity}"
    if matched:
        lead = f"every element of {subject} is" if judge.actual.ndim else f"{subject} is"
        description = f"{lead} {candidate.what}: {candidate.meaning}"
    elif partial:
        description = (f"every element of {subject} is {candidate.what} except in {_rows_text(unexplained, context)} "
                       f"({int(outcome.explained.sum())} of {judge.rows} rows explained): {candidate.meaning}")
    else:
        left = "not finite" if outcome.residual is None else f"{outcome.residual:.2g}"
        description = (f"not this: {subject} is not {candidate.what} ({candidate.meaning}); "
                       f"largest relative difference left {left}")
    return Finding(identifier, check, description, outcome.residual, int(outcome.explained.sum()), judge.rows,
                   matched, partial, unexplained if not matched else (), candidate.parameter)


def _rows_text(rows: tuple[int, ...], context: SlipContext) -> str:
    """'rows 3 and 7 (the ignored rows)', 'row 2', '12 rows (1, 4, 5, 8, 9, ...)'."""
    if len(rows) == 1:
        text = f"row {rows[0]}"
    elif len(rows) <= 4:
        text = "rows " + ", ".join(str(row) for row in rows[:-1]) + f" and {rows[-1]}"
    else:
        text = f"{len(rows)} rows (" + ", ".join(str(row) for row in rows[:5]) + ", ...)"
    ignored = set(context.input_rows(np.flatnonzero(~context.kept)).tolist())
    return text + (" (the ignored rows)" if ignored and set(rows) == ignored else "")


def matches(findings: list[Finding]) -> list[Finding]:
    """The findings that explain every element, best first: what a report lists as the diagnosis."""
    return [finding for finding in findings if finding.matched]


def verdict(findings: list[Finding], quantity: str) -> str:
    """One sentence for under a FAIL line: the best match, else the best partial match, else plainly none."""
    for finding in findings:
        if finding.matched or finding.partial:
            return finding.description
    if not findings:
        return f"no known slip reproduces your {quantity}"
    return f"no known slip reproduces your {quantity} ({len(findings)} tried)"
