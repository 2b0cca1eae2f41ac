"""Half precision: the floating formats gradcheck knows, rounding to them, the per-dtype tolerances, and what
the plain same-dtype implementation (numerics/baselines.py) hands the baseline verdict.

Rounding is done in numpy on float64 arrays whose values lie on the format's grid: no numpy bfloat16 type is
needed (the optional ml_dtypes package is used when installed, for speed only), and every value stays exact
in float64. A float64 value is rounded as torch and ml_dtypes cast it, through float32 (round to nearest
even, twice): the logits a user's framework sees after its cast are the ones gradcheck checks at. The work
is done on a float32 copy (its bit patterns, rounded in place), never with float64 frexp/ldexp temporaries.
"""

import functools
from typing import NamedTuple

import numpy as np


class Format:
    """A binary floating format: p significand bits (the implicit one included), smallest normal 2^emin. Plain
    classes, this and Tolerance: a NamedTuple costs every run's start-up some 0.2 ms to make."""

    __slots__ = ("bits", "max_value", "min_exponent", "name")

    def __init__(self, name: str, bits: int, min_exponent: int, max_value: float) -> None:
        self.name, self.bits, self.min_exponent, self.max_value = name, bits, min_exponent, max_value

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


class Tolerance:
    __slots__ = ("atol", "rtol")

    def __init__(self, rtol: float, atol: float) -> None:
        self.rtol, self.atol = rtol, atol


# The per-dtype tolerances of a user's values: torch.testing.assert_close's defaults for these dtypes
# (torch/testing/_comparison.py, _DTYPE_PRECISIONS), which kernel test suites use when they compare with an
# upcast reference. |value - reference| <= atol + rtol |reference|, element by element.
DTYPE_TOLERANCES = {
    "bfloat16": Tolerance(rtol=1.6e-2, atol=1e-5),
    "float16": Tolerance(rtol=1e-3, atol=1e-5),
}


def round_to(values: np.ndarray, dtype: str, out: np.ndarray | None = None) -> np.ndarray:
    """float64 values rounded to the format `dtype`, as float64 (through float32, as torch casts float64).

    Two roundings, to nearest even each: float64 -> float32, then float32 -> the format. torch's and ml_dtypes'
    casts of a float64 value go the same way, so a value just above a tie in float64 that float32 rounds onto
    the tie goes to the even neighbour, as in the frameworks, not up (1 + 2^-8 + 2^-40 is 1 in bfloat16 here).
    Its temporaries are the float32 copy and one of 2 or 4 bytes a value: bfloat16 is rounded by ml_dtypes'
    cast when it is installed, else on its bits in place (_round_bfloat16_bits, the same results), float16 by
    numpy's float32 -> float16 cast. `out` (float64, the shape of `values`; it may be `values` itself)
    receives the result instead of a new array.
    """
    values = np.asarray(values, dtype=np.float64)
    if dtype == "float64":
        return values if out is None else _into(out, values)
    with np.errstate(over="ignore", invalid="ignore"):  # beyond the format's range is infinity, as a cast gives
        single = values.astype(np.float32, order="C")  # C order: rounded in place through a flat view
        if dtype == "bfloat16":
            bfloat16 = _ml_dtypes_bfloat16()
            if bfloat16 is not None:  # the same bits, faster (measured in the README's Half precision section)
                packed: np.ndarray = single.astype(bfloat16)
                return packed.astype(np.float64) if out is None else _into(out, packed)
            _round_bfloat16_bits(single)
        elif dtype == "float16":
            half = single.astype(np.float16)  # numpy's float32 -> float16 rounds to nearest even
            return half.astype(np.float64) if out is None else _into(out, half)
    return single.astype(np.float64) if out is None else _into(out, single)


def _into(out: np.ndarray, values: np.ndarray) -> np.ndarray:
    np.copyto(out, values, casting="unsafe")  # float32/float16 -> float64 is exact
    return out


def _round_bfloat16_bits(single: np.ndarray) -> None:
    """Round float32 values to bfloat16 in place, on their bit patterns: bfloat16 is float32's top 16 bits.

    For finite values of one sign the bit patterns are ordered as the values, the grid of bfloat16 being the
    patterns whose low 16 bits are 0: adding 0x7FFF plus the lowest kept bit and clearing the low 16 bits
    rounds to nearest, ties to the even pattern, through subnormals and up to infinity (the largest float32
    carries into 0x7F80 0000, which is infinity, as the cast overflows). A NaN's payload could carry into its
    sign bit, so NaNs are put back afterwards. ml_dtypes' float32 -> bfloat16 cast gives the same bits
    (tests/test_baselines.py); this needs no package and no copy.
    """
    flat = single.reshape(-1)  # a view: `single` is the caller's own contiguous float32 array
    bits = flat.view(np.uint32)
    nan = np.isnan(flat)
    payloads = bits[nan]  # few or none: a NaN keeps its sign and stays quiet, as in ml_dtypes
    carry = np.right_shift(bits, 16)
    np.bitwise_and(carry, 1, out=carry)
    carry += 0x7FFF
    bits += carry
    np.bitwise_and(bits, np.uint32(0xFFFF0000), out=bits)
    if payloads.size:
        bits[nan] = (payloads & np.uint32(0xFFFF0000)) | np.uint32(0x00400000)


@functools.lru_cache(maxsize=1)
def _ml_dtypes_bfloat16() -> type | None:
    """ml_dtypes' numpy bfloat16 when that optional package is installed (its cast rounds to nearest even from
    float32, bit for bit as _round_bfloat16_bits), else None; looked up once, at the first bfloat16 rounding."""
    try:
        import ml_dtypes
    except ImportError:
        return None
    return type(ml_dtypes.bfloat16(0))


def spacing(values: np.ndarray | float, dtype: str) -> np.ndarray:
    """The unit in the last place of the format at |values|: the gap to the next larger magnitude (the
    subnormal spacing at 0)."""
    spec = FORMATS[dtype]
    _, exponent = np.frexp(np.abs(np.asarray(values, dtype=np.float64)))
    exponent = np.where(np.asarray(values) == 0, spec.min_exponent, exponent)
    return np.ldexp(1.0, np.maximum(exponent - spec.bits, spec.min_exponent - spec.bits + 1))


def rounded_sum(values: np.ndarray, dtype: str) -> np.ndarray:
    """Pairwise sum over the last axis with every partial sum rounded to `dtype` (log2 C vectorised levels)."""
    values = np.asarray(values, dtype=np.float64)
    while values.shape[-1] > 1:
        if values.shape[-1] % 2:
            values = np.concatenate([values, np.zeros((*values.shape[:-1], 1))], axis=-1)  # + 0 is exact
        values = np.add(values[..., 0::2], values[..., 1::2])
        round_to(values, dtype, out=values)
    return values[..., 0] if values.shape[-1] else np.zeros(values.shape[:-1])


class Baseline(NamedTuple):
    """What the plain implementation computes (numerics/baselines.py), each value on the format's grid: N x C
    arrays as float32 (exact for every bfloat16 and float16 value, half the memory), the rest float64. A tuple:
    its arrays are compared one by one (tests/test_baselines.py)."""

    probabilities: np.ndarray  # N x C: the softmax, or the sigmoid of bce
    row_losses: np.ndarray  # N
    loss: np.ndarray  # the reduced loss (a 0-d array), or the N row losses for reduction none
    gradient: np.ndarray  # N x C, the reduction's scale included
    activation: str = "softmax"  # "sigmoid": each class its own, a diagonal Jacobian


def baseline_jacobian(baseline: Baseline, temperature: float, dtype: str) -> np.ndarray:
    """N x C x C: -s_i s_j off the diagonal and s_i (1 - s_i) on it, each rounded, then over T (rounded); for
    a sigmoid, the diagonal alone."""
    s = baseline.probabilities.astype(np.float64)
    index = np.arange(s.shape[-1])
    jacobian = np.zeros(s.shape + s.shape[-1:]) if baseline.activation == "sigmoid" else round_to(
        -s[:, :, None] * s[:, None, :], dtype)
    jacobian[:, index, index] = round_to(s * round_to(1.0 - s, dtype), dtype)
    if temperature != 1.0:
        jacobian = round_to(jacobian / round_to(np.asarray(temperature), dtype), dtype)
    return jacobian
