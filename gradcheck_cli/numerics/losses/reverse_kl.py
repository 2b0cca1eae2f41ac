"""Reverse KL(q || p) of the student's softmax q against the teacher's p = softmax(teacher / T):
l_n = w sum_k q_k (log q_k - log p_k), with torch kl_div's reductions and the optional T^2 (distillation.py).

dl/dq_k = w (r_k + 1) with r = log q - log p; the 1 cancels in the vector-Jacobian product, so g = r:
dl/du_k = w q_k (r_k - <q, r>), and D[k, j] = dr_k/du_j = delta_kj - q_j. As u_j moves, the remainder of the
exact change is R = sum_k q'_k dlog q_k (distillation.py's module docstring).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from gradcheck_cli.batch import Batch
from gradcheck_cli.numerics.losses import distillation
from gradcheck_cli.numerics.losses.base import Loss, LossKind, Scales, formatted_lines, shown, shown_each, signed_each
from gradcheck_cli.numerics.softmax import Softmax, softmax_parts
from gradcheck_cli.settings import Settings


@dataclass(eq=False, repr=False)  # holds arrays: == has no truth value; each generated method costs start-up
class ReverseKL(distillation.Divergence):
    name: str = "reverse-kl"

    def row_losses(self, logits: np.ndarray, given: Softmax | None = None) -> np.ndarray:
        parts = self.softmax(logits, given)
        return (parts.s * (parts.log_s - self.log_p)).sum(axis=-1) * self.weight

    def _g(self, parts: Softmax) -> np.ndarray:
        return parts.log_s - self.log_p

    def _g_jacobian(self, parts: Softmax) -> np.ndarray:
        return np.eye(parts.s.shape[-1]) - parts.s[:, None, :]

    def _changes(self, parts: Softmax, dq: np.ndarray, dlog_q: np.ndarray, relative: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
        return dlog_q, ((parts.s + dq) * dlog_q).sum(axis=-1)

    def _g_terms(self, parts: Softmax) -> np.ndarray:
        return np.abs(parts.log_s) + np.abs(self.log_p)

    def loss_scales(self, logits: np.ndarray, given: Softmax | None = None) -> Scales:
        """Of each row's loss: N = w sum_k q_k (|log q_k| + |log p_k|), the terms it sums."""
        parts = self.softmax(logits, given)
        gross = (parts.s * self._g_terms(parts)).sum(axis=-1) * self.weight
        return Scales(np.abs(self.row_losses(logits, parts)), gross, gross)


def build(batch: Batch, settings: Settings, dtype: np.dtype) -> ReverseKL:
    return distillation.built(ReverseKL, batch, settings, dtype)


def explain(loss: Loss, z: np.ndarray, s: np.ndarray, row: int) -> list[str]:
    """KL(q || p) and its gradient with the row's numbers (in u = z / T)."""
    assert isinstance(loss, ReverseKL)
    log_p, log_q = loss.log_p[row], softmax_parts(z[None, :]).log_s[0]
    terms = " + ".join(formatted_lines("%s·(%s − %s)", shown_each(s), shown_each(log_q), signed_each(log_p)))
    lines = ["3. Reverse KL: L = Σ_k q_k (log q_k − log p_k), q = s the student's softmax",
             distillation.teacher_line(loss.p[row]),
             f"   L = {terms} = {shown(float((s * (log_q - log_p)).sum()))}", ""]
    one = replace(loss, p=loss.p[row:row + 1], log_p=log_p[None, :])
    return lines + distillation.centred_lines(one, z, "log q − log p (+1, which cancels)")


KIND = LossKind("reverse-kl", ("t2_scaling",), build, distillation.divisor_rows, distillation.counts_rows, explain,
                reductions=distillation.REDUCTIONS, needs_teacher=True)
