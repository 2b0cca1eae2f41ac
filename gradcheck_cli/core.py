"""The numbers every check starts from: softmax, log-softmax and the softmax Jacobian.

Arrays in, arrays out. Every function works on a whole batch (N x C, one sample per row) at once; nothing
here loops over rows, prints, or knows about click or rich.
"""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for any finite logits (the row max is subtracted first)."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exps = np.exp(shifted)
    return exps / exps.sum(axis=-1, keepdims=True)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax: z - m - log(sum(exp(z - m))), never exp of a large number."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax_complement(logits: np.ndarray) -> np.ndarray:
    """1 - s_j for every class, accurate even where s_j is within rounding of 1.

    1 - s_j computed by subtraction keeps only about 1e-16 / (1 - s_j) of its digits: for a confident row
    (s_y = 1 - 1e-10) that is 1e-6 relative, and it enters both the gradient at the label and the Jacobian
    diagonal. Instead, sum the other classes' terms directly: all are positive, so nothing cancels.
    """
    exps = np.exp(logits - logits.max(axis=-1, keepdims=True))
    others = np.zeros_like(exps)
    others[..., 1:] += np.cumsum(exps, axis=-1)[..., :-1]  # sum over l < j
    others[..., :-1] += np.cumsum(exps[..., ::-1], axis=-1)[..., ::-1][..., 1:]  # sum over l > j
    return others / exps.sum(axis=-1, keepdims=True)


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


def one_hot(labels: np.ndarray, classes: int) -> np.ndarray:
    targets = np.zeros((labels.shape[0], classes))
    targets[np.arange(labels.shape[0]), labels] = 1.0
    return targets
