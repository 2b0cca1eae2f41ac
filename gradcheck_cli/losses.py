"""Losses on top of softmax(z / T): their row losses, analytic gradients, Hessians and reductions.

Every loss object offers the same interface: row_losses, row_gradients (each row's own), scale (what the
reduction multiplies rows by), loss, gradient, hessian, and, where an exact and cheap one exists,
perturbation (see differences.py). Gradients are always with respect to the logits z, temperature included.
A caller that has softmax(z / T) already (core.softmax_parts) passes it as `given`: a batch computes it once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gradcheck_cli.checks import exact_sum
from gradcheck_cli.core import Softmax, softmax_jacobian, softmax_parts

LOSSES = ("cross_entropy", "mse")


@dataclass(eq=False, repr=False)  # holds arrays: == has no truth value; each generated method costs start-up
class _Reduced:
    """What every loss shares: a temperature, a reduction, and the normaliser of the mean."""

    reduction: str
    normalizer: float
    temperature: float

    @property
    def scale(self) -> float:
        """What the reduction multiplies each row's loss (and so its gradient) by."""
        return 1.0 / self.normalizer if self.reduction == "mean" else 1.0

    def softmax(self, logits: np.ndarray, given: Softmax | None = None) -> Softmax:
        """softmax(z / T), unless the caller has it already."""
        return given if given is not None else softmax_parts(logits / self.temperature)

    def row_losses(self, logits: np.ndarray, given: Softmax | None = None) -> np.ndarray:
        raise NotImplementedError

    def row_gradients(self, logits: np.ndarray, given: Softmax | None = None) -> np.ndarray:
        raise NotImplementedError

    def loss(self, logits: np.ndarray, given: Softmax | None = None) -> float | np.ndarray:
        """The reduced loss: a float for mean and sum, the row losses for none."""
        return self.reduce(self.row_losses(logits, given))

    def reduce(self, rows: np.ndarray) -> float | np.ndarray:
        """The row losses reduced: a float for mean and sum, the rows themselves for none."""
        if self.reduction == "none":
            return rows
        total = exact_sum(rows)  # exactly rounded, so a streamed file's loss equals the in-memory one
        return total / self.normalizer if self.reduction == "mean" else total

    def gradient(self, logits: np.ndarray, given: Softmax | None = None) -> np.ndarray:
        """dL/dz for mean and sum; for none, the gradient of the sum of rows (each row's own)."""
        return self.row_gradients(logits, given) * self.scale


@dataclass(eq=False, repr=False)  # holds arrays: == has no truth value; each generated method costs start-up
class CrossEntropy(_Reduced):
    """Cross-entropy of softmax(z / T) against fixed per-class coefficients.

    Every variant (one-hot labels, soft targets, class weights, label smoothing, ignored rows) reduces to
    row losses l_n = -sum_c a[n, c] log s[n, c] with coefficients `a` that do not depend on the logits, and
    a total L = sum_n l_n / normalizer. So one loss function and one gradient cover them all:
    dl_n/dz = (s_n * sum_c a[n, c] - a[n]) / T.
    """

    coefficients: np.ndarray
    name: str = "cross_entropy"

    def row_losses(self, logits: np.ndarray, given: Softmax | None = None) -> np.ndarray:
        return -(self.coefficients * self.softmax(logits, given).log_s).sum(axis=-1)

    def row_gradients(self, logits: np.ndarray, given: Softmax | None = None) -> np.ndarray:
        """The gradient of each row's own loss, before the reduction's scale."""
        # s_j A - a_j rewritten as s_j (A - a_j) - a_j (1 - s_j), with the accurate 1 - s_j: the naive form
        # cancels catastrophically at the label of a confident row.
        parts = self.softmax(logits, given)
        a = self.coefficients
        others = a.sum(axis=-1, keepdims=True) - a
        return (parts.s * others - a * parts.complement) / self.temperature

    def perturbation(
        self, base: np.ndarray, given: Softmax | None = None
    ) -> Callable[[int | slice, np.ndarray], np.ndarray]:
        """l(z + d e_j) - l(z) for every row, exactly, in O(N) per column: for finite differences around `base`.

        Moving z_j by d moves z_j / T by d / T = u, which multiplies exp(z_j/T - m) by e^u and the normaliser
        by 1 + s_j q (q = e^u - 1), so l changes by A log(1 + s_j q) - a_j u, with A = sum_c a_c. Split
        A = B + a_j and fold a_j u into the log: B log1p(s_j q) + a_j log1p((1 - s_j)(e^-u - 1)). Each term
        keeps full relative precision (the accurate 1 - s_j), so the differences carry rounding of eps |dl|
        rather than eps |l|: a loss of 17 cannot swamp a gradient element of 5e-4. It is the loss itself that
        is evaluated, never its derivative. Each (row, column) is independent, so `column` may be a slice
        and `offsets` one per logit: every column moved at once, each on its own.
        """
        parts = self.softmax(base, given)
        s, complement = parts.s, parts.complement
        a = self.coefficients
        others = a.sum(axis=-1, keepdims=True) - a

        def perturb(column: int | slice, offsets: np.ndarray) -> np.ndarray:
            u = offsets / self.temperature
            rise = others[:, column] * np.log1p(s[:, column] * np.expm1(u))
            return rise + a[:, column] * np.log1p(complement[:, column] * np.expm1(-u))

        return perturb

    def hessian(self, logits: np.ndarray) -> np.ndarray:
        """d2L/dz2 per row (N x C x C): the gradient (s A - a) / T differentiates to A J / T^2."""
        parts = softmax_parts(logits / self.temperature)
        jacobian = softmax_jacobian(parts.s, parts.complement)
        factor = self.coefficients.sum(axis=-1) * self.scale / self.temperature**2
        return jacobian * factor[:, None, None]


@dataclass(eq=False, repr=False)  # holds arrays: == has no truth value; each generated method costs start-up
class SquaredError(_Reduced):
    """l_n = 1/2 sum_k (s_k - t_k)^2 on s = softmax(z / T); its gradient is the vector-Jacobian product.

    With g = dl/ds = s - t: dl/dz_k = s_k (g_k - sum_j g_j s_j) / T. (One source writes g = 2(s - t) for this
    loss: with the 1/2 that factor is wrong, and a check of it fails.)
    """

    targets: np.ndarray
    name: str = "mse"

    def row_losses(self, logits: np.ndarray, given: Softmax | None = None) -> np.ndarray:
        return 0.5 * ((self.softmax(logits, given).s - self.targets) ** 2).sum(axis=-1)

    def row_gradients(self, logits: np.ndarray, given: Softmax | None = None) -> np.ndarray:
        s = self.softmax(logits, given).s
        g = s - self.targets
        return s * (g - (g * s).sum(axis=-1, keepdims=True)) / self.temperature

    def hessian(self, logits: np.ndarray) -> np.ndarray:
        """H = J J + (g_i - <g,s>) J_ij - s_i s_j (g_j - <g,s>), over T^2 (J symmetric, g = s - t)."""
        parts = softmax_parts(logits / self.temperature)
        s = parts.s
        jacobian = softmax_jacobian(s, parts.complement)
        centred = s - self.targets - ((s - self.targets) * s).sum(axis=-1, keepdims=True)
        curvature = centred[:, :, None] * jacobian - s[:, :, None] * (s * centred)[:, None, :]
        return (jacobian @ jacobian + curvature) * (self.scale / self.temperature**2)


Loss = CrossEntropy | SquaredError


def cross_entropy(targets: np.ndarray, reduction: str = "mean", temperature: float = 1.0) -> CrossEntropy:
    """Plain categorical cross-entropy -sum_i y_i log s_i, averaged over rows for reduction=mean."""
    return CrossEntropy(reduction, float(targets.shape[0]), temperature, coefficients=targets)


def torch_cross_entropy(
    classes: int,
    *,
    labels: np.ndarray | None = None,
    targets: np.ndarray | None = None,
    reduction: str = "mean",
    weights: np.ndarray | None = None,
    label_smoothing: float = 0.0,
    ignore_index: int | None = None,
    temperature: float = 1.0,
) -> CrossEntropy:
    """torch.nn.functional.cross_entropy's exact semantics, as coefficients and a normaliser.

    Class-index labels: a = (1 - e) w_y [c = y] + (e / C) w_c on rows whose label is not ignore_index (0 on
    ignored rows), and the mean divides by the summed weights w_y of the rows not ignored (the count of
    them without weights); the smoothing term is scaled by the weights and shares that divisor.
    Probability targets: a = w_c ((1 - e) t_c + e / C), and the mean divides by N, whatever the weights.
    """
    w = np.ones(classes) if weights is None else np.asarray(weights, dtype=np.float64)
    if labels is not None:
        kept = np.ones(labels.shape[0], dtype=bool) if ignore_index is None else labels != ignore_index
        safe = np.where(kept, labels, 0)  # an ignored label may be out of range (torch's -100)
        label_weight = np.where(kept, w[safe], 0.0)
        coefficients = np.zeros((labels.shape[0], classes))
        coefficients[np.arange(labels.shape[0]), safe] = (1.0 - label_smoothing) * label_weight
        if label_smoothing:
            coefficients += np.where(kept, label_smoothing / classes, 0.0)[:, None] * w[None, :]
        # Without weights each kept row weighs 1: counting them is exact and cheaper than summing.
        normalizer = exact_sum(label_weight) if weights is not None else float(np.count_nonzero(kept))
    else:
        assert targets is not None
        coefficients = w[None, :] * ((1.0 - label_smoothing) * targets + label_smoothing / classes)
        normalizer = float(targets.shape[0])
    return CrossEntropy(reduction, normalizer, temperature, coefficients=coefficients)


def squared_error(targets: np.ndarray, reduction: str = "mean", temperature: float = 1.0) -> SquaredError:
    """1/2 sum_k (s_k - t_k)^2 per row; mean averages over rows (not over rows x classes as torch's mse_loss)."""
    return SquaredError(reduction, float(targets.shape[0]), temperature, targets=targets)
