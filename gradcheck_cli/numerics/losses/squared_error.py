"""The squared error of the softmax against target rows, 1/2 sum_k (s_k - t_k)^2 per row."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gradcheck_cli.batch import Batch
from gradcheck_cli.numerics.losses.base import Loss, LossKind, always, one_per_row, shown
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
        return (jacobian @ jacobian + curvature) * (self.scale / self.temperature**2)


def squared_error(targets: np.ndarray, reduction: str = "mean", temperature: float = 1.0) -> SquaredError:
    """1/2 sum_k (s_k - t_k)^2 per row; mean averages over rows (not over rows x classes as torch's mse_loss)."""
    return SquaredError(reduction, float(targets.shape[0]), temperature, targets=targets)


def build(batch: Batch, settings: Settings, dtype: np.dtype) -> SquaredError:
    return squared_error(batch.targets.astype(dtype), settings.reduction, settings.temperature)


def explain(loss: Loss, z: np.ndarray, s: np.ndarray, row: int) -> list[str]:
    """The squared error and its gradient (a vector-Jacobian product) with the row's numbers."""
    assert isinstance(loss, SquaredError)
    t = loss.targets[row]
    g = s - t
    inner = float((g * s).sum())
    k = range(len(z))
    lines = ["3. Squared error: L = ½ Σ_k (s_k − t_k)²", "   t = (" + ", ".join(shown(v) for v in t) + ")",
             f"   L = ½ ({' + '.join(f'({shown(g[i])})²' for i in k)}) = {shown(0.5 * float((g * g).sum()))}", "",
             "4. Gradient: with g = ∂L/∂s = s − t, ∂L/∂z_k = Σ_j g_j ∂s_j/∂z_k = s_k (g_k − Σ_j g_j s_j)",
             f"   Σ_j g_j s_j = {shown(inner)}"]
    lines += [f"   ∂L/∂z_{j + 1} = {shown(s[j])}×({shown(g[j])} − {shown(inner)}) = {shown(s[j] * (g[j] - inner))}"
              for j in k]
    lines.append("   (the ½ cancels the 2 of the square: g = s − t, not 2(s − t); with mean, divided by N)")
    return lines


KIND = LossKind("mse", (), build, one_per_row, always, explain)
