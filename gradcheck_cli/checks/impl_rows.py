"""--impl's loss and gradient against gradcheck's reference, a chunk of rows at a time (runner.py's chunks).

The user's function is called once on the whole input (its loss is the whole batch's); its answer is then
compared in chunks of rows, so that only a chunk's float64 temporaries exist beside the input and the answer.
The gradient is compared element by element in each chunk, and compare.merge folds the chunks exactly. What
needs every row at once is kept per row, N numbers each whatever C: the reference's row losses and their
tolerances (the loss checks, and the reduced loss's sum), and, at bfloat16 and float16, each row's sum of
squared errors in ulp, largest errors and worst element for the gradient's baseline verdict. finish() makes
those checks from them; a row is always whole in one chunk, so no verdict, figure or worst element depends on
the chunking (tests/test_impl_scale.py checks a chunk of one row against the whole).

Tolerances are those of impl._reference_checks' docstring (the same functions: rows.supplied_reference, the
dtype's tolerance and baseline of checks/precision.py), only evaluated a chunk at a time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from gradcheck_cli.checks.compare import compare
from gradcheck_cli.report import CheckResult
from gradcheck_cli.settings import DIVIDING_REDUCTIONS

if TYPE_CHECKING:
    from gradcheck_cli.checks.precision import BaselineErrors
    from gradcheck_cli.checks.returned import Returned
    from gradcheck_cli.numerics.losses.base import Loss
    from gradcheck_cli.numerics.softmax import Softmax
    from gradcheck_cli.settings import Settings



class RowsCompared:
    """The comparisons of one answer of the user's function, chunk by chunk (module docstring).

    `upstream` is g as the answer's gradient is taken to weigh the rows (one number, or one per row)."""

    def __init__(self, first: Returned, settings: Settings, upstream: np.ndarray, rows: int) -> None:
        from gradcheck_cli.settings import LOW_PRECISION

        self.first, self.settings, self.upstream = first, settings, upstream
        self.low = settings.dtype in LOW_PRECISION
        self.loss = np.zeros(rows)  # the reference's row losses
        self.loss_tolerance = np.zeros(rows)  # beyond rtol (float32/64), or the gross scales (half precision)
        self.baseline_rows = np.zeros(rows)  # the plain half-precision implementation's row losses
        self.gradient_errors: BaselineErrors | None = None  # verdict (b) of the gradient, in half precision
        if self.low:
            from gradcheck_cli.checks.precision import BaselineErrors

            assert first.gradient is not None
            self.gradient_errors = BaselineErrors(first.gradient.shape, settings.dtype)
        self.reference: Loss | None = None  # a chunk's reference loss: its reduction, scale and normalizer

    def chunk(self, rows: slice, logits: np.ndarray, reference: Loss) -> CheckResult:
        """The gradient's element-by-element checks on these rows (indices within the chunk); the rest is kept."""
        from gradcheck_cli.checks.rows import supplied_reference
        from gradcheck_cli.numerics.losses.base import rounding_factor
        from gradcheck_cli.numerics.softmax import softmax_parts

        settings, first = self.settings, self.first
        assert first.gradient is not None and settings.rtol is not None
        self.reference = reference
        g = self.upstream[rows] if self.upstream.ndim else self.upstream
        weighted = settings._replace(grad_output=tuple(np.ravel(g).tolist()))
        parts = softmax_parts(logits / settings.temperature)
        actual = np.asarray(first.gradient[rows])
        if self.low:
            return self._half_precision(rows, logits, parts, reference, weighted, actual, g)
        rho = rounding_factor(logits, settings.temperature)
        self.loss[rows], self.loss_tolerance[rows] = supplied_reference("loss", logits, parts, reference, settings, rho)
        gradient, tolerance = supplied_reference("gradient", logits, parts, reference, weighted, rho)
        return compare("impl gradient", actual, gradient, tolerance, settings.rtol,
                       description="your gradient vs gradcheck's reference")

    def _half_precision(self, rows: slice, logits: np.ndarray, softmax: Softmax, reference: Loss,
                        weighted: Settings, actual: np.ndarray, g: np.ndarray) -> CheckResult:
        """Verdict (a) on the gradient's elements; the row sums of verdict (b), and the loss's rows, kept."""
        from gradcheck_cli.checks.precision import baseline_value, half_precision_tolerance, held_lse, plain_baseline

        baseline = plain_baseline(logits, reference, weighted)
        self.loss[rows] = reference.row_losses(logits, softmax)
        self.loss_tolerance[rows] = reference.loss_scales(logits, softmax).gross
        self.baseline_rows[rows] = baseline.row_losses
        # The reference gradient sum_n g_n grad l_n and its gross scales times |g_n| (rows._upstream's rule).
        weight = g.reshape(-1, 1) if g.ndim else g
        expected = reference.gradient(logits, softmax) * weight
        gross = np.broadcast_to(reference.gradient_scales(logits, softmax).gross * np.abs(weight), expected.shape)
        dtype = self.settings.dtype
        tolerance = half_precision_tolerance("gradient", expected, gross, softmax.log_s, dtype,
                                             held_lse(reference, logits, softmax))
        assert self.gradient_errors is not None
        self.gradient_errors.add(rows.start, actual, expected, baseline_value(baseline, "gradient", weighted), gross)
        return compare("impl gradient", actual, expected, tolerance, 0.0, description=_within(dtype, "gradient"))

    def finish(self, gradient: CheckResult) -> list[CheckResult]:
        """The loss's checks, the merged gradient check (`gradient`) and, in half precision, its baseline verdict:
        in the order impl._reference_checks gives them."""
        first, settings, reference = self.first, self.settings, self.reference
        assert reference is not None and settings.rtol is not None
        if self.low:
            assert self.gradient_errors is not None
            from gradcheck_cli.checks.precision import baseline_description

            return [*self._half_precision_loss(reference), gradient, self.gradient_errors.result(
                f"impl gradient vs {settings.dtype} baseline",
                baseline_description("the gradient you computed", settings.dtype))]
        from gradcheck_cli.numerics.precision import FORMATS

        expected, tolerance = self.loss, self.loss_tolerance
        if settings.reduction != "none":
            rows = expected
            expected = np.asarray(reference.reduce(rows))
            summed = FORMATS[settings.dtype].unit_roundoff * (2.0 + np.log2(rows.size)) * np.abs(rows).sum()
            tolerance = reference.scale * (tolerance.sum() + summed)
        return [compare("impl loss", first.loss, expected, tolerance, settings.rtol,
                        description="your loss vs gradcheck's reference"), gradient]

    def _half_precision_loss(self, reference: Loss) -> list[CheckResult]:
        """Verdicts (a) and (b) on the loss (rows._half_precision_reference and _reduced_loss_reference's values,
        from the rows kept): per row, or one number whose baseline is the plain rows' pairwise sum in the dtype."""
        from gradcheck_cli.checks.precision import half_precision_checks, half_precision_tolerance
        from gradcheck_cli.numerics.precision import round_to, rounded_sum

        settings, dtype = self.settings, self.settings.dtype
        expected, gross, baseline = self.loss, np.abs(self.loss_tolerance), self.baseline_rows
        if settings.reduction != "none":
            expected = np.asarray(reference.reduce(self.loss))
            gross = np.asarray(reference.scale * (2.0 + np.log2(max(self.loss.size, 1))) * float(gross.sum()))
            with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
                baseline = rounded_sum(baseline, dtype)
                if settings.reduction in DIVIDING_REDUCTIONS:  # mean, and batchmean (kl_div)
                    baseline = round_to(baseline / reference.normalizer, dtype)
        tolerance = half_precision_tolerance("loss", expected, gross, np.zeros(()), dtype)
        return half_precision_checks("impl loss", np.reshape(self.first.loss, expected.shape), expected, tolerance,
                                     np.asarray(baseline), gross, settings, "the loss you computed")


def _within(dtype: str, name: str) -> str:
    """Verdict (a)'s description, as precision.half_precision_checks words it."""
    from gradcheck_cli.numerics.precision import DTYPE_TOLERANCES

    pair = DTYPE_TOLERANCES[dtype]
    return (f"the {name} you computed vs gradcheck's reference, within {dtype}'s tolerance (rtol {pair.rtol:g}, "
            f"atol {pair.atol:g}, and the rounding of what a correct {dtype} code holds in it)")
