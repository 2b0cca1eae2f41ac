"""Losses on top of softmax: their row losses, analytic gradients and reductions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gradcheck_cli.core import log_softmax, softmax, softmax_complement

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

    def row_losses_relative_to(self, base: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """Row losses less a per-row constant fixed at `base`, for finite differences around `base`.

        l(z) = A m + A log sum_l exp(z_l - m) - a.z; with m and the constant A m - a.z_base taken at `base`,
        what is left is A log S(z) - a.(z - z_base), of size log C instead of |l|. Differences of it equal
        differences of l exactly, but carry rounding of eps log C instead of eps |l| (which at a loss of 17
        swamps a gradient element of 5e-4 under rtol 1e-7).
        """
        shift = base.max(axis=-1, keepdims=True)
        total = self.coefficients.sum(axis=-1)

        def relative(logits: np.ndarray) -> np.ndarray:
            log_sum = np.log(np.exp(logits - shift).sum(axis=-1))
            return total * log_sum - (self.coefficients * (logits - base)).sum(axis=-1)

        return relative

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


def cross_entropy(targets: np.ndarray, reduction: str = "mean") -> CrossEntropy:
    """Plain categorical cross-entropy -sum_i y_i log s_i, averaged over rows for reduction=mean."""
    return CrossEntropy(coefficients=targets, reduction=reduction, normalizer=float(targets.shape[0]))
