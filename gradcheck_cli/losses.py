"""Losses on top of softmax: their row losses, analytic gradients and reductions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gradcheck_cli.core import log_softmax, softmax, softmax_complement, softmax_jacobian

REDUCTIONS = ("mean", "sum", "none")


@dataclass(frozen=True)
class CrossEntropy:
    """Cross-entropy of softmax(logits) against fixed per-class coefficients.

    Every variant (one-hot labels, soft targets, and later class weights or smoothing) reduces to
    row losses l_n = -sum_c a[n, c] log s[n, c] with coefficients `a` that do not depend on the logits,
    and a total L = sum_n l_n / normalizer. So one loss function and one gradient cover them all:
    dl_n/dz = s_n * sum_c a[n, c] - a[n].
    """

    coefficients: np.ndarray
    reduction: str = "mean"
    normalizer: float = 1.0
    name: str = "cross_entropy"

    def row_losses(self, logits: np.ndarray) -> np.ndarray:
        return -(self.coefficients * log_softmax(logits)).sum(axis=-1)

    def row_gradients(self, logits: np.ndarray) -> np.ndarray:
        """The gradient of each row's own loss, before the reduction's scale."""
        # s_j A - a_j rewritten as s_j (A - a_j) - a_j (1 - s_j), with 1 - s_j from softmax_complement: the
        # naive form cancels catastrophically at the label of a confident row.
        a = self.coefficients
        others = a.sum(axis=-1, keepdims=True) - a
        return softmax(logits) * others - a * softmax_complement(logits)

    def perturbation(self, base: np.ndarray) -> Callable[[int, np.ndarray], np.ndarray]:
        """l(z + d e_j) - l(z) for every row, exactly, in O(N) per column: for finite differences around `base`.

        Moving z_j by d multiplies exp(z_j - m) by e^d and the normaliser by 1 + s_j q (q = e^d - 1), so
        l changes by A log(1 + s_j q) - a_j d, with A = sum_c a_c. Split A = B + a_j and fold a_j d into the log:
        B log1p(s_j q) + a_j log1p((1 - s_j)(e^-d - 1)). Each term keeps full relative precision (1 - s_j from
        softmax_complement), so the differences carry rounding of eps |dl| rather than eps |l|: a loss of 17
        cannot swamp a gradient element of 5e-4. It is the loss itself that is evaluated, never its derivative.
        """
        s, complement = softmax(base), softmax_complement(base)
        a = self.coefficients
        others = a.sum(axis=-1, keepdims=True) - a

        def perturb(column: int, offsets: np.ndarray) -> np.ndarray:
            rise = others[:, column] * np.log1p(s[:, column] * np.expm1(offsets))
            return rise + a[:, column] * np.log1p(complement[:, column] * np.expm1(-offsets))

        return perturb

    @property
    def scale(self) -> float:
        """What the reduction multiplies each row's loss (and so its gradient) by."""
        return 1.0 / self.normalizer if self.reduction == "mean" else 1.0

    def loss(self, logits: np.ndarray) -> float | np.ndarray:
        """The reduced loss: a float for mean and sum, the row losses for none."""
        rows = self.row_losses(logits)
        return rows if self.reduction == "none" else float(rows.sum() * self.scale)

    def gradient(self, logits: np.ndarray) -> np.ndarray:
        """dL/dz for mean and sum; for none, the gradient of the sum of rows (each row's own)."""
        return self.row_gradients(logits) * self.scale

    def hessian(self, logits: np.ndarray) -> np.ndarray:
        """d2L/dz2 per row (N x C x C): the gradient s A - a differentiates to A (diag(s) - s s^T) = A J."""
        jacobian = softmax_jacobian(softmax(logits), softmax_complement(logits))
        return jacobian * (self.coefficients.sum(axis=-1) * self.scale)[:, None, None]


def cross_entropy(targets: np.ndarray, reduction: str = "mean") -> CrossEntropy:
    """Plain categorical cross-entropy -sum_i y_i log s_i, averaged over rows for reduction=mean."""
    return CrossEntropy(coefficients=targets, reduction=reduction, normalizer=float(targets.shape[0]))
