"""What a diagnosis knows about the check that failed (SlipContext), how to build it from a batch with the
project's own numerics (context_for), and the Candidate a hypothesis proposes.

A diagnosis asks: which known slip, applied to gradcheck's reference, gives the user's numbers? Each
hypothesis (slip_scales.py, slip_conventions.py) turns the reference into one or more Candidates: the
values the user would have got with that slip. The context carries what they need: the batch, the
settings, the mean's divisor and every row's weight, and `reference_with(**changes)`, the reference of
the same quantity recomputed with some settings or inputs changed (label smoothing, temperature, ignored
label, labels, logits, ...). Plain data and arrays; nothing here prints or knows about click or rich.
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
TIMES = "\u00d7"  # the multiplication sign of the descriptions, written as an escape (ruff: it looks like an x)
_BATCH_FIELDS = ("logits", "labels", "targets")


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

    @property
    def rows(self) -> int:
        return int(self.logits.shape[0])

    @property
    def classes(self) -> int:
        return int(self.logits.shape[1])

    @property
    def temperature(self) -> float:
        return float(self.settings.temperature)

    @property
    def kept_count(self) -> int:
        return int(np.count_nonzero(self.kept))

    @property
    def summed_weights(self) -> float:
        """sum over the rows not ignored of sum_c w_c y[n, c]: w_{y_n} summed, for labels."""
        return exact_sum((self.targets * self.class_weights)[self.kept])

    @property
    def divisor_name(self) -> str:
        """What the mean's D is, in words: torch's convention for these settings."""
        if self.labels is not None and self.settings.weights is not None:
            return "Σ w, the summed weights of the rows not ignored"
        if self.labels is not None and self.kept_count < self.rows:
            return "the rows not ignored"
        return "N"

    @property
    def gradient_weights(self) -> np.ndarray:
        """What row n's own gradient is multiplied by in the reference gradient: row_scale g_n (N x 1)."""
        upstream = 1.0 if self.upstream is None else self.upstream
        return np.broadcast_to(np.asarray(upstream, dtype=np.float64) * self.row_scale, (self.rows,))[:, None]

    def reference_with(self, **changes: Any) -> np.ndarray:
        return self.recompute(**changes)

    def reduce(self, row_losses: np.ndarray) -> np.ndarray:
        """Row losses reduced as the reference's are: the rows for none, else their sum times row_scale."""
        if self.settings.reduction == "none":
            return row_losses
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
) -> SlipContext:
    """The context of a check of `quantity` on a whole batch, with the reference computed by the loss registry.

    `batch` holds every row of the input (the mean's divisor is the batch's own), `settings` are the check's.
    """
    loss = loss_kind(settings.loss).build(batch, settings, np.dtype(np.float64))
    kept = np.ones(batch.rows, dtype=bool)
    if batch.labels is not None and settings.ignore_index is not None:
        kept = batch.labels != settings.ignore_index
    weights = np.ones(batch.classes) if settings.weights is None else np.asarray(settings.weights, dtype=np.float64)
    upstream = None if upstream is None else np.asarray(upstream, dtype=np.float64)

    def recompute(**changes: Any) -> np.ndarray:
        return reference_quantity(quantity, batch, settings, **{"upstream": upstream, **changes})

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
    )


def reference_quantity(
    quantity: str, batch: Batch, settings: Settings, upstream: np.ndarray | None = None, **changes: Any
) -> np.ndarray:
    """gradcheck's float64 reference of `quantity`, with some batch fields or settings changed."""
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
    if quantity == "loss":
        return np.asarray(loss.loss(logits, parts), dtype=np.float64)
    gradient = loss.gradient(logits, parts)
    if upstream is None:
        return gradient
    return gradient * (upstream[:, None] if np.ndim(upstream) else upstream)
