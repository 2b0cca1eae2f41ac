"""Half precision: the floating formats gradcheck knows, rounding to them, and the plain same-dtype
implementation whose error against the float64 reference the baseline verdict holds a user's error to.

Rounding is done here in numpy, on float64 arrays whose values lie on the format's grid: no numpy bfloat16
type is needed (the optional ml_dtypes package is not imported), and every value stays exact in float64. A
float64 value is rounded as torch and ml_dtypes cast it, through float32 (round to nearest even, twice):
the logits a user's framework sees after its cast are the ones gradcheck checks at.

The plain implementation ("baseline") rounds to the format after every operation, as a kernel that keeps
each intermediate in that format does: z / T, z - max z, exp, each partial sum, the division, the log, each
product. Sums are pairwise (a tree, as numpy and GPU reductions add), every partial sum rounded: a sum of C
terms so errs by about u log2 C, not the u C of a running sum. Its gradient is autograd's: log_softmax's
backward takes exp of the log-probabilities the forward kept in the dtype. It computes in float64 and
rounds, so each operation is correctly rounded from float64 (then float32, as a float32 unit rounds it).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Format(NamedTuple):
    """A binary floating format: p significand bits (the implicit one included), smallest normal 2^emin."""

    name: str
    bits: int
    min_exponent: int
    max_value: float

    @property
    def eps(self) -> float:
        """Machine epsilon: the spacing of the format just above 1."""
        return 2.0 ** (1 - self.bits)

    @property
    def unit_roundoff(self) -> float:
        return 2.0 ** -self.bits

    @property
    def smallest_subnormal(self) -> float:
        return 2.0 ** (self.min_exponent - self.bits + 1)


FORMATS = {
    "float64": Format("float64", 53, -1022, float(np.finfo(np.float64).max)),
    "float32": Format("float32", 24, -126, float(np.finfo(np.float32).max)),
    "bfloat16": Format("bfloat16", 8, -126, (2.0 - 2.0**-7) * 2.0**127),
    "float16": Format("float16", 11, -14, 65504.0),
}


class Tolerance(NamedTuple):
    rtol: float
    atol: float


# The per-dtype tolerances of a user's values: torch.testing.assert_close's defaults for these dtypes
# (torch/testing/_comparison.py, _DTYPE_PRECISIONS), which kernel test suites use when they compare with an
# upcast reference. |value - reference| <= atol + rtol |reference|, element by element.
DTYPE_TOLERANCES = {
    "bfloat16": Tolerance(rtol=1.6e-2, atol=1e-5),
    "float16": Tolerance(rtol=1e-3, atol=1e-5),
}


def round_to(values: np.ndarray, dtype: str) -> np.ndarray:
    """float64 values rounded to the format `dtype`, as float64 (through float32, as torch casts float64)."""
    values = np.asarray(values, dtype=np.float64)
    if dtype == "float64":
        return values
    with np.errstate(over="ignore"):  # beyond the format's range is infinity, as the cast in a framework gives
        single = values.astype(np.float32)
        if dtype == "float32":
            return single.astype(np.float64)
        if dtype == "float16":
            return single.astype(np.float16).astype(np.float64)  # numpy's float32 -> float16 rounds to nearest even
    return _round_bits(single.astype(np.float64), FORMATS[dtype])


def _round_bits(values: np.ndarray, spec: Format) -> np.ndarray:
    """Round to nearest even at the format's spacing: 2^(e - p) for |x| in [2^(e-1), 2^e), never below the
    subnormal spacing; past the largest finite value, infinity. Exact: every step is a power-of-two scaling."""
    with np.errstate(invalid="ignore", over="ignore"):
        _, exponent = np.frexp(values)
        quantum = np.maximum(exponent - spec.bits, spec.min_exponent - spec.bits + 1)
        rounded = np.ldexp(np.rint(np.ldexp(values, -quantum)), quantum)
        return np.where(np.abs(rounded) > spec.max_value, np.copysign(np.inf, values), rounded)


def spacing(values: np.ndarray | float, dtype: str) -> np.ndarray:
    """The unit in the last place of the format at |values|: the gap to the next larger magnitude (the
    subnormal spacing at 0)."""
    spec = FORMATS[dtype]
    _, exponent = np.frexp(np.abs(np.asarray(values, dtype=np.float64)))
    exponent = np.where(np.asarray(values) == 0, spec.min_exponent, exponent)
    return np.ldexp(1.0, np.maximum(exponent - spec.bits, spec.min_exponent - spec.bits + 1))


def rounded_sum(values: np.ndarray, dtype: str) -> np.ndarray:
    """Pairwise sum over the last axis with every partial sum rounded to `dtype` (log2 C vectorised levels)."""
    while values.shape[-1] > 1:
        if values.shape[-1] % 2:
            values = np.concatenate([values, np.zeros((*values.shape[:-1], 1))], axis=-1)  # + 0 is exact
        values = round_to(values[..., 0::2] + values[..., 1::2], dtype)
    return values[..., 0] if values.shape[-1] else np.zeros(values.shape[:-1])


class Baseline(NamedTuple):
    """What the plain implementation computes, each value on the format's grid (float64 arrays)."""

    probabilities: np.ndarray  # N x C
    row_losses: np.ndarray  # N
    loss: np.ndarray  # the reduced loss (a 0-d array), or the N row losses for reduction none
    gradient: np.ndarray  # N x C, the reduction's scale included
    jacobian_diagonal: np.ndarray  # N x C: s_i (1 - s_i), the off-diagonal being -s_i s_j rounded


class _Softmax(NamedTuple):
    s: np.ndarray
    log_s: np.ndarray


def _softmax(logits: np.ndarray, temperature: float, dtype: str) -> _Softmax:
    """Plain softmax and log-softmax of z / T, rounded after each operation."""
    u = logits if temperature == 1.0 else round_to(logits / round_to(np.asarray(temperature), dtype), dtype)
    shifted = round_to(u - u.max(axis=-1, keepdims=True), dtype)
    exps = round_to(np.exp(shifted), dtype)
    total = rounded_sum(exps, dtype)[:, None]
    return _Softmax(round_to(exps / total, dtype), round_to(shifted - round_to(np.log(total), dtype), dtype))


def cross_entropy_baseline(
    logits: np.ndarray, coefficients: np.ndarray, temperature: float, reduction: str, normalizer: float, dtype: str
) -> Baseline:
    """Cross-entropy l_n = -sum_c a_c log s_c and its gradient (s A - a) / T, A = sum_c a_c, plainly in `dtype`.

    `logits` are on the format's grid already; the coefficients (labels, weights, smoothing, ignored rows
    folded in) are rounded to it, as a kernel holding them in that format has them.
    """
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        parts = _softmax(logits, temperature, dtype)
        a = round_to(coefficients, dtype)
        rows = -rounded_sum(round_to(a * parts.log_s, dtype), dtype)
        mass = rounded_sum(a, dtype)[:, None]
        # The backward of log_softmax, as autograd runs it: exp of the log-probabilities it kept in the dtype.
        held = round_to(np.exp(parts.log_s), dtype)
        gradient = round_to(round_to(held * mass, dtype) - a, dtype)
        return _finish(parts.s, rows, gradient, temperature, reduction, normalizer, dtype)


def squared_error_baseline(
    logits: np.ndarray, targets: np.ndarray, temperature: float, reduction: str, normalizer: float, dtype: str
) -> Baseline:
    """l_n = 1/2 sum_k (s_k - t_k)^2 and its gradient s_k (g_k - <g, s>) / T, g = s - t, plainly in `dtype`."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        s = _softmax(logits, temperature, dtype).s
        g = round_to(s - round_to(targets, dtype), dtype)
        rows = round_to(0.5 * rounded_sum(round_to(g * g, dtype), dtype), dtype)
        inner = rounded_sum(round_to(g * s, dtype), dtype)[:, None]
        gradient = round_to(s * round_to(g - inner, dtype), dtype)
        return _finish(s, rows, gradient, temperature, reduction, normalizer, dtype)


def _finish(s: np.ndarray, rows: np.ndarray, gradient: np.ndarray, temperature: float, reduction: str,
            normalizer: float, dtype: str) -> Baseline:
    """The temperature's 1/T and the reduction, each one rounded operation; the Jacobian's diagonal."""
    if temperature != 1.0:
        gradient = round_to(gradient / round_to(np.asarray(temperature), dtype), dtype)
    loss = rows
    if reduction != "none":
        loss = rounded_sum(rows, dtype)
        if reduction == "mean":
            loss = round_to(loss / normalizer, dtype)
            gradient = round_to(gradient / normalizer, dtype)
    diagonal = round_to(s * round_to(1.0 - s, dtype), dtype)
    return Baseline(s, rows, np.asarray(loss), gradient, diagonal)


def baseline_jacobian(baseline: Baseline, temperature: float, dtype: str) -> np.ndarray:
    """N x C x C: -s_i s_j off the diagonal and s_i (1 - s_i) on it, each rounded, then over T (rounded)."""
    s = baseline.probabilities
    jacobian = round_to(-s[:, :, None] * s[:, None, :], dtype)
    index = np.arange(s.shape[-1])
    jacobian[:, index, index] = baseline.jacobian_diagonal
    if temperature != 1.0:
        jacobian = round_to(jacobian / round_to(np.asarray(temperature), dtype), dtype)
    return jacobian
