"""The loss registry: each loss is one module here that defines KIND (a base.LossKind), and one line below.

Kept free of numpy, so the command line builds its --loss choice from LOSSES at start-up; a loss module is
imported only when a run uses it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from gradcheck_cli.errors import InputError

if TYPE_CHECKING:
    from gradcheck_cli.numerics.losses.base import LossKind
    from gradcheck_cli.settings import Settings

# name -> (module, one line for --help)
LOSSES = {
    "cross_entropy": ("gradcheck_cli.numerics.losses.cross_entropy", "torch.nn.functional.cross_entropy's semantics"),
    "mse": ("gradcheck_cli.numerics.losses.squared_error", "1/2 sum_k (s_k - t_k)^2 per row on the softmax"),
}
LOSS_NAMES = tuple(LOSSES)
# The loss options, as Settings fields, with the flag that sets each and the value that means 'not given'.
LOSS_OPTIONS = {"weights": ("--weights", None), "label_smoothing": ("--label-smoothing", 0.0),
                "ignore_index": ("--ignore-index", None)}


def loss_kind(name: str) -> LossKind:
    kind: LossKind = importlib.import_module(LOSSES[name][0]).KIND
    return kind


def accepted_kind(settings: Settings) -> LossKind:
    """The settings' loss, or an InputError when an option is given that this loss does not take."""
    kind = loss_kind(settings.loss)
    given = [option for option, (_, unset) in LOSS_OPTIONS.items() if getattr(settings, option) != unset]
    if any(option not in kind.options for option in given):
        refused = [LOSS_OPTIONS[option][0] for option in LOSS_OPTIONS if option not in kind.options]
        takers = [name for name in LOSSES if any(option in loss_kind(name).options for option in given)]
        flags = ", ".join(refused[:-1]) + f" and {refused[-1]}" if len(refused) > 1 else refused[0]
        raise InputError(f"{flags} apply to {' and '.join(takers)}, not {settings.loss}")
    return kind
