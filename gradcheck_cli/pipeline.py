"""The front door of a check: open the input, find the mean's divisor, run the one runner over its batches.

The command line is one caller; nothing here knows about click, rich or output formats.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gradcheck_cli.batch import Batch
from gradcheck_cli.checks.runner import KEEP_ALL, Keep, OnRows, run
from gradcheck_cli.errors import InputError
from gradcheck_cli.inputs.gather import Input, InputRequest, open_input
from gradcheck_cli.numerics.exact import ExactSum
from gradcheck_cli.numerics.losses import accepted_kind
from gradcheck_cli.report import Report
from gradcheck_cli.settings import Settings

if TYPE_CHECKING:
    from gradcheck_cli.checks.impl import Implementation


@dataclass(eq=False)
class CheckJob:
    """An opened input and how to check it; run() does the work."""

    input: Input
    settings: Settings
    implementation: Implementation | None

    def run(self, keep: Keep = KEEP_ALL, on_rows: OnRows | None = None) -> Report:
        with self.input.reading() as batches:  # a chunked input is parsed ahead while the divisor is found
            normalizer = mean_divisor(self.input, self.settings)
            return run(batches, self.settings, normalizer, self.implementation, keep, on_rows)


@contextmanager
def open_check(
    request: InputRequest,
    settings: Settings,
    impl: str | None = None,
    chunk_bytes: int | None = None,
    impl_timeout: float | None = None,
) -> Iterator[CheckJob]:
    """Open the input (and start the implementation) for a check; both are closed on leaving.

    `impl_timeout` bounds the import of the implementation and each call of it (None: its default).
    """
    accepted_kind(settings)  # refuses options this loss does not take before anything is read
    with ExitStack() as stack:
        implementation = None
        if impl is not None:
            from gradcheck_cli.checks.impl import Implementation  # the worker machinery only when asked

            implementation = stack.enter_context(Implementation.load(impl, impl_timeout))
        # A user's function is called on the whole input at once, so it is read as one batch.
        opened = stack.enter_context(open_input(request, settings.ignore_index, implementation is not None,
                                                chunk_bytes))
        yield CheckJob(opened, settings, implementation)


def check(
    request: InputRequest,
    settings: Settings,
    impl: str | None = None,
    keep: Keep = KEEP_ALL,
    impl_timeout: float | None = None,
) -> Report:
    """Check an input and return its Report."""
    with open_check(request, settings, impl, impl_timeout=impl_timeout) as job:
        return job.run(keep)


def check_batch(batch: Batch, settings: Settings, keep: Keep = KEEP_ALL) -> Report:
    """Check a batch already in memory."""
    accepted_kind(settings)
    return CheckJob(Input(batch.source, None, 0, batch), settings, None).run(keep)


def mean_divisor(opened: Input, settings: Settings) -> float:
    """What the mean divides the summed row losses by, over the whole input (1 for the other reductions).

    The loss says whether that is the number of rows (counted without parsing a chunked file) or a sum over
    the rows (its labels' weights, say), which takes one more pass over the batches.
    """
    if settings.reduction != "mean":
        return 1.0
    kind = accepted_kind(settings)
    if kind.counts_rows(settings):
        divisor = float(opened.count_rows())
    else:
        total = ExactSum()
        with opened.reading() as batches:
            for batch in batches:
                total.add(kind.divisor_rows(batch, settings))
        divisor = total.value()
    if divisor == 0.0:
        raise InputError(
            "the mean divides by the summed weights of the rows not ignored, and that is 0 here "
            "(every row ignored, or only zero weights): use --reduction sum or none"
        )
    return divisor


def load_whole(request: InputRequest, settings: Settings) -> Batch:
    """The input as one batch (for the commands that study a few rows: sweep, explain)."""
    accepted_kind(settings)
    with open_input(request, settings.ignore_index, whole=True) as opened:
        assert opened.whole is not None
        return opened.whole
