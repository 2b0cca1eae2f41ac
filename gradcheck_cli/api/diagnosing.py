"""`diagnose`: the command line's `gradcheck diagnose` as a function: which known slip reproduces your values."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from gradcheck_cli.api.checking import check
from gradcheck_cli.errors import InputError

if TYPE_CHECKING:
    from gradcheck_cli.report import Diagnosis


@functools.wraps(check, assigned=("__module__", "__annotations__"))
def diagnose(*args: Any, **keywords: Any) -> list[Diagnosis]:
    """Which known slip reproduces your values: one Diagnosis per failed check of them, empty when they agree.

    The keywords are check()'s (your `gradient`, `probabilities`, `jacobian`, `loss_value` or `impl`, and every
    option). Each Diagnosis has the failed check's name, a one-sentence `verdict` (the best match with your
    numbers, or plainly that none matched) and the `findings`: every hypothesis tried, best first, each with
    its id, description, residual and the share of rows it explains. Raises InputError when nothing of yours
    is given, as `gradcheck diagnose` exits 2.

    Example:

        import numpy as np
        z, y = np.array([[1.0, 2.0, 3.0], [0.5, 0.1, -1.0]]), [2, 0]
        s = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        found = diagnose(z, labels=y, gradient=s - np.eye(3)[y])  # the mean's 1/N forgotten
        assert found[0].findings[0].id == "missing-mean"
    """
    report = check(*args, **keywords)
    if not any(result.name.startswith(("supplied ", "impl ")) for result in report.checks):
        raise InputError("nothing of yours to diagnose: give gradient=, probabilities=, jacobian=, loss_value= "
                         "or impl=")
    return report.diagnoses
