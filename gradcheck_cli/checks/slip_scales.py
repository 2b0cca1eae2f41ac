"""The slips that multiply the whole reference by one number: a divisor, a factor, a sign, a temperature.

Each function is one catalogue id: its docstring has the formula it tests (g is the reference, D the mean's
divisor under torch's convention, N rows, C classes, T the temperature) and a real-world source. Each
returns Candidates (slip_context.py); one whose values cannot be told from the reference's on this input
(N = 1, T = 1, ...) is dropped by the diagnosis, so a slip that changes nothing is never named.
"""

from __future__ import annotations

import numpy as np

from gradcheck_cli.checks.slip_context import (
    DISTILLATION_LOSSES,
    TIMES,
    Candidate,
    Evidence,
    SlipContext,
    number,
    scaled,
)
from gradcheck_cli.settings import DIVIDING_REDUCTIONS

REDUCED = ("loss", "gradient")  # the quantities a reduction or a loss-level factor multiplies
KL_LOSSES = DISTILLATION_LOSSES  # torch.nn.functional.kl_div's reductions: batchmean (/N), mean (/N C)


def times(factor: float, note: str = "") -> str:
    """'3.000 x the reference (N = 3)', with the multiplication sign."""
    return f"{number(factor)} {TIMES} the reference" + (f" ({note})" if note else "")


def divisor_note(context: SlipContext) -> str:
    """'N = 3', 'N C = 30' (kl_div's mean), 'D = 2.5, the summed weights ...'."""
    if context.divisor_name == "N":
        return f"N = {context.count}"
    if context.divisor_name == "N C":
        return f"N C = {mean_divisor(context):.6g}"
    return f"D = {context.divisor:.6g}, {context.divisor_name}"


def _symbol(context: SlipContext) -> str:
    return context.divisor_name if context.divisor_name in ("N", "N C") else "D"


def mean_divisor(context: SlipContext) -> float:
    """What the mean divides by: torch's D under mean and batchmean (N for kl_div's batchmean, N C for its
    mean); under sum and none, what a mean would have (N for the KL losses, whose divisor is then 1)."""
    if context.settings.loss in KL_LOSSES and context.settings.reduction not in DIVIDING_REDUCTIONS:
        return float(context.count)
    return context.divisor


def missing_mean(evidence: Evidence) -> list[Candidate]:
    """missing-mean: L_user = D L and g_user = D g under reduction mean or batchmean: the mean's 1/D was never
    applied (batchmean's D is N, the rows, as torch's kl_div; its mean's N C).

    Source: examples/my_softmax.py `forgot_one_over_n` (a mean loss whose gradient forgets 1/N), the classic
    hand-written backward that the README's pytest example shows failing.
    """
    context = evidence.context
    if context.settings.reduction not in DIVIDING_REDUCTIONS:
        return []
    meaning = f"the {context.settings.reduction}'s 1/{_symbol(context)} is missing from the {evidence.quantity}"
    return [scaled(evidence.reference, context.divisor, times(context.divisor, divisor_note(context)), meaning)]


def extra_mean(evidence: Evidence) -> list[Candidate]:
    """extra-mean: g_user = g / D: divided by D once more than the reduction asks (a mean of a mean, a batchmean
    divided by N twice, or a mean where the reduction is sum or none: D then the divisor a mean would have,
    N for the KL losses).

    Source: paiml/aprender PR #2182 (a sum-reduced cross-entropy whose backward still divided by the batch);
    modelscope/easydistill PR #16 (a distillation loss divided by the token count twice).
    """
    context = evidence.context
    symbol, divisor, reduction = _symbol(context), mean_divisor(context), context.settings.reduction
    if reduction in DIVIDING_REDUCTIONS:
        meaning = f"the {evidence.quantity} is divided by {symbol} twice"
    else:
        mean = "a batchmean" if context.settings.loss in KL_LOSSES else "a mean"
        meaning = f"{mean} (1/{symbol}) where the reduction is {reduction}"
    note = f"1/{symbol}, {divisor_note(context)}"
    return [scaled(evidence.reference, 1.0 / divisor, times(1.0 / divisor, note), meaning)]


def mean_over_elements(evidence: Evidence) -> list[Candidate]:
    """mean-over-elements: g_user = g / C (reduction mean or none; g / (D C) for sum): averaged over the C
    elements of each row too (over all N C elements where sum was asked).

    Source: torch's own `mse_loss` and `kl_div(reduction="mean")` average over every element (README, MATH.md),
    so a port of either to a per-row loss divides by C too many times.
    """
    context = evidence.context
    if context.settings.loss in KL_LOSSES:
        return []  # kl_div's mean is N C already; batchmean-vs-mean names its factor C
    factor = 1.0 / context.classes
    if context.settings.reduction == "sum":
        factor /= context.divisor
    meaning = f"the {evidence.quantity} is averaged over the C classes too (a mean over N {TIMES} C elements)"
    return [scaled(evidence.reference, factor, times(factor, f"C = {context.classes}"), meaning)]


def batchmean_vs_mean(evidence: Evidence) -> list[Candidate]:
    """batchmean-vs-mean: for the KL losses, g_user = g / C when torch's `mean` (sum / (N C)) was used where
    `batchmean` (sum / N) was asked, and g_user = C g the other way round.

    Source: torch.nn.functional.kl_div's documentation (`mean` does not give the KL divergence; `batchmean`
    does), the factor C of issue 14's list of distillation slips.
    """
    context = evidence.context
    reduction = context.settings.reduction
    if context.settings.loss not in KL_LOSSES or reduction not in ("batchmean", "mean"):
        return []
    factor = 1.0 / context.classes if reduction == "batchmean" else float(context.classes)
    used, asked = ("mean", "batchmean") if reduction == "batchmean" else ("batchmean", "mean")
    meaning = f"kl_div's '{used}' where '{asked}' was asked (a factor C = {context.classes})"
    return [scaled(evidence.reference, factor, times(factor, f"C = {context.classes}"), meaning)]


def divisor_convention(evidence: Evidence) -> list[Candidate]:
    """divisor-convention: g_user = g D / D' under reduction mean or batchmean, D' one of N (every row), the
    rows not ignored, and the summed weights sum_n w_{y_n}, whichever torch's D is not; for the KL losses, whose
    rows all count, N (batchmean) and N C (kl_div's mean), whichever was not asked (batchmean-vs-mean, earlier
    in the catalogue, names that factor C first).

    Source: torchtune PR #1875 and transformers #35203 (a mean over the wrong token count); torch divides by
    the summed weights with class weights and labels, by N with probability targets (README).
    """
    context = evidence.context
    if context.settings.reduction not in DIVIDING_REDUCTIONS:
        return []
    if context.settings.loss in KL_LOSSES:
        divisors = {"N, the rows (batchmean)": float(context.count),
                    "N C, every element (kl_div's mean)": float(context.count * context.classes)}
    else:
        divisors = {"N": float(context.count), "the rows not ignored": float(context.kept_count),
                    "Σ w, the summed weights": context.summed_weights}
    candidates = []
    for name, value in divisors.items():
        if value <= 0 or np.isclose(value, context.divisor, rtol=1e-12, atol=0.0):
            continue
        factor = context.divisor / value
        meaning = f"divided by {name} = {value:.4g} where torch divides by {divisor_note(context)}"
        candidates.append(scaled(evidence.reference, factor, times(factor), meaning))
    return candidates


def factor_two(evidence: Evidence) -> list[Candidate]:
    """factor-two: g_user = 2 g (the 1/2 of a 1/2-scaled square differentiated as 2 (s - t)) or g / 2 (an extra 1/2).

    Source: MATH.md, "Slips in the sources": one of the project's source derivations writes the squared
    error's derivative as 2 (s_j - t_j) while defining L with the factor 1/2 (examples/my_softmax.py
    `mse_factor_two`).
    """
    return [
        scaled(evidence.reference, 2.0, times(2.0), "the 1/2 of 1/2 (s - t)^2 was lost in differentiating"),
        scaled(evidence.reference, 0.5, times(0.5), "a factor 1/2 too many"),
    ]


def sign_flip(evidence: Evidence) -> list[Candidate]:
    """sign-flip: g_user = -g: the minus sign of -sum y log s is missing (or the update's sign folded in).

    Source: MATH.md, "Slips in the sources": one source writes the cross-entropy as sum_k t_k log y_k,
    without the minus sign, which gives a gradient of the wrong sign.
    """
    return [scaled(evidence.reference, -1.0, times(-1.0), f"the {evidence.quantity} has the wrong sign")]


def missing_temperature(evidence: Evidence) -> list[Candidate]:
    """missing-temperature: g_user = T g for the gradient and Jacobian (the chain rule's 1/T dropped), or every
    quantity as at T = 1 (softmax(z) where softmax(z / T) was asked).

    Source: issue 15 ("a missing 1/T"); issue 14's trl PR #5731 (a distillation JSD with the wrong temperature).
    """
    context = evidence.context
    temperature = context.temperature
    candidates = []
    if evidence.quantity in ("gradient", "jacobian"):
        candidates.append(scaled(evidence.reference, temperature, times(temperature, f"T = {number(temperature)}"),
                                 f"the chain rule's 1/T is missing from the {evidence.quantity}"))
    candidates.append(Candidate(context.reference_with(temperature=1.0), f"the {evidence.quantity} at T = 1",
                                f"the temperature T = {number(temperature)} was never applied"))
    return candidates


def temperature_squared(evidence: Evidence) -> list[Candidate]:
    """temperature-squared: g_user = T^2 g (Hinton's T^2 scaling applied where it is not asked) or g / T^2 (the
    scaling asked for and left out).

    Source: Hinton, Vinyals and Dean (2015), the T^2 that keeps distillation gradients comparable across T;
    issue 15 ("a missing 1/T or T^2").
    """
    squared, quantity = evidence.context.temperature**2, evidence.quantity
    return [
        scaled(evidence.reference, squared, times(squared, "T²"), f"an extra T² (Hinton's scaling) in the {quantity}"),
        scaled(evidence.reference, 1 / squared, times(1 / squared, "1/T²"), f"the {quantity} lacks its T² scaling"),
    ]


def constant_scale(evidence: Evidence) -> list[Candidate]:
    """constant-scale: g_user = k g for one constant k fitted to the user's values (least squares over every
    element, and the median of the rows' own k, which a majority of rows sharing k decides), named when it is
    N, C, the rows not ignored, the summed weights, T or T^2 (or one over them).

    Source: issue 15; any divisor or weight a port gets wrong, such as a global token count (transformers
    #35203) in place of the batch's.
    """
    actual, reference = evidence.actual, evidence.reference
    rows = actual.reshape(actual.shape[0] if actual.ndim else 1, -1)
    weights = reference.reshape(rows.shape)
    finite = np.isfinite(rows) & np.isfinite(weights)
    products, squares = np.where(finite, rows * weights, 0.0), np.where(finite, weights**2, 0.0)
    fits = [products.sum() / squares.sum()] if squares.sum() > 0 else []
    positive = squares.sum(axis=1) > 0
    if positive.any():
        fits.append(float(np.median(products.sum(axis=1)[positive] / squares.sum(axis=1)[positive])))
    candidates = []
    for fit in fits:
        if not np.isfinite(fit) or fit == 0:
            continue
        named = [(factor, name) for factor, name in _named_factors(evidence.context) if abs(fit / factor - 1) < 1e-3]
        for factor, name in [*named, (fit, "")]:
            meaning = f"one constant factor k multiplies the {evidence.quantity}"
            candidate = scaled(reference, factor, times(factor, f"k = {name}" if name else ""), meaning)
            candidates.append(candidate._replace(fitted=not name))
    return candidates


def _named_factors(context: SlipContext) -> list[tuple[float, str]]:
    """The numbers a constant factor is named after, and their reciprocals."""
    names = [(float(context.count), "N"), (float(context.classes), "C"),
             (float(context.kept_count), "the count of rows not ignored"), (context.summed_weights, "Σ w"),
             (context.temperature, "T"), (context.temperature**2, "T²"),
             (float(context.count * context.classes), "N C")]
    named = [(value, name) for value, name in names if value > 0 and value != 1]
    return named + [(1.0 / value, f"1/({name})" if " " in name else f"1/{name}") for value, name in named]
