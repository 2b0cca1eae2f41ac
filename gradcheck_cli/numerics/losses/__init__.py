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
    "kl": ("gradcheck_cli.numerics.losses.kl", "KL(teacher || student), torch's kl_div of the softmaxes of z/T, t/T"),
    "reverse-kl": ("gradcheck_cli.numerics.losses.reverse_kl", "KL(student || teacher) of softmax(z/T), softmax(t/T)"),
    "jsd": ("gradcheck_cli.numerics.losses.jsd", "Liger-Kernel's generalised Jensen-Shannon divergence, --beta"),
    "bce": ("gradcheck_cli.numerics.losses.bce", "torch's binary_cross_entropy_with_logits, targets in [0, 1]"),
    "focal": ("gradcheck_cli.numerics.losses.focal", "-alpha (1 - s_y)^gamma log s_y on the softmax (Lin et al.)"),
}
LOSS_NAMES = tuple(LOSSES)
# The loss options, as Settings fields, with the flag that sets each and the value that means 'not given'.
LOSS_OPTIONS = {"weights": ("--weights", None), "label_smoothing": ("--label-smoothing", 0.0),
                "ignore_index": ("--ignore-index", None)}
LOSS_OPTIONS.update({"beta": ("--beta", None), "t2_scaling": ("--t2-scaling", False)})
LOSS_OPTIONS.update({"z_loss": ("--z-loss", 0.0), "softcap": ("--softcap", None), "logit_scale": ("--logit-scale", 1.0),
                     "pos_weight": ("--pos-weight", None), "gamma": ("--gamma", None), "alpha": ("--alpha", None)})


def loss_kind(name: str) -> LossKind:
    kind: LossKind = importlib.import_module(LOSSES[name][0]).KIND
    return kind


def accepted_kind(settings: Settings) -> LossKind:
    """The settings' loss, or an InputError when an option is given that this loss does not take."""
    kind = loss_kind(settings.loss)
    given = [option for option, (_, unset) in LOSS_OPTIONS.items() if getattr(settings, option) != unset]
    if any(option not in kind.options for option in given):
        refused = [LOSS_OPTIONS[option][0] for option in given if option not in kind.options]
        takers = [name for name in LOSSES
                  if all(option in loss_kind(name).options for option in given if option not in kind.options)]
        flags = ", ".join(refused[:-1]) + f" and {refused[-1]}" if len(refused) > 1 else refused[0]
        if not takers:
            raise InputError(f"{flags}: {settings.loss} takes none of them, and no loss takes them all together")
        also = f"; also to {' and '.join(takers[1:])}" if len(takers) > 1 else ""
        raise InputError(f"{flags} apply to {takers[0]}, not {settings.loss}{also}")
    if settings.reduction not in kind.reductions:
        raise InputError(f"--reduction {settings.reduction} does not apply to --loss {settings.loss}; "
                         f"it takes {', '.join(kind.reductions)}")
    return kind
