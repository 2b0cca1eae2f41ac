"""What every loss on top of softmax(z / T) shares, and the LossKind each loss module registers.

A loss object offers row_losses, row_gradients (each row's own), scale (what the reduction multiplies rows
by), loss, gradient, hessian, and, where an exact and cheap one exists, perturbation (see differences.py).
Gradients are always with respect to the logits z, temperature included. A caller that has softmax(z / T)
already (softmax.softmax_parts) passes it as `given`: a batch computes it once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gradcheck_cli.batch import Batch
from gradcheck_cli.numerics.exact import exact_sum
from gradcheck_cli.numerics.softmax import Softmax, softmax_parts
from gradcheck_cli.settings import Settings


@dataclass(eq=False, repr=False)  # holds arrays: == has no truth value; each generated method costs start-up
class Loss:
    """What every loss shares: a temperature, a reduction, and the normaliser of the mean."""

    reduction: str
    normalizer: float
    temperature: float

    @property
    def scale(self) -> float:
        """What the reduction multiplies each row's loss (and so its gradient) by."""
        return 1.0 / self.normalizer if self.reduction == "mean" else 1.0

    def softmax(self, logits: np.ndarray, given: Softmax | None = None) -> Softmax:
        """softmax(z / T), unless the caller has it already."""
        return given if given is not None else softmax_parts(logits / self.temperature)

    def row_losses(self, logits: np.ndarray, given: Softmax | None = None) -> np.ndarray:
        raise NotImplementedError

    def row_gradients(self, logits: np.ndarray, given: Softmax | None = None) -> np.ndarray:
        raise NotImplementedError

    def loss(self, logits: np.ndarray, given: Softmax | None = None) -> float | np.ndarray:
        """The reduced loss: a float for mean and sum, the row losses for none."""
        return self.reduce(self.row_losses(logits, given))

    def reduce(self, rows: np.ndarray) -> float | np.ndarray:
        """The row losses reduced: a float for mean and sum, the rows themselves for none."""
        if self.reduction == "none":
            return rows
        total = exact_sum(rows)  # exactly rounded, so a streamed file's loss equals the in-memory one
        return total / self.normalizer if self.reduction == "mean" else total

    def hessian(self, logits: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def gradient(self, logits: np.ndarray, given: Softmax | None = None) -> np.ndarray:
        """dL/dz for mean and sum; for none, the gradient of the sum of rows (each row's own)."""
        return self.row_gradients(logits, given) * self.scale




@dataclass(frozen=True)
class LossKind:
    """A loss as the registry knows it: how it builds itself for a batch, and what the mean divides by.

    build(batch, settings, dtype) gives the loss with the batch's own mean divisor (a caller checking one
    chunk of a bigger input replaces `normalizer` with the whole input's). divisor_rows gives each row's share
    of that divisor, so it can be summed over chunks; counts_rows(settings) says when it is simply the number
    of rows, which an input can count without parsing. `options` are the loss options it accepts.
    """

    name: str
    options: tuple[str, ...]
    build: Callable[[Batch, Settings, np.dtype], Loss]
    divisor_rows: Callable[[Batch, Settings], np.ndarray]
    counts_rows: Callable[[Settings], bool]
    # The loss's part of `gradcheck explain`: (loss, logits z of the row / T, softmax s of them, row) -> lines.
    explain: Callable[[Loss, np.ndarray, np.ndarray, int], list[str]]


def one_per_row(batch: Batch, settings: Settings) -> np.ndarray:
    """The divisor share of a loss whose mean is over rows."""
    return np.ones(batch.rows)


def always(settings: Settings) -> bool:
    return True


def shown(value: float) -> str:
    """A number in a derivation: three significant digits, trailing zeros kept (0.150), a real minus sign."""
    return f"{value:#.3g}".rstrip(".").replace("-", "\u2212")
