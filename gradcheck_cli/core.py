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


def softmax_jacobian(probabilities: np.ndarray) -> np.ndarray:
    """J[n, i, j] = s_i (delta_ij - s_j) = (diag(s) - s s^T) for every row n."""
    s = probabilities
    return s[..., :, None] * (np.eye(s.shape[-1], dtype=s.dtype) - s[..., None, :])


def one_hot(labels: np.ndarray, classes: int) -> np.ndarray:
    targets = np.zeros((labels.shape[0], classes))
    targets[np.arange(labels.shape[0]), labels] = 1.0
    return targets
