"""`sweep`: the command line's `gradcheck sweep` as a function: the error of central differences at each step.

The curve studies one gradient: the user's when they give one (supplied in the input, --grad-file, or returned
by --impl), gradcheck's own otherwise. At each step it is compared with the central differences `check` takes:
the loss's exact perturbation (numerics/differences.py), every element at once, so a step costs two O(N C)
evaluations and never a loop over elements. The exact perturbation's rounding is relative to the change, not
to the loss, so a correct gradient's error falls with the step (truncation, h^2) to near machine precision and
stays there; a wrong one stops at a floor no step gets under.

With the user's values the sweep also runs `check` on them (the same pipeline, tolerances and exit code), and
draws the step-free Taylor test of their loss and gradient (checks/taylor.py). SweepReport is the result.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gradcheck_cli.api import keywords
from gradcheck_cli.api.arrays import as_float64
from gradcheck_cli.api.beside import Beside

# check()'s own helpers: the same arrays, files and functions are accepted and refused in the same words.
from gradcheck_cli.api.checking import (
    ImplFunction,
    Path,
    _implementation,
    _refuse_beside,
    batch_from_arrays,
    file_request,
)
from gradcheck_cli.batch import Batch
from gradcheck_cli.checks.runner import Keep
from gradcheck_cli.checks.taylor import TaylorResult, taylor_test
from gradcheck_cli.errors import InputError
from gradcheck_cli.inputs.gather import Input, InputRequest
from gradcheck_cli.numerics import differences
from gradcheck_cli.numerics.losses import accepted_kind
from gradcheck_cli.pipeline import CheckJob, load_whole, mean_divisor
from gradcheck_cli.report import EXIT_AGREE, EXIT_DISAGREE, SCHEMA_VERSION, Report, check_to_dict, finite_or_none
from gradcheck_cli.settings import Settings

if TYPE_CHECKING:
    from gradcheck_cli.checks.impl import Implementation
    from gradcheck_cli.numerics.losses.base import Loss
    from gradcheck_cli.numerics.softmax import Softmax

# Whose gradient the curve studies, by where it came from.
STUDIED = ("reference", "supplied", "impl")
# Random directions of the Taylor test, each tried as v and -v. One is enough to see a wrong gradient (its error
# along a random v is zero with probability 0), and each costs 8 evaluations of the loss and exact sums of N C
# products: three would make the Taylor test most of a sweep's time at 8 x 50,257.
TAYLOR_DIRECTIONS = 1
CURVE_THREAD = "gradcheck-sweep-curve"  # the thread the curve is drawn on, beside the Taylor test


@dataclass(eq=False)
class SweepReport:
    """The sweep's points (largest step first), its verdict, and the exit code `gradcheck sweep` gives.

    `gradient` says whose gradient the curve studies (STUDIED); with the user's values, `checks` is `check`'s
    report on them (part of the verdict) and `taylor` the Taylor test of their loss and gradient (drawn, not
    part of the verdict: check's own-loss check holds a gradient to its loss with an error analysis per loss).
    Without them, `taylor` is the Taylor test of gradcheck's own loss and gradient.
    """

    points: list[differences.SweepPoint]
    passed: bool
    verdict: str
    default_eps: float
    gradient: str = "reference"
    checks: Report | None = None
    taylor: TaylorResult | None = None
    short_verdict: str = ""

    @property
    def exit_code(self) -> int:
        return EXIT_AGREE if self.passed else EXIT_DISAGREE

    @property
    def curve_passed(self) -> bool:
        return differences.sweep_looks_correct(self.points)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of `gradcheck sweep -f json`, as plain data."""
        document: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "command": "sweep",
            "passed": self.passed,
            "default_eps": self.default_eps,
            "gradient": self.gradient,
            "steps": [{"eps": p.eps, "max_abs_error": _number(p.max_abs_error),
                       "max_rel_error": _number(p.max_rel_error)} for p in self.points],
            "verdict": self.verdict,
        }
        if self.checks is not None:
            document["checks"] = [check_to_dict(check) for check in self.checks.checks]
        if self.taylor is not None:
            document["taylor"] = taylor_to_dict(self.taylor)
        return document

    def assert_ok(self) -> None:
        """Raise AssertionError with the verdict and the curve unless it looks like a correct gradient's."""
        __tracebackhide__ = True  # pytest shows the test's line, not this one
        if not self.passed:
            curve = [f"    step {p.eps:.0e}: error {p.error_vs_largest:.2e}" for p in self.points]
            failed = [] if self.checks is None or self.checks.passed else [self.checks.failure_message()]
            raise AssertionError("\n".join([f"gradcheck sweep: {self.verdict}", *curve, *failed]))


def taylor_to_dict(taylor: TaylorResult) -> dict[str, Any]:
    """The Taylor test as JSON: the steps t, and per signed direction its fitted slope and its remainders."""
    return {
        "passed": taylor.passed,
        "steps": taylor.steps.tolist(),
        "directions": [{"slope": slope, "remainders": finite_or_none(remainders)}
                       for slope, remainders in zip(taylor.slopes, taylor.remainders, strict=True)],
    }


def _number(value: float) -> float | None:
    return value if math.isfinite(value) else None


class _Studied:
    """The gradient the curve studies (in each row's own units: the reduction's scale taken out), where it came
    from, and the loss function the Taylor test evaluates with it, with the precision of that loss."""

    def __init__(self, batch: Batch, reference: Loss, implementation: Implementation | None,
                 settings: Settings, parts: Softmax) -> None:
        z = batch.logits
        self.loss: Callable[[np.ndarray], float | np.ndarray] = reference.loss
        self.precision = 2.0**-52
        if implementation is not None:
            answer = implementation.answer(z, batch.targets, settings.reduction)
            assert answer.gradient is not None
            self.source, gradient = "impl", answer.gradient
            self.precision = answer.precision

            def users_loss(point: np.ndarray) -> np.ndarray:
                return implementation.answer(point, batch.targets, settings.reduction, loss_only=True).loss

            self.loss = users_loss
        elif "gradient" in batch.supplied:
            self.source, gradient = "supplied", batch.supplied["gradient"].reshape(z.shape)
        else:  # Loss.gradient's product, with the row gradients it scales kept
            self.rows = reference.row_gradients(z, parts)
            self.source, gradient = "reference", self.rows * reference.scale
        self.gradient = np.asarray(gradient, dtype=np.float64)  # in the reduced loss's units, as the user's
        if self.source != "reference":  # each row's own units, as the row losses' differences: the mean's 1/N out
            self.rows = self.gradient / reference.scale


def sweep_batch(
    batch: Batch, settings: Settings, steps: tuple[float, ...] | None = None,
    implementation: Implementation | None = None,
) -> SweepReport:
    """The sweep of a batch in memory: the user's gradient (if given) against central differences at each step."""
    whole = Input(batch.source, None, 0, batch)
    differences.refuse_meaningless(settings)  # what check refuses, sweep refuses in the same words
    mean_divisor(whole, settings)  # a mean over nothing (every row ignored), too
    built = accepted_kind(settings).build(batch, settings, np.dtype(np.float64))
    parts = built.softmax(batch.logits)  # once, for the studied gradient and the curve
    studied = _Studied(batch, built, implementation, settings, parts)
    # The curve (numpy alone) runs beside the check and the Taylor test, which may call the user's function.
    drawn = Beside(lambda: curve(built, batch.logits, studied.rows, steps or differences.SWEEP_STEPS, parts),
                   CURVE_THREAD)
    with drawn:
        checked = None
        if studied.source != "reference" or batch.supplied:  # check's verdict on the user's values, the same rules
            checked = CheckJob(whole, settings, implementation).run(Keep(arrays=False))
        taylor = taylor_test(studied.loss, batch.logits, studied.gradient, scale=settings.temperature,
                             directions=TAYLOR_DIRECTIONS, precision=studied.precision)
    points = drawn.result()
    default = differences.default_eps("central", temperature=settings.temperature)
    verdict, short = _verdicts(points, studied.source, checked)
    passed = differences.sweep_looks_correct(points) and (checked is None or checked.passed)
    return SweepReport(points, passed, verdict, default, studied.source, checked, taylor, short)


def curve(
    loss: Loss, logits: np.ndarray, studied: np.ndarray, steps: tuple[float, ...], parts: Softmax | None = None,
) -> list[differences.SweepPoint]:
    """Central differences of the row losses at each step (rounded down to a power of two, as check rounds its
    step), through the loss's exact perturbation, every element at once; against `studied`, the gradient of
    each row's own loss. The curve's height is the error over the largest element of gradcheck's gradient.
    `parts` is the loss's softmax of the logits, if the caller has it."""
    parts = loss.softmax(logits, parts)
    perturbation = loss.perturbation(logits, parts)
    reference = loss.row_gradients(logits, parts)
    tiny = np.finfo(np.float64).tiny
    largest = max(float(np.max(np.abs(reference))), tiny)
    # max(|studied|, |numeric|, tiny) as max(|numeric|, max(|studied|, tiny)): the same numbers, the first
    # part once for every step (NaN aside, which the finite test below sends to the general path)
    studied_size = np.maximum(np.abs(studied), tiny)
    points = []
    for eps in steps:  # a loop over the steps; each step differences every element at once
        numeric = differences.column_derivative(perturbation, differences.exact_step(eps), slice(None), "central")
        points.append(_point(eps, studied, studied_size, numeric, largest))
    return points


def _point(eps: float, studied: np.ndarray, studied_size: np.ndarray, numeric: np.ndarray,
           largest: float) -> differences.SweepPoint:
    """One step's errors, in place on `numeric` (a new array of column_derivative's): the largest absolute error,
    the largest relative one (each error over the larger of the two values) and the curve's height."""
    with np.errstate(invalid="ignore"):  # inf - inf of the user's: NaN, sent to the general path below
        error = np.subtract(studied, numeric)
    np.abs(error, out=error)
    worst = float(error.max())
    if not math.isfinite(worst):  # a non-finite value of the user's (NaN counts as an infinite error)
        return _point_not_finite(eps, studied, numeric, largest)
    scale = np.abs(numeric, out=numeric)
    np.maximum(scale, studied_size, out=scale)
    np.divide(error, scale, out=error)
    return differences.SweepPoint(eps, worst, float(error.max()), worst / largest)


def _point_not_finite(eps: float, studied: np.ndarray, numeric: np.ndarray, largest: float) -> differences.SweepPoint:
    """_point where an error is not finite: NaN read as an infinite error, an infinite one as the largest float
    (nan_to_num's rule), every array op as it was written before _point's in-place shortcut."""
    tiny = np.finfo(np.float64).tiny
    with np.errstate(invalid="ignore"):
        error = np.nan_to_num(np.abs(studied - numeric), nan=np.inf)
        scale = np.maximum(np.maximum(np.abs(studied), np.abs(numeric)), tiny)
        worst = float(error.max())
        return differences.SweepPoint(eps, worst, float((error / scale).max()), worst / largest)


def _verdicts(points: list[differences.SweepPoint], source: str, checked: Report | None) -> tuple[str, str]:
    """The verdict (JSON, -f github) and the short one a person reads last (and alone under -q)."""
    correct = differences.sweep_looks_correct(points)
    best = min(points, key=lambda point: point.error_vs_largest)
    whose = "" if source == "reference" else "your gradient "
    if not math.isfinite(best.error_vs_largest):
        verdict = short = f"{whose}looks WRONG: it has values that are not finite"
    elif correct:
        verdict = (f"{whose}looks correct: the error falls to {best.error_vs_largest:.1e} of the largest gradient "
                   f"element at step {best.eps:g} (near machine precision)")
        short = f"{whose}looks correct: the error falls to {best.error_vs_largest:.1e} at step {best.eps:.0e}"
    else:
        verdict = (f"{whose}looks WRONG: no step gets the error under {best.error_vs_largest:.1e} of the largest "
                   f"gradient element (a floor)")
        short = f"{whose}looks WRONG: a floor: no step gets the error under {best.error_vs_largest:.1e}"
    if checked is not None and not checked.passed:
        failed = ", ".join(check.name for check in checked.failed)
        verdict += f"; check of your values fails: {failed}"
        short += f"; check fails: {failed}"
    return verdict, short


def loss_settings(values: dict[str, Any]) -> Settings:
    """Settings from keyword values, each converted as its option is (keywords.settings_from). A loss option its
    table has no converter for yet is refused when given, never dropped: a check of another loss would pass."""
    from gradcheck_cli.numerics.losses import LOSS_OPTIONS

    for name, (flag, unset) in LOSS_OPTIONS.items():
        if name not in keywords.SETTINGS_KEYWORDS and values.get(name, unset) != unset:
            raise InputError(f"{name}= ({flag}) is not taken by the Python API yet; use the command line")
    return keywords.settings_from(values)


def sweep_steps(value: Any) -> tuple[float, ...] | None:
    """Steps as --steps takes them ("1e-2,1e-6") or as numbers: positive and finite, largest first, once each."""
    if value is None:
        return None
    tokens = value.replace(",", " ").split() if isinstance(value, str) else [
        repr(step) for step in np.ravel(as_float64(value, "steps")).tolist()]
    steps = set()
    for token in tokens:
        try:
            step = float(token)
        except ValueError:
            raise keywords.invalid("--steps", f"{token!r} is not a number") from None
        if not (math.isfinite(step) and step > 0):
            raise keywords.invalid("--steps", f"{token!r} is not a positive finite step")
        steps.add(step)
    if not steps:
        raise keywords.invalid("--steps", "no steps given")
    return tuple(sorted(steps, reverse=True))


def sweep_request(
    request: InputRequest, settings: Settings, steps: tuple[float, ...] | None = None,
    impl: str | ImplFunction | None = None, impl_timeout: float = 60.0,
) -> SweepReport:
    """The sweep of an input the command line names (read whole), with the user's function if given."""
    accepted_kind(settings)  # refuses options this loss does not take before anything is read or started
    with _implementation(impl, impl_timeout) as implementation:  # started first, as check starts it
        return sweep_batch(load_whole(request, settings), settings, steps, implementation)


def sweep(
    logits: Any = None,
    labels: Any = None,
    targets: Any = None,
    *,
    steps: Any = None,
    loss: str = "cross_entropy",
    impl: str | ImplFunction | None = None,
    gradient: Any = None,
    probabilities: Any = None,
    jacobian: Any = None,
    loss_value: Any = None,
    weights: Any = None,
    label_smoothing: float = 0.0,
    ignore_index: int | None = None,
    temperature: float = 1.0,
    beta: float | None = None,
    t2_scaling: bool = False,
    z_loss: float = 0.0,
    softcap: float | None = None,
    logit_scale: float = 1.0,
    pos_weight: Any = None,
    gamma: float | None = None,
    alpha: float | None = None,
    teacher_logits: Any = None,
    teacher_file: Path | None = None,
    key: Any = None,
    input: Path | None = None,
    input_format: str = "auto",
    labels_file: Path | None = None,
    targets_file: Path | None = None,
    grad_file: Path | None = None,
    probabilities_file: Path | None = None,
    impl_timeout: float = 60.0,
) -> SweepReport:
    """Sweep the finite-difference step: `gradcheck sweep` as a function (keywords as its options).

    The curve studies your gradient when you give one (`gradient`, `grad_file`, or `impl`, as check() takes
    them), gradcheck's own otherwise: the error against central differences falls with the step to near
    machine precision for a correct gradient, and stops at a floor for a wrong one. Your values are also
    checked as check() checks them, and the exit code is 1 when either fails. `steps` defaults to 1e-1,
    1e-2, ..., 1e-13.

    Example:

        sweep([[1.1, 2.2, 0.2, -1.7]], labels=[2]).assert_ok()
    """
    settings = loss_settings(locals())  # the loss options are Settings fields of the same names
    chosen = sweep_steps(steps)
    fmt = keywords.input_format(input_format)
    timeout = keywords.POSITIVE("--impl-timeout", impl_timeout)
    if impl is not None and not isinstance(impl, str) and not callable(impl):
        raise InputError(f"impl: expected a function f(logits, targets) -> (loss, gradient) or "
                         f"'MODULE:FUNCTION', got {type(impl).__name__}")
    accepted_kind(settings)
    values = {"gradient": gradient, "probabilities": probabilities, "jacobian": jacobian}
    files = {"labels_file": labels_file, "targets_file": targets_file, "grad_file": grad_file,
             "probabilities_file": probabilities_file, "teacher_file": teacher_file}
    if input is not None:
        if logits is not None:
            raise InputError("give the logits either as logits= or in the file input= names, not both")
        _refuse_beside("input=", "logits=", values)
        request = file_request(os.fspath(input), fmt, files, labels, targets, loss_value, teacher_logits,
                               keywords.tensor_keys(key))
        return sweep_request(request, settings, chosen, impl, timeout)
    _refuse_beside("logits=", "input=", {"input_format": None if fmt == "auto" else fmt, "key": key, **files})
    with _implementation(impl, timeout) as implementation:
        batch = batch_from_arrays(logits, labels, targets, values, loss_value, settings.ignore_index,
                                  teacher_logits)
        return sweep_batch(batch, settings, chosen, implementation)

