"""How a check is run: the frozen Settings every layer reads, and the names of the choices they hold.

Imports nothing heavy (no numpy, click or rich): the command line builds its choices from here at start-up,
and every layer below it imports it without pulling in anything above.
"""

from __future__ import annotations

from typing import NamedTuple

METHOD_NAMES = ("central", "forward", "backward", "five-point", "richardson", "complex-step")
DTYPES = ("float64", "float32")
REDUCTIONS = ("mean", "sum", "none")


class Settings(NamedTuple):
    """How to check. None means 'the default for the method', filled in by differences.resolve."""

    method: str = "central"
    eps: float | None = None
    atol: float | None = None
    rtol: float | None = None
    dtype: str = "float64"
    loss: str = "cross_entropy"
    reduction: str = "mean"
    order: int = 1
    weights: tuple[float, ...] | None = None
    label_smoothing: float = 0.0
    ignore_index: int | None = None
    temperature: float = 1.0
