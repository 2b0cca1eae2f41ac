"""The step-free verdict: does the user's gradient g predict their own loss L to second order?

Along a direction v, the Taylor remainder r(t) = |L(z + t v) - L(z) - t <g, v>| is t^2 |v'Hv| / 2 + O(t^3)
when g is the gradient of L, and t |<grad L - g, v>| + O(t^2) when it is not. Over halvings of t its
log-log slope is 2 for a right gradient and falls towards 1 for a wrong one, with no step to tune
(tesseract-core #740 proposes it because fixed steps gave 400 false failures of 400 in #706).

Choice of t (error analysis). v has Gaussian entries scaled so that max |v| = 1; t runs from t0 = scale / 32
down by `halvings` halvings (8 values by default, t0 / 128 = scale / 4096 the smallest), `scale` the logit
distance over which the softmax moves by O(1): T, the temperature.
- Truncation. For a right gradient r = t^2 q / 2 + t^3 c / 6 + O(t^4) (q = v'Hv, c = D3L[v, v, v]), whose
  local slope is 2 + (t c / 3q) / (1 + t c / 3q). For the softmax losses, L = sum_n w_n (A_n lse(u_n) -
  <a_n, u_n>) with u = z / T and w_n >= 0 (cross-entropy with every option; the KL losses likewise), the
  k-th derivative along v is sum_n w_n A_n kappa_k(v_n) / T^k, kappa_k the cumulants of row n's entries of v
  under s_n. |kappa_3| <= max |v - mean| kappa_2 <= 2 kappa_2, so |c| / q <= 2 / T and at t <= T / 32
  every local slope is within (1/48) / (1 - 1/48) = 0.021 of 2.
- Rounding. Each evaluation of L is taken to be off by at most F = 32 u (|L(z)| + |L(0)| + sum |z g|), u the
  unit roundoff of the user's values: a straightforward evaluation rounds every row's terms a few times, and
  they are of size up to |z| times their coefficient (which the gradient's entries measure) and, for the
  log-sum-exp, of size 1 times the row's weight even where the row's loss is 1e-60: |L(0)|, the loss at
  uniform logits (log C times the weights for cross-entropy), measures that. 32 is a margin over "a few".
  Without |L(0)| a confident batch, whose loss rounds to exactly 0, would read as slope 1.
  <g, d> is summed in float64 (pairwise, _inner: off by at most (log2 C + 21) 2^-53 t0 sum |g|, which F
  includes), with d = (z + t v) - z the step the function really saw. So r is off by at most 2F, log r by
  2F / r, and a local slope (over ln 2) by (2F / r(t) + 2F / r(t / 2)) / ln 2, which is at most 0.029 where
  r >= 200 F. Remainders below 200 F are reported but not fitted.
- So a right gradient's fitted slope (a positively weighted mean of the local slopes) is within 0.05 of 2,
  and a direction passes at >= 1.9 (2 - 0.1: twice that). A loss flat along v (q = 0) has slope 3, and
  passes. A wrong gradient's remainder t e + t^2 q / 2 (e = <grad L - g, v>) has a slope between 1 and 2
  that falls to 1 as t shrinks; when e and q have opposite signs it crosses zero for one sign of v, where
  its slope means nothing, so every v is also tried as -v, and every signed direction must pass.
- Typical sizes: for a batch-mean cross-entropy (sum w A = 1, kappa_2 ~ 0.1) r(t0 / 128) is about 3e-9,
  while 200 F is about 7e-13 (|L| + sum |z g|): every point is fitted. Confident rows (s within 1e-10 of
  one-hot) make q tiny: their points fall below the floor and the direction is inconclusive (no slope),
  never wrong. A wrong gradient is detected once |e| is above about q t0 / 300 (the slope then falls
  below 1.9 over the range): about 1e-5 relative for the example above, less sensitive than comparing
  with the reference, but free of any step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple, overload

import numpy as np

from gradcheck_cli.checks.returned import Along
from gradcheck_cli.numerics.exact import exact_sum

if TYPE_CHECKING:
    from gradcheck_cli.settings import Settings

# The user's loss at many Taylor points z + t v, all asked at once (sent ahead to a worker, which moves the logits
# it holds itself): one value per point, in order, each as it comes.
LossesAt = Callable[[list[Along]], Iterable[float | np.ndarray]]

PASSING_SLOPE = 1.9  # 2 - 0.1, twice the worst deviation of a right gradient (module docstring)
FLOOR_MARGIN = 200.0  # remainders below this many times the rounding floor are not fitted
TOP_STEP = 1.0 / 32  # t0 in units of `scale`: the third-order term stays within 0.021 of the slope
HALVINGS = 7  # t0 / 2^7 = scale / 4096, the smallest step


class TaylorResult(NamedTuple):
    """Remainders along signed random directions (v1, -v1, v2, -v2, ...), and their fitted slopes."""

    steps: np.ndarray  # the t values, largest first
    remainders: np.ndarray  # directions x steps: |L(z + t v) - L(z) - t <g, v>| (NaN where L was not finite)
    floor: float  # F, the rounding floor of one evaluation of L (NaN when L(z) or L(0) is not finite)
    slopes: tuple[float | None, ...]  # least-squares slope of log r on log t, None with < 3 points above 200 F
    directions: Sequence[np.ndarray]  # the signed directions v (each of the logits' shape), max |v| = 1

    @property
    def fitted(self) -> np.ndarray:
        """Which remainders the slopes were fitted to (finite and at least FLOOR_MARGIN F)."""
        with np.errstate(invalid="ignore"):
            return np.isfinite(self.remainders) & (self.remainders >= FLOOR_MARGIN * self.floor) & (self.remainders > 0)

    @property
    def local_slopes(self) -> np.ndarray:
        """The slope between consecutive steps (directions x steps - 1), NaN where a point is not fitted."""
        logs = np.where(self.fitted, np.log(np.where(self.fitted, self.remainders, 1.0)), np.nan)
        return np.diff(logs, axis=1) / np.diff(np.log(self.steps))

    @property
    def passed(self) -> bool | None:
        """True when every direction's slope is at least 1.9, False when one is below, None when none was fitted."""
        slopes = [slope for slope in self.slopes if slope is not None]
        if not slopes:
            return None
        return all(slope >= PASSING_SLOPE for slope in slopes)


def taylor_test(
    loss: Callable[[np.ndarray], float | np.ndarray],
    logits: np.ndarray,
    gradient: np.ndarray,
    *,
    scale: float = 1.0,
    directions: int = 3,
    halvings: int = HALVINGS,
    seed: int = 0,
    precision: float = 2.0**-52,
    losses_at: LossesAt | None = None,
) -> TaylorResult:
    """The Taylor remainders of the user's `loss` around `logits` with their `gradient`, and the fitted slopes.

    `loss(z)` returns the reduced loss, or row losses whose sum `gradient` is the gradient of (reduction
    none); `scale` is the temperature (the logit distance over which the softmax moves by O(1));
    `precision` the machine epsilon of the user's values. The directions are drawn from `seed`, so a run
    is reproducible. `directions` random v are each tried as v and -v. `losses_at`, if given, evaluates the points
    z + t v themselves (returned.Along: the same numbers bit for bit) instead of `loss` on each.
    """
    z = np.asarray(logits, dtype=np.float64)
    g = np.asarray(gradient, dtype=np.float64).reshape(z.shape)
    base = _value(loss(z))
    steps = taylor_steps(scale, halvings)
    uniform = _value(loss(np.zeros_like(z)))
    floor = 32 * (precision / 2) * (abs(base) + abs(uniform) + float(np.abs(z * g).sum())) + sum_error(g, steps[0])
    signed = SignedDirections(seed, directions, z.shape)
    scratch = np.empty_like(z)  # each point's step, made in place: no three fresh arrays of the logits' size each
    if losses_at is None:
        remainders = np.array([[_remainder(loss(z + t * v), z, g, base, t, v, scratch) for t in steps]
                               for v in signed])
    else:
        values = iter(losses_at(taylor_points(scale, directions, halvings, seed)))
        remainders = np.array([[_remainder(next(values), z, g, base, t, v, scratch) for t in steps] for v in signed])
    result = TaylorResult(steps, remainders, floor, (), signed)
    return result._replace(slopes=tuple(_slope(steps, row, fitted) for row, fitted in zip(
        remainders, result.fitted, strict=True)))


def taylor_plan(logits: np.ndarray, settings: Settings) -> float | None:
    """The scale users.taylor_check runs taylor_test at on these logits (taylor_scale), or None where it does
    not run (taylor_applies, steps_resolved); impl.Session reads it to ask the Taylor calls ahead."""
    scale = taylor_scale(settings)
    return scale if taylor_applies(settings) and steps_resolved(logits, settings.dtype, scale) else None


def taylor_scale(settings: Settings) -> float:
    """T / |logit scale|: the size of a move of the logits that moves the softmax by O(1)."""
    return settings.temperature / abs(getattr(settings, "logit_scale", 1.0))


def taylor_applies(settings: Settings) -> bool:
    """Whether this module's bound on the third derivative holds: a loss sum_n w_n (A_n lse(u_n) - <a_n, u_n>),
    w_n >= 0, u = A z / T (cross-entropy with weights, smoothing, ignored rows; forward KL, T^2 scaled or not).
    The squared error, focal and binary losses, reverse KL, JSD, a z-loss or soft-capping are not of that form:
    a correct gradient of a non-convex loss can show local slopes far from 2 (examples/my_softmax.py's mse,
    1.77 on examples/batch.json), so they are not judged by it."""
    if settings.loss not in ("cross_entropy", "kl"):
        return False
    plain = {"z_loss": 0.0, "softcap": None, "grad_output": None, "gamma": None, "pos_weight": None}
    return all(getattr(settings, name, unset) == unset for name, unset in plain.items())


def steps_resolved(logits: np.ndarray, dtype: str, scale: float) -> bool:
    """Whether taylor_test's smallest step, scale TOP_STEP / 2^HALVINGS, is at least the spacing of --dtype at the
    largest logit: below it the moved logits the user's function is given in that dtype round the step away (at
    bfloat16 the spacing at 8 is 2^-4, the step T / 4096), the remainders no longer scale as t^2, and their floor
    (the rounding of the user's bfloat16 values) is above every remainder anyway: 48 calls for no verdict."""
    from gradcheck_cli.numerics.precision import spacing

    largest = float(np.max(np.abs(logits), initial=0.0))
    return bool(dtype == "float64" or spacing(largest, dtype) <= scale * TOP_STEP / 2**HALVINGS)


def taylor_steps(scale: float, halvings: int = HALVINGS) -> np.ndarray:
    """The steps t, largest first: scale TOP_STEP down by `halvings` halvings."""
    return scale * TOP_STEP / 2.0 ** np.arange(halvings + 1)


def taylor_points(scale: float, directions: int = 3, halvings: int = HALVINGS, seed: int = 0) -> list[Along]:
    """The points z + t v taylor_test evaluates the loss at, in its order: each signed direction, each step."""
    steps = taylor_steps(scale, halvings)
    return [Along(seed, position, float(t)) for position in range(2 * directions) for t in steps]


class SignedDirections(Sequence[np.ndarray]):
    """v1, -v1, v2, -v2, ...: Gaussian directions drawn from `seed` (in that order, as one draw of count x shape
    would give them), each scaled to max |v| = 1, made one at a time as they are used: stacked they would be
    2 count arrays the size of the logits (GBs at a 128k vocabulary)."""

    def __init__(self, seed: int, count: int, shape: tuple[int, ...]) -> None:
        self.seed, self.drawn, self.shape = seed, count, shape

    def __len__(self) -> int:
        return 2 * self.drawn

    def __iter__(self) -> Iterator[np.ndarray]:
        generator = np.random.default_rng(self.seed)
        for _ in range(self.drawn):
            v = np.asarray(generator.standard_normal(self.shape))
            v /= np.abs(v).max()
            yield v
            yield -v

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...

    @overload
    def __getitem__(self, index: slice) -> list[np.ndarray]: ...

    def __getitem__(self, index: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(index, slice):
            return [self[i] for i in range(len(self))[index]]
        wanted = range(len(self))[index]  # IndexError past the end, as a list's
        return next(v for i, v in enumerate(self) if i == wanted)


def _value(loss_value: float | np.ndarray) -> float:
    """The loss as one number: row losses (reduction none) summed, exactly rounded."""
    return exact_sum(np.asarray(loss_value, dtype=np.float64))


def _remainder(loss_value: float | np.ndarray, z: np.ndarray, g: np.ndarray, base: float, t: float, v: np.ndarray,
               scratch: np.ndarray) -> float:
    """|L(z + t v) - L(z) - <g, d>|, d = (z + t v) - z the step the function really saw, made in `scratch` with
    the operations z + t * v - z is (the same numbers bit for bit)."""
    change = _value(loss_value) - base
    np.multiply(v, t, out=scratch)  # t v (multiplication commutes exactly)
    np.add(z, scratch, out=scratch)
    np.subtract(scratch, z, out=scratch)
    return abs(change - _inner(g, scratch, out=scratch))


def _inner(g: np.ndarray, d: np.ndarray, out: np.ndarray | None = None) -> float:
    """<g, d> in float64: numpy's pairwise sum along each row, the row sums then summed exactly rounded.

    Error (module docstring, "Rounding"): numpy sums a contiguous row of C terms by halving it down to blocks of
    at most 128 (log2(C / 128) levels), each block in 8 running accumulators of up to 16 terms, joined 3 levels
    deep, plus up to 7 left-over terms added one by one: with the product's own rounding a term passes through
    at most (log2 C - 7) + 16 + 3 + 7 + 1 = log2 C + 20 roundings, so |error| <= (log2 C + 20) 2^-53 sum |g d|
    (to first order; the terms are a few hundred at most), which sum_error bounds and the floor includes.
    Exact sums over N C terms cost 10x as much (33 of 73 s of an 8-row 128k-class check)."""
    product = np.multiply(g, d, out=out)  # `out` (d's own memory, say): the products written there
    rows = product.reshape(-1, g.shape[-1]) if g.ndim else product.reshape(1, 1)
    return exact_sum(rows.sum(axis=1))


def sum_error(g: np.ndarray, largest_step: float) -> float:
    """The bound of _inner's rounding for any step of at most `largest_step` along a direction with max |v| = 1
    (|d| <= largest_step (1 + 2^-52): z + t v rounds once). 21: the 20 roundings of _inner, and one for the
    second-order terms of (1 + 2^-53)^20."""
    classes = g.shape[-1] if g.ndim else 1
    return (np.log2(max(classes, 2)) + 21) * 2.0**-53 * largest_step * (1 + 2.0**-52) * float(np.abs(g).sum())


def _slope(steps: np.ndarray, remainders: np.ndarray, fitted: np.ndarray) -> float | None:
    if np.count_nonzero(fitted) < 3:
        return None
    return float(np.polyfit(np.log(steps[fitted]), np.log(remainders[fitted]), 1)[0])
