"""Any softmax loss on transformed logits y = g(z) (numerics/transforms.py: logit scale, soft-capping): the loss
of y, with the gradient by z from the chain rule dl/dz_j = dl/dy_j g'(z_j). Not a loss of the registry: the
softmax losses (cross_entropy, focal) wrap themselves in it when --logit-scale or --softcap is given.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import numpy as np

from gradcheck_cli.numerics.differences import METHODS, Perturbation
from gradcheck_cli.numerics.losses.base import Loss, Scales, formatted_lines, shown, shown_each
from gradcheck_cli.numerics.softmax import Softmax, softmax_parts
from gradcheck_cli.numerics.transforms import LogitTransform
from gradcheck_cli.settings import Settings


@dataclass(eq=False, repr=False)  # holds arrays: == has no truth value; each generated method costs start-up
class Transformed(Loss):
    """`inner` evaluated at g(z). Its reduction, divisor and temperature follow this loss's (a caller replaces
    the normalizer of the outer one); `method` is the finite-difference method whose truncation the scales bound.

    A `given` softmax is ignored: callers that hand one computed softmax(z / T), which is not softmax(g(z) / T),
    so every method computes its own from g(z) (one exp per logit more, for a result that cannot be wrong).
    """

    inner: Loss
    transform: LogitTransform
    method: str

    def __post_init__(self) -> None:
        self.inner = replace(self.inner, reduction=self.reduction, normalizer=self.normalizer,
                             temperature=self.temperature)

    @property
    def name(self) -> str:
        return str(getattr(self.inner, "name", "transformed"))

    def entering(self, logits: np.ndarray) -> np.ndarray:
        return self.transform.apply(logits)

    def softmax(self, logits: np.ndarray, given: Softmax | None = None) -> Softmax:
        return self.inner.softmax(self.transform.apply(logits))

    def row_losses(self, logits: np.ndarray, given: Softmax | None = None) -> np.ndarray:
        return self.inner.row_losses(self.transform.apply(logits))

    def row_gradients(self, logits: np.ndarray, given: Softmax | None = None) -> np.ndarray:
        return self.inner.row_gradients(self.transform.apply(logits)) * self.transform.slope(logits)

    def perturbation(self, base: np.ndarray, given: Softmax | None = None) -> Perturbation:
        """Moving z_j by d moves y_j by g(z_j + d) - g(z_j) (transform.shift, exact in form), and nothing else:
        the inner loss's exact change at that move of its own logit is the change of this loss."""
        inner = self.inner.perturbation(self.transform.apply(base))
        return lambda column, offsets: inner(column, self.transform.shift(base[:, column], offsets))

    def gradient_scales(self, logits: np.ndarray, given: Softmax | None = None) -> Scales:
        """Faa di Bruno (transforms.truncation_factors): the n-th z-derivative of l(g(z) / T) is at most
        |l'| beta_n + D S sum_(k>=2) B_(n,k)(beta), n = p + 1, so the truncation scale is S sum B + |G| beta_n / D
        (G the inner gradient element, S its scale, both over T and scaled). Rounding: G g' with g' computed
        straightforwardly as A (1 - tanh^2) is off by a few u of N A (1 + tanh^2) (torch's tanh backward gives 0
        where tanh rounds to 1): N is that, G twice A G; y = g(z) is off by a few u |y|, within rho's spare
        8 max|y| / T when rho is taken of y (checks/rows.py)."""
        y = self.transform.apply(logits)
        parts = self.inner.softmax(y)
        inner = self.inner.gradient_scales(y, parts)
        method = METHODS[self.method]
        first, rest = self.transform.truncation_factors(self.temperature, method.order + 1)
        size = inner.scale * rest
        if first:
            size = size + np.abs(self.inner.gradient(y, parts)) * (first / method.growth)
        terms = self.transform.slope_terms(logits)
        return Scales(size, inner.gross * terms, inner.row * self.transform.scale * 2.0)

    def loss_scales(self, logits: np.ndarray, given: Softmax | None = None) -> Scales:
        return self.inner.loss_scales(self.transform.apply(logits))

    def hessian(self, logits: np.ndarray) -> np.ndarray:
        """d2l/dz_i dz_j = H_ij g'(z_i) g'(z_j) + [i = j] G_j g''(z_j), H and G the inner loss's Hessian and
        gradient by y = g(z) (the reduction's scale and T in them)."""
        y = self.transform.apply(logits)
        slope = self.transform.slope(logits)
        hessian = self.inner.hessian(y) * slope[:, :, None] * slope[:, None, :]
        diagonal = np.arange(logits.shape[-1])
        hessian[:, diagonal, diagonal] += self.inner.gradient(y) * self.transform.bend(logits)
        return hessian

    def gradient_perturbation(self, base: np.ndarray, given: Softmax | None = None) -> Perturbation:
        """The gradient's exact change as z_j moves by d: y_j moves by g(z_j + d) - g(z_j) (transform.shift), so
        the inner gradient G moves by its own exact change dG there, and G_i g'(z_i) by dG_i g'(z_i), plus at
        i = j (G_j + dG_j) (g'(z_j + d) - g'(z_j)) (transform.slope_shift, exact in form): no large value is
        subtracted, so the rounding stays relative to the change (column j an int, as numeric_hessian moves it)."""
        y = self.transform.apply(base)
        parts = self.inner.softmax(y)
        inner = self.inner.gradient_perturbation(y, parts)
        gradient, slope = self.inner.gradient(y, parts), self.transform.slope(base)

        def perturb(column: int | slice, offsets: np.ndarray) -> np.ndarray:
            assert isinstance(column, int)
            moved = inner(column, self.transform.shift(base[:, column], offsets))
            change = moved * slope
            bend = self.transform.slope_shift(base[:, column], offsets)
            change[:, column] += (gradient[:, column] + moved[:, column]) * bend
            return change

        return perturb

    def hessian_scales(self, logits: np.ndarray, given: Softmax | None = None) -> Scales:
        """What the differences of G_i(z) = L_i(y) g'(z_i) along z_j truncate, by Faa di Bruno and Leibniz.

        With v = y / T and beta_m >= |d^m v / du^m| (transform.derivative_bounds, u = z / T), the inner loss's
        Hessian scale S_in bounds its differenced derivatives along v_j over T D (and, as for the gradient,
        every order k >= 2 of them), so an inner quantity's m-th u-derivative is at most
        T (|H_ij| beta_m + D S_in sum_(k=2..m) B_(m,k)(beta)). Off the diagonal only y_j moves:
        S_ij = |g'(z_i)| (|H_ij| beta_n / D + S_in B_n), B_m = sum_(k=2..m) B_(m,k)(beta), n = p + 1. On it,
        Leibniz over L_j and g'(z_j) (whose k-th u-derivative is at most beta_(k+1)):
        S_jj = |G_j| beta_(n+1) / (T D) + sum_(m=1..n) C(n, m) b_(n-m) (|H_jj| beta_m / D + S_in B_m),
        b_0 = |g'(z_j)|, b_k = beta_(k+1). Rounding: H g'_i g'_j with each g' straightforwardly A (1 - tanh^2),
        off by a few u of A (1 + tanh^2) (slope_terms), and G g'' (g'' computed without cancellation):
        N = N_in t_i t_j + [i = j] (N_G + |G|) |g''|."""
        y = self.transform.apply(logits)
        parts = self.inner.softmax(y)
        inner, by_y = self.inner.hessian_scales(y, parts), self.inner.gradient_scales(y, parts)
        hessian, gradient = np.abs(self.inner.hessian(y)), np.abs(self.inner.gradient(y, parts))
        growth, n = METHODS[self.method].growth, METHODS[self.method].order + 1
        beta = self.transform.derivative_bounds(self.temperature, n + 1)
        rests = [self.transform.truncation_factors(self.temperature, m)[1] for m in range(1, n + 1)]
        slope = np.abs(self.transform.slope(logits))
        size = slope[:, :, None] * (hessian * (beta[n - 1] / growth) + inner.scale * rests[n - 1])
        diagonal = np.arange(logits.shape[-1])
        on = gradient * (beta[n] / (self.temperature * growth))
        for m in range(1, n + 1):  # n <= 8 terms, each a whole N x C array
            below = slope if m == n else beta[n - m]
            on = on + math.comb(n, m) * below * (hessian[:, diagonal, diagonal] * (beta[m - 1] / growth)
                                                 + inner.scale[:, diagonal, diagonal] * rests[m - 1])
        size[:, diagonal, diagonal] = on
        terms = self.transform.slope_terms(logits)
        gross = inner.gross * terms[:, :, None] * terms[:, None, :]
        bend = np.abs(self.transform.bend(logits))
        gross[:, diagonal, diagonal] += (by_y.gross + gradient) * bend
        row = np.reshape(inner.row, (-1, 1, 1)) * self.transform.scale**2 * 2.0
        row = row + np.reshape(np.max(gross, axis=(1, 2)), (-1, 1, 1))
        return Scales(size, gross, row)


def transformed(loss: Loss, settings: Settings) -> Loss:
    """`loss` on the logits the settings' transforms make, or `loss` itself when there are none."""
    transform = LogitTransform(settings.logit_scale, settings.softcap)
    if transform.identity:
        return loss
    return Transformed(loss.reduction, loss.normalizer, loss.temperature, inner=loss, transform=transform,
                       method=settings.method)


Explain = Callable[[Loss, np.ndarray, np.ndarray, int], list[str]]


def explained(inner_explain: Explain) -> Explain:
    """A loss's explain lines, with the transform written out when the loss is a Transformed one: y = g(z), the
    inner loss's lines for y, then the chain rule dL/dz_j = dL/dy_j g'(z_j) with the row's numbers."""

    def explain(loss: Loss, z: np.ndarray, s: np.ndarray, row: int) -> list[str]:
        if not isinstance(loss, Transformed):
            return inner_explain(loss, z, s, row)
        transform = loss.transform
        y = transform.apply(z)
        s_y = softmax_parts(y[None, :]).s[0]
        by_y = _one_row(loss.inner, row).row_gradients(y[None, :])[0]
        slope = transform.slope(z)
        cap = "" if transform.cap is None else f", then y ← C·tanh(y/C), C = {shown(transform.cap)}"
        lines = [f"0. Logit transforms before the softmax: y = A·z, A = {shown(transform.scale)}{cap}",
                 "   y = (" + ", ".join(shown_each(y)) + ")",
                 "   (the steps above are of z; the loss is of s = softmax(y) = ("
                 + ", ".join(shown_each(s_y)) + "), and steps 3 and 4 below are by y)", ""]
        lines += inner_explain(loss.inner, y, s_y, row)
        derivative = "A" if transform.cap is None else "A·(1 − tanh²(A·z_j/C)), computed as A/cosh²(A·z_j/C)"
        lines += ["", f"5. Chain rule through the transform: ∂L/∂z_j = ∂L/∂y_j · g′(z_j), g′(z_j) = {derivative}"]
        lines += formatted_lines("   ∂L/∂z_%d = %s×%s = %s", range(len(z)), shown_each(by_y), shown_each(slope),
                                 shown_each(by_y * slope))
        return lines

    return explain


def _one_row(loss: Loss, row: int) -> Loss:
    """The loss of one row of its batch: every per-row array (its first axis the rows) cut to that row."""
    cut = {field.name: getattr(loss, field.name)[row : row + 1] for field in fields(loss)
           if isinstance(getattr(loss, field.name), np.ndarray) and getattr(loss, field.name).ndim}
    return replace(loss, **cut)
