"""A batch of samples as the readers hand it to the checks: logits, labels or targets, and the user's values.

numpy appears only in annotations, so the lowest layer stays free of heavy imports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

# Values a user computed with their own implementation, each checked against gradcheck's reference (lse: the
# per-row log-sum-exp of the logits entering the softmax, over T; the softmax losses only).
SUPPLIED_KEYS = ("probabilities", "jacobian", "loss", "gradient", "lse")


@dataclass(eq=False, repr=False)  # holds arrays: == has no truth value, and each method costs start-up
class Batch:
    """N x C logits with N class labels (targets then their one-hot rows) or an N x C target distribution."""

    logits: np.ndarray
    labels: np.ndarray | None
    targets: np.ndarray
    source: str | None = None
    # The line of the input file each row came from, for annotations; None when rows came from arguments.
    row_lines: np.ndarray | None = field(default=None, repr=False)
    # The user's own values by name (SUPPLIED_KEYS), shaped as in the report: N x C, N x C x C, () or (N,)
    # (a loss; an lse is (N,)).
    supplied: dict[str, np.ndarray] = field(default_factory=dict)
    # The dtype the logits were stored in (a tensor file's float32, float16, bfloat16...); `logits` holds the
    # same values exactly, as float64. Text and arguments are read as float64.
    dtype_name: str = "float64"
    # N x C teacher logits, for the distillation losses (kl, reverse-kl, jsd); None for every other loss. The
    # readers then set `targets` to them too: what the logits are compared with, the second argument --impl's
    # function receives.
    teacher_logits: np.ndarray | None = field(default=None, repr=False)
    # The upstream gradient g a tensor file holds (its grad_output: one number, or one per row of the whole input,
    # not of this batch) as float64, and where it came from; None: the file has none (--grad-output decides).
    upstream: tuple[np.ndarray, str] | None = field(default=None, repr=False)

    @property
    def rows(self) -> int:
        return int(self.logits.shape[0])

    @property
    def classes(self) -> int:
        return int(self.logits.shape[1])
