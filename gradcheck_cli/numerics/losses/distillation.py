"""What the distillation losses share: a student's softmax q = softmax(z / T) against a teacher's
p = softmax(t / T), torch kl_div's reductions, the optional T^2, and the exact changes of a divergence.

Conventions (MATH.md, tests/fixtures/make_torch_golden.py): a row's loss is the sum over its classes; `sum`
adds the rows, `batchmean` divides that by N, `mean` by N C (torch's kl_div: a mean over every element), `none`
gives the row sums. With t2_scaling every row loss (and so the gradient) is multiplied by T^2 (Hinton), so the
gradient's size does not shrink as 1/T^2. Gradients are with respect to the student's logits z only.

Reverse KL and the generalised JSD are functions of q alone (p is fixed), L = F(q), with dF/dq_k = w g_k, w the
T^2 factor (or 1). So dL/du = w q (g - <q, g>) (the vector-Jacobian product, u = z / T), and as u_j moves by d,
q moves by the exact softmax change dq (nu = q_j Q / (1 + q_j Q), Q = e^d - 1: dq_j = (1 - q_j) nu, dq_k =
-q_k nu) and log q by dlog q_j = -log1p((1 - q_j)(e^-d - 1)), dlog q_k = -log1p(q_j Q). Then
    dL / w = sum_k dq_k g_k + R = nu (g_j - <q, g>) + R,
R the loss's own remainder (Divergence._changes), every term proportional to the change: the differences carry
rounding relative to the change, never to |L|.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from gradcheck_cli.batch import Batch
from gradcheck_cli.errors import InputError
from gradcheck_cli.numerics.differences import Perturbation
from gradcheck_cli.numerics.exact import exact_sum
from gradcheck_cli.numerics.losses.base import Loss, Scales, formatted_lines, shown, shown_each
from gradcheck_cli.numerics.softmax import Softmax, softmax_jacobian, softmax_parts
from gradcheck_cli.settings import DIVIDING_REDUCTIONS, Settings

REDUCTIONS = ("batchmean", "sum", "mean", "none")  # torch.nn.functional.kl_div's
D = TypeVar("D", bound="Distilled")


@dataclass(eq=False, repr=False)  # holds arrays: == has no truth value; each generated method costs start-up
class Distilled(Loss):
    """A loss of the student's softmax against the teacher's: p, log p (N x C, of t / T) and the T^2 factor w."""

    p: np.ndarray
    log_p: np.ndarray
    weight: float  # w: T^2 with t2_scaling, else 1

    @property
    def scale(self) -> float:
        """batchmean divides by N and mean by N C (the normalizer holds which); sum and none by nothing."""
        return 1.0 / self.normalizer if self.reduction in DIVIDING_REDUCTIONS else 1.0

    def reduce(self, rows: np.ndarray) -> float | np.ndarray:
        if self.reduction == "none":
            return rows
        return exact_sum(rows) * self.scale


def teacher_parts(batch: Batch, settings: Settings, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """p and log p of softmax(teacher / T), rounded to `dtype`; the teacher must have the student's shape.

    Computed in float64 whatever the dtype: the teacher's softmax is an input of the loss, not what is checked,
    so it carries one rounding (u relative), never the rounding of a float32 softmax of large t / T, which the
    tolerances (made from the student's logits) do not allow for.
    """
    assert batch.teacher_logits is not None  # LossKind.build refuses a batch without one
    teacher = batch.teacher_logits
    if teacher.shape != batch.logits.shape:
        raise InputError(f"the teacher logits are {teacher.shape[0]} x {teacher.shape[1]}; the logits are "
                         f"{batch.rows} x {batch.classes}: give one teacher row of C values per sample")
    parts = softmax_parts(teacher / settings.temperature)
    return parts.s.astype(dtype), parts.log_s.astype(dtype)


def normalizer(batch: Batch, settings: Settings) -> float:
    """The batch's own divisor: N for batchmean, N C for mean (torch's kl_div); 1 otherwise."""
    return float(divisor_rows(batch, settings).sum()) if settings.reduction in DIVIDING_REDUCTIONS else 1.0


def divisor_rows(batch: Batch, settings: Settings) -> np.ndarray:
    """Each row's share of the divisor: C for mean (a mean over every element), 1 for batchmean."""
    return np.full(batch.rows, float(batch.classes) if settings.reduction == "mean" else 1.0)


def counts_rows(settings: Settings) -> bool:
    """batchmean divides by the number of rows; mean by rows times classes, summed from the rows."""
    return settings.reduction != "mean"


def t2_weight(settings: Settings) -> float:
    return settings.temperature**2 if settings.t2_scaling else 1.0


def built(loss: type[D], batch: Batch, settings: Settings, dtype: np.dtype, **more: Any) -> D:
    """The distillation loss `loss` of this batch: its teacher's p and log p at T, the batch's own divisor
    and the T^2 weight (`more`: the loss's own fields, such as jsd's beta)."""
    p, log_p = teacher_parts(batch, settings, dtype)
    return loss(settings.reduction, normalizer(batch, settings), settings.temperature, p=p, log_p=log_p,
                weight=t2_weight(settings), **more)


@dataclass(eq=False, repr=False)  # holds arrays: == has no truth value; each generated method costs start-up
class Divergence(Distilled):
    """L = F(q) with dF/dq = w g (reverse KL, JSD): gradient, Hessian, exact changes and scales from g.

    A subclass gives g (`_g`), its u-Jacobian D[k, j] = dg_k/du_j (`_g_jacobian`), what a move of u_j changes
    (`_changes`: dg and the remainder R), the terms g is computed from (`_g_terms`), and its row losses.
    """

    def _g(self, parts: Softmax) -> np.ndarray:
        raise NotImplementedError

    def _g_jacobian(self, parts: Softmax) -> np.ndarray:
        raise NotImplementedError

    def _changes(self, parts: Softmax, dq: np.ndarray, dlog_q: np.ndarray, relative: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
        """dg and the remainder R, from the changes of q, log q and dq / q (`relative`, never divided by q)."""
        raise NotImplementedError

    def _g_terms(self, parts: Softmax) -> np.ndarray:
        raise NotImplementedError

    def row_gradients(self, logits: np.ndarray, given: Softmax | None = None) -> np.ndarray:
        parts = self.softmax(logits, given)
        return parts.s * centred(parts, self._g(parts)) * (self.weight / self.temperature)

    def hessian(self, logits: np.ndarray) -> np.ndarray:
        """H[k, j] = J_kj (g_k - c) + q_k (D_kj - (J g)_j - (q D)_j), c = <q, g>; times w / T^2 and the scale.

        From d(q_k (g_k - c))/du_j with dq_k/du_j = J_kj and dc/du_j = (J g)_j + (q D)_j.
        """
        parts = softmax_parts(logits / self.temperature)
        q, g, derivative = parts.s, self._g(parts), self._g_jacobian(parts)
        jacobian = softmax_jacobian(q, parts.complement)
        moved = np.einsum("nkj,nk->nj", jacobian, g) + np.einsum("nk,nkj->nj", q, derivative)
        hessian = jacobian * centred(parts, g)[:, :, None] + q[:, :, None] * (derivative - moved[:, None, :])
        # Divided by T twice, not by T**2: that underflows to 0 for T below 1e-154 (and 1/0 raises).
        return hessian * (self.weight * self.factor / self.temperature)

    def _moved(self, parts: Softmax, column: int, u: np.ndarray) -> tuple[np.ndarray, ...]:
        """nu (N), dq, dlog q and dq / q (N x C) as u_j moves by `u` (one per row, or one number), exactly."""
        q, complement = parts.s, parts.complement
        u = np.broadcast_to(u, q.shape[:1])
        rise = q[:, column] * np.expm1(u)
        nu = rise / (1.0 + rise)
        dq = -q * nu[:, None]
        dq[:, column] = complement[:, column] * nu
        dlog_q = np.repeat(-np.log1p(rise)[:, None], q.shape[1], axis=1)
        dlog_q[:, column] = -np.log1p(complement[:, column] * np.expm1(-u))
        relative = np.repeat(-nu[:, None], q.shape[1], axis=1)
        relative[:, column] = complement[:, column] * np.expm1(u) / (1.0 + rise)
        return nu, dq, dlog_q, relative

    def perturbation(self, base: np.ndarray, given: Softmax | None = None) -> Perturbation:
        """l(z + d e_j) - l(z) = w (nu (g_j - c) + R), exactly (module docstring), one column at a time: R sums
        over the row's classes, so all columns at once would take N x C x C memory."""
        parts = self.softmax(base, given)
        around = centred(parts, self._g(parts))
        rows, classes = parts.s.shape

        def perturb(column: int | slice, offsets: np.ndarray) -> np.ndarray:
            columns = range(classes)[column] if isinstance(column, slice) else range(column, column + 1)
            moves = np.broadcast_to(offsets, (rows, classes)) if np.ndim(offsets) == 2 else None
            changes = []
            for j in columns:
                u = (moves[:, j] if moves is not None else offsets) / self.temperature
                nu, dq, dlog_q, relative = self._moved(parts, j, u)
                changes.append((nu * around[:, j] + self._changes(parts, dq, dlog_q, relative)[1]) * self.weight)
            stacked = np.stack(changes, axis=-1)
            return stacked if isinstance(column, slice) else stacked[:, 0]

        return perturb

    def gradient_perturbation(self, base: np.ndarray, given: Softmax | None = None) -> Perturbation:
        """g(z + d e_j) - g(z) exactly: with dc = sum dq g + sum q' dg, the row gradient q (g - c) w / T moves by
        dq (g - c) + q' (dg - dc): every term proportional to the change."""
        parts = self.softmax(base, given)
        q, g = parts.s, self._g(parts)
        around = centred(parts, g)

        def perturb(column: int | slice, offsets: np.ndarray) -> np.ndarray:
            assert isinstance(column, int)  # the Hessian's differences move one column at a time
            _, dq, dlog_q, relative = self._moved(parts, column, offsets / self.temperature)
            dg = self._changes(parts, dq, dlog_q, relative)[0]
            moved = q + dq
            shift = (dq * g + moved * dg).sum(axis=-1, keepdims=True)
            return (dq * around + moved * (dg - shift)) * (self.weight * self.factor)

        return perturb

    def gradient_scales(self, logits: np.ndarray, given: Softmax | None = None) -> Scales:
        """Per element, times w / T and the scale. As u_j moves, q_j = sigma and q_k = r_k (1 - sigma), so L is
        F(sigma) with F'' <= 1 / (sigma (1 - sigma)) (the entropy's; JSD's -M log M only lowers it): every
        further u-derivative of L is at most |F' sigma'| + 2 sigma (1 - sigma) (Faa di Bruno, sigma' =
        sigma (1 - sigma)), so S = |q_j (g_j - c)| + 2 q_j (1 - q_j). N = q_j (G_j + <q, G> + 1) + S, G the terms
        g is computed from. The row bound (for the underflow floor) is what a subnormal q_j is multiplied by:
        at most max (G_j + <q, G>) + 3."""
        parts = self.softmax(logits, given)
        q, g, terms = parts.s, self._g(parts), self._g_terms(parts)
        size = np.abs(q * centred(parts, g)) + 2.0 * q * parts.complement
        gross = q * (terms + (q * terms).sum(axis=-1, keepdims=True) + 1.0) + size
        unit = self.weight * self.factor
        reach = (terms + (q * terms).sum(axis=-1, keepdims=True)).max(axis=-1, keepdims=True) + 3.0
        return Scales(size * unit, gross * unit, reach * unit)

    def hessian_scales(self, logits: np.ndarray, given: Softmax | None = None) -> Scales:
        """The Hessian's formula with every term made positive (S and N): it bounds each element, and the next
        u-derivative, of the same softmax-polynomial structure (differences.py's truncation section). A
        subnormal q_k is multiplied by at most 3 max(G + <q, G>) + 2 max |D| + 1: the row bound."""
        parts = self.softmax(logits, given)
        q, terms = parts.s, self._g_terms(parts) + 1.0
        derivative = np.abs(self._g_jacobian(parts))
        jacobian = np.abs(softmax_jacobian(q, parts.complement))
        spread = terms + (q * terms).sum(axis=-1, keepdims=True)
        moved = np.einsum("nkj,nk->nj", jacobian, terms) + np.einsum("nk,nkj->nj", q, derivative)
        size = jacobian * (spread[:, :, None] + 1.0) + q[:, :, None] * (derivative + moved[:, None, :])
        unit = self.weight * self.factor / self.temperature
        reach = 3.0 * spread.max(axis=-1) + 2.0 * derivative.max(axis=(-2, -1)) + 1.0
        return Scales(size * unit, size * unit, reach[:, None, None] * unit)


def centred(parts: Softmax, g: np.ndarray) -> np.ndarray:
    """g_j - <q, g> for every j, without the cancellation of subtracting <q, g> where q_L is near 1.

    At the row's largest class L it is sum_k q_k (g_L - g_k) (no term of it is large: q_L's is 0), and every
    other g_j - <q, g> is (g_j - g_L) + that: off by u (|g_j - g_L| + ...) rather than u (|g_j| + |<q, g>|).
    """
    rows = np.arange(g.shape[0])
    at_largest = g[rows, parts.largest][:, None]
    around_largest = (parts.s * (at_largest - g)).sum(axis=-1, keepdims=True)
    return (g - at_largest) + around_largest


def centred_lines(loss: Divergence, z: np.ndarray, g_text: str) -> list[str]:
    """The chain rule of explain for a Divergence of one row: g = dL/dq, q_k (g_k - Σ_j q_j g_j), T and T²."""
    parts = softmax_parts(z[None, :])
    g, q = loss._g(parts)[0], parts.s[0]
    inner = float((q * g).sum())
    lines = [f"4. Gradient: with g = ∂L/∂q = {g_text}, ∂L/∂z_k = q_k (g_k − Σ_j q_j g_j)",
             f"   Σ_j q_j g_j = {shown(inner)}"]
    lines += formatted_lines("   ∂L/∂z_%d = %s×(%s − %s) = %s", range(len(z)), shown_each(q), shown_each(g),
                             [signed(inner)] * len(z), shown_each(q * (g - inner)))
    return [*lines, TEMPERATURE_LINE]


# What T, T² and the reduction do to the lines of a distillation loss, which are in z / T.
TEMPERATURE_LINE = ("   (by your logits: each ∂L/∂z_k above times 1/T, and times T² with --t2-scaling; batchmean "
                    "divides by N, mean by N·C)")


def signed(value: float) -> str:
    """A number after a minus sign: in parentheses when negative, so that two minus signs never meet."""
    return shown(value) if value >= 0 else f"({shown(value)})"


def teacher_line(p: np.ndarray, p_text: list[str] | None = None) -> str:
    """The teacher's probabilities (p_text: shown_each(p), when the caller has it already)."""
    return "   p = softmax(teacher / T) = (" + ", ".join(shown_each(p) if p_text is None else p_text) + ")"
