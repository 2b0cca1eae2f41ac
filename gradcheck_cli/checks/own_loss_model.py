"""The error bound of `impl gradient vs its own loss` (checks/own_loss.py's docstring derives it): per batch,
precision and method, the rounding of one evaluation of the user's loss, the truncation of a stencil, the
rounding of the user's gradient, the power-of-two steps that balance them and the grid that makes every
stencil point exact in the user's precision; and what those checks take in: the user's function as they call it
(UsersLoss, its Edit) and the reference's row losses (RowLosses).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from gradcheck_cli.checks.returned import FLOAT64_EPSILON, Direction, Returned
from gradcheck_cli.numerics import differences

if TYPE_CHECKING:
    from gradcheck_cli.numerics.losses.base import Loss
    from gradcheck_cli.settings import Settings

Edit = tuple[np.ndarray, np.ndarray] | Direction  # flat indices into the logits and their values, or a direction
FLOAT32_EPSILON = 2.0**-23
_PRECISION_NAMES = {2.0**-52: "float64", FLOAT32_EPSILON: "float32", 2.0**-10: "float16", 2.0**-7: "bfloat16"}
_TRUNCATION = {"forward": 1 / 2, "backward": 1 / 2, "central": 1 / 6, "five-point": 1 / 30,
               "richardson": 1 / (5040 * 64)}  # its two extrapolations leave 1/64 of central's h^6 f^(7) / 5040
_DERIVATIVE_BOUND = {2: 0.5, 3: 0.4, 5: 1.1, 7: 5.6}  # B by derivative order: twice the largest found


def precision_name(precision: float) -> str:
    return _PRECISION_NAMES.get(precision, f"epsilon {precision:.3g}")


class UsersLoss(NamedTuple):
    """The user's function as the check calls it."""

    losses_at: Callable[[np.ndarray, list[Edit]], Iterable[np.ndarray]]  # the loss with each edit set in a copy
    answer_at: Callable[[np.ndarray], Returned]  # loss and gradient at the logits


class RowLosses(NamedTuple):
    """What the error bounds take from gradcheck's reference loss, per row (N each): |l_n| at uniform
    probabilities (zero logits) and at the logits, and the reduction's scale. Filled a chunk of rows at a time."""

    uniform: np.ndarray
    losses: np.ndarray
    scale: float


class _Model:
    """The error bounds of own_loss.py's module docstring, for one batch, precision and method."""

    def __init__(self, logits: np.ndarray, reference: RowLosses | Loss, settings: Settings, method: str,
                 precision: float):
        if not isinstance(reference, RowLosses):  # the loss itself, for these rows at once
            reference = RowLosses(np.abs(reference.row_losses(np.zeros_like(logits))),
                                  np.abs(reference.row_losses(logits)), reference.scale)
        self.logits, self.precision, self.spec = logits, precision, differences.METHODS[method]
        self.coarse = precision > FLOAT64_EPSILON
        self.per_row = settings.reduction == "none"
        self.temperature = min(settings.temperature, 1.0)
        rows, classes = logits.shape
        self.log_classes = float(np.log(max(classes, 2)))
        self.weights = (reference.scale * np.maximum(1.0, reference.uniform / self.log_classes))[:, None]  # r_n
        terms = reference.losses * reference.scale
        self.terms = terms[:, None] if self.per_row else float(terms.sum())
        # max |z| per row (N x 1), without an N x C temporary: the rounding bounds ask for it again and again
        self.largest = np.maximum(logits.max(axis=1, initial=-np.inf), -logits.min(axis=1, initial=np.inf))[:, None] \
            if logits.size else np.zeros((rows, 1))
        self.count = 2 * classes if self.per_row else 2 * rows * classes
        self.stencil_weight = sum(abs(w) for w in self.spec.weights)
        self.reach = max(abs(o) for o in self.spec.offsets)
        self.truncation = _TRUNCATION[method] * _DERIVATIVE_BOUND[self.spec.order + 1]

    def _spread(self, h: np.ndarray | float) -> np.ndarray:
        """2 + log C + 2 |u_n|max, the stencil's reach included (N x 1)."""
        largest = self.largest + self.reach * np.max(h, axis=1, keepdims=True)
        return 2.0 + self.log_classes + 2.0 * largest / self.temperature

    def rounding(self, loss: np.ndarray, h: np.ndarray | float) -> np.ndarray:
        """δ: the rounding of one evaluation of the loss, per row (N x 1); a scalar's includes its sum's."""
        summed = np.maximum(loss.reshape(-1, 1), self.terms) if self.per_row else max(float(loss), self.terms)
        return 2 * self.precision * (np.log2(self.count) * summed + self.weights * self._spread(h))

    def balanced_steps(self, loss: np.ndarray) -> np.ndarray:
        """The power-of-two step that balances the rounding of the differences against their truncation."""
        q = self.spec.order
        zero = np.zeros((self.logits.shape[0], 1))
        balance = self.stencil_weight * self.rounding(loss, zero) / (q * self.truncation * self.weights)
        ideal = balance ** (1 / (q + 1))
        return np.broadcast_to(np.exp2(np.floor(np.log2(self.temperature * ideal))), self.logits.shape)

    def exact_stencil(self, h: np.ndarray, logits: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The logits (or these rows of them) on a grid, and steps of at least 4 spacings, so that every stencil
        point is exact in ε."""
        logits = self.logits if logits is None else logits
        for _ in range(2):  # a longer step can widen the reach: the second pass settles it
            grid = self._ulp(4.0 * np.maximum(np.abs(logits), self.reach * h))
            h = np.maximum(h, 4.0 * grid)
        return np.round(logits / grid) * grid, h

    def exact_point(self, h: float, block: int) -> tuple[np.ndarray, float]:
        """exact_stencil with the step h everywhere, about `block` logits at a time (only the point is N x C): the
        point, and the largest step settled on (h if there are no logits)."""
        point, largest = np.empty_like(self.logits), h
        step = max(1, block // max(self.logits.shape[1], 1))
        for start in range(0, self.logits.shape[0], step):
            rows = self.logits[start:start + step]
            point[start:start + step], steps = self.exact_stencil(np.full(rows.shape, h), rows)
            largest = max(largest, float(steps.max(initial=h)))
        return point, largest

    def _ulp(self, x: np.ndarray) -> np.ndarray:
        """The spacing of the user's precision at x (a power of two)."""
        return np.ldexp(self.precision, np.frexp(x)[1] - 1)

    def allowance(self, loss: np.ndarray, gradient: np.ndarray, h: np.ndarray,
                  weight: np.ndarray | float = 1.0) -> np.ndarray:
        """G + |g| (Σ|w| δ / h + κ B h^q r / T^(q+1)), element by element; |g| the upstream gradient's size (its
        row's, or the one number), which multiplies the differences and the rounding of the user's gradient."""
        q, temperature = self.spec.order, self.temperature
        spread = self._spread(h)
        own = 2 * self.precision * (weight * self.weights / temperature + gradient * spread)
        differenced = self.stencil_weight * self.rounding(loss, h) / h
        truncated = self.truncation * h**q * self.weights / temperature ** (q + 1)
        return own + weight * (differenced + truncated)

    def note(self, h: np.ndarray, dtype: str) -> str:
        name = precision_name(self.precision)
        advice = ""
        if dtype == "float64" and self.precision == FLOAT32_EPSILON:
            advice = "; --dtype float32 holds it to float32's tolerances against the reference"
        return (f"--impl returns {name} values: its own loss was differenced at logits exact in {name}, with steps "
                f"up to {float(h.max()):.3g} instead of float64's{advice}")
