"""The numbers every check starts from: softmax, log-softmax and the softmax Jacobian.

Arrays in, arrays out. Every function works on a whole batch (N x C, one sample per row) at once; nothing
here loops over rows, prints, or knows about click or rich.
"""

from typing import NamedTuple

import numpy as np


class Softmax(NamedTuple):
    """Row-wise softmax of a batch and what the checks build on it, all from one exp per logit.

    Computed once per batch and handed to every check that needs it (see softmax_parts).
    """

    s: np.ndarray
    complement: np.ndarray  # 1 - s, accurate to the last digits even where s is within rounding of 1
    shifted: np.ndarray  # z - max(z) per row
    log_total: np.ndarray  # log sum exp(z - max(z)), one per row (N x 1)
    largest: np.ndarray  # the class of each row's largest logit (the first, if several are equal)

    @property
    def log_s(self) -> np.ndarray:
        """log-softmax: z - m - log(sum(exp(z - m))), never exp of a large number."""
        return self.shifted - self.log_total


def softmax_parts(logits: np.ndarray, out: Softmax | None = None) -> Softmax:
    """softmax(z), 1 - softmax(z) and log-softmax(z) row-wise, stable for any finite logits.

    1 - s_j computed by subtraction keeps only about 1e-16 / (1 - s_j) of its digits: for a confident row
    (s_y = 1 - 1e-10) that is 1e-6 relative, and it enters both the gradient at the label and the Jacobian
    diagonal. So the row's largest class (exp(0) = 1 exactly) gets the sum of the others' terms, all
    positive; for every other class j the others' sum includes that 1 and exp(z_j - m) <= 1, so
    total - exp(z_j - m) cancels at most one bit.

    `out` (C-contiguous arrays of the results' shapes and dtypes) receives s, complement and shifted, the same
    numbers written where the caller keeps them (checks/rows.py: a chunk's arrays), not copied there after.
    """
    shape, classes = logits.shape, logits.shape[-1]
    z = np.ascontiguousarray(logits.reshape(-1, classes))  # flat writes below need a contiguous copy or view
    into = (None, None, None) if out is None else tuple(_rows(x, classes) for x in (out.shifted, out.s, out.complement))
    largest = z.argmax(axis=1)
    # Flat positions of each row's largest logit: faster than take_along_axis/put_along_axis on short rows.
    at_largest = np.arange(z.shape[0]) * classes + largest
    shifted = np.subtract(z, z.reshape(-1)[at_largest][:, None], out=into[0])
    exps = np.exp(shifted, out=into[1])
    exps.reshape(-1)[at_largest] = 0.0
    rest = exps.sum(axis=1, keepdims=True)  # the others' sum of each row's largest class
    exps.reshape(-1)[at_largest] = 1.0
    total = rest + 1.0
    others = np.subtract(total, exps, out=into[2])
    others.reshape(-1)[at_largest] = rest[:, 0]
    # In place: exps and others become s and 1 - s (no more temporaries than the results).
    return Softmax(
        s=np.divide(exps, total, out=exps).reshape(shape),
        complement=np.divide(others, total, out=others).reshape(shape),
        shifted=shifted.reshape(shape),
        log_total=np.log(total).reshape((*shape[:-1], 1)),
        largest=largest.reshape(shape[:-1]),
    )


def _rows(array: np.ndarray, classes: int) -> np.ndarray:
    """An output array as rows of `classes` (a view: the writes through it must land in the array)."""
    assert array.flags.c_contiguous, "softmax_parts writes into C-contiguous arrays only"
    return array.reshape(-1, classes)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for any finite logits (the row max is subtracted first)."""
    return softmax_parts(logits).s


def log_softmax(logits: np.ndarray) -> np.ndarray:
    return softmax_parts(logits).log_s


def softmax_complement(logits: np.ndarray) -> np.ndarray:
    """1 - s_j for every class, accurate even where s_j is within rounding of 1 (see softmax_parts)."""
    return softmax_parts(logits).complement


def softmax_jacobian(probabilities: np.ndarray, complement: np.ndarray | None = None) -> np.ndarray:
    """J[n, i, j] = s_i (delta_ij - s_j) = (diag(s) - s s^T) for every row n.

    `complement` (1 - s, see softmax_complement) makes the diagonal s_i (1 - s_i) accurate to the last digit.
    """
    s = probabilities
    jacobian = -s[..., :, None] * s[..., None, :]
    diagonal = s * (1.0 - s if complement is None else complement)
    index = np.arange(s.shape[-1])
    jacobian[..., index, index] = diagonal
    return jacobian
