"""Finite differences over a whole batch, with steps and tolerances from the error analysis."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gradcheck_cli.core import softmax
from gradcheck_cli.losses import CrossEntropy

METHODS = ("central", "forward", "backward")


def default_eps(method: str, dtype: np.dtype = np.dtype(np.float64)) -> float:
    """The base step that balances truncation against rounding error.

    A one-sided difference errs by about (h/2)|f''| + eps_mach |f| / h, least at h ~ sqrt(eps_mach);
    a central one by (h^2/6)|f'''| + eps_mach |f| / h, least at h ~ eps_mach^(1/3). The step is then
    scaled by max(1, |z|) (see `steps`), because the loss grows like |z| and so does its rounding error.
    """
    machine_eps = float(np.finfo(dtype).eps)
    return machine_eps ** (1.0 / 3.0) if method == "central" else machine_eps**0.5


def default_tolerances(method: str) -> tuple[float, float]:
    """(atol, rtol) that a correct gradient always meets and a 1e-6 relative slip does not.

    Central differences with the default step err by about eps^(2/3) ~ 4e-11 in rounding and
    (h^2/6)|f'''| ~ 6e-12 |z|^2 |f'''| in truncation; for softmax losses |f'''| <= 0.1 |f'| roughly, so
    rtol 1e-7 keeps a margin of ten at logit scale 100 while still failing an error of 1e-6.
    One-sided differences err by (h/2)|f''| ~ 1e-8 |z| |f''|, hence rtol 1e-5; their rounding, eps |z| / h
    from exp(z - m) at the perturbed point, reaches 2e-8 in the Jacobian (measured), hence atol 1e-7.
    """
    if method == "central":
        return 1e-10, 1e-7
    return 1e-7, 1e-5


def steps(logits: np.ndarray, eps: float) -> np.ndarray:
    """Per-element steps eps * max(1, |z|), adjusted so z + h - z == h exactly in binary.

    Otherwise the perturbation actually applied differs from the h we divide by, which adds an error of
    order eps_mach |z| / h to every difference.
    """
    nominal = eps * np.maximum(1.0, np.abs(logits))
    return (logits + nominal) - logits


def finite_difference(
    function: Callable[[np.ndarray], np.ndarray],
    logits: np.ndarray,
    eps: float,
    method: str = "central",
) -> np.ndarray:
    """Differentiate a row-wise function with respect to each logit, all rows at once.

    `function` maps an N x C batch to N x ... (one value or vector per row, each depending only on its own
    row). Column j of every row is perturbed together, so the whole batch costs 2C evaluations (C+1 for
    one-sided methods), never a loop over rows. Returns N x ... x C: the last axis is the logit index.
    """
    h = steps(logits, eps)
    base = function(logits) if method != "central" else None
    columns = []
    for j in range(logits.shape[1]):
        step = np.zeros_like(logits)
        step[:, j] = h[:, j]
        if method == "central":
            difference = function(logits + step) - function(logits - step)
            width = 2.0 * h[:, j]
        elif method == "forward":
            difference = function(logits + step) - base
            width = h[:, j]
        else:
            difference = base - function(logits - step)
            width = h[:, j]
        columns.append(difference / width.reshape((-1,) + (1,) * (difference.ndim - 1)))
    return np.stack(columns, axis=-1)


def numeric_gradient(loss: CrossEntropy, logits: np.ndarray, eps: float, method: str) -> np.ndarray:
    """Finite differences of each row's own loss, scaled by the reduction as the analytic gradient is.

    Differencing the row losses rather than the batch total keeps the rounding error of one row from
    swamping the others, and costs the same.
    """
    relative = getattr(loss, "row_losses_relative_to", None)
    function = relative(logits) if relative is not None else loss.row_losses
    return finite_difference(function, logits, eps, method) * loss.scale


def numeric_jacobian(logits: np.ndarray, eps: float, method: str) -> np.ndarray:
    return finite_difference(softmax, logits, eps, method)
