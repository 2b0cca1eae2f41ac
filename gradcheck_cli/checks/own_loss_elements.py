"""`impl gradient vs its own loss` element by element: where a call of the user's function moves at most 2K
elements (C with reduction none, N C otherwise: small inputs), each element is differenced with the method's
stencil, held to the error bound of checks/own_loss.py (its _Model); wider inputs take own_loss's directions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from gradcheck_cli.checks.compare import compare
from gradcheck_cli.numerics import differences
from gradcheck_cli.report import CheckResult

if TYPE_CHECKING:
    from gradcheck_cli.checks.own_loss_model import Edit, UsersLoss, _Model
    from gradcheck_cli.checks.returned import Returned
    from gradcheck_cli.settings import Settings


def element_check(user: UsersLoss, model: _Model, first: Returned, settings: Settings, notes: list[str],
                  weight: np.ndarray, method: str) -> CheckResult:
    """Each element of the user's gradient against the method's stencil on their own loss (weight: g_n per row,
    N x 1, for reduction none, else the one number)."""
    assert settings.eps is not None and settings.rtol is not None and settings.atol is not None
    logits = model.logits
    point, h = logits, differences.steps(logits, settings.eps)
    if model.coarse and np.isfinite(first.loss).all():
        with _quiet():
            point, h = model.exact_stencil(model.balanced_steps(np.abs(first.loss)))
        notes.append(model.note(h, settings.dtype))
    answer = first if np.array_equal(point, logits) else user.answer_at(point)
    assert answer.gradient is not None
    rows = logits.shape[0]
    with _quiet():  # an infinite loss differences to NaN: a failed check, not a warning
        numeric = _differences(user, point, h, method, rows, settings.reduction == "none") * weight
        allowance = settings.atol + model.allowance(np.abs(answer.loss), np.abs(answer.gradient), h, np.abs(weight))
    return compare("impl gradient vs its own loss", answer.gradient, numeric, atol=allowance,
                   rtol=settings.rtol, description="your gradient vs finite differences of your own loss")


def _quiet() -> np.errstate:
    return np.errstate(invalid="ignore", over="ignore", divide="ignore", under="ignore")


def _differences(user: UsersLoss, point: np.ndarray, h: np.ndarray, method: str, rows: int,
                 per_row: bool) -> np.ndarray:
    """The method's stencil on the user's loss around `point` (the first `rows` rows), all its calls at once.

    Row losses (per_row): one call per column and offset moves that column of every row, each row answering
    for itself. A scalar loss gives one number per call, so each element and offset is a call of its own.
    """
    spec = differences.METHODS[method]
    offsets, weights = np.asarray(spec.offsets), np.asarray(spec.weights)
    classes = point.shape[1]
    if per_row:
        columns = np.arange(point.shape[0])[:, None] * classes + np.arange(classes)  # flat index of each logit
        edits: list[Edit] = [(columns[:, j], point[:, j] + offset * h[:, j]) for j in range(classes)
                             for offset in offsets]
        values = np.array(list(user.losses_at(point, edits))).reshape(classes, offsets.size, -1)
        return np.einsum("jkn,k->nj", values, weights) / h
    flat = np.repeat(np.arange(rows * classes), offsets.size)
    moved = point.flat[flat] + np.tile(offsets, rows * classes) * h.flat[flat]
    values = np.array(list(user.losses_at(point, [(flat[k : k + 1], moved[k : k + 1]) for k in range(flat.size)])))
    return (values.reshape(rows * classes, offsets.size) @ weights).reshape(rows, classes) / h[:rows]
