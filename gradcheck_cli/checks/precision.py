"""The two verdicts on a user's half-precision values (--dtype bfloat16 or float16; supplied, or from --impl).

The reference is float64, at the logits rounded to the dtype: its finite differences are never taken in the
low dtype (a step below its spacing, 2^-8 relative for bfloat16, leaves the value unchanged and the quotient
0; one above it truncates by far more than the check could allow). Against it, each user value gets:

(a) the dtype's tolerance, element by element:
        |value - reference| <= atol + rtol |reference| + u (1 + lambda) N,
    atol and rtol torch.testing.assert_close's defaults for the dtype (precision.DTYPE_TOLERANCES), u its unit
    roundoff, N the element's gross scale (the terms a straightforward computation adds up to it: s_j A + a_j
    for a cross-entropy gradient element; losses/base.py's Scales.gross) and lambda = |log s_j| (|log s_i| +
    |log s_j| for a Jacobian element; 0 for a row loss, whose gross scale holds its logs already). torch's
    pair alone is for comparing two results in the same dtype; against the float64 reference a correct
    implementation also carries the rounding of what it keeps in the dtype: a log-probability held in it
    (torch's autograd keeps log_softmax's output for the backward) is off by u |log s_j|, which moves s_j,
    and every element built on it, by that much relative; its own terms round by u N. Without that term
    torch's own float16 F.cross_entropy fails rtol 1e-3 in 95 of 200 random cases at logit scales 0.1 to
    100 (an element 0.01746 comes back 0.01741: log s_j = -4.05 is held to float16's 2^-9 spacing there).
(b) the baseline verdict: the user's error must be no worse than that of gradcheck's plain implementation
    of the loss in the same dtype (numerics/baselines.py, one formula per loss: rounded after every
    operation, sums pairwise, the gradient from the log-probabilities it kept, as autograd's log_softmax
    backward does). Each element's error is counted in units in the last place (ulp) of its gross scale N
    (the ulp a straightforward computation of it rounds at, so an element that nearly cancels is not held to
    the ulp of its tiny value), and the errors of a quantity are summed up as their root mean square E:
        E(user) <= SLACK E(baseline) + FLOOR.
    The mean, not the largest: a largest error is one element's draw of rounding, which two correct codes
    can draw far apart at a single element of small probability, while a real accuracy bug, such as a class
    sum accumulated in the dtype, moves every element of the row; and a largest absolute error is the largest
    element's, which hides a 36 % error of every small probability behind one ulp of the label's gradient
    element (a running bfloat16 sum over 1,024 classes does exactly that, and passed that rule).
    SLACK = 2 is flash-attention's factor for its kernels against a same-dtype PyTorch implementation: two
    correct implementations round at different places. FLOOR = 1 ulp covers the one rounding every stored
    value pays (half an ulp) twice over, where the plain implementation happens to be exact, and the draw of
    a few elements' rounding: a reverse-kl row loss near 0 (q close to p) is a cancellation whose rounding is
    at its gross scale, and torch's float16 code drew just over 2 times the baseline's over 4 rows. A floor of
    one ulp of each value itself (in place of one of its gross scale) failed that correct code, so it is not
    used, though it would catch a jsd whose class sum runs in bfloat16 over 1,024 classes (0.74 ulp of a
    gross scale ~100 times the element; over 2,048 flatter ones it fails as it is: tests/test_baselines.py).
    Measured on torch 2.13's F.cross_entropy (200 random cases of 1 to 8 rows, 2 to 300 classes, logit
    scales 0.1 to 100, every reduction; tests/test_half_precision.py): E(torch) used at most 0.49 (bfloat16)
    and 0.44 (float16) of what is allowed. The planted bugs (a class sum accumulated in the dtype: float16
    over 2,000 classes, bfloat16 over 1,024, jsd's over 2,048; every loss) fail it, their upcast versions pass
    (tests/test_half_precision.py, tests/test_baselines.py).
    Reported: the user's and the baseline's E, their ratio, the largest absolute errors, and what is allowed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from gradcheck_cli.checks.compare import compare
from gradcheck_cli.numerics.precision import DTYPE_TOLERANCES, Baseline, baseline_jacobian, spacing
from gradcheck_cli.report import BaselineFigures, CheckResult
from gradcheck_cli.settings import LOW_PRECISION

if TYPE_CHECKING:
    from gradcheck_cli.numerics.losses.base import Loss
    from gradcheck_cli.numerics.softmax import Softmax
    from gradcheck_cli.settings import Settings

SLACK = 2.0
FLOOR = 1.0


def plain_baseline(logits: np.ndarray, loss: Loss, settings: Settings) -> Baseline:
    """gradcheck's plain implementation of the loss in --dtype, at logits already rounded to it: every loss of
    the registry has one (numerics/baselines.py), its options and logit transforms included."""
    from gradcheck_cli.numerics.baselines import plain_baseline as computed

    return computed(logits, loss, settings.dtype)


def baseline_value(baseline: Baseline, name: str, settings: Settings) -> np.ndarray:
    """The plain implementation's value of a quantity a user gives: probabilities, jacobian, loss or gradient."""
    if name == "probabilities":
        return baseline.probabilities
    if name == "jacobian":
        return baseline_jacobian(baseline, settings.temperature, settings.dtype)
    if name == "gradient":
        return _upstream(baseline.gradient, settings)
    return baseline.loss if settings.reduction != "none" else baseline.row_losses


def _upstream(gradient: np.ndarray, settings: Settings) -> np.ndarray:
    """sum_n g_n grad l_n (--grad-output) as the plain code forms it: g rounded to the dtype, one product each."""
    from gradcheck_cli.numerics.losses.base import upstream_gradient
    from gradcheck_cli.numerics.precision import round_to

    if getattr(settings, "grad_output", None) in (None, "ones"):
        return gradient
    g = round_to(upstream_gradient(settings, gradient.shape[0]), settings.dtype)
    return round_to(gradient * (g.reshape(-1, 1) if g.ndim else g), settings.dtype)


def held_lse(loss: Loss, logits: np.ndarray, parts: Softmax) -> np.ndarray | None:
    """Each row's log-sum-exp where the loss's code holds it in the dtype (a z-loss, through torch.logsumexp),
    for half_precision_tolerance's `lse`; None for every other loss. `parts`: the loss's softmax of `logits`."""
    if getattr(getattr(loss, "inner", loss), "z_weights", None) is None:
        return None
    from gradcheck_cli.numerics.losses.z_loss import log_sum_exp

    return log_sum_exp(loss.entering(logits), parts, loss.temperature)


def half_precision_tolerance(name: str, expected: np.ndarray, gross: np.ndarray, log_s: np.ndarray,
                             dtype: str, lse: np.ndarray | None = None) -> np.ndarray:
    """Verdict (a)'s tolerance of each element of a quantity (module docstring): `gross` its gross scales,
    `log_s` the reference's log-probabilities (N x C). `lse` (N), for a loss whose code holds each row's
    log-sum-exp in the dtype (a z-loss S lse^2 through torch.logsumexp): its backward takes exp(u_j - lse),
    which that rounding moves by u |lse| relative, beyond u |log s_j| where |lse| is the larger (torch's
    float16 z-loss at |lse| 118 is 3 % off, 1.27 times the tolerance without it)."""
    from gradcheck_cli.numerics.precision import FORMATS

    pair = DTYPE_TOLERANCES[dtype]
    size = np.abs(log_s)
    if lse is not None and name == "gradient":
        size = np.maximum(size, np.abs(np.asarray(lse)).reshape(-1, 1))
    if name == "jacobian":
        size = size[:, :, None] + size[:, None, :]
    elif name == "loss":
        size = np.zeros(())
    with np.errstate(invalid="ignore", over="ignore"):
        held = FORMATS[dtype].unit_roundoff * (1.0 + size) * np.abs(gross)
        return pair.atol + pair.rtol * np.abs(expected) + np.nan_to_num(held, nan=0.0, posinf=0.0)


def half_precision_checks(
    name: str, actual: np.ndarray, expected: np.ndarray, tolerance: np.ndarray, baseline: np.ndarray,
    gross: np.ndarray, settings: Settings, what: str
) -> list[CheckResult]:
    """Verdicts (a) and (b) on one quantity: `actual` the user's, `expected` the float64 reference, `tolerance`
    (a)'s (half_precision_tolerance), `baseline` the plain implementation's, `gross` each element's gross scale,
    all of one shape; `what` names the user's values in a description."""
    dtype = settings.dtype
    assert dtype in LOW_PRECISION
    pair = DTYPE_TOLERANCES[dtype]
    within = compare(name, actual, expected, tolerance, 0.0,
                     description=f"{what} vs gradcheck's reference, within {dtype}'s tolerance (rtol {pair.rtol:g}, "
                                 f"atol {pair.atol:g}, and the rounding of what a correct {dtype} code holds in it)")
    return [within, baseline_check(f"{name} vs {dtype} baseline", actual, expected, baseline, gross, dtype,
                                             what)]


def baseline_check(
    name: str, actual: np.ndarray, expected: np.ndarray, baseline: np.ndarray, gross: np.ndarray, dtype: str,
    what: str
) -> CheckResult:
    """Verdict (b): the user's root-mean-square error in ulp against the plain implementation's (module
    docstring); `gross` is each element's gross scale, whose ulp its error is counted in. Summed a chunk of rows
    at a time (a few chunk-sized temporaries)."""
    actual, expected, baseline = (np.atleast_1d(np.asarray(x)) for x in (actual, expected, baseline))
    gross = np.broadcast_to(np.abs(gross), expected.shape) if np.ndim(gross) else np.abs(gross)
    errors = BaselineErrors(expected.shape, dtype, indexed=bool(np.ndim(gross)))
    step = max(1, _CHUNK_ELEMENTS // errors.width)
    for start in range(0, expected.shape[0], step):
        part = slice(start, start + step)
        errors.add(start, actual[part], expected[part], baseline[part], gross[part] if np.ndim(gross) else gross)
    return errors.result(name, baseline_description(what, dtype))


def baseline_description(what: str, dtype: str) -> str:
    return (f"{what}: root-mean-square error in ulp at most {SLACK:g} x that of a plain {dtype} implementation + "
            f"{FLOOR:g}")


class BaselineErrors:
    """What verdict (b) needs of the errors, kept per row (a few numbers a row, whatever C) as chunks of whole
    rows arrive, so the verdict, its figures and its worst element do not depend on how the rows were cut: the
    sums are the rows' sums added at the end, the worst element the first of the largest in row-major order."""

    def __init__(self, shape: tuple[int, ...], dtype: str, indexed: bool = True) -> None:
        rows = shape[0]
        self.shape, self.dtype, self.indexed = shape, dtype, indexed
        self.width = max(int(np.prod(shape[1:])), 1)
        self.squares, self.baseline_squares = np.zeros(rows), np.zeros(rows)  # sum of (error / ulp)^2
        self.error, self.baseline_error, self.relative = np.zeros(rows), np.zeros(rows), np.zeros(rows)
        self.worst, self.column = np.zeros(rows), np.zeros(rows, dtype=np.int64)  # largest error / ulp, where
        self.actual, self.expected = np.zeros(rows), np.zeros(rows)  # at that element

    def add(self, start: int, actual: np.ndarray, expected: np.ndarray, baseline: np.ndarray,
            gross: np.ndarray) -> None:
        """The errors of rows start, start + 1, ... (`gross`: each element's gross scale, or one for all)."""
        count = expected.shape[0]
        rows = slice(start, start + count)
        actual, baseline = actual.reshape(count, -1), baseline.reshape(count, -1)
        expected = expected.astype(np.float64, copy=False).reshape(count, -1)
        unit = spacing(gross, self.dtype)
        unit = unit.reshape(count, -1) if np.ndim(unit) else unit
        with np.errstate(invalid="ignore", over="ignore"):
            error = np.abs(actual - expected)
            missed = np.abs(baseline - expected)
            self.error[rows], self.baseline_error[rows] = error.max(axis=1), missed.max(axis=1)
            missed /= unit
            self.baseline_squares[rows] = np.square(missed, out=missed).sum(axis=1)
            size = np.maximum(np.maximum(np.abs(actual), np.abs(expected)), np.finfo(np.float64).tiny)
            self.relative[rows] = (error / size).max(axis=1)
            error /= unit
            in_ulps = np.nan_to_num(error, nan=np.inf)
            column = np.argmax(in_ulps, axis=1)
            self.column[rows] = column
            self.worst[rows] = np.take_along_axis(in_ulps, column[:, None], axis=1)[:, 0]
            self.actual[rows] = np.take_along_axis(actual, column[:, None], axis=1)[:, 0]
            self.expected[rows] = np.take_along_axis(expected, column[:, None], axis=1)[:, 0]
            self.squares[rows] = np.square(error, out=error).sum(axis=1)

    def result(self, name: str, description: str) -> CheckResult:
        """Verdict (b): root-mean-square error in ulp against SLACK x the plain implementation's + FLOOR, its
        figures, and the element that weighs most in it."""
        count = self.squares.size * self.width
        with np.errstate(invalid="ignore", over="ignore"):
            ulps = float(np.sqrt(self.squares.sum() / count))
            baseline_ulps = float(np.sqrt(self.baseline_squares.sum() / count))
        allowed = SLACK * baseline_ulps + FLOOR
        finite = bool(np.isfinite(self.error).all()) and np.isfinite(ulps) and np.isfinite(baseline_ulps)
        row = int(np.argmax(self.worst))  # the first row of the largest: row-major order, as one argmax over all
        at = row * self.width + int(self.column[row])
        error = float(self.error.max()) if finite else None
        figures = BaselineFigures(
            dtype=self.dtype, error=error,
            baseline_error=float(self.baseline_error.max()) if np.isfinite(baseline_ulps) else None,
            ratio=ulps / baseline_ulps if finite and baseline_ulps > 0 else None,
            ulps=ulps if finite else None, baseline_ulps=baseline_ulps if np.isfinite(baseline_ulps) else None,
            allowed=allowed if np.isfinite(allowed) else None,
        )
        return CheckResult(
            name=name, passed=finite and ulps <= allowed, max_abs_error=error,
            max_rel_error=float(self.relative.max()) if finite else None,
            worst_index=tuple(int(i) for i in np.unravel_index(at, self.shape)) if self.indexed else (),
            actual=float(self.actual[row]), expected=float(self.expected[row]), description=description,
            worst_share=ulps / allowed if finite else float("inf"), elements=count, mismatches=None,
            baseline=figures)


_CHUNK_ELEMENTS = 1 << 18  # elements per chunk of baseline_check's sums: 2 MB per float64 temporary


def precision_notes(settings: Settings) -> list[str]:
    """What a report at --dtype bfloat16 or float16 says about where its reference comes from."""
    if settings.dtype not in LOW_PRECISION:
        return []
    dtype = settings.dtype
    return [(f"--dtype {dtype}: the logits are rounded to {dtype}; the reference and its finite differences are "
             f"float64 at those logits (differences taken in {dtype} would be swamped by its rounding); your values "
             f"get two verdicts: {dtype}'s tolerance, and a baseline: at most {SLACK:g} x the error of a plain "
             f"{dtype} implementation + {FLOOR:g} ulp")]
