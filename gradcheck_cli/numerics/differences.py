"""Finite differences over a whole batch, with steps and tolerances from the error analysis.

A method is a stencil: f'(z) ~ sum_k w_k f(z + o_k h) / h. Every method perturbs one class column of every
row at once, so a batch costs (number of offsets) x C evaluations, never a loop over rows.

What gets evaluated at each perturbed point is a *perturbation*: a function (column j, per-row offsets d)
-> the value at z + d e_j, less any per-row constant (stencil weights sum to zero, so constants cancel).
Losses that know their structure supply an exact and cheap one (see CrossEntropy.perturbation): the value
is still the loss at the perturbed point, just computed without redoing whole rows and without the large
terms whose rounding would swamp small gradient elements. Anything else (a user's function) goes through
`column_perturbation`, which re-evaluates the whole batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple, Protocol

import numpy as np

from gradcheck_cli.errors import InputError
from gradcheck_cli.numerics.in_place import factors_in_blocks, in_place, scaled_into
from gradcheck_cli.numerics.softmax import Softmax, softmax_parts
from gradcheck_cli.settings import Settings

Perturbation = Callable[[int | slice, np.ndarray], np.ndarray]


class Method:
    """f'(z) ~ sum w_k f(z + o_k h) / h, offsets in units of h (imaginary: the complex step); error ~ h^p, p the
    order; default relative step eps_mach ** step_power (truncation/rounding balance). growth, D: the (p+1)-th
    u-derivative of what the stencil differences per unit of the element's scale ("Truncation" below), the largest
    B_(p+1),k (Bell, k <= 3) at the bounds q_i of the logistic's derivatives (tests/test_no_false_verdicts.py
    recomputes it). A plain class: a NamedTuple costs start-up 0.2 ms."""

    def __init__(self, name: str, offsets: tuple[float, ...], weights: tuple[float, ...], order: int,
                 step_power: float, growth: float, complex_step: bool = False) -> None:
        self.name, self.offsets, self.weights, self.order, self.step_power, self.growth, self.complex_step = (
            name, offsets, weights, order, step_power, growth, complex_step)

    @property
    def truncation(self) -> float:
        """kappa = sum |w_k| |o_k|^(p+1) / (p+1)!: the stencil's Lagrange remainder per unit of h^p f^(p+1)."""
        terms = (abs(w) * abs(o) ** (self.order + 1) for o, w in zip(self.offsets, self.weights, strict=True))
        return sum(terms) / math.factorial(self.order + 1)


def _richardson() -> Method:
    """Two rounds of Richardson extrapolation on central differences at h, h/2 and h/4.

    D(h) = (f(h) - f(-h)) / 2h errs by c2 h^2 + c4 h^4 + ...; (4 D(h/2) - D(h)) / 3 cancels h^2, and one more
    round, (16 E(h/2) - E(h)) / 15, cancels h^4, leaving O(h^6). Written out as one stencil on +-h, +-h/2, +-h/4.
    """
    pairs = {1.0: 1 / 90, 0.5: -4 / 9, 0.25: 128 / 45}
    offsets = tuple(sign * p for p in pairs for sign in (1.0, -1.0))
    weights = tuple(sign * w for w in pairs.values() for sign in (1.0, -1.0))
    return Method("richardson", offsets, weights, order=6, step_power=1 / 7, growth=301.0)


METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        # (h^2/6)|f'''| against eps|f|/h: least at h ~ eps^(1/3).
        Method("central", (-1.0, 1.0), (-0.5, 0.5), order=2, step_power=1 / 3, growth=3.0),
        # Truncation (h/2)|f''| against rounding eps|f|/h: least at h ~ eps^(1/2).
        Method("forward", (0.0, 1.0), (-1.0, 1.0), order=1, step_power=1 / 2, growth=1.0),
        Method("backward", (-1.0, 0.0), (-1.0, 1.0), order=1, step_power=1 / 2, growth=1.0),
        # (f(-2h) - 8f(-h) + 8f(h) - f(2h)) / 12h: (h^4/30)|f^(5)| against eps|f|/h, least at h ~ eps^(1/5).
        Method("five-point", (-2.0, -1.0, 1.0, 2.0), (1 / 12, -8 / 12, 8 / 12, -1 / 12), order=4, step_power=1 / 5,
               growth=25.0),
        _richardson(),
        # Im f(z + ih) / h: no difference is taken, so nothing cancels and h can be tiny; 1e-20 makes the
        # h^2 truncation vanish below any rounding. step_power is unused (see relative_step).
        Method("complex-step", (1.0,), (1.0,), order=2, step_power=0.0, growth=3.0, complex_step=True),
    )
}
METHOD_NAMES = tuple(METHODS)
# The accuracy each method must reach in float64 on random logits of scale 1 to 100: the worst element's
# error relative to the largest gradient element (benchmarks/accuracy.py measures it, the tests hold it).
ACCURACY_TARGETS = {
    "forward": 1e-7,
    "backward": 1e-7,
    "central": 1e-10,
    "five-point": 1e-12,
    "richardson": 1e-13,
    "complex-step": 1e-15,
}
COMPLEX_STEP = 1e-20


def relative_step(method: str, dtype: str | np.dtype = "float64") -> float:
    """eta: the step in u = z / T that balances truncation against rounding in the dtype."""
    if METHODS[method].complex_step:
        return COMPLEX_STEP
    return float(np.finfo(np.dtype(dtype)).eps) ** METHODS[method].step_power


def default_eps(method: str, dtype: str | np.dtype = "float64", temperature: float = 1.0) -> float:
    """The default step h in z: T eta. Every derivative checked is one of softmax(z / T), a function of
    u = z / T, so the balance asks for a step of eta in u; h = eta in z would be T times too long or short."""
    return max(temperature * relative_step(method, dtype), float(np.finfo(np.float64).smallest_subnormal))


# --- tolerances ---------------------------------------------------------------------------------------------
#
# Every checked element n (of the gradient, the Jacobian, the Hessian, or a value supplied) passes when
#     |a - n| <= atol + rtol max(|n|, S) + u rho N + floor,
# S the element's scale (what its truncation error is proportional to), N its gross scale (the terms a
# straightforward computation adds up to it: what its rounding is proportional to), u the unit roundoff of
# --dtype, rho the row's rounding factor. The losses compute S and N (Scales); both carry the loss's own
# factors: 1/T per derivative, weights and smoothing through the coefficients, 1/D of the mean.
#
# Truncation. Moving z_j by d moves u_j by d / T, and s_j(u) = logistic(u + logit s_j): its derivatives are
# sigma' Q_k(sigma), |Q_k| <= q_k = 1, 1, 1, 1, 1, 1.82, 4.25 for k = 1..7. What a stencil differences is
# the loss (whose u-derivative is a polynomial in sigma) or a polynomial of degree <= 3 in sigma; by Faa di
# Bruno its (p+1)-th u-derivative is at most D S (D = Method.growth). A step of eta = h / T in u so errs by
#     kappa eta^p D S    (times e^(4 |xi|) <= 1.03 at the default steps, xi the stencil's reach),
# the same in units of S at every temperature and loss scale. The default rtol is SAFETY times that at the
# default step, rounded up to a power of ten, never below RTOL_FLOOR (comparisons without element scales,
# such as a supplied total loss, still meet the rounding of a long float64 sum there).
#
# Rounding and underflow are allowed for element by element: losses/base.py (allowance).
SAFETY = 4.0
RTOL_FLOOR = 1e-13


def truncation_bound(method: str, eta: float) -> float:
    """kappa eta^p D: the largest error of the method's stencil at step eta in u, per unit of element scale."""
    spec = METHODS[method]
    return spec.truncation * eta**spec.order * spec.growth


def default_tolerances(method: str, dtype: str | np.dtype = "float64") -> tuple[float, float]:
    """(atol, rtol) by default: no absolute slack (every allowance scales with its element), and the rtol of the
    method's truncation bound. The dtype's rounding is allowed for separately, element by element (allowance)."""
    bound = SAFETY * truncation_bound(method, relative_step(method))
    return 0.0, max(10.0 ** math.ceil(math.log10(bound)) if bound > 0 else 0.0, RTOL_FLOOR)


def refuse_meaningless(settings: Settings) -> None:
    """A temperature the dtype cannot hold, or whose 1/T^order overflows it, leaves no derivative to check."""
    from gradcheck_cli.numerics.precision import FORMATS  # knows bfloat16, which numpy's finfo does not

    dtype, temperature = settings.dtype, settings.temperature
    tiny, largest = 2.0 ** FORMATS[dtype].min_exponent, FORMATS[dtype].max_value
    if not tiny <= temperature <= largest:
        raise InputError(f"--temperature {temperature:g} is outside the range of {dtype} "
                         f"({tiny:.3g} to {largest:.3g})")
    limit = largest ** (-1.0 / settings.order)
    if temperature < limit:
        kind = "the Hessian" if settings.order == 2 else "the gradient"
        raise InputError(f"--temperature {temperature:g} is too small: {kind} scales with 1/T^{settings.order}, "
                         f"which overflows {dtype} below T = {limit:.3g}")


def resolve(settings: Settings) -> Settings:
    """The settings with every default filled in: the step for method and temperature, the tolerances."""
    refuse_meaningless(settings)
    atol, rtol = default_tolerances(settings.method, settings.dtype)
    return settings._replace(
        # The reference is always float64, so its step is float64's whatever the analytic dtype.
        eps=default_eps(settings.method, temperature=settings.temperature) if settings.eps is None else settings.eps,
        atol=atol if settings.atol is None else settings.atol,
        rtol=rtol if settings.rtol is None else settings.rtol,
    )


def exact_step(eps: float) -> np.ndarray:
    """eps rounded down to a power of two, as one number, for the exact perturbations: they never form z + h
    (so no floor at the spacing of z is needed), and every offset o_k h of a stencil is then exact."""
    return np.asarray(2.0 ** np.floor(np.log2(eps)))


def steps(logits: np.ndarray, eps: float) -> np.ndarray:
    """Per-element steps: eps rounded down to a power of two (and never below 4 ulps of z).

    A power of two h, and every o_k h of a stencil, moves z by exactly that much: z + o_k h - z == o_k h in
    binary. Otherwise the perturbation applied differs from the one we divide by, an error of order
    eps_mach |z| / h in every difference.

    The textbook scales h with max(1, |z|), assuming the function's derivatives shrink as its argument
    grows. The softmax's do not: it is shift-invariant, its derivatives are bounded at any logit scale, so
    a scaled step only adds truncation error (at logit scale 100 a scaled central step errs by 1.5e-8 of
    the largest gradient element, an unscaled one by 2e-13: benchmarks/accuracy.py). The rounding error
    eps |f| / h that scaling guards against is small here: the built-in losses evaluate their exact
    perturbations (rounding relative to the change, not to |f|), and a re-evaluated row loss grows only
    like |z|, so the balance point moves like |z|^(1/3) at most.
    """
    return np.broadcast_to(broadcast_steps(logits, eps), logits.shape).copy()


def broadcast_steps(logits: np.ndarray, eps: float) -> np.ndarray:
    """The steps of `steps`, as one number (a 0-d array) when every logit gets the same, else one per logit.

    Every logit gets the same unless one is so large that its 4 ulps exceed eps (never, for central). For
    stencils that move every column at once: e^h - 1 and the like are then computed once, not per logit.
    """
    largest = float(np.abs(logits).max()) if logits.size else 0.0
    if 4.0 * np.spacing(largest) <= eps:
        return np.asarray(2.0 ** np.floor(np.log2(eps)))
    nominal = np.maximum(eps, 4.0 * np.spacing(np.abs(logits)))
    return np.exp2(np.floor(np.log2(nominal)))


def column_perturbation(function: Callable[[np.ndarray], np.ndarray], logits: np.ndarray) -> Perturbation:
    """The generic perturbation: evaluate `function` on the whole batch with column j moved by d."""

    def perturb(column: int | slice, offsets: np.ndarray) -> np.ndarray:
        moved = logits.astype(np.result_type(logits, offsets))
        moved[:, column] += offsets
        return function(moved)

    return perturb


def column_derivative(perturb: Perturbation, step: np.ndarray, column: int | slice, method: str) -> np.ndarray:
    """One method's stencil on one column: the derivative by logit `column` of every row (N x ...).

    With `column` a slice and a step per logit (N x C), every column at once, each moved on its own.
    """
    spec = METHODS[method]
    step = np.asarray(step)
    if spec.complex_step:
        value = perturb(column, 1j * step).imag
    else:
        value = np.zeros(())
        for offset, weight in zip(spec.offsets, spec.weights, strict=True):
            value = value + weight * perturb(column, offset * step)
    return value / step.reshape(step.shape + (1,) * (np.ndim(value) - np.ndim(step)))


def _stencil(perturb: Perturbation, step: np.ndarray, method: str) -> np.ndarray:
    """column_derivative over every column at once with one step for all (N x C), its sums made in place."""
    spec = METHODS[method]
    if spec.complex_step:
        return column_derivative(perturb, step, slice(None), method)
    value: np.ndarray | None = None
    for offset, weight in zip(spec.offsets, spec.weights, strict=True):
        term = np.multiply(perturb(slice(None), offset * step), weight)
        if value is None:
            value = term
            value += 0.0  # as 0 + w f: a -0.0 becomes 0.0, bit for bit column_derivative's sum
        else:
            value += term
    assert value is not None
    return in_place(np.divide, value, step)



def differentiate(perturb: Perturbation, h: np.ndarray, method: str) -> np.ndarray:
    """Apply a method's stencil to every column: N x ... x C, the last axis the logit differentiated."""
    return np.stack([column_derivative(perturb, h[:, j], j, method) for j in range(h.shape[1])], axis=-1)


def finite_difference(
    function: Callable[[np.ndarray], np.ndarray], logits: np.ndarray, eps: float, method: str = "central"
) -> np.ndarray:
    """Differentiate any row-wise batch function by re-evaluating it at every perturbed batch."""
    return differentiate(column_perturbation(function, logits), steps(logits, eps), method)


def softmax_perturbation(logits: np.ndarray, given: Softmax | None = None) -> Perturbation:
    """s(z + d e_j) - s(z), exactly, in O(N C) per column instead of a softmax of the whole batch.

    Moving z_j by d multiplies exp(z_j - m) by e^d and the normaliser by 1 + s_j q (q = e^d - 1), so
    s_i changes by -s_i s_j q / (1 + s_j q) for i != j and s_j by s_j (1 - s_j) q / (1 + s_j q), with 1 - s_j
    from softmax_complement so that nothing cancels. `given` is softmax(logits), if the caller has it.
    """
    parts = softmax_parts(logits) if given is None else given
    s, complement = parts.s, parts.complement

    def perturb(column: int | slice, offsets: np.ndarray) -> np.ndarray:
        q = np.expm1(offsets)
        s_j = s[:, column]
        denominator = 1.0 + s_j * q
        change = s * (-s_j * q / denominator)[:, None]
        change[:, column] = s_j * complement[:, column] * q / denominator
        return change

    return perturb


class Differentiable(Protocol):
    """What numeric_gradient needs of a loss (the loss objects in losses/ have all of it)."""

    @property
    def scale(self) -> float: ...

    def row_losses(self, logits: np.ndarray) -> np.ndarray: ...


def numeric_gradient(
    loss: Differentiable, logits: np.ndarray, eps: float, method: str, given: Softmax | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Finite differences of each row's own loss, scaled by the reduction as the analytic gradient is.

    Differencing the row losses rather than the batch total keeps the rounding error of one row from
    swamping the others, and costs the same. A loss with an exact `perturbation` is evaluated through it,
    every column at once, with one step for all (`given` is its softmax, if the caller has it). `out`, an
    array of the result's shape and dtype, receives the result (the same numbers, written there last).
    """
    make = getattr(loss, "perturbation", None)
    value = _stencil(make(logits, given), exact_step(eps), method) if make is not None else differentiate(
        column_perturbation(loss.row_losses, logits), steps(logits, eps), method)
    if out is not None:
        return scaled_into(value, loss.scale, out)
    return in_place(np.multiply, value, loss.scale) if make is not None else value * loss.scale


def numeric_hessian(gradient_change: Perturbation, classes: int, eps: float, method: str) -> np.ndarray:
    """Finite differences of a gradient through its exact change (a loss's gradient_perturbation): N x C x C,
    [n, i, j] = d g_i / d z_j. Nothing is re-evaluated, so the rounding is relative to the change."""
    h = exact_step(eps)
    return np.stack([column_derivative(gradient_change, h, j, method) for j in range(classes)], axis=-1)


def jacobian_perturbation(logits: np.ndarray, temperature: float = 1.0) -> Perturbation:
    """The exact perturbation of s = softmax(z / T) as z moves: moving z_j by d moves z_j / T by d / T."""
    perturb = softmax_perturbation(logits / temperature)
    return lambda column, offsets: perturb(column, offsets / temperature)


def softmax_derivative_factors(
    s: np.ndarray, complement: np.ndarray, h: np.ndarray, method: str, temperature: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """The numeric ds/dz of s = softmax(z / T) in factored form, every row and column at once (N x C each).

    Moving z_j by d changes every other s_i by s_i times one row factor, -s_j q / (1 + s_j q) with q = e^(d/T) - 1,
    and s_j by s_j (1 - s_j) q / (1 + s_j q) (softmax_perturbation's exact changes). So the method's stencil
    over those row factors gives, for column j, ds_i/dz_j = s_i * factor[:, j] (i != j) and ds_j/dz_j =
    own[:, j]: the differences of the same exact changes as perturbing all of s, in O(N C) instead of O(N C^2).
    `s` and `complement` (1 - s) are at the reference logits; h holds the steps, one per logit or one for all.
    """
    spec = METHODS[method]
    if spec.complex_step:
        q = np.expm1(1j * h / temperature)
        moved = s * q
        others = moved / (1.0 + moved)
        return -others.imag / h, (others * complement).imag / h
    if np.ndim(h) == 0 and s.dtype == complement.dtype == np.float64 and s.shape == complement.shape:
        changes = [(np.expm1(o * h / temperature), w) for o, w in zip(spec.offsets, spec.weights, strict=True)]
        return factors_in_blocks(np.ascontiguousarray(s), np.ascontiguousarray(complement), h, changes)
    factor, own = np.zeros(s.shape), np.zeros(s.shape)
    others, mine = np.empty(s.shape), np.empty(s.shape)
    for offset, weight in zip(spec.offsets, spec.weights, strict=True):
        # In place, operation for operation: others = s q / (1 + s q), q = e^(o h / T) - 1; the row factor
        # gains w (-others), the own change w others (1 - s).
        np.multiply(s, np.expm1(offset * h / temperature), out=others)
        np.add(others, 1.0, out=mine)
        np.divide(others, mine, out=others)
        np.multiply(others, complement, out=mine)
        np.multiply(others, -weight, out=others)
        factor += others
        np.multiply(mine, weight, out=mine)
        own += mine
    factor /= h
    own /= h
    return factor, own


# --- step-size sweep ----------------------------------------------------------------------------------------

SWEEP_STEPS = tuple(10.0**-k for k in range(1, 14))
# Below this error relative to the largest gradient element, a sweep's best step counts as agreement.
SWEEP_AGREEMENT = 1e-6


class SweepPoint(NamedTuple):
    eps: float
    max_abs_error: float
    max_rel_error: float
    error_vs_largest: float  # max |a - n| / max |a|: the curve's height


def sweep(
    analytic: np.ndarray,
    function: Callable[[np.ndarray], np.ndarray],
    logits: np.ndarray,
    eps_values: tuple[float, ...],
) -> list[SweepPoint]:
    """Central differences of a re-evaluated row function at each step, against an analytic gradient.

    The whole row is re-evaluated (not the exact perturbation the check uses), so the curve shows the
    textbook V: truncation error falling as h^2 on the right, rounding error eps |f| / h rising on the left.
    """
    largest = max(float(np.max(np.abs(analytic))), float(np.finfo(np.float64).tiny))
    points = []
    for eps in eps_values:
        numeric = finite_difference(function, logits, eps, "central")
        error = np.abs(analytic - numeric)
        scale = np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), np.finfo(np.float64).tiny)
        points.append(SweepPoint(eps, float(error.max()), float((error / scale).max()), float(error.max()) / largest))
    return points


def sweep_looks_correct(points: list[SweepPoint]) -> bool:
    """A correct gradient's V dips near machine precision; a wrong one has a floor no step gets under."""
    return min(point.error_vs_largest for point in points) <= SWEEP_AGREEMENT
