"""`impl gradient vs its own loss`: finite differences of the user's own loss, in the precision it computes in.

The user's loss f is re-evaluated whole at every perturbed point, in whatever precision their code works
in, so its differences carry that code's rounding. The tolerance of each element is an error bound:

Notation: ε the machine epsilon of the precision detected from what the function returns (the coarser of
its loss's and gradient's types; float64-typed values that are all exact in float32, and not all in
float16, were computed in float32 and cast). T the temperature, used as min(T, 1) so that a function that
leaves out a T > 1 is not held to smaller derivatives; u = z / T. q, κ, o_k, w_k: the method's order,
truncation coefficient, offsets and weights. The loss is taken to be a weighted sum of row losses on top of
softmax(z / T), f = Σ_n r_n φ_n(u_n), with the row weight r_n = scale · max(1, l_n(0) / log C) from the
reference (its row loss at uniform probabilities is A_n log C for a cross-entropy whose coefficients sum to
A_n; at least 1 covers the squared error and weights below 1).

1. Where. In a precision coarser than float64 the logits are first put on a grid of spacing
   g = ulp_ε(4 max(|z|, o_max h)), and every step h is a power of two of at least 4g, so each point of the
   stencil z~ + o_k h is exact in that precision: the step the user's code sees after its cast is exactly
   the one divided by (else it is off by up to ε|z|, an error of ε|z| / h relative). The user's gradient
   is compared at z~ (one more call when z~ != z), the point its loss is differenced around.
2. Rounding of one evaluation of f, absolute: each log-softmax term is made of |u_j - m| <= 2|u_n|max,
   0 <= log-sum-exp <= log C and a few exp, log and products, each within ε; sums over C and N terms are
   pairwise. Moving z_nj recomputes row n only (the other rows round alike and cancel), but the final sum
   rounds afresh, so with F the summed magnitude of the row terms, max(|f|, scale Σ|l_n|) (per row for none):
       reduction none, row n:      δ_n  = 2ε [log2(2C) F_n + r_n (2 + log C + 2|u_n|max)]
       mean or sum, element n, j:  δ_nj = 2ε [log2(2NC) F  + r_n (2 + log C + 2|u_n|max)]
   (2ε is four unit roundoffs per term). The stencil Σ w_k f(z + o_k h) / h then errs by Σ|w_k| δ / h.
3. Truncation: κ h^q |d^(q+1) f / dz^(q+1)| <= κ h^q B r_n / T^(q+1), where B bounds d^(q+1) φ / du^(q+1)
   per unit of weight: twice the largest found, by Cauchy's integral formula, for cross-entropy and the
   squared error over 3,000 random rows, targets and logit scales (0.25, 0.20, 0.53, 2.8 for orders 2, 3, 5, 7).
4. The user's gradient carries its own rounding, as in the float32 analysis of the reference: relative
   ε (2 + log C + 2|u_n|max) (the exp of an argument off by ε|u - m|), and ε r_n / T absolute (s A - a
   cancels at the label): G = 2ε [r_n / T + |g| (2 + log C + 2|u_n|max)].
An element passes when |g - numeric| <= atol + G + Σ|w_k| δ / h + κ h^q B r_n / T^(q+1) + rtol |numeric|.
Steps: in float64, the check's own (--eps). In a coarser precision, the h that balances 2 against 3,
h^(q+1) = Σ|w_k| δ T^(q+1) / (q κ B r_n), rounded down to a power of two: at float32 it is about
2^-6 min(T, 1) for a few rows of cross-entropy, where float64's step (6e-6) would leave the loss unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from gradcheck_cli.checks.compare import compare
from gradcheck_cli.checks.returned import FLOAT64_EPSILON, Returned
from gradcheck_cli.numerics import differences
from gradcheck_cli.report import CheckResult

if TYPE_CHECKING:
    from gradcheck_cli.numerics.losses.base import Loss
    from gradcheck_cli.settings import Settings

Edit = tuple[np.ndarray, np.ndarray]  # flat indices into the logits, and the values they take
FLOAT32_EPSILON = 2.0**-23
_PRECISION_NAMES = {2.0**-52: "float64", FLOAT32_EPSILON: "float32", 2.0**-10: "float16", 2.0**-7: "bfloat16"}
_TRUNCATION = {"forward": 1 / 2, "backward": 1 / 2, "central": 1 / 6, "five-point": 1 / 30,
               "richardson": 1 / (5040 * 64)}  # its two extrapolations leave 1/64 of central's h^6 f^(7) / 5040
_DERIVATIVE_BOUND = {2: 0.5, 3: 0.4, 5: 1.1, 7: 5.6}  # B by derivative order: twice the largest found


class UsersLoss(NamedTuple):
    """The user's function as the check calls it."""

    losses_at: Callable[[np.ndarray, list[Edit]], list[np.ndarray]]  # the loss with each edit set in a copy
    answer_at: Callable[[np.ndarray], Returned]  # loss and gradient at the logits


def detected_precision(answer: Returned) -> float:
    """The machine epsilon the function computed in: its types', or float32's for float32 values cast to float64."""
    if answer.precision > FLOAT64_EPSILON or answer.gradient is None:
        return answer.precision
    values = np.concatenate([answer.loss.ravel(), answer.gradient.ravel()])
    values = values[np.isfinite(values) & (values != 0)]
    with np.errstate(over="ignore"):
        in_float32 = values.size > 0 and np.array_equal(values.astype(np.float32), values)
        in_float16 = np.array_equal(values.astype(np.float16), values)
    return FLOAT32_EPSILON if in_float32 and not in_float16 else answer.precision


def precision_name(precision: float) -> str:
    return _PRECISION_NAMES.get(precision, f"epsilon {precision:.3g}")


def own_loss_check(
    user: UsersLoss, logits: np.ndarray, first: Returned, reference: Loss, settings: Settings, rows: int,
    notes: list[str],
) -> CheckResult:
    """The user's gradient against finite differences of their own loss (the first `rows` rows for a scalar loss)."""
    assert settings.eps is not None and settings.atol is not None and settings.rtol is not None
    assert first.gradient is not None
    method = settings.method
    if differences.METHODS[method].complex_step:  # user code is not expected to accept complex logits
        method = "central"
        notes.append("--impl: complex-step needs complex arithmetic in your code; its own loss used central")
    with _quiet():  # a loss that overflowed gives NaN bounds, and the check fails on them
        model = _Model(logits, reference, settings, method, detected_precision(first))
    point, h = logits, differences.steps(logits, settings.eps)
    if model.coarse and np.isfinite(first.loss).all():
        with _quiet():
            point, h = model.exact_stencil(model.balanced_steps(np.abs(first.loss)))
        notes.append(model.note(h, settings.dtype))
    answer = first if np.array_equal(point, logits) else user.answer_at(point)
    assert answer.gradient is not None
    with _quiet():  # an infinite loss differences to NaN: a failed check, not a warning
        numeric = _differences(user, point, h, method, rows, settings.reduction == "none")
        allowance = settings.atol + model.allowance(np.abs(answer.loss), np.abs(answer.gradient), h)
    return compare("impl gradient vs its own loss", answer.gradient[:rows], numeric, atol=allowance[:rows],
                   rtol=settings.rtol, description="your gradient vs finite differences of your own loss")


def _quiet() -> np.errstate:
    return np.errstate(invalid="ignore", over="ignore", divide="ignore", under="ignore")


def _differences(user: UsersLoss, point: np.ndarray, h: np.ndarray, method: str, rows: int,
                 per_row: bool) -> np.ndarray:
    """The method's stencil on the user's loss around `point` (the first `rows` rows), all its calls at once.

    Row losses (per_row): one call per column and offset moves that column of every row, each row answering
    for itself. A scalar loss gives one number per call, so each element and offset is a call of its own.
    """
    spec = differences.METHODS[method]
    offsets, weights = np.asarray(spec.offsets), np.asarray(spec.weights)
    classes = point.shape[1]
    if per_row:
        columns = np.arange(point.shape[0])[:, None] * classes + np.arange(classes)  # flat index of each logit
        edits = [(columns[:, j], point[:, j] + offset * h[:, j]) for j in range(classes) for offset in offsets]
        values = np.array(user.losses_at(point, edits)).reshape(classes, offsets.size, -1)
        return np.einsum("jkn,k->nj", values, weights) / h
    flat = np.repeat(np.arange(rows * classes), offsets.size)
    moved = point.flat[flat] + np.tile(offsets, rows * classes) * h.flat[flat]
    values = np.array(user.losses_at(point, [(flat[k : k + 1], moved[k : k + 1]) for k in range(flat.size)]))
    return (values.reshape(rows * classes, offsets.size) @ weights).reshape(rows, classes) / h[:rows]


class _Model:
    """The error bounds of the module docstring, for one batch, precision and method."""

    def __init__(self, logits: np.ndarray, reference: Loss, settings: Settings, method: str, precision: float):
        self.logits, self.precision, self.spec = logits, precision, differences.METHODS[method]
        self.coarse = precision > FLOAT64_EPSILON
        self.per_row = settings.reduction == "none"
        self.temperature = min(settings.temperature, 1.0)
        rows, classes = logits.shape
        self.log_classes = float(np.log(max(classes, 2)))
        uniform = np.abs(reference.row_losses(np.zeros_like(logits)))
        self.weights = (reference.scale * np.maximum(1.0, uniform / self.log_classes))[:, None]  # r_n
        terms = np.abs(reference.row_losses(logits)) * reference.scale
        self.terms = terms[:, None] if self.per_row else float(terms.sum())
        self.count = 2 * classes if self.per_row else 2 * rows * classes
        self.stencil_weight = sum(abs(w) for w in self.spec.weights)
        self.reach = max(abs(o) for o in self.spec.offsets)
        self.truncation = _TRUNCATION[method] * _DERIVATIVE_BOUND[self.spec.order + 1]

    def _spread(self, h: np.ndarray | float) -> np.ndarray:
        """2 + log C + 2 |u_n|max, the stencil's reach included (N x 1)."""
        largest = np.abs(self.logits).max(axis=1, keepdims=True) + self.reach * np.max(h, axis=1, keepdims=True)
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

    def exact_stencil(self, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The logits on a grid, and steps of at least 4 spacings, so that every stencil point is exact in ε."""
        for _ in range(2):  # a longer step can widen the reach: the second pass settles it
            grid = self._ulp(4.0 * np.maximum(np.abs(self.logits), self.reach * h))
            h = np.maximum(h, 4.0 * grid)
        return np.round(self.logits / grid) * grid, h

    def _ulp(self, x: np.ndarray) -> np.ndarray:
        """The spacing of the user's precision at x (a power of two)."""
        return np.ldexp(self.precision, np.frexp(x)[1] - 1)

    def allowance(self, loss: np.ndarray, gradient: np.ndarray, h: np.ndarray) -> np.ndarray:
        """G + Σ|w| δ / h + κ B h^q r / T^(q+1), element by element."""
        q, temperature = self.spec.order, self.temperature
        spread = self._spread(h)
        own = 2 * self.precision * (self.weights / temperature + gradient * spread)
        differenced = self.stencil_weight * self.rounding(loss, h) / h
        truncated = self.truncation * h**q * self.weights / temperature ** (q + 1)
        return own + differenced + truncated

    def note(self, h: np.ndarray, dtype: str) -> str:
        name = precision_name(self.precision)
        advice = ""
        if dtype == "float64" and self.precision == FLOAT32_EPSILON:
            advice = "; --dtype float32 holds it to float32's tolerances against the reference"
        return (f"--impl returns {name} values: its own loss was differenced at logits exact in {name}, with steps "
                f"up to {float(h.max()):.3g} instead of float64's{advice}")
