"""The squared error of the softmax against target rows, 1/2 sum_k (s_k - t_k)^2 per row."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gradcheck_cli.batch import Batch
from gradcheck_cli.numerics.differences import Perturbation, softmax_perturbation
from gradcheck_cli.numerics.losses.base import Loss, LossKind, Scales, always, one_per_row, shown, shown_each
from gradcheck_cli.numerics.softmax import Softmax, softmax_jacobian, softmax_parts
from gradcheck_cli.settings import Settings


@dataclass(eq=False, repr=False)  # holds arrays: == has no truth value; each generated method costs start-up
class SquaredError(Loss):
    """l_n = 1/2 sum_k (s_k - t_k)^2 on s = softmax(z / T); its gradient is the vector-Jacobian product.

    With g = dl/ds = s - t: dl/dz_k = s_k (g_k - sum_j g_j s_j) / T. (One source writes g = 2(s - t) for this
    loss: with the 1/2 that factor is wrong, and a check of it fails.)
    """

    targets: np.ndarray
    name: str = "mse"

    def row_losses(self, logits: np.ndarray, given: Softmax | None = None) -> np.ndarray:
        return 0.5 * ((self.softmax(logits, given).s - self.targets) ** 2).sum(axis=-1)

    def row_gradients(self, logits: np.ndarray, given: Softmax | None = None) -> np.ndarray:
        s = self.softmax(logits, given).s
        g = s - self.targets
        return s * (g - (g * s).sum(axis=-1, keepdims=True)) / self.temperature

    def hessian(self, logits: np.ndarray) -> np.ndarray:
        """H = J J + (g_i - <g,s>) J_ij - s_i s_j (g_j - <g,s>), over T^2 (J symmetric, g = s - t)."""
        parts = softmax_parts(logits / self.temperature)
        s = parts.s
        jacobian = softmax_jacobian(s, parts.complement)
        centred = s - self.targets - ((s - self.targets) * s).sum(axis=-1, keepdims=True)
        curvature = centred[:, :, None] * jacobian - s[:, :, None] * (s * centred)[:, None, :]
        # Divided by T twice, not by T**2: that underflows to 0 for T below 1e-154 (and 1/0 raises).
        return (jacobian @ jacobian + curvature) * (self.factor / self.temperature)

    def perturbation(self, base: np.ndarray, given: Softmax | None = None) -> Perturbation:
        """l(z + d e_j) - l(z) exactly, every row in O(1) per column, from the exact change of s.

        Moving z_j by d changes s_j by (1 - s_j) nu and every other s_k by -s_k nu, nu = s_j q / (1 + s_j q),
        q = e^(d/T) - 1 (differences.softmax_perturbation). So l = 1/2 sum (s - t)^2 changes by
        sum_k ds_k (g_k + ds_k / 2) = ds_j (g_j + ds_j / 2) - nu (sum_(k!=j) s_k g_k - nu/2 sum_(k!=j) s_k^2):
        every term is proportional to the change, and so is its rounding (a re-evaluated row carries
        eps |l| / h).
        """
        parts = self.softmax(base, given)
        s, complement, g = parts.s, parts.complement, parts.s - self.targets
        others_g = (g * s).sum(axis=-1, keepdims=True) - s * g
        others_squared = _others_squared(parts)

        def perturb(column: int | slice, offsets: np.ndarray) -> np.ndarray:
            q = np.expm1(offsets / self.temperature)
            moved = s[:, column] * q
            nu = moved / (1.0 + moved)
            own = complement[:, column] * nu
            return own * (g[:, column] + own / 2) - nu * (others_g[:, column] - nu / 2 * others_squared[:, column])

        return perturb

    def gradient_perturbation(self, base: np.ndarray, given: Softmax | None = None) -> Perturbation:
        """g(z + d e_j) - g(z) exactly: with s' = s + ds and c = <s - t, s>, the row gradient s (s - t - c) / T
        moves by ds (s - t - c) + s' (ds - dc), dc = <ds, s - t + s'>: every term proportional to ds."""
        parts = self.softmax(base, given)
        s, g = parts.s, parts.s - self.targets
        centred = g - (g * s).sum(axis=-1, keepdims=True)
        change = softmax_perturbation(base / self.temperature, parts)

        def perturb(column: int | slice, offsets: np.ndarray) -> np.ndarray:
            delta = change(column, offsets / self.temperature)
            moved = s + delta
            shift = (delta * (g + moved)).sum(axis=-1, keepdims=True)
            return (delta * centred + moved * (delta - shift)) * self.factor

        return perturb

    def gradient_scales(self, logits: np.ndarray, given: Softmax | None = None) -> Scales:
        """Per element, over T and times the reduction's scale. As u_j moves the row loss is F(s_j), F quadratic,
        F' s_j' the gradient and F'' = 1 + sum_(k!=j) s_k^2 / (1 - s_j)^2, so by Faa di Bruno
        S = |F'| s' + F'' s'^2 = |s_j (g_j - <g,s>)| + s_j^2 ((1 - s_j)^2 + sum_(k!=j) s_k^2);
        N = s_j (s_j + t_j + sum_k s_k (s_k + t_k)), what s (g - <g,s>) rounds: g = s - t is off by the
        rounding of s and t, not of g (it cancels where s is near t); G = max (s + t) + <s, s + t> + 1."""
        parts = self.softmax(logits, given)
        s, complement, g = parts.s, parts.complement, parts.s - self.targets
        terms = s + self.targets  # what g = s - t is computed from (t >= 0)
        spread = (s * terms).sum(axis=-1, keepdims=True)
        numerator = s * (g - (g * s).sum(axis=-1, keepdims=True))
        size = np.abs(numerator) + s * s * (complement * complement + _others_squared(parts))
        row = terms.max(axis=-1, keepdims=True) + spread + 1.0
        return Scales(size * self.factor, s * (terms + spread) * self.factor, row * self.factor)

    def hessian_scales(self, logits: np.ndarray, given: Softmax | None = None) -> Scales:
        """S[n, i, j] = sum_k |R^(k)| s'^k, g_i as u_j moves being a cubic R in s_j (_cubic_terms); N the terms of
        the analytic formula and of the exact changes; over T^2 and times the reduction's scale."""
        parts = self.softmax(logits, given)
        s, terms = parts.s, parts.s + self.targets  # the terms of g = s - t
        centred = terms + (s * terms).sum(axis=-1, keepdims=True)  # the terms of g - <g,s>
        size = sum(np.abs(term) for term in _cubic_terms(parts, self.targets))
        jacobian = np.abs(softmax_jacobian(s, parts.complement))
        reach = np.einsum("nkj,nk->nj", jacobian, terms + s)
        gross = (jacobian @ jacobian + jacobian * (centred + s)[:, :, None] + s[:, :, None] * reach[:, None, :]
                 + s[:, :, None] * (s * centred)[:, None, :])
        scale = self.factor / self.temperature
        row = (1.0 + 4.0 * terms.max(axis=-1))[:, None, None]
        return Scales(size * scale, np.maximum(gross, size) * scale, row * scale)

    def loss_scales(self, logits: np.ndarray, given: Softmax | None = None) -> Scales:
        """Of each row's loss: N = sum_k (g_k^2 + (s_k + t_k) |g_k|), what 1/2 sum (s - t)^2 rounds."""
        parts = self.softmax(logits, given)
        g = parts.s - self.targets
        gross = (g * g + (parts.s + self.targets) * np.abs(g)).sum(axis=-1)
        return Scales(np.abs(self.row_losses(logits, parts)), gross, gross)


def _others_squared(parts: Softmax) -> np.ndarray:
    """sum_(k != j) s_k^2 for every j; at the row's largest class summed directly, so nothing cancels."""
    squares = parts.s * parts.s
    others = squares.sum(axis=-1, keepdims=True) - squares  # s_j^2 <= the largest's: at most one bit lost
    at_largest = (np.arange(squares.shape[0]), parts.largest)
    squares[at_largest] = 0.0
    others[at_largest] = squares.sum(axis=-1)
    return others


def _cubic_terms(parts: Softmax, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """R' s', R'' s'^2 and R''' s'^3 for every [n, i, j], s' = s_j (1 - s_j), before the scale over T^2.

    As u_j moves, s_j = sigma and s_k = r_k (1 - sigma) (r_k = s_k / (1 - s_j)), so c = <s - t, s> is
    sigma^2 - sigma t_j + rho (1 - sigma)^2 - tau (1 - sigma) (rho = sum_(k!=j) r_k^2, tau = sum_(k!=j) r_k t_k)
    and g_i = s_i (s_i - t_i - c) is a cubic R in sigma. Written with slope = (1 - s_j) dc/dsigma and
    bend = (1 - s_j)^2 d2c/dsigma2, so that nothing divides by 1 - s_j. R' s' is the Hessian element itself.
    """
    s, complement, t = parts.s, parts.complement, targets
    inner = ((s - t) * s).sum(axis=-1, keepdims=True)
    others = _others_squared(parts)
    slope = 2 * s * complement - 2 * others - t * complement + (s * t).sum(axis=-1, keepdims=True) - s * t
    bend = 2 * complement * complement + 2 * others
    si, ti, sj = s[:, :, None], t[:, :, None], s[:, None, :]
    first = si * sj * (ti + inner[:, :, None] - 2 * si - slope[:, None, :])
    second = sj * sj * (2 * si * si + 2 * si * slope[:, None, :] - si * bend[:, None, :])
    third = 3 * sj**3 * si * bend[:, None, :]
    diagonal = np.arange(s.shape[-1])
    first[:, diagonal, diagonal] = s * complement * (2 * s - t - inner) - s * s * slope
    second[:, diagonal, diagonal] = s * s * (2 * complement * complement - 2 * complement * slope - s * bend)
    third[:, diagonal, diagonal] = -3 * s**3 * complement * bend
    return first, second, third


def squared_error(targets: np.ndarray, reduction: str = "mean", temperature: float = 1.0) -> SquaredError:
    """1/2 sum_k (s_k - t_k)^2 per row; mean averages over rows (not over rows x classes as torch's mse_loss)."""
    return SquaredError(reduction, float(targets.shape[0]), temperature, targets=targets)


def build(batch: Batch, settings: Settings, dtype: np.dtype) -> SquaredError:
    return squared_error(batch.targets.astype(dtype), settings.reduction, settings.temperature)


def explain(loss: Loss, z: np.ndarray, s: np.ndarray, row: int) -> list[str]:
    """The squared error and its gradient (a vector-Jacobian product) with the row's numbers, classes numbered
    from 0 as check numbers them; each kind of line formatted by one call for every class (base.shown's format)."""
    assert isinstance(loss, SquaredError)

    each = shown_each

    t = loss.targets[row]
    g = s - t
    inner = float((g * s).sum())
    squares = " + ".join(f"({text})²" for text in each(g))
    lines = ["3. Squared error: L = ½ Σ_k (s_k − t_k)²", "   t = (" + ", ".join(each(t)) + ")",
             f"   L = ½ ({squares}) = {shown(0.5 * float((g * g).sum()))}", "",
             "4. Gradient: with g = ∂L/∂s = s − t, ∂L/∂z_k = Σ_j g_j ∂s_j/∂z_k = s_k (g_k − Σ_j g_j s_j)",
             f"   Σ_j g_j s_j = {shown(inner)}"]
    values: list[object] = [None] * (t.size * 5)  # a column per slice, then one formatting call for every line
    values[0::5], values[1::5], values[2::5] = range(t.size), each(s), each(g)
    values[3::5], values[4::5] = [shown(inner)] * t.size, each(s * (g - inner))
    lines += ("   ∂L/∂z_%d = %s×(%s − %s) = %s\n" * t.size % tuple(values)).split("\n")[:-1]
    lines.append("   (the ½ cancels the 2 of the square: g = s − t, not 2(s − t); with mean, divided by N)")
    return lines


KIND = LossKind("mse", (), build, one_per_row, always, explain)
