"""Plain result objects: one check's outcome, one batch's checks, and the Report of a run with its exit code."""

# No `from __future__ import annotations`: typing.NamedTuple compiles every annotation it is given as a
# string (a ForwardRef each: some 30 here), start-up time every run pays. Evaluated, they cost next to
# nothing; those naming types imported only for type checking (numpy's, the math's) are quoted.
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from gradcheck_cli.settings import Settings

if TYPE_CHECKING:
    import numpy as np

    from gradcheck_cli.numerics.losses.base import Loss
    from gradcheck_cli.numerics.softmax import Softmax

EXIT_AGREE, EXIT_DISAGREE, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
# Every JSON document gradcheck prints carries this; see schema.json's description for when it changes.
SCHEMA_VERSION = 1
# The checks whose worst element is in a row of the input (worst_rows names that row and its file line).
ROW_CHECKS = ("gradient", "jacobian", "hessian")
# How many mismatching elements of a check a failure message lists (and a check keeps), worst first.
WORST_SHOWN = 5


class Element(NamedTuple):
    """One compared element: its position (index) in the compared array, both values, and the share of its
    tolerance it used (> 1 fails). A NamedTuple: the command line imports this module, and a dataclass costs
    several times more to define."""

    position: tuple[int, ...]
    actual: float
    expected: float
    share: float


class BaselineFigures(NamedTuple):
    """A half-precision baseline verdict's numbers (checks/precision.py): the user's largest error against the
    float64 reference and the plain same-dtype implementation's; the root mean square of each one's errors in
    units in the last place of the dtype (what the verdict compares), their ratio, and the most allowed. None
    where a value is not finite."""

    dtype: str
    error: float | None
    baseline_error: float | None
    ratio: float | None  # ulps / baseline_ulps; None when the baseline is exact
    ulps: float | None
    baseline_ulps: float | None
    allowed: float | None  # in ulp


class CheckResult(NamedTuple):
    name: str
    passed: bool
    max_abs_error: float | None
    max_rel_error: float | None
    worst_index: tuple[int, ...]
    actual: float
    expected: float
    description: str = ""
    # How much of its tolerance the worst element used (> 1 fails; inf for a non-finite value).
    worst_share: float = 0.0
    # How many elements were compared, and how many are outside their tolerance (None: not counted).
    elements: int | None = None
    mismatches: int | None = None
    # Up to WORST_SHOWN of the mismatching elements, worst first (none when the check passes).
    worst_elements: tuple[Element, ...] = ()
    # A half-precision baseline verdict's figures (None for every other check).
    baseline: BaselineFigures | None = None


class Diagnosis(NamedTuple):
    """Which known slip reproduces the user's values of one failed check (checks/diagnose.py)."""

    check: str  # the failed check: "impl gradient", "supplied probabilities", ...
    verdict: str  # one sentence: the best match with the user's numbers, or plainly that none matched
    findings: tuple[Any, ...]  # checks.diagnose.Finding of every hypothesis tried, best first

    @property
    def named(self) -> list[Any]:
        """The findings that explain the values (matched, or partially with the rows they leave), best first."""
        return [finding for finding in self.findings if finding.matched or finding.partial]


class RowChecks:
    """The checks of a run of consecutive rows, and what a report or a per-row stream needs of them: the row
    losses (unscaled) and softmax(z / T) in the analytic dtype, both gradients, the logits (float64, as rounded
    to the analytic dtype: where the reference is taken) and the float64 reference loss (with the whole input's
    mean divisor). A plain class: it holds arrays (== would have no truth value), and making a dataclass costs
    every run's start-up some 0.3 ms."""

    __slots__ = ("analytic_gradient", "checks", "logits", "numeric_gradient", "reference_loss", "row_losses",
                 "softmax")

    def __init__(self, checks: list[CheckResult], row_losses: "np.ndarray", softmax: "Softmax",
                 analytic_gradient: "np.ndarray", numeric_gradient: "np.ndarray", logits: "np.ndarray",
                 reference_loss: "Loss") -> None:
        self.checks, self.row_losses, self.softmax, self.logits = checks, row_losses, softmax, logits
        self.analytic_gradient, self.numeric_gradient, self.reference_loss = (analytic_gradient, numeric_gradient,
                                                                              reference_loss)

    @property
    def probabilities(self) -> "np.ndarray":
        return self.softmax.s


def _no_line(row: int) -> int | None:
    return None


@dataclass(eq=False, repr=False)  # holds arrays: == has no truth value, and each method costs start-up
class Report:
    """Everything a run found. The per-row arrays are None when they were not kept (a big or streamed input)."""

    settings: Settings
    rows: int
    classes: int
    loss: "float | np.ndarray | None"
    checks: list[CheckResult]
    probabilities: "np.ndarray | None" = None
    jacobian: "np.ndarray | None" = None
    analytic_gradient: "np.ndarray | None" = None
    numeric_gradient: "np.ndarray | None" = None
    # Each row's log-sum-exp of the logits entering the softmax, over T (float64; None for bce, or not kept).
    lse: "np.ndarray | None" = None
    notes: list[str] = field(default_factory=list)
    source: str | None = None
    # The file line each row came from (for annotations and worst-row tables), when the input was a file.
    line_of: Callable[[int], int | None] = _no_line
    # The user's own values by quantity (loss, gradient, probabilities, jacobian), supplied or from --impl:
    # per-row arrays when the arrays are kept, a reduced loss always.
    supplied: dict[str, Any] = field(default_factory=dict)
    impl: dict[str, Any] = field(default_factory=dict)
    # Each failed check of the user's values, diagnosed (when the input was small enough to keep).
    diagnoses: list[Diagnosis] = field(default_factory=list)

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

    @property
    def failed(self) -> list[CheckResult]:
        return [check for check in self.checks if not check.passed]

    def __repr__(self) -> str:
        """One line, so that pytest's `assert report.passed` explains itself without dumping arrays."""
        verdict = "PASS" if self.passed else "FAIL: " + ", ".join(check.name for check in self.failed)
        return f"<gradcheck Report of {self.rows} x {self.classes} logits, {len(self.checks)} checks: {verdict}>"

    def assert_ok(self) -> None:
        """Raise AssertionError with failure_message() unless every check passed (a test's one-line assertion)."""
        __tracebackhide__ = True  # pytest shows the test's line, not this one
        if not self.passed:
            raise AssertionError(self.failure_message())

    def failure_message(self) -> str:
        """What a test log needs of a failed run: how it ran, then each failing check with how many of its
        elements mismatch and the worst few, each with its index and both values (every digit)."""
        if self.passed:
            return f"gradcheck: all {len(self.checks)} checks passed"
        settings = self.settings
        how = (f"{settings.loss}, reduction {settings.reduction}, {settings.dtype}, {settings.method} differences, "
               f"atol {settings.atol}, rtol {settings.rtol}")
        failed = f"{len(self.failed)} of {len(self.checks)} checks failed"
        lines = [f"gradcheck: {failed} on {self.rows} x {self.classes} logits ({how})"]
        # A named slip only: "no known slip" would lengthen every test log that has a plain wrong value.
        slips = {diagnosis.check: diagnosis.verdict for diagnosis in self.diagnoses if diagnosis.named}
        for check in self.failed:
            lines += _failure_lines(check)
            if check.name in slips:
                lines.append(f"    diagnosis: {slips[check.name]}")
        return "\n".join(lines)

    def worst_rows(self) -> list[dict[str, Any]]:
        """For each check, the row of its worst element and the file line it came from (if any)."""
        rows = []
        for check in self.checks:
            if check.worst_index and check.name in ROW_CHECKS:
                row = check.worst_index[0]
                rows.append({"check": check.name, "row": row, "line": self.line_of(row), "passed": check.passed})
        return rows

    def to_dict(self) -> dict[str, Any]:
        """The JSON report as plain data (valid against schema.json); the per-row arrays are there when full."""
        settings = self.settings
        document: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "command": "check",
            "passed": self.passed,
            "settings": {**settings._asdict(), "weights": None if settings.weights is None else list(settings.weights),
                         "step": step_used(settings.eps)},
            "shape": {"rows": self.rows, "classes": self.classes},
            "arrays": self.full,
            "loss": None if self.loss is None else finite_or_none(self.loss),
            "checks": [check_to_dict(check) for check in self.checks],
            "worst_rows": self.worst_rows(),
            "notes": self.notes,
            "diagnosis": [finding.to_dict() for diagnosis in self.diagnoses for finding in diagnosis.named],
        }
        if self.full:
            document["probabilities"] = finite_or_none(self.probabilities)
            if self.lse is not None:
                document["lse"] = finite_or_none(self.lse)
            document["jacobian"] = finite_or_none(self.jacobian)
            document["gradient"] = {
                "analytic": finite_or_none(self.analytic_gradient),
                "numeric": finite_or_none(self.numeric_gradient),
                **{source: finite_or_none(values["gradient"])
                   for source, values in self.users() if "gradient" in values},
            }
            for source, values in self.users():
                others = {name: finite_or_none(value) for name, value in values.items() if name != "gradient"}
                if others:
                    document[source] = others
        return document

    def diagnose_dict(self) -> dict[str, Any]:
        """The JSON of `gradcheck diagnose` (schema.json's diagnose_report): every check, and for each failed
        check of the user's values every hypothesis tried with its residual, best first."""
        return {
            "schema_version": SCHEMA_VERSION,
            "command": "diagnose",
            "passed": self.passed,
            "shape": {"rows": self.rows, "classes": self.classes},
            "checks": [check_to_dict(check) for check in self.checks],
            "diagnoses": [{"check": diagnosis.check, "verdict": diagnosis.verdict,
                           "findings": [finding.to_dict() for finding in diagnosis.findings]}
                          for diagnosis in self.diagnoses],
            "notes": self.notes,
        }

    def users(self) -> list[tuple[str, dict[str, Any]]]:
        """The user's values by where they came from ("supplied", "impl"), those present only."""
        return [(source, values) for source, values in (("supplied", self.supplied), ("impl", self.impl)) if values]


def step_used(eps: float | None) -> float | None:
    """The step the differences take: eps rounded down to a power of two (numerics.differences.steps)."""
    import math

    return None if eps is None else 2.0 ** math.floor(math.log2(eps))


def finite_or_none(values: Any) -> Any:
    """Nested lists of floats with every non-finite value as null, so the JSON stays strict."""
    import numpy as np  # here: the result objects are built without numpy at import

    array = np.asarray(np.asarray(values, dtype=np.float64) + 0.0)  # + 0.0: no -0.0 in the JSON
    if np.isfinite(array).all():
        return array.tolist()
    cleaned = array.astype(object)
    cleaned[~np.isfinite(array)] = None
    return cleaned.tolist()


def check_to_dict(check: CheckResult) -> dict[str, Any]:
    index = list(check.worst_index)
    document: dict[str, Any] = {
        "name": check.name,
        "passed": check.passed,
        "max_abs_error": check.max_abs_error,
        "max_rel_error": check.max_rel_error,
        "worst": {
            "index": index,
            "row": index[0] if index else None,
            "column": index[-1] if index else None,
            "actual": finite_or_none(check.actual),
            "expected": finite_or_none(check.expected),
        },
    }
    if check.baseline is not None:
        document["baseline"] = check.baseline._asdict()
    return document


def _failure_lines(check: CheckResult) -> list[str]:
    """A failing check: its name and what it compares, how many elements mismatch, and the worst of them."""
    about = f" ({check.description})" if check.description else ""
    if check.max_abs_error is None or check.max_rel_error is None:
        errors = "a value is not finite"
    else:
        errors = f"max abs error {check.max_abs_error:.3g}, max rel error {check.max_rel_error:.3g}"
    if not check.worst_index:  # one number (a reduced loss): the values say it all
        return [f"{check.name}{about}: actual {check.actual!r}, expected {check.expected!r}; {errors}"]
    counted = check.mismatches is not None and check.elements is not None
    count = f"{check.mismatches} of {check.elements} elements mismatch" if counted else "its worst element mismatches"
    shown = check.worst_elements or (Element(check.worst_index, check.actual, check.expected, check.worst_share),)
    cells = [("index", "actual", "expected")]
    cells += [(str(list(each.position)), repr(each.actual), repr(each.expected)) for each in shown]
    widths = [max(len(row[k]) for row in cells) for k in range(2)]
    lines = [f"{check.name}{about}: {count}; {errors}"]
    lines += [f"    {index:<{widths[0]}}  {actual:<{widths[1]}}  {expected}" for index, actual, expected in cells]
    if counted and check.mismatches is not None and check.mismatches > len(shown):
        lines.append(f"    ... and {check.mismatches - len(shown)} more")
    return lines
