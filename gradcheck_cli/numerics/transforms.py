"""The elementwise transforms of the logits before the softmax: z -> A z (logit scale), then C tanh(z / C)
(soft-capping, Gemma 2), then / T (the loss's temperature, applied by the loss itself).

Each is a function of one logit, so moving z_j by d moves only y_j = g(z_j), by g(z_j + d) - g(z_j): finite
differences of a transformed loss evaluate the loss at the moved transformed logit exactly (shift), never a
derivative of g. The analytic side uses g' = A sech^2(A z / C) (slope) and g'' (bend, for the Hessian).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

# max_x |d^m tanh(x) / dx^m| for m = 1..8 (a polynomial in tanh, maximised over [-1, 1]; rounded up).
TANH_DERIVATIVE_BOUNDS = (1.0, 0.7699, 2.0, 4.086, 16.0, 52.27, 272.0, 1223.8)


class LogitTransform(NamedTuple):
    """y = g(z) = C tanh(A z / C) (C = cap), or A z without a cap."""

    scale: float = 1.0
    cap: float | None = None

    @property
    def identity(self) -> bool:
        return self.scale == 1.0 and self.cap is None

    def apply(self, z: np.ndarray) -> np.ndarray:
        y = z * z.dtype.type(self.scale) if self.scale != 1.0 else z
        if self.cap is None:
            return y
        cap = z.dtype.type(self.cap)
        return cap * np.tanh(y / cap)

    def slope(self, z: np.ndarray) -> np.ndarray:
        """g'(z) = A (1 - tanh^2(A z / C)), as A / cosh^2: 1 - t^2 would cancel where the cap saturates."""
        scale = z.dtype.type(self.scale)
        if self.cap is None:
            return np.full_like(z, scale)
        cosh = np.cosh(z * scale / z.dtype.type(self.cap))
        return scale / (cosh * cosh)

    def slope_terms(self, z: np.ndarray) -> np.ndarray:
        """A (1 + tanh^2(A z / C)): the terms of the straightforward A (1 - tanh^2), what its rounding is
        proportional to (where the cap saturates, tanh rounds to 1 and that form gives 0 for a tiny g')."""
        if self.cap is None:
            return np.full_like(z, self.scale)
        t = np.tanh(z * (self.scale / self.cap))
        return self.scale * (1.0 + t * t)

    def bend(self, z: np.ndarray) -> np.ndarray:
        """g''(z) = -2 (A^2 / C) tanh(w) sech^2(w), w = A z / C (0 without a cap)."""
        if self.cap is None:
            return np.zeros_like(z)
        w = z * (self.scale / self.cap)
        cosh = np.cosh(w)
        return -2.0 * (self.scale * self.scale / self.cap) * np.tanh(w) / (cosh * cosh)

    def shift(self, z: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """g(z + d) - g(z) for every element, computed without subtracting: with w = A z / C and b = A d / C,
        C (tanh(w + b) - tanh(w)) = C tanh(b) sech^2(w) / (1 + tanh(w) tanh(b)). Exact in form, so each factor
        keeps its relative precision; works for complex d (the complex step)."""
        moved = offsets * self.scale
        if self.cap is None:
            return moved + np.zeros_like(z)
        w, b = z * (self.scale / self.cap), moved / self.cap
        cosh, tb = np.cosh(w), np.tanh(b)
        return self.cap * tb / (cosh * cosh) / (1.0 + np.tanh(w) * tb)

    def slope_shift(self, z: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """g'(z + d) - g'(z) without subtracting: A (sech^2(w + b) - sech^2(w)) = A (tanh^2(w) - tanh^2(w + b))
        = -A (t' - t) (t' + t) with t' - t = shift / C (exact in form), so -A (shift / C) (2 tanh(w) + shift / C):
        every factor keeps its relative precision, complex d included. 0 without a cap (g' = A everywhere)."""
        if self.cap is None:
            return np.zeros(np.broadcast(z, offsets).shape, dtype=np.result_type(z, offsets))
        moved = self.shift(z, offsets) / self.cap
        return -self.scale * moved * (2.0 * np.tanh(z * (self.scale / self.cap)) + moved)

    def derivative_bounds(self, temperature: float, count: int) -> tuple[float, ...]:
        """beta_m >= T^(m-1) |d^m (g(z) / T) / dz^m| for m = 1..count: the m-th derivative of u = g(z) / T in units
        of the step in u (h = T eta): A^m (T / C)^(m-1) max |tanh^(m)|; A and 0 beyond without a cap."""
        if self.cap is None:
            return (self.scale,) + (0.0,) * (count - 1)
        ratio = temperature / self.cap
        return tuple(self.scale**m * ratio ** (m - 1) * TANH_DERIVATIVE_BOUNDS[m - 1] for m in range(1, count + 1))

    def truncation_factors(self, temperature: float, n: int) -> tuple[float, float]:
        """(beta_n, sum_(k=2..n) B_(n,k)(beta)): what the n-th derivative of the loss along z_j is, in units of
        the step, by Faa di Bruno: l(u(z))^(n) T^n = l'(u) beta_n-term + sum_(k>=2) l^(k)(u) B_(n,k)(T u', ...).
        The first multiplies the row's first u-derivative (the gradient element, which may be large where the
        higher ones are small), the second the bound D S of the higher u-derivatives (losses/base.py)."""
        beta = self.derivative_bounds(temperature, n)
        return beta[n - 1], sum(partial_bell(n, k, beta) for k in range(2, n + 1))


def partial_bell(n: int, k: int, x: Sequence[Any]) -> Any:
    """The partial Bell polynomial B_(n,k)(x_1, ..., x_(n-k+1)), by its recurrence over the first block's size.
    The x_i are numbers, or arrays (one bound per row, losses/focal.py): then so is the result."""
    if n == 0 and k == 0:
        return 1.0
    if n == 0 or k == 0:
        return 0.0
    return sum(math.comb(n - 1, i - 1) * x[i - 1] * partial_bell(n - i, k - 1, x) for i in range(1, n - k + 2))
