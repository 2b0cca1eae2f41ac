"""The worker's memory between calls (inputs/readahead.keep_freed_memory, called by every worker): what the
user's function frees is kept for its next call, not given back to the kernel and faulted in again (issue 13,
the --impl row at 8 x 50,257)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
import pytest

from gradcheck_cli.checks import worker
from gradcheck_cli.checks.impl import Implementation

FAULTS = textwrap.dedent("""
    import resource
    import numpy as np

    def f(z, t):
        # the minor page faults of three 4 MB temporaries alive at once, then freed (as a softmax of 8 x 50,257
        # makes them), this call
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        ones = np.ones(500_000)
        twos = ones + 1.0
        (twos * ones).sum()
        del ones, twos
        return float(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before), np.zeros_like(z)
""")


@pytest.mark.skipif(not worker.can_fork() or not os.path.exists("/proc/self/status"), reason="glibc's malloc, Linux")
def test_the_worker_keeps_freed_memory_for_the_next_call(tmp_path: Path) -> None:
    """Protects inputs/readahead.keep_freed_memory, called by every worker: 12 MB of temporaries freed by one call are reused by the next
    without page faults (glibc's default, in a worker forked before its thresholds rose, trims them from the heap,
    and every call faults their 3,000 pages in again: 40-45% of a numpy cross-entropy call at 8 x 50,257 in a
    fresh process). 100: a margin for the few pages the interpreter itself touches."""
    path = tmp_path / "faults.py"
    path.write_text(FAULTS)
    logits, targets = np.zeros((1, 2)), np.array([[1.0, 0.0]])
    with Implementation.load(f"{path}:f") as implementation:
        faults = [float(implementation.answer(logits + k, targets, "mean", loss_only=True).loss) for k in range(3)]
    assert faults[-1] < 100, faults
