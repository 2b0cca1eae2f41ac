"""What a diagnosis knows about the check that failed (SlipContext), how to build it from a batch with the
project's own numerics (context_for), and the Candidate a hypothesis proposes.

A diagnosis asks: which known slip, applied to gradcheck's reference, gives the user's numbers? Each
hypothesis (slip_scales.py, slip_conventions.py) turns the reference into one or more Candidates: the
values the user would have got with that slip. The context carries what they need: the batch, the
settings, the mean's divisor and every row's weight, and `reference_with(**changes)`, the reference of
the same quantity recomputed with some settings or inputs changed (label smoothing, temperature, ignored
label, labels, logits, ...). Plain data and arrays; nothing here prints or knows about click or rich.

A context may hold a sample of the input's rows (slip_sample.py, an input too big to keep): its arrays are
the sample's, and `totals` the whole input's numbers (N, the rows not ignored, the summed weights, the
mean's divisor and the divisors of the conventions a hypothesis recomputes with), so a hypothesis that
involves the whole input (a divisor, a count) uses the whole input's numbers, never the sample's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from gradcheck_cli.batch import Batch
from gradcheck_cli.numerics.exact import exact_sum
from gradcheck_cli.numerics.losses import loss_kind
from gradcheck_cli.numerics.losses.cross_entropy import CrossEntropy
from gradcheck_cli.numerics.softmax import softmax_jacobian, softmax_parts
from gradcheck_cli.settings import Settings

QUANTITIES = ("loss", "gradient", "probabilities", "jacobian", "lse")
DISTILLATION_LOSSES = ("kl", "reverse-kl", "jsd")  # torch kl_div's reductions: batchmean (/N), mean (/N C)
TIMES = "\u00d7"  # the multiplication sign of the descriptions, written as an escape (ruff: it looks like an x)
_BATCH_FIELDS = ("logits", "labels", "targets")


class NeedsWholeInput(ArithmeticError):
    """A hypothesis asked a sampled context for what only the whole input has (a reduced loss of every row, a
    softmax over the batch axis): it is not tried on a sample (diagnose._best leaves it out)."""


class Totals(NamedTuple):
    """The whole input's numbers, for a context that holds a sample of its rows (slip_sample.RowSample).

    `divisors` are the mean's divisor under the conventions hypotheses recompute with, by variant:
    "" torch's, "counted" with no row ignored, "shift+1" / "shift-1" with the labels off by one.
    """

    rows: int
    kept: int
    summed_weights: float
    divisors: dict[str, float]
    sample_rows: np.ndarray  # the input's index of each row of the sample, ascending (row 0 always among them)


@dataclass(frozen=True, eq=False, repr=False)  # holds arrays: == has no truth value
class SlipContext:
    """The failing check's inputs and conventions. Arrays are float64; N rows, C classes.

    `row_scale` is what the reduction multiplies each row's loss by (1/D for mean, 1 for sum and none; for
    the KL losses torch's batchmean 1/N or mean 1/(N C), times T^2 when scaled). `upstream` is the gradient
    flowing into the loss, one number per row (reduction none) or one number, or None for 1: the reference
    gradient is then sum_n g_n grad l_n. `coefficients` are cross-entropy's a[n, c] (l_n = -sum_c a log s),
    None for other losses. `recompute(**changes)` gives the reference of `quantity` with settings fields
    (temperature=1.0, label_smoothing=..., ignore_index=None) and batch fields (logits, labels, targets) or
    `upstream` changed.
    """

    quantity: str
    logits: np.ndarray
    targets: np.ndarray
    labels: np.ndarray | None
    settings: Settings
    divisor: float
    row_scale: float
    kept: np.ndarray
    class_weights: np.ndarray
    recompute: Callable[..., np.ndarray]
    coefficients: np.ndarray | None = None
    upstream: np.ndarray | None = None
    teacher_logits: np.ndarray | None = None
    totals: Totals | None = None  # the whole input's numbers when the arrays hold a sample of its rows

    @property
    def rows(self) -> int:
        """The rows of the arrays: the input's, or its sample's (`count` is the input's N either way)."""
        return int(self.logits.shape[0])

    @property
    def sampled(self) -> bool:
        return self.totals is not None

    @property
    def count(self) -> int:
        """N, the rows of the whole input."""
        return self.rows if self.totals is None else self.totals.rows

    @property
    def classes(self) -> int:
        return int(self.logits.shape[1])

    @property
    def temperature(self) -> float:
        return float(self.settings.temperature)

    @property
    def kept_count(self) -> int:
        """The rows of the whole input not ignored."""
        return int(np.count_nonzero(self.kept)) if self.totals is None else self.totals.kept

    @property
    def summed_weights(self) -> float:
        """sum over the input's rows not ignored of sum_c w_c y[n, c]: w_{y_n} summed, for labels."""
        if self.totals is not None:
            return self.totals.summed_weights
        return exact_sum((self.targets * self.class_weights)[self.kept])

    def input_rows(self, rows: np.ndarray) -> np.ndarray:
        """The input's indices of rows of the arrays (themselves unless the arrays are a sample)."""
        return rows if self.totals is None else self.totals.sample_rows[rows]

    def divisor_of(self, variant: str) -> float | None:
        """The whole input's mean divisor under a convention (Totals.divisors); None when the context holds the
        whole input, whose recomputed reference then divides by its own."""
        return None if self.totals is None else self.totals.divisors[variant]

    @property
    def divisor_name(self) -> str:
        """What the mean's D is, in words: torch's convention for these settings (kl_div's mean: N C)."""
        if self.settings.loss in DISTILLATION_LOSSES:
            return "N C" if self.settings.reduction == "mean" else "N"
        if self.labels is not None and self.settings.weights is not None:
            return "Σ w, the summed weights of the rows not ignored"
        if self.labels is not None and self.kept_count < self.count:
            return "the rows not ignored"
        return "N"

    @property
    def gradient_weights(self) -> np.ndarray:
        """What row n's own gradient is multiplied by in the reference gradient: row_scale g_n (N x 1)."""
        upstream = 1.0 if self.upstream is None else self.upstream
        return np.broadcast_to(np.asarray(upstream, dtype=np.float64) * self.row_scale, (self.rows,))[:, None]

    def reference_with(self, variant: str = "", **changes: Any) -> np.ndarray:
        """The reference recomputed with `changes`; `variant` names their divisor convention (Totals.divisors)."""
        return self.recompute(variant=variant, **changes)

    def reduce(self, row_losses: np.ndarray) -> np.ndarray:
        """Row losses reduced as the reference's are: the rows for none, else their sum times row_scale."""
        if self.settings.reduction == "none":
            return row_losses
        if self.sampled:
            raise NeedsWholeInput("a reduced loss needs every row")
        return np.asarray(exact_sum(row_losses) * self.row_scale)


class Candidate(NamedTuple):
    """What the user's values would be under one slip, and how to judge them.

    `predicted` has the quantity's shape. `slack` multiplies the check's atol: a slip that scales the values
    by k scales the rounding they carry by |k| too. `unpredicted` marks rows (N, bool) whose values the slip
    leaves unknown: with `expects` "non-finite" such a row is explained when the user's row holds a NaN or an
    infinity (an overflow); with "nonzero" it must differ from the reference (a row that should be 0 and is
    not) and stays unexplained, for its values cannot be predicted. A `fitted` candidate's number came from
    the user's values, so the diagnosis asks more of it (diagnose.py: MIN_SUPPORT, MIN_DEVIATION).
    """

    predicted: np.ndarray
    what: str  # after "your gradient": "is 3.000 x the reference (N = 3)", with the multiplication sign
    meaning: str  # the slip, in words: "the mean's 1/N is missing"
    slack: float = 1.0
    parameter: float | None = None
    unpredicted: np.ndarray | None = None
    expects: str = "nonzero"
    fitted: bool = False  # its number was fitted to the user's values (and so needs more evidence)


class Evidence(NamedTuple):
    """What a hypothesis looks at: the context, the user's values and the reference, float64, of one shape."""

    context: SlipContext
    actual: np.ndarray
    reference: np.ndarray

    @property
    def quantity(self) -> str:
        return self.context.quantity


class Hypothesis(NamedTuple):
    """One entry of the catalogue: a stable id, the quantities it applies to, and what it proposes."""

    id: str
    quantities: tuple[str, ...]
    propose: Callable[[Evidence], list[Candidate]]


def number(value: float) -> str:
    """A number in a description: four significant digits, trailing zeros kept (3.000, 0.2500)."""
    return f"{value:#.4g}"


def scaled(reference: np.ndarray, factor: float, what: str, meaning: str) -> Candidate:
    """The reference times one number: every element of the user's values is `factor` times it."""
    return Candidate(reference * factor, what, meaning, slack=abs(factor), parameter=factor)


def context_for(
    quantity: str,
    batch: Batch,
    settings: Settings,
    upstream: np.ndarray | None = None,
    teacher_logits: np.ndarray | None = None,
    totals: Totals | None = None,
) -> SlipContext:
    """The context of a check of `quantity` on a batch, with the reference computed by the loss registry.

    `batch` holds every row of the input (the mean's divisor is the batch's own), or a sample of them with the
    whole input's `totals`; `settings` are the check's.
    """
    loss = loss_kind(settings.loss).build(batch, settings, np.dtype(np.float64))
    if totals is not None:
        loss = dataclasses.replace(loss, normalizer=totals.divisors[""])
    kept = np.ones(batch.rows, dtype=bool)
    if batch.labels is not None and settings.ignore_index is not None:
        kept = batch.labels != settings.ignore_index
    weights = np.ones(batch.classes) if settings.weights is None else np.asarray(settings.weights, dtype=np.float64)
    upstream = None if upstream is None else np.asarray(upstream, dtype=np.float64)

    def recompute(variant: str = "", **changes: Any) -> np.ndarray:
        if totals is not None and quantity == "loss" and settings.reduction != "none":
            raise NeedsWholeInput("a reduced loss needs every row")
        divisor = None if totals is None else totals.divisors[variant]
        return reference_quantity(quantity, batch, settings, **{"upstream": upstream, "divisor": divisor, **changes})

    return SlipContext(
        quantity=quantity,
        logits=np.ascontiguousarray(batch.logits, dtype=np.float64),
        targets=np.asarray(batch.targets, dtype=np.float64),
        labels=batch.labels,
        settings=settings,
        divisor=float(loss.normalizer),
        row_scale=float(loss.scale),
        kept=kept,
        class_weights=weights,
        recompute=recompute,
        coefficients=loss.coefficients if isinstance(loss, CrossEntropy) else None,
        upstream=upstream,
        teacher_logits=teacher_logits,
        totals=totals,
    )


def reference_quantity(
    quantity: str, batch: Batch, settings: Settings, upstream: np.ndarray | None = None,
    divisor: float | None = None, **changes: Any
) -> np.ndarray:
    """gradcheck's float64 reference of `quantity`, with some batch fields or settings changed; `divisor` the
    mean's (the whole input's, for a sample of its rows), else the batch's own."""
    batch = dataclasses.replace(batch, **{name: changes.pop(name) for name in _BATCH_FIELDS if name in changes})
    settings = settings._replace(**changes)
    logits = np.ascontiguousarray(batch.logits, dtype=np.float64)  # softmax_parts writes through flat views
    temperature = settings.temperature
    parts = softmax_parts(logits / temperature)
    if quantity == "probabilities":
        return parts.s
    if quantity == "jacobian":
        return softmax_jacobian(parts.s, parts.complement) / temperature
    if quantity == "lse":
        return (logits / temperature).max(axis=-1) + parts.log_total[:, 0]
    loss = loss_kind(settings.loss).build(batch, settings, np.dtype(np.float64))
    if divisor is not None:
        loss = dataclasses.replace(loss, normalizer=divisor)
    if quantity == "loss":
        return np.asarray(loss.loss(logits, parts), dtype=np.float64)
    gradient = loss.gradient(logits, parts)
    if upstream is None:
        return gradient
    return gradient * (upstream[:, None] if np.ndim(upstream) else upstream)
