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

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from gradcheck_cli.checks.compare import compare
from gradcheck_cli.checks.own_loss_elements import element_check
from gradcheck_cli.checks.own_loss_model import FLOAT32_EPSILON, Edit, RowLosses, UsersLoss, _Model
from gradcheck_cli.checks.returned import FLOAT64_EPSILON, Direction, Returned, rademacher
from gradcheck_cli.numerics import differences
from gradcheck_cli.report import CheckResult, Element

if TYPE_CHECKING:
    from gradcheck_cli.settings import Settings

BLOCK = 1 << 20  # elements worked on at once where whole-array expressions would make N x C temporaries


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


def own_loss_check(
    user: UsersLoss, logits: np.ndarray, first: Returned, reference: RowLosses, settings: Settings,
    notes: list[str], upstream: np.ndarray | None = None, directions: int = 16, seed: int = 0,
    plan: DirectionalPlan | None = None,
) -> CheckResult:
    """The user's gradient against finite differences of their own loss, on every element.

    `upstream` is g (one number, or one per row for reduction none; None: 1): the user's gradient is taken to
    be sum_n g_n grad l_n. Each element is differenced when a call has at most 2 `directions` elements to
    move (C for reduction none, N C otherwise); otherwise the directions, seeded with `seed`: along `plan`
    where given, which must be directional_plan's with these same arguments (made earlier, not made twice).
    """
    assert settings.eps is not None and settings.atol is not None and settings.rtol is not None
    assert first.gradient is not None
    method = _method(settings)
    if method != settings.method:  # user code is not expected to accept complex logits
        notes.append("--impl: complex-step needs complex arithmetic in your code; its own loss used central")
    directional = _directional(logits, first, reference, settings, upstream, directions, seed)
    if isinstance(directional, _Directional):
        return directional.check(user, first, plan or directional.plan(first, directions), directions, notes)
    model, weight = directional
    return element_check(user, model, first, settings, notes, weight, method)


class DirectionalPlan(NamedTuple):
    """Where the directional check evaluates the user's function (own_loss_check with the same arguments): its
    gradient at `point` (z~; one call unless z~ is the logits) and the loss along each seed's direction, +-h."""

    point: np.ndarray
    h: float
    seeds: list[int]

    def moves(self, seeds: list[int], start: int, stop: int) -> list[Edit]:
        """The two calls of each of these seeds' directions over the support start..stop-1, in the order made."""
        return [Direction(seed, sign * self.h, start, stop) for seed in seeds for sign in (1.0, -1.0)]


def directional_plan(logits: np.ndarray, first: Returned, reference: RowLosses, settings: Settings,
                     upstream: np.ndarray | None, directions: int, seed: int) -> DirectionalPlan | None:
    """The calls own_loss_check will make with these same arguments, before any (None: it differences each
    element instead), so that they can be asked ahead: the same computation, the same plan."""
    directional = _directional(logits, first, reference, settings, upstream, directions, seed)
    return directional.plan(first, directions) if isinstance(directional, _Directional) else None


def _method(settings: Settings) -> str:
    """The method differencing the user's loss: central for complex-step (their code takes real logits)."""
    return "central" if differences.METHODS[settings.method].complex_step else settings.method


def _directional(logits: np.ndarray, first: Returned, reference: RowLosses, settings: Settings,
                 upstream: np.ndarray | None, directions: int, seed: int) -> _Directional | tuple[_Model, np.ndarray]:
    """The directional check where a call moves more than 2 `directions` elements; else the model and weight the
    element-by-element check takes."""
    with _quiet():  # a loss that overflowed gives NaN bounds, and the check fails on them
        model = _Model(logits, reference, settings, _method(settings), detected_precision(first))
    g = np.ones(()) if upstream is None else upstream
    weight = g.reshape(-1, 1) if model.per_row else g  # g_n per row, as the model's arrays are laid out
    per_call = logits.shape[1] if model.per_row else logits.size
    if per_call > 2 * directions:  # up to 2K elements a call: each differenced with the method, a tighter bound
        return _Directional(model, settings, weight, seed)
    return model, weight


def _quiet() -> np.errstate:
    return np.errstate(invalid="ignore", over="ignore", divide="ignore", under="ignore")


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

    def __init__(self, model: _Model, settings: Settings, weight: np.ndarray, seed: int) -> None:
        self.model, self.settings, self.seed = model, settings, seed
        self.signed = weight  # g_n (N x 1) for reduction none, else the one number
        self.weight = np.abs(weight)
        self.curvature = float(np.sum(self.weight * model.weights)) * _DIRECTION_BOUND / 6 / model.temperature**3
        self.plan_made = DirectionalPlan(model.logits, 1.0, [])
        self.gradient, self.loss, self.spread = model.logits, np.zeros(()), np.zeros((model.logits.shape[0], 1))
        self.supports: dict[tuple[int, int], float] = {}

    def plan(self, first: Returned, directions: int) -> DirectionalPlan:
        """h, z~ and the seeds, from the first answer's loss and the model alone (no call)."""
        with _quiet():
            ideal = (self._rounding(np.abs(first.loss), 0.0) / (2 * self.curvature)) ** (1 / 3)
            finite = bool(np.isfinite(ideal) and ideal > 0)
            h = float(np.exp2(np.floor(np.log2(ideal)))) if finite else 1.0
            point, h = self.model.exact_point(h, BLOCK)
        return DirectionalPlan(point, h, [self.seed * 1_000_003 + k for k in range(directions)])

    def check(self, user: UsersLoss, first: Returned, plan: DirectionalPlan, directions: int,
              notes: list[str]) -> CheckResult:
        self.user, self.plan_made, point, seeds = user, plan, plan.point, plan.seeds
        answer = first if np.array_equal(point, self.model.logits) else user.answer_at(point)
        assert answer.gradient is not None
        self.gradient, self.loss = answer.gradient, np.abs(answer.loss)
        self.spread = self.model._spread(np.full((point.shape[0], 1), plan.h))
        with _quiet():
            measured = np.array(self._measure(seeds, 0, point.size))
        notes.append(f"--impl: your own loss was differenced along {directions} random directions, each moving all "
                     f"{point.size:,} logits (2 calls each; --directions), step {plan.h:.3g}, seed {self.seed}")
        result = compare("impl gradient vs its own loss", measured[:, 0], np.zeros(directions), measured[:, 1], 0.0,
                         description="your gradient vs directional differences of your own loss")
        return self._located(result, seeds, measured[:, 0])

    @property
    def point(self) -> np.ndarray:
        return self.plan_made.point

    @property
    def h(self) -> float:
        return self.plan_made.h

    def _measure(self, seeds: list[int], start: int, stop: int) -> list[tuple[float, float]]:
        """<G, v> - D over the support start..stop-1 of each direction, and its tolerance; all the calls sent
        at once (the worker goes from one to the next without waiting for this process)."""
        moves = self.plan_made.moves(seeds, start, stop)
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
