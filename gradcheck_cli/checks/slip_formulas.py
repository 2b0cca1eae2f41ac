"""The quantities of the wrong models that classic slips compute, in closed form, on whole batches.

Each function gives what a user's code computes when it makes one slip: a second softmax, the logits taken
as log-probabilities, -sum y s instead of -sum y log s, the softmax over the batch axis, the KL divergence in
the other direction, e^z without the row maximum subtracted. u = z / T throughout, and every gradient is
with respect to z (the chain rule's 1/T included), each row's weighted by the reference's own row weights
(SlipContext.gradient_weights), so the slip is the only difference from the reference.
Arrays in, arrays out; None where the slip has no meaning for the quantity or the loss.
"""

from __future__ import annotations

import numpy as np

from gradcheck_cli.checks.slip_context import SlipContext
from gradcheck_cli.numerics.softmax import softmax_parts


def _rows_times_jacobian(s: np.ndarray, vector: np.ndarray, temperature: float) -> np.ndarray:
    """J(s)^T v / T row by row, without building J: J is symmetric and J v = s (v - <s, v>)."""
    return s * (vector - (vector * s).sum(axis=-1, keepdims=True)) / temperature


def double_softmax(context: SlipContext, quantity: str, second_temperature: float) -> np.ndarray:
    """softmax applied twice: s = softmax(z / T) fed as logits to a loss that applies softmax(s / T2) again.

    Probabilities, lse and loss are the reference's at logits s and temperature T2; the gradient is J(s)^T / T
    times the gradient with respect to s; the Jacobian is J(r) J(s) / (T T2), r = softmax(s / T2), written
    out per element (a batched matrix product costs N C^3): with w = <r, s>,
    [J(r) J(s)]_ij = r_i (s_i delta_ij + s_j (w - s_i - r_j)).
    """
    temperature = context.temperature
    parts = softmax_parts(context.logits / temperature)
    if quantity == "jacobian":
        s, r = parts.s, softmax_parts(parts.s / second_temperature).s
        w = (r * s).sum(axis=-1, keepdims=True)
        product = s[:, None, :] * (w[:, :, None] - s[:, :, None] - r[:, None, :])
        product += s[:, :, None] * np.eye(context.classes)
        return product * (r[:, :, None] / (temperature * second_temperature))
    inner = context.reference_with(logits=parts.s, temperature=second_temperature)
    if quantity == "gradient":
        return _rows_times_jacobian(parts.s, inner, temperature)
    return inner


def logits_as_log_probabilities(context: SlipContext, quantity: str) -> np.ndarray | None:
    """The log-softmax skipped: u = z / T used where log s belongs (nll_loss on raw logits).

    Cross-entropy becomes l_n = -sum_c a[n, c] u[n, c], whose gradient is -a / T per row; "probabilities"
    become e^u (no normalisation), their Jacobian diag(e^u) / T; and the log-sum-exp of log-probabilities
    is log sum s = 0 (log-softmax output fed where logits belong).
    """
    u = context.logits / context.temperature
    if quantity == "probabilities":
        return np.exp(u)
    if quantity == "jacobian":
        return np.exp(u)[:, :, None] * np.eye(context.classes) / context.temperature
    if quantity == "lse":
        return np.zeros(context.rows)
    if context.coefficients is None:
        return None
    if quantity == "loss":
        return context.reduce(-(context.coefficients * u).sum(axis=-1))
    return -context.coefficients / context.temperature * context.gradient_weights


def softmax_instead_of_log(context: SlipContext, quantity: str) -> np.ndarray | None:
    """The log left out: l_n = -sum_c a[n, c] s[n, c] (nll_loss fed softmax output), gradient -J(s) a / T."""
    if context.coefficients is None or quantity not in ("loss", "gradient"):
        return None
    a = context.coefficients
    s = softmax_parts(context.logits / context.temperature).s
    if quantity == "loss":
        return context.reduce(-(a * s).sum(axis=-1))
    return -_rows_times_jacobian(s, a, context.temperature) * context.gradient_weights


def batch_axis_softmax(context: SlipContext, quantity: str) -> np.ndarray | None:
    """softmax over the batch axis: P[n, c] = e^u[n, c] / sum_m e^u[m, c] (softmax(dim=0) on an N x C batch).

    Within row n, P[n, c] moves only with z[n, c]: the row's Jacobian is diag(P (1 - P)) / T. The loss is
    the reference's on P; with row weights w (the reduction's, times the upstream) its gradient is the
    vector-Jacobian product through the columns: for G = dL/dP, dL/dz[m, c] = P[m, c] (G[m, c] -
    sum_n G[n, c] P[n, c]) / T, which for cross-entropy (G = -w a / P) is (P sum_n w_n a[n, c] - w a) / T
    and for the squared error (G = w (P - t)) stays as written. The lse is per column, so only when N = C.
    """
    # softmax_parts needs C order: it writes through flat views (a transposed view would lose those writes)
    columns = softmax_parts(np.ascontiguousarray((context.logits / context.temperature).T))
    p, complement = columns.s.T, columns.complement.T
    if quantity == "probabilities":
        return p
    if quantity == "jacobian":
        return (p * complement)[:, :, None] * np.eye(context.classes) / context.temperature
    if quantity == "lse":
        if context.rows != context.classes:
            return None
        return ((context.logits / context.temperature).max(axis=0) + columns.log_total[:, 0])
    return _batch_axis_loss(context, quantity, p)


def _batch_axis_loss(context: SlipContext, quantity: str, p: np.ndarray) -> np.ndarray | None:
    weights = context.gradient_weights
    temperature = context.temperature
    if context.coefficients is not None:
        a = context.coefficients
        if quantity == "loss":
            return context.reduce(-(a * np.log(p)).sum(axis=-1))
        return (p * (weights * a).sum(axis=0) - weights * a) / temperature
    if context.settings.loss == "mse":
        if quantity == "loss":
            return context.reduce(0.5 * ((p - context.targets) ** 2).sum(axis=-1))
        g = weights * (p - context.targets)
        return p * (g - (g * p).sum(axis=0)) / temperature
    return None


def forward_kl(student: np.ndarray, teacher: np.ndarray, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """KL(p || q) per row and its gradient by the student logits: sum p (log p - log q), (q - p) / T.

    p = softmax(teacher / T), q = softmax(student / T) (MATH.md); logs from log-softmax, so a p that
    underflows to 0 contributes 0, never 0 times infinity.
    """
    p, q = softmax_parts(teacher / temperature), softmax_parts(student / temperature)
    rows = (p.s * (p.log_s - q.log_s)).sum(axis=-1)
    return rows, (q.s - p.s) / temperature


def reverse_kl(student: np.ndarray, teacher: np.ndarray, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """KL(q || p) per row and its gradient by the student logits: sum q r and q (r - <q, r>) / T, r = log q - log p."""
    p, q = softmax_parts(teacher / temperature), softmax_parts(student / temperature)
    r = q.log_s - p.log_s
    return (q.s * r).sum(axis=-1), _rows_times_jacobian(q.s, r, temperature)


def other_kl_direction(context: SlipContext, quantity: str) -> np.ndarray | None:
    """The reference's KL loss in the other direction, reduced and weighted as the reference is."""
    if context.teacher_logits is None or quantity not in ("loss", "gradient"):
        return None
    other = {"kl": reverse_kl, "reverse-kl": forward_kl}.get(context.settings.loss)
    if other is None:
        return None
    rows, gradients = other(context.logits, context.teacher_logits, context.temperature)
    return context.reduce(rows) if quantity == "loss" else gradients * context.gradient_weights


def overflowing_rows(logits: np.ndarray, temperature: float) -> list[tuple[str, np.ndarray]]:
    """For float64 and float32, the rows where a softmax without the row maximum subtracted is not finite.

    e^u overflows (u beyond about 709.78 in float64, 88.72 in float32), or the row's sum of e^u does, or
    every e^u underflows to 0 (u below about -745 or -103): then e^u / sum e^u is inf / inf or 0 / 0.
    """
    found = []
    for dtype in (np.float64, np.float32):
        with np.errstate(over="ignore", under="ignore"):
            exps = np.exp((logits / temperature).astype(dtype))
            totals = exps.sum(axis=-1)
        rows = ~np.isfinite(exps).all(axis=-1) | ~np.isfinite(totals) | (totals == 0)
        found.append((np.dtype(dtype).name, rows))
    return found
