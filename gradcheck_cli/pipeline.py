"""The front door of a check: open the input, find the mean's divisor, run the one runner over its batches.

The command line is one caller; nothing here knows about click, rich or output formats.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING

from gradcheck_cli.batch import Batch
from gradcheck_cli.checks.runner import KEEP_ALL, Keep, OnRows, run
from gradcheck_cli.errors import InputError
from gradcheck_cli.inputs.gather import Input, InputRequest, open_input
from gradcheck_cli.numerics.exact import ExactSum
from gradcheck_cli.numerics.losses import accepted_kind
from gradcheck_cli.report import Report
from gradcheck_cli.settings import DIVIDING_REDUCTIONS, Settings

if TYPE_CHECKING:
    from gradcheck_cli.checks.impl import Implementation
    from gradcheck_cli.checks.returned import Calling
    from gradcheck_cli.numerics.losses.base import LossKind

# torch's default ignore_index (F.cross_entropy): a label -100 marks a row that contributes nothing, unless
# --ignore-index says otherwise.
TORCH_IGNORE_INDEX = -100
# The seed of what is random in a check (--grad-output random, the --impl directions) unless --seed is given:
# fixed, so that the same command gives the same report (and a failure seen once is seen again).
DEFAULT_SEED = 0


class CheckJob:
    """An opened input and how to check it; run() does the work. A plain class: making a dataclass costs every
    run's start-up a few tenths of a millisecond (its methods generated and compiled)."""

    __slots__ = ("implementation", "input", "notes", "settings")

    def __init__(self, input: Input, settings: Settings, implementation: Implementation | None,
                 notes: list[str] | None = None) -> None:
        self.input, self.settings, self.implementation = input, settings, implementation
        self.notes = [] if notes is None else notes  # what opening decided (defaults taken), for the report

    def run(self, keep: Keep = KEEP_ALL, on_rows: OnRows | None = None) -> Report:
        with self.input.reading() as batches:  # a chunked input is parsed ahead while the divisor is found
            normalizer = mean_divisor(self.input, self.settings)
            # --full of a chunked input: its row count lets the runner refuse what it cannot keep, up front
            expected = self.input.count_rows() if keep.limit is None and self.input.whole is None else None
            report = run(batches, self.settings, normalizer, self.implementation, keep, on_rows,
                         expected_rows=expected)
        report.notes[:0] = self.notes
        return report


@contextmanager
def open_check(
    request: InputRequest,
    settings: Settings,
    impl: str | None = None,
    chunk_bytes: int | None = None,
    impl_timeout: float | None = None,
    calling: Calling | None = None,
) -> Iterator[CheckJob]:
    """Open the input (and start the implementation) for a check; both are closed on leaving.

    `impl_timeout` bounds the import of the implementation and each call of it (None: its default); `calling`
    says what it is called with (None: numpy arrays; the dtype and ignore_index come from `settings`).
    """
    kind = accepted_kind(settings)  # refuses options this loss does not take before anything is read
    notes: list[str] = []
    with ExitStack() as stack:
        implementation = None
        if impl is not None:
            from gradcheck_cli.checks.impl import Implementation  # the worker machinery only when asked
            from gradcheck_cli.checks.returned import Calling

            calling = (calling or Calling())._replace(
                dtype=settings.dtype, ignore_index=TORCH_IGNORE_INDEX if settings.ignore_index is None
                else settings.ignore_index)
            implementation = stack.enter_context(Implementation.load(impl, impl_timeout, calling))
        ignore = read_ignore_index(settings, kind)
        # A user's function is called on the whole input at once, so it is read as one batch.
        opened = stack.enter_context(open_input(request, ignore, implementation is not None, chunk_bytes))
        settings = upstream_default(settings, impl is not None, notes, opened)  # a tensor file may hold g
        if opened.whole is None:
            opened.ignore_index = settings.ignore_index  # chunks keep the option as given, or take -100 below
            if settings.reduction == "none" and settings.grad_output not in (None, "ones"):
                from gradcheck_cli.inputs.source import STREAM_ABOVE_BYTES

                raise InputError(f"--grad-output with --reduction none takes one value per row of the whole input, "
                                 f"and {opened.name} is read in chunks: check it with --reduction sum, or in "
                                 f"files of under {STREAM_ABOVE_BYTES // 2**20} MB")
        settings = ignored_rows(opened, settings, ignore, notes)
        yield CheckJob(opened, settings, implementation, notes)


def read_ignore_index(settings: Settings, kind: LossKind) -> int | None:
    """The label read as ignored: torch's -100 unless --ignore-index is given, where the loss has ignored rows."""
    takes = settings.ignore_index is None and "ignore_index" in kind.options
    return TORCH_IGNORE_INDEX if takes else settings.ignore_index


def upstream_default(settings: Settings, impl: bool, notes: list[str], opened: Input | None = None) -> Settings:
    """--grad-output's default (random for reduction none with --impl), or the grad_output a tensor file holds
    (`opened`: with --grad-output FILE's rules, tensors.upstream_setting), and a seed when anything is random."""
    whole_or_plan = None if opened is None else opened.whole or opened.plan
    if whole_or_plan is not None and whole_or_plan.upstream is not None:
        from gradcheck_cli.inputs.tensors import upstream_setting

        chunked = opened is not None and opened.whole is None
        return settings._replace(grad_output=upstream_setting(
            whole_or_plan.upstream, settings.grad_output, settings.reduction, whole_or_plan.rows, chunked))
    if settings.grad_output is None and impl and settings.reduction == "none":
        settings = settings._replace(grad_output="random")
    if settings.seed is None and settings.grad_output == "random":
        settings = settings._replace(seed=DEFAULT_SEED)
    if settings.grad_output == "random":
        notes.append(f"--grad-output random: g drawn with seed {settings.seed} (--seed changes it)")
    return settings


def ignored_rows(opened: Input | Batch, settings: Settings, ignore: int | None, notes: list[str]) -> Settings:
    """The settings with torch's default ignore_index taken where a label is -100, and a note of the rows so
    ignored (an --ignore-index given is the user's own choice, and the report's settings show it). An input
    read in chunks is counted whole first (inputs/labelled.py), and its chunks then read with the label."""
    if ignore is None or settings.ignore_index is not None:
        return settings
    if isinstance(opened, Batch):
        opened = Input(opened.source, None, 0, opened)
    ignored = _count_label(opened, ignore)
    if ignored == 0:
        return settings
    notes.append(f"{ignored} of {opened.count_rows()} rows ignored: their label is {ignore}, torch's default "
                 f"ignore_index (--ignore-index changes it)")
    opened.ignore_index = ignore  # a chunked input's rows labelled so are read, and ignored
    return settings._replace(ignore_index=ignore)


def _count_label(opened: Input, label: int) -> int:
    """The rows labelled `label`: of an input read whole, counted here; of a chunked one, by inputs/labelled.py,
    which reads files (so a check of logits given as arguments imports no file machinery)."""
    if opened.whole is None:
        from gradcheck_cli.inputs.labelled import count_label

        return count_label(opened, label)
    labels = opened.whole.labels
    return 0 if labels is None else int((labels == label).sum())


def check(
    request: InputRequest,
    settings: Settings,
    impl: str | None = None,
    keep: Keep = KEEP_ALL,
    impl_timeout: float | None = None,
    calling: Calling | None = None,
) -> Report:
    """Check an input and return its Report."""
    with open_check(request, settings, impl, impl_timeout=impl_timeout, calling=calling) as job:
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
    if settings.reduction not in DIVIDING_REDUCTIONS:
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
        if opened.whole.upstream is not None:  # ignored, g would make a right g-weighted gradient fail unexplained
            raise InputError(f"{opened.whole.upstream[1]}: an upstream gradient (grad_output) is read by check only; "
                             "sweep and explain take the gradient of the plain loss: remove the key")
        return opened.whole
