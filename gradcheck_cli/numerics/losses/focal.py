"""Focal loss on the softmax (Lin et al. 2017): l = -alpha (1 - s_y)^gamma log s_y per row, class labels, with
no alpha factor unless --alpha is given; gamma = 0 (and no alpha) is cross-entropy exactly. torchvision has only
the sigmoid form (torchvision.ops.sigmoid_focal_loss); this is the softmax one, written out in torch ops in
tests/fixtures/make_torch_golden.py."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gradcheck_cli.batch import Batch
from gradcheck_cli.errors import InputError
from gradcheck_cli.numerics.differences import METHODS, Perturbation, softmax_perturbation
from gradcheck_cli.numerics.losses.base import (
    Loss,
    LossKind,
    Scales,
    always,
    formatted_lines,
    one_per_row,
    shown,
    shown_each,
)
from gradcheck_cli.numerics.losses.transformed import explained, transformed
from gradcheck_cli.numerics.losses.z_loss import LOGISTIC_BOUNDS
from gradcheck_cli.numerics.softmax import Softmax, softmax_jacobian, softmax_parts
from gradcheck_cli.numerics.transforms import partial_bell
from gradcheck_cli.settings import Settings

DEFAULT_GAMMA = 2.0  # Lin et al.'s and torchvision's sigmoid_focal_loss default


@dataclass(eq=False, repr=False)  # holds arrays: == has no truth value; each generated method costs start-up
class Focal(Loss):
    """With u = 1 - s_y (the accurate complement) and L = log s_y: l = -alpha u^gamma L, and
    dl/dz_j = alpha u^gamma (gamma s_y L / u - 1) (delta_jy - s_j) / T, MATH.md's form with u^(gamma - 1) L
    written as u^gamma (L / u): L / u -> -1 as u -> 0, so no 0 * inf at a certain row (and both terms of the
    bracket are negative: nothing cancels)."""

    labels: np.ndarray
    gamma: float
    alpha: float
    method: str
    name: str = "focal"

    def _at_label(self, parts: Softmax) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(s_y, u = 1 - s_y, L = log s_y), one per row."""
        rows = np.arange(self.labels.shape[0])
        return parts.s[rows, self.labels], parts.complement[rows, self.labels], parts.log_s[rows, self.labels]

    def row_losses(self, logits: np.ndarray, given: Softmax | None = None) -> np.ndarray:
        _, u, log_s = self._at_label(self.softmax(logits, given))
        return -self.alpha * u**self.gamma * log_s

    def row_gradients(self, logits: np.ndarray, given: Softmax | None = None) -> np.ndarray:
        parts = self.softmax(logits, given)
        s_y, u, log_s = self._at_label(parts)
        ratio = np.where(u > 0, log_s / np.where(u > 0, u, 1), -1.0)  # L / u, its limit -1 at u = 0
        bracket = self.alpha * u**self.gamma * (self.gamma * s_y * ratio - 1.0)
        away = -parts.s  # delta_jy - s_j, with 1 - s_y the accurate complement at the label
        away[np.arange(self.labels.shape[0]), self.labels] = u
        return bracket[:, None] * away / self.temperature

    def perturbation(self, base: np.ndarray, given: Softmax | None = None) -> Perturbation:
        """l(z + d e_j) - l(z) exactly. Moving u_j by e = d / T (q = e^e - 1) moves L by -log1p(u (e^-e - 1)) at
        j = y and by -log1p(s_j q) elsewhere, and u by u r with r = -s_y q / (1 + s_y q) at j = y and
        s_y (s_j / u) q / (1 + s_j q) elsewhere (the softmax's exact changes). Then
        l' - l = -alpha u^gamma (dL + expm1(gamma log1p(r)) (L + dL)): every term proportional to the change."""
        parts = self.softmax(base, given)
        s_y, u, log_s = (part[:, None] for part in self._at_label(parts))
        share = np.where(u > 0, parts.s / np.where(u > 0, u, 1), 0.0)  # s_j / u <= 1
        level = self.alpha * u**self.gamma
        at_label = np.arange(parts.s.shape[1]) == self.labels[:, None]

        def perturb(column: int | slice, offsets: np.ndarray) -> np.ndarray:
            pick = slice(column, column + 1) if isinstance(column, int) else column
            e = np.asarray(offsets) / self.temperature
            e = e[:, None] if isinstance(column, int) and e.ndim == 1 else e
            q, s_j, label = np.expm1(e), parts.s[:, pick], at_label[:, pick]
            moved = -np.log1p(np.where(label, u * np.expm1(-e), s_j * q))
            rise = np.where(label, -s_y * q / (1.0 + s_y * q), s_y * share[:, pick] * q / (1.0 + s_j * q))
            change = -level * (moved + np.expm1(self.gamma * np.log1p(rise)) * (log_s + moved))
            return change[:, 0] if isinstance(column, int) else change

        return perturb

    def gradient_scales(self, logits: np.ndarray, given: Softmax | None = None) -> Scales:
        """Truncation: along u_j, l = alpha A B with A = u^gamma = exp(gamma log u) and B = -L. Every derivative
        of log u is a difference of at most two logistic-type terms (log u = log(e^(u_j) + c) - log(e^(u_j) + b)
        off the label, -softplus at it): |(log u)^(k)| <= lambda_k = 1, 2 q_1, 2 q_2, ...; |B^(k)| <= mu_k = 1,
        q_1, q_2, .... So |A^(k)| <= A Y_k(gamma lambda) (complete Bell) and by Leibniz
        |l^(n)| <= alpha u^gamma (Y_n |L| + sum_(k<n) C(n, k) Y_k mu_(n-k)), n = p + 1. Every derivative of B
        carries a factor u at the label (B' = u), and off it every derivative of log u and of B a factor
        s_j / u <= 1; S is that bound over D (the method's growth). N: the bracket's terms, u^gamma off by
        gamma times u's rounding, and L off by rho u absolute (a log-softmax's), which in L / u is rho u / u:
        (1 + gamma) alpha u^gamma (gamma s_y (|L| + 1) |delta_jy - s_j| / u + |delta_jy - s_j|)."""
        parts = self.softmax(logits, given)
        s_y, u, log_s = (part[:, None] for part in self._at_label(parts))
        spec = METHODS[self.method]
        n = spec.order + 1
        lam = tuple(self.gamma * (1.0 if k == 1 else 2.0 * LOGISTIC_BOUNDS[k - 2]) for k in range(1, n + 1))
        mu = tuple(1.0 if k == 1 else LOGISTIC_BOUNDS[k - 2] for k in range(1, n + 1))
        bell = [1.0] + [sum(partial_bell(k, i, lam) for i in range(1, k + 1)) for k in range(1, n + 1)]
        tail = sum(math.comb(n, k) * bell[k] * mu[n - k - 1] for k in range(n))
        level = self.alpha * u**self.gamma
        at_label = np.arange(parts.s.shape[1]) == self.labels[:, None]
        share = np.minimum(np.where(u > 0, parts.s / np.where(u > 0, u, 1), 0.0), 1.0)
        bound = np.where(at_label, bell[n] * np.abs(log_s) + tail * np.minimum(u, 1.0),
                         share * (bell[n] * np.abs(log_s) + tail))
        reach = np.where(at_label, np.minimum(u, 1.0) > 0, share)  # |delta_jy - s_j| / u, at most 1
        away = np.where(at_label, u, parts.s)
        held = (1.0 + self.gamma) * level  # u^gamma's rounding: gamma times u's
        terms = held * (self.gamma * s_y * (np.abs(log_s) + 1.0) * reach + away)
        row = held * (self.gamma * (np.abs(log_s) + 1.0) + 1.0)
        return Scales(level * bound / spec.growth * self.factor, terms * self.factor, row * self.factor)

    def loss_scales(self, logits: np.ndarray, given: Softmax | None = None) -> Scales:
        """Of each row's loss: N = (1 + gamma) alpha u^gamma (|L| + 1), L off by rho u absolute."""
        _, u, log_s = self._at_label(self.softmax(logits, given))
        gross = (1.0 + self.gamma) * self.alpha * u**self.gamma * (np.abs(log_s) + 1.0)
        return Scales(np.abs(self.row_losses(logits, given)), gross, gross)

    def _hessian_parts(self, parts: Softmax) -> tuple[np.ndarray, ...]:
        """(u, L / u, r, B, K) per row: r_j = (delta_jy - s_j) / u (r_y = 1, |r_j| <= 1; 0 at a certain row),
        B = alpha u^gamma (gamma s_y L / u - 1) the gradient's bracket, K = alpha gamma s_y u^(gamma + 1)
        ((L + 2) - (gamma - 1) s_y L / u): dB/ds_y s_y (delta_jy - s_j)(delta_ky - s_k) = K r_j r_k."""
        s_y, u, log_s = self._at_label(parts)
        positive = u > 0
        safe = np.where(positive, u, 1.0)
        ratio = np.where(positive, log_s / safe, -1.0)  # L / u, its limit -1 at u = 0
        r = -parts.s / safe[:, None] * positive[:, None]
        r[np.arange(self.labels.shape[0]), self.labels] = positive
        level = u**self.gamma
        bracket = self.alpha * level * (self.gamma * s_y * ratio - 1.0)
        curve = self.alpha * self.gamma * s_y * level * u * ((log_s + 2.0) - (self.gamma - 1.0) * s_y * ratio)
        return u, ratio, r, bracket, curve

    def hessian(self, logits: np.ndarray) -> np.ndarray:
        """d2l/dz_j dz_k = (K r_j r_k - B J_jk) / T^2 (times the reduction's scale): the gradient B (delta_jy - s_j)
        / T differentiated by the product rule, dB/dz_k = dB/ds_y s_y (delta_ky - s_k) / T and d(delta_jy - s_j)/dz_k
        = -J_jk / T, with dB/ds_y = alpha gamma u^(gamma - 2) (u (L + 2) - (gamma - 1) s_y L). gamma = 0 and alpha
        = 1 give J / T^2, cross-entropy's. Every factor is bounded where u -> 0 (K r r ~ u^(gamma + 1))."""
        parts = softmax_parts(logits / self.temperature)
        _, _, r, bracket, curve = self._hessian_parts(parts)
        jacobian = softmax_jacobian(parts.s, parts.complement)
        hessian = curve[:, None, None] * r[:, :, None] * r[:, None, :] - bracket[:, None, None] * jacobian
        return hessian * (self.factor / self.temperature)

    def gradient_perturbation(self, base: np.ndarray, given: Softmax | None = None) -> Perturbation:
        """The exact change of the gradient B e_j / T (e_j = delta_jy - s_j) as z_k moves by d (e = d / T): with
        perturbation's exact changes of u (u r, r the rise) and of L (dL), and de = -ds (the softmax's),
        u^gamma moves by u^gamma expm1(gamma log1p(r)), L / u by (dL / u - (L / u) r) / (1 + r), s_y by -u r, so
        dB = alpha (d(u^gamma) (Q + dQ) + u^gamma dQ), Q = gamma s_y L / u - 1, and the gradient by
        dB (e + de) + B de: every term proportional to the change (column k an int)."""
        parts = self.softmax(base, given)
        s_y, u, log_s = self._at_label(parts)
        positive = u > 0
        safe = np.where(positive, u, 1.0)
        ratio = np.where(positive, log_s / safe, -1.0)
        share = parts.s / safe[:, None]
        level = u**self.gamma
        bracket = self.gamma * s_y * ratio - 1.0
        away = -parts.s
        away[np.arange(self.labels.shape[0]), self.labels] = u
        softmax_change = softmax_perturbation(base / self.temperature, parts)
        unit = self.alpha * self.factor

        def perturb(column: int | slice, offsets: np.ndarray) -> np.ndarray:
            assert isinstance(column, int)
            e = np.asarray(offsets) / self.temperature
            q, s_j, label = np.expm1(e), parts.s[:, column], self.labels == column
            rise = np.where(label, -s_y * q / (1.0 + s_y * q), s_y * share[:, column] * q / (1.0 + s_j * q))
            moved_log = -np.log1p(np.where(label, u * np.expm1(-e), s_j * q))
            moved_level = level * np.expm1(self.gamma * np.log1p(rise))
            moved_ratio = np.where(positive, (moved_log / safe - ratio * rise) / (1.0 + rise), 0.0)
            moved_bracket = self.gamma * (-u * rise * (ratio + moved_ratio) + s_y * moved_ratio)
            moved = moved_level * (bracket + moved_bracket) + level * moved_bracket
            moved_away = -softmax_change(column, e)
            return unit * (moved[:, None] * (away + moved_away) + (level * bracket)[:, None] * moved_away)

        return perturb

    def hessian_scales(self, logits: np.ndarray, given: Softmax | None = None) -> Scales:
        """Truncation: along v_k = z_k / T what is differenced is G_j = B e_j; by Leibniz its n-th derivative
        (n = p + 1) is at most sum_m C(n, m) b_(n-m) E_m, E_0 = |e_j|, E_m = q_m |J_jk| (s_j's derivatives, as
        for the z-loss), b_0 = |B|, and for i >= 1, writing B = alpha (gamma s_y L u^(gamma - 1) - u^gamma):
        b_i = alpha u^gamma (gamma sum_(a+b+c=i) i! / (a! b! c!) F1_a F2_b F3_c + Y_i(gamma lambda)), with s_y's
        derivatives F1_0 = s_y, F1_a = q_a s_y u; L's F2_0 = |L / u|, F2_b = mu_b (|L^(b)| <= mu_b u, a factor
        u taken out with u^(gamma - 1)); u^(gamma - 1)'s F3_c = Y_c(|gamma - 1| lambda) (Y the complete Bell
        polynomial, lambda as gradient_scales'). S is that over D, times the reduction's scale over T^2.
        Rounding: K's terms and B's, u^gamma off by gamma times u's rounding and L off by rho u absolute (L / u
        by rho u / u, carried by |J_jk| / u <= 1): N = (1 + gamma) (alpha gamma s_y u^gamma (u (|L| + 3)
        + |gamma - 1| s_y (|L| + 1)) |r_j r_k| + alpha u^gamma (gamma s_y (|L| + 1) |J_jk| / u + s_j s_k
        + [j = k] s_j)).
        """
        parts = self.softmax(logits, given)
        s_y, u, log_s = self._at_label(parts)
        _, ratio, r, bracket, _ = self._hessian_parts(parts)
        n = METHODS[self.method].order + 1
        derivatives = _bracket_bounds(self.gamma, n, s_y, u, ratio)
        level = self.alpha * u**self.gamma
        jacobian = np.abs(softmax_jacobian(parts.s, parts.complement))
        away = np.abs(r) * u[:, None]  # |delta_jy - s_j|
        size = np.abs(bracket)[:, None, None] * LOGISTIC_BOUNDS[n - 1] * jacobian
        size += (level * derivatives[n - 1])[:, None, None] * away[:, :, None]
        for m in range(1, n):  # n <= 7 terms, each a whole N x C x C array
            below = (level * derivatives[n - m - 1])[:, None, None]
            size += math.comb(n, m) * below * LOGISTIC_BOUNDS[m - 1] * jacobian
        unit = self.factor / self.temperature
        held, magnitude = (1.0 + self.gamma) * level, np.abs(log_s) + 1.0
        curve = held * self.gamma * s_y * (u * (magnitude + 2.0) + abs(self.gamma - 1.0) * s_y * magnitude)
        reach = np.where(u[:, None, None] > 0, jacobian / np.where(u > 0, u, 1.0)[:, None, None], 0.0)
        s = parts.s
        plain = s[:, :, None] * s[:, None, :] + np.eye(s.shape[-1]) * s[:, :, None]
        gross = (curve[:, None, None] * np.abs(r[:, :, None] * r[:, None, :])
                 + held[:, None, None] * ((self.gamma * s_y * magnitude)[:, None, None] * reach + plain))
        row = gross.max(axis=(1, 2), keepdims=True) if gross.size else np.zeros((gross.shape[0], 1, 1))
        return Scales(size / METHODS[self.method].growth * unit, gross * unit, row * unit)


def _complete_bell(n: int, x: tuple[np.ndarray, ...]) -> list[np.ndarray]:
    """Y_0..Y_n(x): the complete Bell polynomials, bounds of the derivatives of exp(f) over exp(f) given
    |f^(k)| <= x_k."""
    bells = [np.ones_like(x[0])]
    bells += [sum((partial_bell(k, i, x) for i in range(1, k + 1)), start=np.zeros_like(x[0])) for k in range(1, n + 1)]
    return bells


def _bracket_bounds(gamma: float, n: int, s_y: np.ndarray, u: np.ndarray, ratio: np.ndarray) -> list[np.ndarray]:
    """b_i / (alpha u^gamma) for i = 1..n (hessian_scales): bounds of the derivatives of B along any v_k.

    Of log u (lambda, per row): at the label log u = -softplus(v_y + c), so (log u)' = -s_y and the m-th is
    -sigma^(m-1) of sigma = s_y, at most q_(m-1) s_y u. Off it log u = log sum_(i != y) e^(v_i) - lse: (log u)'
    = s_k / u - s_k = s_k s_y / u <= s_y, the m-th a difference of two logistics' (m-1)-th, at most
    q_(m-1) / 2; and as log u = -log1p(r), r = s_y / u = e^(v_y) / (e^(v_k) + P) whose m-th derivative is
    at most q_m r (r is (e^(v_y) / P) (1 - sigma) in v_k), by Faa di Bruno also at most
    sum_k (k - 1)! r^k B_(m,k)(q), small where s_y is. Each lambda_m is the larger of the label's and the
    least of the other two (both are bounded by q_(m-1) / 2); the Bell polynomials take them as arrays."""
    r = np.where(u > 0, s_y / np.where(u > 0, u, 1.0), np.inf)
    logistic = LOGISTIC_BOUNDS[:n]

    def of_log_u(m: int) -> np.ndarray:
        by_ratio = sum(math.factorial(k - 1) * partial_bell(m, k, logistic) * r**k for k in range(1, m + 1))
        off_label = np.minimum(LOGISTIC_BOUNDS[m - 2] / 2.0, by_ratio)
        return np.maximum(LOGISTIC_BOUNDS[m - 2] * s_y * u, off_label)

    log_u = (s_y, *(of_log_u(m) for m in range(2, n + 1)))
    of_power = _complete_bell(n, tuple(abs(gamma - 1.0) * x for x in log_u))  # u^(gamma - 1) / itself
    of_level = _complete_bell(n, tuple(gamma * x for x in log_u))  # u^gamma / itself
    of_log = [np.abs(ratio)] + [np.full_like(u, 1.0 if b == 1 else LOGISTIC_BOUNDS[b - 2]) for b in range(1, n + 1)]
    of_s = [s_y] + [LOGISTIC_BOUNDS[a - 1] * s_y * u for a in range(1, n + 1)]
    bounds = []
    for i in range(1, n + 1):
        total = np.zeros_like(u)
        for a in range(i + 1):
            for b in range(i - a + 1):
                c = i - a - b
                ways = math.factorial(i) // (math.factorial(a) * math.factorial(b) * math.factorial(c))
                total = total + ways * of_s[a] * of_log[b] * of_power[c]
        bounds.append(gamma * total + of_level[i])
    return bounds


def build(batch: Batch, settings: Settings, dtype: np.dtype) -> Loss:
    """The focal loss of the batch's labels; gamma 2 unless given, alpha 1 (no factor) unless given."""
    if batch.labels is None:
        raise InputError("--loss focal takes class labels (--labels, \"labels\"), not target distributions")
    gamma = DEFAULT_GAMMA if settings.gamma is None else settings.gamma
    alpha = 1.0 if settings.alpha is None else settings.alpha
    loss = Focal(settings.reduction, float(batch.rows), settings.temperature, labels=batch.labels, gamma=gamma,
                 alpha=alpha, method=settings.method)
    return transformed(loss, settings)


def explain(loss: Loss, z: np.ndarray, s: np.ndarray, row: int) -> list[str]:
    """The focal loss and its gradient (the chain rule through u = 1 - s_y) with the row's numbers."""
    assert isinstance(loss, Focal)
    y, gamma, alpha = int(loss.labels[row]), loss.gamma, loss.alpha
    parts = softmax_parts(z[None, :])
    s_y, u, log_s = float(parts.s[0, y]), float(parts.complement[0, y]), float(parts.log_s[0, y])
    bracket = alpha * u**gamma * (gamma * s_y * (log_s / u if u > 0 else -1.0) - 1.0)
    lines = [f"3. Focal loss: L = −α(1 − s_y)^γ log s_y, y = {y}, γ = {shown(gamma)}, α = {shown(alpha)}",
             f"   u = 1 − s_y = {shown(u)}, log s_y = {shown(log_s)}",
             f"   L = −{shown(alpha)}×{shown(u)}^{shown(gamma)}×({shown(log_s)}) = {shown(-alpha * u**gamma * log_s)}",
             "",
             "4. Gradient (chain rule through u and log s_y; ∂s_y/∂z_j = s_y(δ_jy − s_j), ∂log s_y/∂z_j = δ_jy − s_j):",
             "   ∂L/∂z_j = α[γu^(γ−1)·log s_y·s_y − u^γ]·(δ_jy − s_j)",
             f"   α[γu^(γ−1)·log s_y·s_y − u^γ] = {shown(bracket)}"]
    away = (np.arange(len(z)) == y) - s
    lines += formatted_lines("   ∂L/∂z_%d = %s×(%s) = %s", range(len(z)), [shown(bracket)] * len(z), shown_each(away),
                             shown_each(bracket * away))
    lines.append("   (γ = 0 and no α: cross-entropy's s_j − δ_jy; with mean, divided by N)")
    return lines


KIND = LossKind("focal", ("gamma", "alpha", "softcap", "logit_scale"), build, one_per_row, always, explained(explain))
