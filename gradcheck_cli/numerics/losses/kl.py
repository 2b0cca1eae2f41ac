"""Forward KL(p || q) of the student's softmax q against the teacher's p: torch's
kl_div(log_softmax(student / T), softmax(teacher / T)), with its reductions and the optional T^2.

The loss is w sum_k p_k (log p_k - log q_k): cross-entropy with the coefficients w p plus a constant, so its
gradient w (q - p) / T, Hessian, exact changes and scales are cross-entropy's (CrossEntropy is used for them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gradcheck_cli.batch import Batch
from gradcheck_cli.numerics.differences import Perturbation
from gradcheck_cli.numerics.losses import distillation
from gradcheck_cli.numerics.losses.base import Loss, LossKind, Scales, formatted_lines, shown, shown_each, signed_each
from gradcheck_cli.numerics.losses.cross_entropy import CrossEntropy
from gradcheck_cli.numerics.softmax import Softmax, softmax_parts
from gradcheck_cli.settings import DIVIDING_REDUCTIONS, Settings


@dataclass(eq=False, repr=False)  # holds arrays: == has no truth value; each generated method costs start-up
class ForwardKL(distillation.Distilled):
    """l_n = w sum_k p_k (log p_k - log q_k); its derivatives are those of -sum_k (w p_k) log q_k."""

    name: str = "kl"

    @property
    def _cross_entropy(self) -> CrossEntropy:
        """-sum (w p) log q with this loss's scale (built on demand: a chunk's normalizer is replaced)."""
        reduction = "mean" if self.reduction in DIVIDING_REDUCTIONS else "sum"
        return CrossEntropy(reduction, self.normalizer, self.temperature, coefficients=self.weight * self.p)

    def row_losses(self, logits: np.ndarray, given: Softmax | None = None) -> np.ndarray:
        log_q = self.softmax(logits, given).log_s
        return (self.p * (self.log_p - log_q)).sum(axis=-1) * self.weight

    def row_gradients(self, logits: np.ndarray, given: Softmax | None = None) -> np.ndarray:
        return self._cross_entropy.row_gradients(logits, given)

    def hessian(self, logits: np.ndarray) -> np.ndarray:
        return self._cross_entropy.hessian(logits)

    def perturbation(self, base: np.ndarray, given: Softmax | None = None) -> Perturbation:
        return self._cross_entropy.perturbation(base, given)  # the constant w sum p log p cancels

    def gradient_perturbation(self, base: np.ndarray, given: Softmax | None = None) -> Perturbation:
        return self._cross_entropy.gradient_perturbation(base, given)

    def gradient_scales(self, logits: np.ndarray, given: Softmax | None = None) -> Scales:
        return self._cross_entropy.gradient_scales(logits, given)

    def hessian_scales(self, logits: np.ndarray, given: Softmax | None = None) -> Scales:
        return self._cross_entropy.hessian_scales(logits, given)

    def loss_scales(self, logits: np.ndarray, given: Softmax | None = None) -> Scales:
        """Cross-entropy's N plus w sum p |log p|, the constant's terms (they cancel where q is near p)."""
        parts = self.softmax(logits, given)
        inner = self._cross_entropy.loss_scales(logits, parts)
        gross = inner.gross + (self.p * np.abs(self.log_p)).sum(axis=-1) * self.weight
        return Scales(np.abs(self.row_losses(logits, parts)), gross, gross)


def build(batch: Batch, settings: Settings, dtype: np.dtype) -> ForwardKL:
    return distillation.built(ForwardKL, batch, settings, dtype)


def explain(loss: Loss, z: np.ndarray, s: np.ndarray, row: int) -> list[str]:
    """KL(p || q) and its gradient q - p with the row's numbers (in u = z / T)."""
    assert isinstance(loss, ForwardKL)
    p, log_p, log_q = loss.p[row], loss.log_p[row], softmax_parts(z[None, :]).log_s[0]
    p_text = shown_each(p)  # formatted once for its three uses
    terms = " + ".join(formatted_lines("%s·(%s − %s)", p_text, shown_each(log_p), signed_each(log_q)))
    lines = ["3. Forward KL: L = Σ_k p_k (log p_k − log q_k), q = s the student’s softmax",
             distillation.teacher_line(p, p_text),
             f"   L = {terms} = {shown(float((p * (log_p - log_q)).sum()))}", "",
             "4. Gradient: ∂L/∂z_k = q_k·Σ_i p_i − p_k = q_k − p_k (the p_i sum to 1)"]
    lines += formatted_lines("   ∂L/∂z_%d = %s − %s = %s", range(len(z)), shown_each(s), p_text, shown_each(s - p))
    return [*lines, distillation.TEMPERATURE_LINE]




KIND = LossKind("kl", ("t2_scaling",), build, distillation.divisor_rows, distillation.counts_rows, explain,
                reductions=distillation.REDUCTIONS, needs_teacher=True)
