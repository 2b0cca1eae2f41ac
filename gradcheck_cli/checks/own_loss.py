"""`impl gradient vs its own loss`: finite differences of the user's own loss, in the precision it computes in.

Every element is checked, whatever N x C. Where a call moves at most 2K elements (C with reduction none,
N C otherwise: small inputs), each element is differenced as below, the method's stencil on each.
Otherwise K random directions v (signs +1 / -1 on every element, --directions K) each cost two evaluations
of the loss: the central
difference (F(z + h v) - F(z - h v)) / 2h of F = sum_n g_n l_n (g the upstream gradient) must equal
<G, v>, G the user's gradient. A wrong element j moves <G, v> by its error times v_j = +-1, so any direction
sees it. A direction that disagrees is narrowed down: the half of its support whose own difference
disagrees more is kept (two calls a halving, log2(NC) halvings) until one element is left, the worst.
See _Directional for its error bound.

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

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from gradcheck_cli.checks.compare import compare
from gradcheck_cli.checks.returned import FLOAT64_EPSILON, Direction, Returned, rademacher
from gradcheck_cli.numerics import differences
from gradcheck_cli.report import CheckResult, Element

if TYPE_CHECKING:
    from gradcheck_cli.numerics.losses.base import Loss
    from gradcheck_cli.settings import Settings

Edit = tuple[np.ndarray, np.ndarray] | Direction  # flat indices into the logits and their values, or a direction
FLOAT32_EPSILON = 2.0**-23
_PRECISION_NAMES = {2.0**-52: "float64", FLOAT32_EPSILON: "float32", 2.0**-10: "float16", 2.0**-7: "bfloat16"}
_TRUNCATION = {"forward": 1 / 2, "backward": 1 / 2, "central": 1 / 6, "five-point": 1 / 30,
               "richardson": 1 / (5040 * 64)}  # its two extrapolations leave 1/64 of central's h^6 f^(7) / 5040
_DERIVATIVE_BOUND = {2: 0.5, 3: 0.4, 5: 1.1, 7: 5.6}  # B by derivative order: twice the largest found
BLOCK = 1 << 20  # elements worked on at once where whole-array expressions would make N x C temporaries


class UsersLoss(NamedTuple):
    """The user's function as the check calls it."""

    losses_at: Callable[[np.ndarray, list[Edit]], Iterable[np.ndarray]]  # the loss with each edit set in a copy
    answer_at: Callable[[np.ndarray], Returned]  # loss and gradient at the logits


def detected_precision(answer: Returned) -> float:
    """The machine epsilon the function computed in: its types', or float32's for float32 values cast to float64
    (every finite non-zero value exact in float32, not all in float16), read a BLOCK at a time (no copies)."""
    if answer.precision > FLOAT64_EPSILON or answer.gradient is None:
        return answer.precision
    gradient = answer.gradient.reshape(-1)
    blocks = [answer.loss.ravel(), *(gradient[at:at + BLOCK] for at in range(0, gradient.size, BLOCK))]
    seen, in_float16 = False, True
    for block in blocks:
        values = block[np.isfinite(block) & (block != 0)]
        with np.errstate(over="ignore"):
            if not np.array_equal(values.astype(np.float32), values):
                return answer.precision
            in_float16 = in_float16 and np.array_equal(values.astype(np.float16), values)
        seen = seen or values.size > 0
    return FLOAT32_EPSILON if seen and not in_float16 else answer.precision


def precision_name(precision: float) -> str:
    return _PRECISION_NAMES.get(precision, f"epsilon {precision:.3g}")


class RowLosses(NamedTuple):
    """What the error bounds take from gradcheck's reference loss, per row (N each): |l_n| at uniform
    probabilities (zero logits) and at the logits, and the reduction's scale. Filled a chunk of rows at a time."""

    uniform: np.ndarray
    losses: np.ndarray
    scale: float


def own_loss_check(
    user: UsersLoss, logits: np.ndarray, first: Returned, reference: RowLosses, settings: Settings,
    notes: list[str], upstream: np.ndarray | None = None, directions: int = 16, seed: int = 0,
) -> CheckResult:
    """The user's gradient against finite differences of their own loss, on every element.

    `upstream` is g (one number, or one per row for reduction none; None: 1): the user's gradient is taken to
    be sum_n g_n grad l_n. Each element is differenced when a call has at most 2 `directions` elements to
    move (C for reduction none, N C otherwise); otherwise the directions, seeded with `seed`.
    """
    assert settings.eps is not None and settings.atol is not None and settings.rtol is not None
    assert first.gradient is not None
    method = settings.method
    if differences.METHODS[method].complex_step:  # user code is not expected to accept complex logits
        method = "central"
        notes.append("--impl: complex-step needs complex arithmetic in your code; its own loss used central")
    with _quiet():  # a loss that overflowed gives NaN bounds, and the check fails on them
        model = _Model(logits, reference, settings, method, detected_precision(first))
    g = np.ones(()) if upstream is None else upstream
    weight = g.reshape(-1, 1) if model.per_row else g  # g_n per row, as the model's arrays are laid out
    per_call = logits.shape[1] if model.per_row else logits.size
    if per_call > 2 * directions:  # up to 2K elements a call: each differenced with the method, a tighter bound
        return _Directional(user, model, settings, weight, seed).check(first, directions, notes)
    point, h = logits, differences.steps(logits, settings.eps)
    if model.coarse and np.isfinite(first.loss).all():
        with _quiet():
            point, h = model.exact_stencil(model.balanced_steps(np.abs(first.loss)))
        notes.append(model.note(h, settings.dtype))
    answer = first if np.array_equal(point, logits) else user.answer_at(point)
    assert answer.gradient is not None
    rows = logits.shape[0]
    with _quiet():  # an infinite loss differences to NaN: a failed check, not a warning
        numeric = _differences(user, point, h, method, rows, settings.reduction == "none") * weight
        allowance = settings.atol + model.allowance(np.abs(answer.loss), np.abs(answer.gradient), h, np.abs(weight))
    return compare("impl gradient vs its own loss", answer.gradient, numeric, atol=allowance,
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
        edits: list[Edit] = [(columns[:, j], point[:, j] + offset * h[:, j]) for j in range(classes)
                             for offset in offsets]
        values = np.array(list(user.losses_at(point, edits))).reshape(classes, offsets.size, -1)
        return np.einsum("jkn,k->nj", values, weights) / h
    flat = np.repeat(np.arange(rows * classes), offsets.size)
    moved = point.flat[flat] + np.tile(offsets, rows * classes) * h.flat[flat]
    values = np.array(list(user.losses_at(point, [(flat[k : k + 1], moved[k : k + 1]) for k in range(flat.size)])))
    return (values.reshape(rows * classes, offsets.size) @ weights).reshape(rows, classes) / h[:rows]


class _Model:
    """The error bounds of the module docstring, for one batch, precision and method."""

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

    def exact_point(self, h: float) -> tuple[np.ndarray, float]:
        """exact_stencil with the step h everywhere, a block of rows at a time (only the point is N x C): the
        point, and the largest step settled on (h if there are no logits)."""
        point, largest = np.empty_like(self.logits), h
        step = max(1, BLOCK // max(self.logits.shape[1], 1))
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


# B_v: a bound on |d^3 phi / dt^3| along a direction v with |v_i| <= 1 in u = z / T, per unit of the row
# weight r_n. Cross-entropy: A_n times the third cumulant of v under s, |E (v - <s, v>)^3| <= 2 Var <= 2.
# Squared error on the softmax: with w = v - <s, v> (|w| <= 2), ds = s w, |d2s| <= 8 s, |d3s| <= 40 s, so
# |phi'''| <= sum_k 3 |ds_k| |d2s_k| + |s_k - t_k| |d3s_k| <= 48 + 40 = 88. Twice the larger.
_DIRECTION_BOUND = 176.0


class _Directional:
    """The directional check and its error bound (module docstring), with ε, T, r_n, spread_n, δ as there.

    D = (F(z~ + h v) - F(z~ - h v)) / 2h against <G, v>, for F = sum_n g_n l_n evaluated by the user's code:
      rounding of the two evaluations, δ_F / h, with δ_F = sum_n |g_n| δ_n (reduction none, each row's δ_n
        over 2C terms) or |g| δ (one number: 2ε [log2(2NC) F + sum_n r_n spread_n]), plus the float64 sum
        of the g_n l_n here, 2^-52 log2(2N) sum |g_n l_n|;
      truncation, h^2 / 6 sum_n |g_n| r_n B_v / T^3 (B_v above);
      the rounding of G itself over the direction's support S: sum_S 2ε (|g_n| r_n / T + |G_nj| spread_n);
      and the tolerances asked for, atol |S| + rtol sum_S |G|.
    h balances the first two (h^3 = δ_F T^3 / (2 sum |g| r B_v / 6)), a power of two, and z~ is on the grid
    of _Model.exact_stencil, so z~ +- h v is exact in the user's precision.
    """

    def __init__(self, user: UsersLoss, model: _Model, settings: Settings, weight: np.ndarray, seed: int) -> None:
        self.user, self.model, self.settings, self.seed = user, model, settings, seed
        self.signed = weight  # g_n (N x 1) for reduction none, else the one number
        self.weight = np.abs(weight)
        self.curvature = float(np.sum(self.weight * model.weights)) * _DIRECTION_BOUND / 6 / model.temperature**3
        self.h, self.point = 1.0, model.logits
        self.gradient, self.loss, self.spread = model.logits, np.zeros(()), np.zeros((model.logits.shape[0], 1))
        self.supports: dict[tuple[int, int], float] = {}

    def check(self, first: Returned, directions: int, notes: list[str]) -> CheckResult:
        model = self.model
        with _quiet():
            ideal = (self._rounding(np.abs(first.loss), 0.0) / (2 * self.curvature)) ** (1 / 3)
            finite = bool(np.isfinite(ideal) and ideal > 0)
            h = float(np.exp2(np.floor(np.log2(ideal)))) if finite else 1.0
            self.point, self.h = model.exact_point(h)
        point = self.point
        answer = first if np.array_equal(point, model.logits) else self.user.answer_at(point)
        assert answer.gradient is not None
        self.gradient, self.loss = answer.gradient, np.abs(answer.loss)
        self.spread = model._spread(np.full((point.shape[0], 1), self.h))
        seeds = [self.seed * 1_000_003 + k for k in range(directions)]
        with _quiet():
            measured = np.array(self._measure(seeds, 0, point.size))
        notes.append(f"--impl: your own loss was differenced along {directions} random directions, each moving all "
                     f"{point.size:,} logits (2 calls each; --directions), step {self.h:.3g}, seed {self.seed}")
        result = compare("impl gradient vs its own loss", measured[:, 0], np.zeros(directions), measured[:, 1], 0.0,
                         description="your gradient vs directional differences of your own loss")
        return self._located(result, seeds, measured[:, 0])

    def _measure(self, seeds: list[int], start: int, stop: int) -> list[tuple[float, float]]:
        """<G, v> - D over the support start..stop-1 of each direction, and its tolerance; all the calls sent
        at once (the worker goes from one to the next without waiting for this process)."""
        moves: list[Edit] = [Direction(seed, sign * self.h, start, stop) for seed in seeds for sign in (1.0, -1.0)]
        losses = iter(self.user.losses_at(self.point, moves))  # each gap worked out while the next calls run
        return [self._gap(seed, start, stop, next(losses), next(losses)) for seed in seeds]

    def _gap(self, seed: int, start: int, stop: int, above: np.ndarray, below: np.ndarray) -> tuple[float, float]:
        signs = rademacher(seed, self.point.size)[start:stop]
        gradient = self.gradient.reshape(-1)[start:stop]
        # <G, v> by blocks: exact products +-G_j summed pairwise (less rounding than BLAS's dot, 1 ms not 10-20)
        predicted = sum(float(np.multiply(gradient[at:at + BLOCK], signs[at:at + BLOCK], dtype=np.float64).sum())
                        for at in range(0, signs.size, BLOCK))
        difference = float(np.sum(self.signed.reshape(-1) * (above - below))) / (2 * self.h)
        return predicted - difference, self._tolerance(start, stop, np.maximum(np.abs(above), np.abs(below)))

    def _tolerance(self, start: int, stop: int, moved_loss: np.ndarray) -> float:
        rounding = self._rounding(np.maximum(moved_loss, self.loss), self.h) / self.h
        if (start, stop) not in self.supports:  # the K directions share the whole support: computed once
            self.supports = {(start, stop): self._gradients_part(start, stop)}
        return rounding + self.curvature * self.h**2 + self.supports[start, stop]

    def _gradients_part(self, start: int, stop: int) -> float:
        """The rounding of G over the support, and atol |S| + rtol sum_S |G|."""
        model, settings = self.model, self.settings
        assert settings.atol is not None and settings.rtol is not None
        own = size = 0.0
        for at in range(start, stop, BLOCK):  # a block of the support at a time: no N x C temporaries
            rows = np.arange(at, min(at + BLOCK, stop)) // model.logits.shape[1]
            flat = np.abs(self.gradient.reshape(-1)[at:at + rows.size], dtype=np.float64)
            weight = self.weight.reshape(-1)[rows] if model.per_row else self.weight
            own += float(np.sum(weight * model.weights.reshape(-1)[rows] / model.temperature
                                + flat * self.spread.reshape(-1)[rows]))
            size += float(flat.sum())
        return 2 * model.precision * own + settings.atol * (stop - start) + settings.rtol * size

    def _rounding(self, loss: np.ndarray, h: float) -> float:
        """δ_F: the rounding of one evaluation of F, the float64 sum of g_n l_n here included."""
        model = self.model
        column = np.full((model.logits.shape[0], 1), h)
        if model.per_row:
            summed = float(np.sum(self.weight * model.rounding(loss, column)))
        else:
            common = np.log2(model.count) * max(float(np.max(loss)), float(model.terms))
            spread = float(np.sum(model.weights * model._spread(column)))
            summed = float(self.weight) * 2 * model.precision * (common + spread)
        ours = 2.0**-52 * np.log2(2 * model.logits.shape[0]) * float(np.sum(self.weight * loss.reshape(-1, 1)))
        return summed + ours

    def _located(self, result: CheckResult, seeds: list[int], gaps: np.ndarray) -> CheckResult:
        """The worst element: on a failure, found by halving the worst direction's support; on a pass, the
        largest element of the gradient (no direction disagreed)."""
        gradient = self.gradient
        if result.passed or not np.isfinite(gaps).all():
            flat = _largest(gradient.reshape(-1))
            largest = tuple(int(i) for i in np.unravel_index(flat, gradient.shape))
            value = float(gradient[largest])
            return result._replace(worst_index=largest, actual=value,
                                   expected=value if result.passed else float("nan"), elements=gradient.size,
                                   mismatches=None, worst_elements=())
        k = int(np.argmax(np.abs(gaps)))
        start, stop, gap = 0, gradient.size, float(gaps[k])
        with _quiet():
            while stop - start > 1:  # by linearity the other half's gap is the rest: one measurement a halving
                middle = (start + stop) // 2
                ((left, _),) = self._measure([seeds[k]], start, middle)
                if abs(left) >= abs(gap - left):
                    stop, gap = middle, left
                else:
                    start, gap = middle, gap - left
        where: tuple[int, ...] = tuple(int(i) for i in np.unravel_index(start, gradient.shape))
        value = float(gradient[where])
        expected = value - gap * float(rademacher(seeds[k], gradient.size)[start])  # its derivative, by difference
        worst = Element(where, value, expected, result.worst_share)
        return result._replace(worst_index=where, actual=value, expected=expected, max_abs_error=abs(gap),
                               max_rel_error=abs(gap) / max(abs(expected), abs(value), 2.0**-1074),
                               elements=gradient.size, mismatches=None, worst_elements=(worst,))


def _largest(values: np.ndarray) -> int:  # argmax |values|, NaN the largest, the first of equals: blockwise
    best, where = -1.0, 0
    for at in range(0, values.size, BLOCK):
        sizes = np.abs(np.nan_to_num(values[at:at + BLOCK], nan=np.inf))
        k = int(np.argmax(sizes))
        if sizes[k] > best:
            best, where = float(sizes[k]), at + k
    return where
