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
from gradcheck_cli.numerics.differences import METHODS, Perturbation
from gradcheck_cli.numerics.losses.base import Loss, LossKind, Scales, always, one_per_row, shown
from gradcheck_cli.numerics.losses.transformed import explained, transformed
from gradcheck_cli.numerics.softmax import Softmax, softmax_parts
from gradcheck_cli.numerics.transforms import partial_bell
from gradcheck_cli.settings import Settings

DEFAULT_GAMMA = 2.0  # Lin et al.'s and torchvision's sigmoid_focal_loss default
# q_m with |sigma^(m)| <= q_m sigma (1 - sigma), m = 1..7 (differences.py, "Truncation").
_LOGISTIC_BOUNDS = (1.0, 1.0, 1.0, 1.0, 1.0, 1.82, 4.25)


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
        lam = tuple(self.gamma * (1.0 if k == 1 else 2.0 * _LOGISTIC_BOUNDS[k - 2]) for k in range(1, n + 1))
        mu = tuple(1.0 if k == 1 else _LOGISTIC_BOUNDS[k - 2] for k in range(1, n + 1))
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

    def hessian(self, logits: np.ndarray) -> np.ndarray:
        raise InputError("--order 2 is not checked for --loss focal yet")


def build(batch: Batch, settings: Settings, dtype: np.dtype) -> Loss:
    """The focal loss of the batch's labels; gamma 2 unless given, alpha 1 (no factor) unless given."""
    if batch.labels is None:
        raise InputError("--loss focal takes class labels (--labels, \"labels\"), not target distributions")
    if settings.order == 2:
        raise InputError("--order 2 is not checked for --loss focal yet: its Hessian is well defined (u^gamma = "
                         "exp(-gamma softplus) is smooth in the logits), but its exact differences are not written")
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
    lines += [f"   ∂L/∂z_{j} = {shown(bracket)}×({shown(float((j == y) - s[j]))}) = "
              f"{shown(bracket * float((j == y) - s[j]))}" for j in range(len(z))]
    lines.append("   (γ = 0 and no α: cross-entropy's s_j − δ_jy; with mean, divided by N)")
    return lines


KIND = LossKind("focal", ("gamma", "alpha", "softcap", "logit_scale"), build, one_per_row, always, explained(explain))
