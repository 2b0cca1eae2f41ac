"""Exactly rounded sums, so a loss summed over the chunks of a streamed file equals the one summed at once."""

from __future__ import annotations

import math

import numpy as np


class ExactSum:
    """The exactly rounded sum of many float64 values, added in any number of pieces, in any grouping.

    So a loss summed over chunks of a streamed file equals, to the last bit, the loss summed at once.
    Each value is an integer mantissa times a power of two; mantissas of equal exponent are summed as
    integers (numpy, split in halves so int64 cannot overflow), and the total is kept as a Python integer.
    """

    _SHIFT = 1200  # 2^-1074 (the smallest subnormal) times 2^1200 is an integer

    def __init__(self) -> None:
        self._total = 0
        self._non_finite = 0.0

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64).ravel()
        finite = np.isfinite(values)
        if not finite.all():
            self._non_finite += float(values[~finite].sum())
            values = values[finite]
        if not values.size:
            return
        mantissas, exponents = np.frexp(values)
        integers = (mantissas * 2.0**53).astype(np.int64)
        # Distinct exponents by sorting (np.unique would import numpy.ma, 10 ms of every start-up).
        ordered = np.sort(exponents)
        for exponent in ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))]:
            chosen = integers[exponents == exponent]
            high, low = int((chosen >> 26).sum()), int((chosen & (2**26 - 1)).sum())
            self._total += ((high << 26) + low) << (int(exponent) - 53 + self._SHIFT)

    def value(self) -> float:
        if self._non_finite != 0.0 or np.isnan(self._non_finite):
            return self._non_finite
        # Python's int / int is correctly rounded, whatever the size of the integers.
        try:
            return self._total / 2**self._SHIFT
        except OverflowError:  # finite values whose sum is beyond float64: it rounds to infinity
            return math.inf if self._total > 0 else -math.inf


def exact_sum(values: np.ndarray) -> float:
    """The exactly rounded sum (the same whichever pieces the values arrive in; see ExactSum)."""
    total = ExactSum()
    total.add(values)
    return total.value()
