"""The slips that follow another convention or compute another function: smoothing, ignored rows, the
upstream gradient, a second softmax, log-probabilities, the wrong axis, shifted labels, the KL direction,
an overflowing softmax.

Each function is one catalogue id: its docstring has the formula it tests (a[n, c] are cross-entropy's
coefficients, l_n = -sum_c a log s with s = softmax(z / T), y the labels, eps the label smoothing) and a
real-world source. The wrong models' own quantities are in slip_formulas.py.
"""

from __future__ import annotations

import numpy as np

from gradcheck_cli.checks import slip_formulas
from gradcheck_cli.checks.slip_context import Candidate, Evidence, number
from gradcheck_cli.checks.slip_scales import REDUCED, times
from gradcheck_cli.settings import DIVIDING_REDUCTIONS


def smoothing_convention(evidence: Evidence) -> list[Candidate]:
    """smoothing-convention: another label-smoothing convention than torch's a = (1 - eps) y + (eps / C) u.

    The loss and gradient are linear in the coefficients a, and the divisor does not depend on eps, so with
    G_y (eps = 0) and G_u (eps = 1) every convention a = alpha y + beta u / C gives alpha G_y + beta G_u:
    ESPnet/icefall's eps / (C - 1) to every other class and 1 - eps to the label (beta = eps C / (C - 1),
    alpha = 1 - beta); eps / (C - 1) added to every class (alpha = 1 - eps, beta = eps C / (C - 1)); fastai's
    1 - eps C / (C - 1) for the label plus eps / C everywhere (alpha = 1 - eps C / (C - 1), beta = eps); the
    conversion applied backwards (beta = eps (C - 1) / C); no smoothing at all; and, last, the eps that
    fits the user's values best (a smoothing applied where none, or another one, was asked).

    Source: icefall #107 (ESPnet's K - 1 against torch's K), Liger-Kernel PR #1260 (issue 15), fastai PR #1814
    (the label's weight scaled by C / (C - 1)), pytorch #7455's comments (eps / (C - 1) added to the label
    too), Liger-Kernel #243 (smoothing never applied in the fused loss).
    """
    context = evidence.context
    eps, classes = context.settings.label_smoothing, context.classes
    if context.settings.loss != "cross_entropy" or classes < 2:
        return []
    label_only, uniform = context.reference_with(label_smoothing=0.0), context.reference_with(label_smoothing=1.0)
    wide = eps * classes / (classes - 1)
    conventions = [
        (1 - wide, wide, f"ε/(C-1) = {number(eps / (classes - 1))} to each other class, 1 - ε to the label (icefall)"),
        (1 - eps, wide, f"ε/(C-1) = {number(eps / (classes - 1))} added to every class, the label's 1 - ε too"),
        (1 - wide, eps, f"a label weight of 1 - ε·C/(C-1) = {number(1 - wide)} (fastai before PR #1814)"),
        (1 - eps * (classes - 1) / classes, eps * (classes - 1) / classes,
         f"ε·(C-1)/C = {number(eps * (classes - 1) / classes)}: the convention converted the wrong way"),
        (1.0, 0.0, f"no label smoothing where ε = {number(eps)} was asked"),
    ]
    candidates = [_smoothed(label_only, uniform, alpha, beta, text) for alpha, beta, text in conventions if eps > 0]
    change = uniform - label_only
    finite = np.isfinite(evidence.actual) & np.isfinite(change)
    squares = float((change[finite] ** 2).sum())
    if squares > 0:  # the eps that fits the user's values best, when it is a smoothing at all
        fitted = float(((evidence.actual - label_only)[finite] * change[finite]).sum()) / squares
        if 0 < fitted <= 1:
            text = f"smoothing ε = {number(fitted)} where {number(eps)} was asked"
            candidates.append(_smoothed(label_only, uniform, 1 - fitted, fitted, text)._replace(fitted=True))
    return candidates


def _smoothed(label_only: np.ndarray, uniform: np.ndarray, alpha: float, beta: float, text: str) -> Candidate:
    """alpha G_y + beta G_u, whose rounding is that of |alpha| + |beta| references."""
    return Candidate(alpha * label_only + beta * uniform, f"the reference with {text}", "another label-smoothing "
                     "convention", slack=max(abs(alpha) + abs(beta), 1.0), parameter=beta)


def ignored_rows_not_zeroed(evidence: Evidence) -> list[Candidate]:
    """ignored-rows-not-zeroed: the rows labelled ignore_index keep a loss and a gradient.

    With the ignored label K a class (0 <= K < C): the reference with ignore_index None (K a class, its rows
    in the divisor) and the same with torch's divisor D (the rows counted, not zeroed). With K out of range
    (torch's -100) those rows' values cannot be predicted: the rows not ignored must be the reference's (or
    D / N times it, divided by every row) and every ignored row nonzero, a partial match that leaves them
    unexplained.

    Source: PaddlePaddle PR #28622 (gradients left on the elements labelled ignore_idx).
    """
    context = evidence.context
    ignore = context.settings.ignore_index
    if context.labels is None or ignore is None or context.kept.all() or evidence.quantity not in REDUCED:
        return []
    ignored = ~context.kept
    meaning = f"the rows labelled {ignore} (ignore_index) are not zeroed"
    if 0 <= ignore < context.classes:
        counted = context.reference_with("counted", ignore_index=None)
        every = context.divisor_of("counted")  # the whole input's divisor with no row ignored
        if every is None:
            every = float(context.class_weights[context.labels].sum())
        candidates = [Candidate(counted, f"the reference with class {ignore} not ignored", meaning)]
        if context.settings.reduction in DIVIDING_REDUCTIONS:
            factor = every / context.divisor
            candidates.append(Candidate(counted * factor, f"the reference with class {ignore} not ignored, "
                                        f"still divided by {number(context.divisor)}", meaning, slack=factor))
        return candidates
    if evidence.actual.ndim == 0:
        return []
    candidates = [Candidate(evidence.reference, "the reference on the rows not ignored", meaning, unpredicted=ignored)]
    if context.settings.reduction in DIVIDING_REDUCTIONS:
        factor = context.divisor / context.count
        candidates.append(Candidate(evidence.reference * factor, times(factor, f"divided by N = {context.count}") +
                                    " on the rows not ignored", meaning, slack=factor, unpredicted=ignored))
    return candidates


def grad_output_broadcast(evidence: Evidence) -> list[Candidate]:
    """grad-output-broadcast: sum_n g_0 grad l_n where sum_n g_n grad l_n is asked: every row scaled by the
    first row's upstream gradient (a scalar load of grad_output) instead of its own.

    Source: Liger-Kernel PR #1298 (element_mul_kernel loads grad_output[0] for reduction none); paiml/aprender
    PR #2182 (only grad_output[0] read).
    """
    upstream = evidence.context.upstream
    if upstream is None or np.ndim(upstream) == 0 or evidence.quantity != "gradient":
        return []
    first = np.full_like(upstream, upstream[0])
    predicted = evidence.context.reference_with(upstream=first)
    return [Candidate(predicted, f"every row scaled by g_0 = {number(float(upstream[0]))}",
                      "the upstream gradient is broadcast from its first element instead of one per row")]


def double_softmax(evidence: Evidence) -> list[Candidate]:
    """double-softmax: the loss applied to s = softmax(z / T) as if it were logits: L(softmax(s)), gradient
    J(s)^T / T grad_s L (and softmax(s / T) again when T is not 1).

    Source: ariecattan/SciCo #2 (probabilities fed to CrossEntropyLoss: a loss that cannot drop below 0.74);
    Lightning-Universe/lightning-bolts #654 (nll_loss(log_softmax(softmax(x)))).
    """
    context = evidence.context
    seconds = [1.0] if context.temperature == 1.0 else [1.0, context.temperature]
    meaning = "the probabilities were fed to a loss that applies softmax again"
    return [Candidate(slip_formulas.double_softmax(context, evidence.quantity, second),
                      f"the {evidence.quantity} with softmax applied twice, softmax(softmax(z/T)"
                      + (")" if second == 1.0 else "/T)"), meaning)
            for second in seconds]


def log_probabilities_as_logits(evidence: Evidence) -> list[Candidate]:
    """log-probabilities-as-logits: logits and log-probabilities confused. The loss -sum a z / T (gradient
    -a / T): the logits taken for log-probabilities, log-softmax skipped; probabilities e^(z/T); and the
    log-sum-exp of log-probabilities, 0.

    Source: octo-models/octo PR #79 (a discrete loss on raw logits, no log-softmax); pytorch PR #12703
    (NLLLoss's documented example without its LogSoftmax).
    """
    return _formula(slip_formulas.logits_as_log_probabilities(evidence.context, evidence.quantity),
                    f"the {evidence.quantity} with the logits z/T taken as log-probabilities",
                    "the log-softmax is missing (logits used as log-probabilities)")


def softmax_instead_of_log(evidence: Evidence) -> list[Candidate]:
    """softmax-instead-of-log: l = -sum a s in place of -sum a log s, gradient -J(s) a / T.

    Source: AnubhavGupta3377/Text-Classification-Models-Pytorch #9 and midas-research/man-sf-emnlp #2
    (NLLLoss fed softmax output instead of log-softmax).
    """
    return _formula(slip_formulas.softmax_instead_of_log(evidence.context, evidence.quantity),
                    f"the {evidence.quantity} of -Σ y s", "s was used where log s belongs")


def transposed(evidence: Evidence) -> list[Candidate]:
    """transposed: the softmax taken over the batch axis (softmax(z, dim=0)), and, for a square batch, the
    reference's N x C array transposed.

    Source: perone/euclidesdb #2 and Lackel/DPN #1 (softmax over dim 0 of a batch).
    """
    context, quantity = evidence.context, evidence.quantity
    if context.sampled:  # a column's softmax sums over every row of the input: a sample cannot say
        return []
    candidates = []
    columns = slip_formulas.batch_axis_softmax(context, quantity)
    if columns is not None:
        candidates.append(Candidate(columns, f"the {quantity} with the softmax over the batch axis (dim 0)",
                                    "the softmax is taken over the wrong axis"))
    if evidence.reference.ndim == 2 and context.rows == context.classes:
        candidates.append(Candidate(evidence.reference.T, "the reference transposed", "rows and classes are swapped"))
    return candidates


def label_shift(evidence: Evidence) -> list[Candidate]:
    """label-shift: the labels off by one, y + 1 or y - 1 modulo C (1-based labels, or an index shifted),
    ignored rows left as they are; for target rows, the rows rolled by one class.

    Source: mlverse/torch PR #681 (R's 1-based labels: cross-entropy became 0-based again).
    """
    context = evidence.context
    candidates = []
    for shift in (1, -1):
        targets = np.roll(context.targets, shift, axis=1)
        changes: dict[str, np.ndarray] = {"targets": targets}
        if context.labels is not None:
            changes["labels"] = np.where(context.kept, (context.labels + shift) % context.classes, context.labels)
        candidates.append(Candidate(context.reference_with(f"shift{shift:+d}", **changes),
                                    f"the reference with every label {shift:+d}",
                                    f"the labels are off by {shift:+d}"))
    return candidates


def kl_direction(evidence: Evidence) -> list[Candidate]:
    """kl-direction: KL(q || p) where KL(p || q) is asked, or the other way round (p the teacher's softmax,
    q the student's): sum q (log q - log p), gradient q (r - <q, r>) / T with r = log q - log p.

    Source: huggingface/trl PR #4935 (forward and reverse KL swapped, kl_div's arguments read the other way);
    paiml/aprender PR #2153 (a distillation loss computing reverse KL).
    """
    return _formula(slip_formulas.other_kl_direction(evidence.context, evidence.quantity),
                    f"the {evidence.quantity} of the KL divergence in the other direction",
                    "KL(student || teacher) and KL(teacher || student) are swapped")


def no_max_subtraction(evidence: Evidence) -> list[Candidate]:
    """no-max-subtraction: the reference wherever e^(z/T) is finite, and NaN or infinity only on the rows where
    a softmax without the row maximum subtracted overflows (float64, or float32).

    Source: examples/my_softmax.py `naive_softmax_cross_entropy` (logit 1000 gives inf / inf); ml-explore/mlx
    PR #4188 (shift by the max in cross_entropy).
    """
    actual = evidence.actual
    if np.isfinite(actual).all():
        return []
    candidates = []
    for dtype, rows in slip_formulas.overflowing_rows(evidence.context.logits, evidence.context.temperature):
        if not rows.any():
            continue
        unpredicted = rows if actual.ndim else np.array([True])
        shown = ", ".join(str(row) for row in np.flatnonzero(rows)[:5]) + (", ..." if rows.sum() > 5 else "")
        what = f"the reference except for NaN or infinity from the rows where e^(z/T) overflows in {dtype} ({shown})"
        candidates.append(Candidate(evidence.reference, what, "the softmax does not subtract the row maximum",
                                    unpredicted=unpredicted, expects="non-finite"))
    return candidates


def _formula(predicted: np.ndarray | None, description: str, meaning: str) -> list[Candidate]:
    """One candidate from a slip's formula, none where the formula does not apply to this input."""
    return [] if predicted is None else [Candidate(predicted, description, meaning)]
