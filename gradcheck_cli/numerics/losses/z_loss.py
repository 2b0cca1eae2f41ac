"""The z-loss (PaLM) that cross_entropy.py adds to each row: S lse^2, lse = log sum_j exp(u_j), u = z / T.

By u (the reduction's scale and the 1/T per derivative are the caller's): its gradient is 2 S lse s, its Hessian
2 S (lse J + s s^T) (lse' = s, s' = J), and this module gives both with the scales their tolerances take. Not a
loss of the registry: a part of cross-entropy, kept apart to keep cross_entropy.py short.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from gradcheck_cli.numerics.differences import METHODS
from gradcheck_cli.numerics.losses.base import Scales
from gradcheck_cli.numerics.softmax import Softmax, softmax_jacobian

# q_m with |sigma^(m)| <= q_m sigma (1 - sigma), m = 1..7 (differences.py, "Truncation").
LOGISTIC_BOUNDS = (1.0, 1.0, 1.0, 1.0, 1.0, 1.82, 4.25)


def log_sum_exp(logits: np.ndarray, parts: Softmax, temperature: float) -> np.ndarray:
    """lse = log sum_j exp(u_j) of u = (the entering logits) / T, one per row: max u + log sum exp(u - max u)."""
    return (logits / temperature).max(axis=-1) + parts.log_total[:, 0]


def lse_extent(logits: np.ndarray, parts: Softmax, temperature: float) -> np.ndarray:
    """What lse's absolute rounding is proportional to: |max u| + log sum exp(u - max u) + 1."""
    return np.abs(logits / temperature).max(axis=-1) + parts.log_total[:, 0] + 1.0


def z_loss_scales(z_weights: np.ndarray, logits: np.ndarray, parts: Softmax, temperature: float, method: str
                  ) -> Scales:
    """Of the z-loss's gradient elements 2 S lse s_j, before the reduction's scale over T.

    Truncation: along u_j, lse' = s_j = sigma, so (lse^2)^(n) = 2 lse sigma^(n-1) + sum_(i=1..n-1) C(n, i)
    sigma^(i-1) sigma^(n-1-i) (Leibniz), each sigma^(m) at most q_m sigma (1 - sigma) (sigma itself for m = 0);
    S is that bound over D (the method's growth, whose D S bounds the differenced derivative), n = p + 1.
    Rounding: lse is off by u (|max u| + log_total + 1) absolute, s_j by rho u relative: N = 2 S s_j (|lse|
    + that extent)."""
    spec = METHODS[method]
    n, s = spec.order + 1, parts.s
    spread = s * parts.complement

    def bound(m: int) -> np.ndarray:
        return s if m == 0 else LOGISTIC_BOUNDS[m - 1] * spread

    lse = np.abs(log_sum_exp(logits, parts, temperature))[:, None]
    size = 2 * lse * bound(n - 1) + sum((math.comb(n, i) * bound(i - 1) * bound(n - 1 - i) for i in range(1, n)),
                                        start=np.zeros_like(s))
    weight = z_weights[:, None]
    extent = lse + lse_extent(logits, parts, temperature)[:, None]
    return Scales(weight * size / spec.growth, 2 * weight * s * extent, 2 * weight * extent)


def z_loss_hessian(z_weights: np.ndarray, logits: np.ndarray, parts: Softmax, temperature: float) -> np.ndarray:
    """d2(S lse^2)/du2 = 2 S (lse J + s s^T) per row (N x C x C): the gradient 2 S lse s differentiated."""
    s = parts.s
    lse = log_sum_exp(logits, parts, temperature)
    twice = (2 * z_weights)[:, None, None]
    return twice * (softmax_jacobian(s, parts.complement) * lse[:, None, None] + s[:, :, None] * s[:, None, :])


def z_loss_gradient_change(z_weights: np.ndarray, logits: np.ndarray, parts: Softmax, temperature: float
                           ) -> Callable[[int, np.ndarray, np.ndarray], np.ndarray]:
    """(column j, u-offsets e, the softmax's exact change ds there) -> the exact change of 2 S lse s as u_j moves
    by e: lse moves by dlse = log1p(s_j (e^e - 1)), so 2 S ((lse + dlse)(s + ds) - lse s) = 2 S (lse ds + dlse
    (s + ds)), every term proportional to the change (no large value subtracted)."""
    s = parts.s
    lse = log_sum_exp(logits, parts, temperature)[:, None]
    twice = (2 * z_weights)[:, None]

    def change(column: int, offsets: np.ndarray, moved: np.ndarray) -> np.ndarray:
        lift = np.log1p(s[:, column] * np.expm1(offsets))
        return twice * (lse * moved + np.reshape(lift, (-1, 1)) * (s + moved))

    return change


def z_loss_hessian_scales(z_weights: np.ndarray, logits: np.ndarray, parts: Softmax, temperature: float,
                          method: str) -> Scales:
    """Of the z-loss's Hessian elements 2 S (lse J_ij + s_i s_j) by u (N x C x C; the caller's scale over T^2).

    Truncation: what is differenced along u_j is the gradient element 2 S lse s_i. By Leibniz its n-th
    derivative (n = p + 1) is 2 S sum_(k=0..n) C(n, k) lse^(k) s_i^(n-k), with lse^(0) = lse, lse' = s_j,
    lse^(k) = sigma^(k-1) <= q_(k-1) s_j (1 - s_j), and s_i^(0) = s_i, s_i^(m) <= q_m |J_ij| (at i = j s_j is
    the logistic sigma of u_j; at i != j s_i = c (1 - sigma), so s_i^(m) = -c sigma^(m), c sigma (1 - sigma) =
    s_i s_j). S is that bound over D (the method's growth). Rounding: lse is off by u (its extent) absolute,
    s by rho u relative: N = 2 S ((|lse| + extent) (s_i s_j, or s_i on the diagonal) + s_i s_j). G = 2 S
    (|lse| + extent + 1)."""
    spec = METHODS[method]
    n, s = spec.order + 1, parts.s
    jacobian = np.abs(softmax_jacobian(s, parts.complement))
    lse = np.abs(log_sum_exp(logits, parts, temperature))[:, None, None]
    column_s, spread = s[:, None, :], (s * parts.complement)[:, None, :]

    def of_lse(k: int) -> np.ndarray:  # along u_j: the column's own s_j and its logistic derivatives
        return column_s if k == 1 else LOGISTIC_BOUNDS[k - 2] * spread

    def of_s(m: int) -> np.ndarray:
        return s[:, :, None] if m == 0 else LOGISTIC_BOUNDS[m - 1] * jacobian

    size = lse * of_s(n) + sum((math.comb(n, k) * of_lse(k) * of_s(n - k) for k in range(1, n + 1)),
                               start=np.zeros_like(jacobian))
    twice = (2 * z_weights)[:, None, None]
    extent = lse + lse_extent(logits, parts, temperature)[:, None, None]
    outer = s[:, :, None] * s[:, None, :]
    gross = outer + np.eye(s.shape[-1]) * s[:, :, None]
    return Scales(twice * size / spec.growth, twice * (extent * gross + outer), twice * (extent + 1.0))
