"""The elementwise sigmoid, for the losses on independent binary outcomes (bce): sigma(x), 1 - sigma(x) and
log sigma(x), each accurate to its last digits at any finite x (-120 included: no exp of a large number).

Returned in softmax.Softmax's shape, so every check that takes a loss's probabilities takes these: s = sigma(x),
complement = sigma(-x) (never 1 - s), log_s = log sigma(x) = -softplus(-x) (log_total is 0).
"""

from __future__ import annotations

import numpy as np

from gradcheck_cli.numerics.softmax import Softmax


def sigmoid_parts(x: np.ndarray) -> Softmax:
    """sigma(x) = exp(-softplus(-x)) and sigma(-x) = exp(-softplus(x)), softplus by numpy's logaddexp(0, .)."""
    log_s = -np.logaddexp(0, -x)
    return Softmax(s=np.exp(log_s), complement=np.exp(-np.logaddexp(0, x)), shifted=log_s,
                   log_total=np.zeros((*x.shape[:-1], 1), dtype=x.dtype), largest=x.argmax(axis=-1))


def sigmoid_perturbation(s: np.ndarray, complement: np.ndarray, column: int | slice, offsets: np.ndarray
                         ) -> np.ndarray:
    """sigma(x + d) - sigma(x) = sigma (1 - sigma) q / (1 + sigma q), q = e^d - 1: exact in form, as the
    softmax's own element (differences.softmax_perturbation)."""
    q = np.expm1(offsets)
    s_j = s[:, column]
    return s_j * complement[:, column] * q / (1.0 + s_j * q)
