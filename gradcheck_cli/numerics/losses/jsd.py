"""The generalised Jensen-Shannon divergence as Liger-Kernel defines it: with M = beta p + (1 - beta) q,
l_n = w (beta KL(p || M) + (1 - beta) KL(q || M)), p the teacher's softmax(t / T) and q the student's; beta = 0
is the forward KL(p || q) and beta = 1 the reverse KL(q || p) (Liger-Kernel's own special cases: the formula
itself is 0 there). Reductions and T^2 as torch's kl_div (distillation.py).

l = w (beta sum p log p + (1 - beta) sum q log q - sum M log M), so dl/dq_k = w (1 - beta)(log q_k - log M_k)
= w g_k, and D[k, j] = dg_k/du_j = (1 - beta)(delta_kj - q_j) - (1 - beta)^2 (q_k / M_k)(delta_kj - q_j).
As u_j moves, M moves by dM = (1 - beta) dq and the remainder of the exact change is
R = sum_k ((1 - beta) q'_k dlog q_k - M'_k log1p(dM_k / M_k)) (distillation.py's module docstring).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from gradcheck_cli.batch import Batch
from gradcheck_cli.numerics.losses import distillation, kl, reverse_kl
from gradcheck_cli.numerics.losses.base import Loss, LossKind, Scales, shown, shown_each
from gradcheck_cli.numerics.softmax import Softmax, softmax_parts
from gradcheck_cli.settings import Settings

DEFAULT_BETA = 0.5  # Liger-Kernel's LigerFusedLinearJSDLoss default


@dataclass(eq=False, repr=False)  # holds arrays: == has no truth value; each generated method costs start-up
class JensenShannon(distillation.Divergence):
    beta: float = DEFAULT_BETA
    name: str = "jsd"

    def _log_m(self, parts: Softmax) -> np.ndarray:
        """log M from the logs (never log of an underflowed sum): finite wherever p or q is."""
        return np.logaddexp(np.log(self.beta) + self.log_p, np.log1p(-self.beta) + parts.log_s)

    def row_losses(self, logits: np.ndarray, given: Softmax | None = None) -> np.ndarray:
        parts = self.softmax(logits, given)
        log_m = self._log_m(parts)
        rows = self.beta * self.p * (self.log_p - log_m) + (1 - self.beta) * parts.s * (parts.log_s - log_m)
        return rows.sum(axis=-1) * self.weight

    def _g(self, parts: Softmax) -> np.ndarray:
        return (1 - self.beta) * (parts.log_s - self._log_m(parts))

    def _g_jacobian(self, parts: Softmax) -> np.ndarray:
        q, keep = parts.s, 1 - self.beta
        ratio = np.exp(parts.log_s - self._log_m(parts))  # q / M <= 1 / (1 - beta), without dividing by M
        centred = np.eye(q.shape[-1]) - q[:, None, :]  # delta_kj - q_j
        return keep * centred - keep * keep * ratio[:, :, None] * centred

    def _changes(self, parts: Softmax, dq: np.ndarray, dlog_q: np.ndarray, relative: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
        """dM / M = (1 - beta)(q / M)(dq / q): never a division by an M or q that underflowed (q / M <= 1 / (1 -
        beta) comes from the logs), and M' dlog M = M (1 + dM / M) log1p(dM / M)."""
        keep, log_m = 1 - self.beta, self._log_m(parts)
        moved = keep * np.exp(parts.log_s - log_m) * relative
        dlog_m = np.log1p(moved)
        remainder = (keep * (parts.s + dq) * dlog_q - np.exp(log_m) * (1.0 + moved) * dlog_m).sum(axis=-1)
        return keep * (dlog_q - dlog_m), remainder

    def _g_terms(self, parts: Softmax) -> np.ndarray:
        return (1 - self.beta) * (np.abs(parts.log_s) + np.abs(self._log_m(parts)))

    def loss_scales(self, logits: np.ndarray, given: Softmax | None = None) -> Scales:
        """Of each row's loss: N = w sum_k (beta p_k + (1 - beta) q_k)(|log p_k| + |log q_k| + |log M_k|)."""
        parts = self.softmax(logits, given)
        logs = np.abs(self.log_p) + np.abs(parts.log_s) + np.abs(self._log_m(parts))
        gross = ((self.beta * self.p + (1 - self.beta) * parts.s) * logs).sum(axis=-1) * self.weight
        return Scales(np.abs(self.row_losses(logits, parts)), gross, gross)


def build(batch: Batch, settings: Settings, dtype: np.dtype) -> distillation.Distilled:
    """JSD_beta; beta = 0 and 1 are the forward and the reverse KL, as Liger-Kernel takes them."""
    beta = DEFAULT_BETA if settings.beta is None else settings.beta
    if beta == 0.0:
        return kl.build(batch, settings, dtype)
    if beta == 1.0:
        return reverse_kl.build(batch, settings, dtype)
    return distillation.built(JensenShannon, batch, settings, dtype, beta=beta)


def explain(loss: Loss, z: np.ndarray, s: np.ndarray, row: int) -> list[str]:
    """JSD_beta and its gradient with the row's numbers (in u = z / T); beta 0 and 1 explain as the KLs."""
    if not isinstance(loss, JensenShannon):
        return (kl.explain if isinstance(loss, kl.ForwardKL) else reverse_kl.explain)(loss, z, s, row)
    one = replace(loss, p=loss.p[row:row + 1], log_p=loss.log_p[row:row + 1])
    parts = softmax_parts(z[None, :])
    value = float(one.row_losses(z[None, :], parts)[0] / loss.weight)
    lines = [f"3. Generalised JSD (β = {shown(loss.beta)}): L = β KL(p‖M) + (1 − β) KL(q‖M), M = β p + (1 − β) q",
             distillation.teacher_line(one.p[0]),
             "   M = (" + ", ".join(shown_each(np.exp(one._log_m(parts)[0]))) + ")", f"   L = {shown(value)}", ""]
    return lines + distillation.centred_lines(one, z, "(1 − β)(log q − log M)")


KIND = LossKind("jsd", ("beta", "t2_scaling"), build, distillation.divisor_rows, distillation.counts_rows, explain,
                reductions=distillation.REDUCTIONS, needs_teacher=True)
