# ruff: noqa: RUF001  # the derivation writes real minus signs
"""Numbers as `explain`'s derivation writes them, "%#.3g" with a real minus sign, for a whole array at once.

printf's "%#.3g" is correctly rounded: x is rounded to three significant digits q * 10^(X - 2) (100 <= q
<= 999), written positionally when -4 <= X <= 2 ("0.0123", "1.50", "150." whose point is dropped), else as
"1.50e+07". Formatting costs about 1 us a number in Python, and a derivation at 50,257 classes writes a few
hundred thousand. Here numpy finds q and X for every element at once and the strings come from tables of
the 900 digit triples in each of the 8 forms and of the exponents: no Python loop over the elements.

Rounding: m = |x| 10^(2 - X) is computed with two roundings (10^k and the product; log10 only picks X and is
checked), a relative error under 3 * 2^-53, so |m - exact| < 1000 * 3 * 2^-53 < 4e-13. The digits can be
wrong only when exact m is within that of a rounding boundary (k + 1/2), so every element whose computed m is
within 1e-9 of one (2,500 times the error) is formatted by Python's own "%#.3g", as are non-finite values
and magnitudes outside [1e-280, 1e280] (where 10^(2 - X) could overflow or lose digits). Zeros ("0.00",
and for -0.0 the same with a real minus) come from the table.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Exponents X written positionally by "%#.3g" (precision 3: -4 <= X < 3), and the margin around a tie.
FIRST_POSITIONAL, LAST_POSITIONAL = -4, 2
TIE_MARGIN = 1e-9
SMALLEST, LARGEST = 1e-280, 1e280
_DIGITS = tuple(str(q) for q in range(100, 1000))
_EXPONENTS = range(-300, 301)


def _forms() -> tuple[str, ...]:
    """The body of every (form, q): forms 0..6 positional for X = -4..2, form 7 the mantissa "d.dd"."""
    forms: list[str] = []
    for exponent in range(FIRST_POSITIONAL, LAST_POSITIONAL + 1):
        if exponent < 0:
            forms += ["0." + "0" * (-exponent - 1) + d for d in _DIGITS]
        else:  # X = 2 is "150." whose point the derivation drops
            forms += [d[: exponent + 1] + ("." + d[exponent + 1:] if exponent < 2 else "") for d in _DIGITS]
    forms += [d[0] + "." + d[1:] for d in _DIGITS]
    return (*forms, *["−" + form for form in forms])  # the negative numbers' after the positive ones'


# Tuples, made arrays per call (0.1 ms): no module-global array anyone could write to.
_BODIES = _forms()
_FORMS = 8
_ZEROS = ("0.00", "−0.00")  # "%#.3g" of 0.0 and -0.0, after the bodies (_ZERO, _ZERO + 1)
_ZERO = len(_BODIES)
_SUFFIXES = tuple(f"e{'+' if x >= 0 else '−'}{abs(x):02d}" for x in _EXPONENTS)


def python_numbers(values: list[float]) -> list[str]:
    """The derivation's numbers by Python's own formatting, one call for all (the reference of numbers())."""
    text = ("%#.3g\n" * len(values)) % tuple(values)
    return text.replace(".\n", "\n").replace("-", "\u2212").split("\n")[:-1]


def numbers(values: Any) -> list[str]:
    """Each value as "%#.3g" writes it, the trailing point of "150." dropped and a real minus sign."""
    if isinstance(values, list):
        values = [float(value) for value in values]
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size < 64:  # the tables pay off on long arrays only
        return python_numbers(x.tolist())
    magnitude = np.abs(x)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        fast = (magnitude >= SMALLEST) & (magnitude <= LARGEST)
        exponent = np.floor(np.log10(np.where(fast, magnitude, 1.0))).astype(np.int64)
        first = magnitude * 10.0 ** (2 - exponent)
        # log10 may miss by one near a power of ten: bring m into [99.5, 999.5), where it rounds to 100..999
        exponent += (first >= 999.5).astype(np.int64) - (first < 99.5)
        scaled = np.where(fast, magnitude, 1.0) * 10.0 ** (2 - exponent)
        fast &= (np.abs(first - np.floor(first) - 0.5) > TIE_MARGIN) & (scaled >= 99.5) & (scaled < 999.5)
        fast &= np.abs(scaled - np.floor(scaled) - 0.5) > TIE_MARGIN
    digits = np.floor(scaled + 0.5).astype(np.int64) - 100
    positional = (exponent >= FIRST_POSITIONAL) & (exponent <= LAST_POSITIONAL)
    form = np.where(positional, exponent - FIRST_POSITIONAL, _FORMS - 1) + _FORMS * (x < 0)
    # Zeros ("0.00", signed) from the table too: a one-hot row is some 50,000 of them.
    zero = x == 0
    written = np.array(_BODIES + _ZEROS, dtype=object)[
        np.where(fast, form * 900 + digits, np.where(zero, _ZERO + np.signbit(x), 0))]
    scientific = np.flatnonzero(fast & ~positional)
    if scientific.size:
        written[scientific] += np.array(_SUFFIXES, dtype=object)[exponent[scientific] - _EXPONENTS[0]]
    slow = np.flatnonzero(~fast & ~zero)
    if slow.size:
        written[slow] = python_numbers(x[slow].tolist())
    return list(written.tolist())
