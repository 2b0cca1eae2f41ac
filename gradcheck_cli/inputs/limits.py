"""The largest class index and logit gradcheck takes, and the check of the logits against the latter.

Apart from numbers.py (the parsing of what a user writes, with its regular expressions) so that a file's
readers and the validation import them without compiling patterns only command-line arguments need.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gradcheck_cli.errors import InputError

# Class indices beyond this are certainly out of range, and would not fit the int64 arrays that hold them.
LARGEST_LABEL = 2**63
# Beyond this the spacing of float64 at z (2.2e-16 |z|) is larger than any accurate finite-difference step,
# and z - max(z) can overflow: such a logit cannot be checked, so it is refused. Real logits stay far below.
LARGEST_LOGIT = 1e9


def check_logit_range(logits: np.ndarray, locate: Callable[[int], str]) -> None:
    # Two reductions decide the usual case without an |z| array (a NaN fails both: looked for below, as ever).
    if logits.size == 0 or (logits.min() >= -LARGEST_LOGIT and logits.max() <= LARGEST_LOGIT):
        return
    huge = np.argwhere(np.abs(logits) > LARGEST_LOGIT)
    if huge.size:
        n, c = (int(i) for i in huge[0])
        raise InputError(
            f"{locate(n)}: logit {float(logits[n, c])!r} of class {c} is beyond ±{LARGEST_LOGIT:g}; finite "
            "differences cannot resolve it in float64: shift or scale the logits (softmax ignores a shift)"
        )
