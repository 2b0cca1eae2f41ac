"""How a check is run: the frozen Settings every layer reads, and the names of the choices they hold.

Imports nothing heavy (no numpy, click or rich): the command line builds its choices from here at start-up,
and every layer below it imports it without pulling in anything above.
"""

# No `from __future__ import annotations`: typing.NamedTuple compiles every annotation it is given as a
# string (a ForwardRef each), which is start-up time every run pays; evaluated, they cost nothing.
from typing import NamedTuple

METHOD_NAMES = ("central", "forward", "backward", "five-point", "richardson", "complex-step")
DTYPES = ("float64", "float32", "bfloat16", "float16")
LOW_PRECISION = ("bfloat16", "float16")  # rounded to by numerics/precision.py, with their own verdicts
REDUCTIONS = ("mean", "sum", "none", "batchmean")
FRAMEWORKS = ("numpy", "torch", "jax")  # whose arrays or tensors --impl's function is called with
# The reductions that divide the summed row losses by a divisor (the loss says which: rows, weights, N x C).
DIVIDING_REDUCTIONS = ("mean", "batchmean")


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
    # The upstream gradient g (--grad-output): "ones", "random" (from `seed`), or its values from a file; None:
    # ones, or random where the command line makes that the default (reduction none with a gradient to check).
    grad_output: str | tuple[float, ...] | None = None
    seed: int | None = None  # of the random upstream gradient and the own-loss check's directions
    directions: int = 16  # random directions of the own-loss check of an --impl (2 loss evaluations each)
    beta: float | None = None  # the generalised JSD's beta (jsd only); None: 0.5, as Liger-Kernel's default
    t2_scaling: bool = False  # the distillation losses times T^2 (Hinton); off: torch's kl_div has no T^2
    z_loss: float = 0.0  # S: cross-entropy plus S lse^2 per kept row (PaLM); 0: none
    softcap: float | None = None  # C: logits z -> C tanh(z / C) before the softmax (Gemma 2); None: no cap
    logit_scale: float = 1.0  # A: logits z -> A z, first of the transforms
    pos_weight: tuple[float, ...] | None = None  # bce: per-class weight of the positive term, torch's pos_weight=
    gamma: float | None = None  # focal: (1 - s_y)^gamma; None: 2, the focal loss paper's and torchvision's default
    alpha: float | None = None  # focal: a factor alpha on every row, only if given
