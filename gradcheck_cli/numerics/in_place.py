"""Array operations written into given arrays, and loops over blocks of elements that keep their temporaries in
a core's caches: the same numbers as the whole-array operations they stand for, bit for bit."""

from __future__ import annotations

import numpy as np


def in_place(operation: np.ufunc, value: np.ndarray, by: float | np.ndarray) -> np.ndarray:
    """operation(value, by), into value when that is its result's type and shape (numpy's promotion rules)."""
    if np.result_type(value, by) == value.dtype and np.broadcast_shapes(value.shape, np.shape(by)) == value.shape:
        return operation(value, by, out=value)
    return operation(value, by)


def scaled_into(values: np.ndarray, scale: float, out: np.ndarray) -> np.ndarray:
    """values * scale written into out: in place when out has the product's dtype and shape (it does when it
    was made like an earlier block's product), else the product copied there."""
    if np.result_type(values, scale) == out.dtype and values.shape == out.shape:
        return np.multiply(values, scale, out=out)
    out[...] = values * scale
    return out


# Elements per block of factors_in_blocks: its two temporaries and the block's inputs and results stay in a
# core's L2 cache, so the stencil's eight passes an offset read and write there, not the whole arrays.
FACTOR_BLOCK = 1 << 14


def factors_in_blocks(s: np.ndarray, complement: np.ndarray, h: np.ndarray, changes: list[tuple[np.ndarray, float]]
                      ) -> tuple[np.ndarray, np.ndarray]:
    """differences.softmax_derivative_factors' loop with one step h for all, a block of elements at a time, for
    `changes` (q = e^(o h / T) - 1 and the weight w of each offset o): the same operations on each element in
    the same order (0 + the first term is the first term + 0), so the same bits."""
    factor, own = np.empty(s.shape), np.empty(s.shape)
    flat_s, flat_complement, flat_factor, flat_own = (x.reshape(-1) for x in (s, complement, factor, own))
    buffers = np.empty((2, min(FACTOR_BLOCK, s.size)))
    for start in range(0, s.size, FACTOR_BLOCK):
        piece = slice(start, start + FACTOR_BLOCK)
        s_b, complement_b, factor_b, own_b = flat_s[piece], flat_complement[piece], flat_factor[piece], flat_own[piece]
        others, mine = buffers[0, : s_b.size], buffers[1, : s_b.size]
        for k, (q, weight) in enumerate(changes):
            np.multiply(s_b, q, out=others)
            np.add(others, 1.0, out=mine)
            np.divide(others, mine, out=others)
            np.multiply(others, complement_b, out=mine)
            np.multiply(others, -weight, out=others)
            np.multiply(mine, weight, out=mine)
            if k == 0:  # the sums start at 0: 0 + x (a -0 becomes +0)
                np.add(others, 0.0, out=factor_b)
                np.add(mine, 0.0, out=own_b)
            else:
                factor_b += others
                own_b += mine
        factor_b /= h
        own_b /= h
    return factor, own
