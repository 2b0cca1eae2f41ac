"""The vertices of the convex hull of each row's points, all rows at once: the float32 Jacobian check's
candidates (checks/jacobian.py, _candidates)."""

from __future__ import annotations

import numpy as np

# Off-diagonal elements compared at once (gathered N x columns x candidates), and here the candidate lines
# evaluated at once: bounds the memory of a block. 1 MB per float64 array: at 2 x 50,257 in float32 the
# candidates' comparisons took 0.13 s against 0.22 s at 1 << 19 (4 MB), the hulls 0.03 s against 0.055 s,
# comparing every element of 2 x 3,000 0.4-0.6 s against 1.3-1.6 s: the passes of a block stay in the caches.
BLOCK = 1 << 17


def hull(s: np.ndarray, d: np.ndarray) -> np.ndarray:
    """A mask of the vertices of the convex hull of each row's points (s_i, d_i) (N x C).

    A vertex maximises some a s + b d: with b > 0 it is a line of the upper envelope of the lines
    lam s_i + d_i, with b < 0 of lam s_i - d_i, with b = 0 an end of both."""
    return _envelope(s, d) | _envelope(s, -d)


def _envelope(slopes: np.ndarray, intercepts: np.ndarray) -> np.ndarray:
    """The lines of max_i (lam slopes_i + intercepts_i) over all lam, per row (N x C mask), by quickhull:
    between two lines of the envelope, the line highest where they cross is on it if it is above them there;
    if none is, nothing between them is (a line below both at their two ends and at the crossing stays below).
    Every round takes all open pairs of all rows at once; each costs one pass over its row."""
    rows, classes = slopes.shape
    found = np.zeros(slopes.shape, dtype=bool)
    every = np.arange(rows)
    least, most = slopes.min(axis=1, keepdims=True), slopes.max(axis=1, keepdims=True)
    first = np.where(slopes == least, intercepts, -np.inf).argmax(axis=1)  # least slope, highest of those
    last = np.where(slopes == most, intercepts, -np.inf).argmax(axis=1)
    found[every, first] = found[every, last] = True
    n, a, b = every, first, last
    for _ in range(classes):  # at most one round per vertex; ends far sooner
        keep = slopes[n, a] < slopes[n, b]
        n, a, b = n[keep], a[keep], b[keep]
        if not n.size:
            break
        c = np.concatenate([_highest(slopes, intercepts, n[k:k + _rows(classes)], a[k:k + _rows(classes)],
                                     b[k:k + _rows(classes)]) for k in range(0, n.size, _rows(classes))])
        split = c >= 0
        n, a, b, c = n[split], a[split], b[split], c[split]
        found[n, c] = True
        n, a, b = np.concatenate([n, n]), np.concatenate([a, c]), np.concatenate([c, b])
    return found


def _rows(classes: int) -> int:
    return max(1, BLOCK // classes)


def _highest(slopes: np.ndarray, intercepts: np.ndarray, n: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each pair of lines (a, b) of row n: the line highest where they cross if above both there, else -1."""
    lam = (intercepts[n, a] - intercepts[n, b]) / (slopes[n, b] - slopes[n, a])
    values = lam[:, None] * slopes[n] + intercepts[n]
    c = values.argmax(axis=1)
    pairs = np.arange(n.size)
    above = values[pairs, c] > np.maximum(values[pairs, a], values[pairs, b])
    return np.where(above, c, -1)
