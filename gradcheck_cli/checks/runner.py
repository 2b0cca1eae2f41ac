"""The one check runner: every check of a run happens here, batch by batch, folded into one Report.

An input read whole is one batch; a big file is many. The merged checks, the exactly summed loss and the
worst elements come out the same either way (merge and ExactSum are exact), so how an input was read never
changes a verdict. What else a run keeps is bounded whatever its length: arrays up to the Keep limits (or
in temporary files with --full), and file lines as runs of consecutive lines and each check's worst row.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator
from typing import IO, TYPE_CHECKING, NamedTuple

import numpy as np

from gradcheck_cli.batch import Batch
from gradcheck_cli.checks.compare import compare, merge
from gradcheck_cli.checks.rows import check_rows, row_loss_allowance
from gradcheck_cli.errors import InputError
from gradcheck_cli.numerics import differences
from gradcheck_cli.numerics.exact import ExactSum
from gradcheck_cli.numerics.losses import accepted_kind
from gradcheck_cli.numerics.losses.base import unit_roundoff
from gradcheck_cli.numerics.softmax import softmax_jacobian
from gradcheck_cli.report import CheckResult, Report, RowChecks
from gradcheck_cli.settings import Settings

if TYPE_CHECKING:
    from gradcheck_cli.checks.impl import Implementation

# Up to this many logits (rows x classes) the report carries every per-row array, in tables and JSON;
# above it, a summary (checks, loss, worst rows) unless --full. 20,000 logits with C = 10 is already
# 2,000 Jacobians, some 4 MB of JSON.
FULL_LIMIT = 20_000
# The N x C x C Jacobian is counted too: by default at most this many entries per logit of the limit (1e6, 8 MB:
# the most the tables kept before, 400 rows of 50 classes). JSON, which shows it with the arrays, summarises
# wider rows; tables, which can do without it, leave only the Jacobian out.
JACOBIAN_PER_LOGIT = 50
# Kept arrays beyond this many bytes (only with --full: the default limits keep some 9 MB at most) go to
# unlinked temporary files, read back a block at a time: memory stays that of a chunk, whatever the output.
SPILL_BYTES = 32 << 20
# What --full leaves free in the temporary directory; a run needing more is refused before it starts.
SPILL_RESERVE = 256 << 20

OnRows = Callable[[int, Batch, RowChecks], None]


class Keep(NamedTuple):
    """Which per-row arrays the report keeps for its output."""

    arrays: bool = True
    # The N x C x C Jacobian too, up to this many classes (None: any; the format then needs it with the arrays).
    jacobian_classes: int | None = None
    limit: int | None = FULL_LIMIT  # past this many logits nothing is kept; None: keep whatever the size

    def keeps(self, rows: int, classes: int) -> tuple[bool, bool]:
        """Whether the arrays, and the Jacobian with them, are kept for an input of rows x classes."""
        jacobian = self.jacobian_classes is None or classes <= self.jacobian_classes
        if not self.arrays or (self.limit is not None and rows * classes > self.limit):
            return False, False
        if jacobian and self.limit is not None and rows * classes * classes > self.limit * JACOBIAN_PER_LOGIT:
            return self.jacobian_classes is not None, False
        return True, jacobian

    def summary_note(self, rows: int, classes: int) -> str | None:
        """Why the arrays of rows x classes were left out (None when they are kept or were never asked for)."""
        arrays, _ = self.keeps(rows, classes)
        if arrays or not self.arrays or self.limit is None:
            return None
        if rows * classes > self.limit:
            return (f"per-row arrays left out: {rows} x {classes} logits, over the {self.limit:,} kept by default; "
                    "--full keeps them, -f ndjson streams them row by row")
        return (f"per-row arrays left out: the {rows} x {classes} x {classes} Jacobian is "
                f"{rows * classes * classes:,} numbers, over the {self.limit * JACOBIAN_PER_LOGIT:,} kept by "
                "default; --full keeps them, -f ndjson streams the rows without the Jacobian")


KEEP_ALL = Keep()  # every array up to the limit, the Jacobian included


def run(
    batches: Iterable[Batch],
    settings: Settings,
    normalizer: float,
    implementation: Implementation | None = None,
    keep: Keep = KEEP_ALL,
    on_rows: OnRows | None = None,
    expected_rows: int | None = None,
) -> Report:
    """Check every batch and fold the results. `normalizer` is the whole input's mean divisor.

    `on_rows` sees each batch as it is done (its first row's index, the batch, its checks): per-row output
    and progress. An implementation is called on each batch, so its input is read whole (one batch).
    `expected_rows`, the input's row count when known, lets --full refuse an input too big to keep before
    its first batch is checked (otherwise before the batch that would not fit).
    """
    settings = differences.resolve(settings)
    kind = accepted_kind(settings)
    fold = _Fold(settings, keep, normalizer)
    for batch in batches:
        fold.admit(batch, expected_rows)
        part = check_rows(batch, settings, kind, normalizer)
        checks = list(part.checks)
        if implementation is not None:
            checks += implementation.checks(part.logits, batch.targets, part.reference_loss, settings, fold.notes)
        start = fold.rows
        fold.add(batch, part, checks)
        if on_rows is not None:
            on_rows(start, batch, part)
    return fold.report()


class _Fold:
    """What a run keeps of its batches: merged checks, exact loss sums, and the arrays and lines it shows."""

    def __init__(self, settings: Settings, keep: Keep, normalizer: float) -> None:
        self.settings, self.keep, self.normalizer = settings, keep, normalizer
        self.merged: dict[str, CheckResult] = {}
        self.rows = self.classes = 0
        self.losses, self.reference_losses = ExactSum(), ExactSum()
        self.loss_allowance, self.loss_size = ExactSum(), ExactSum()  # for a supplied loss of one number
        self.supplied_loss: tuple[int, np.ndarray] | None = None  # (its place among the checks, the value)
        self.finite_rows: CheckResult | None = None
        self.kept: _Kept | None = _Kept() if keep.arrays else None
        self.lines = _Lines()
        self.notes: list[str] = []
        self.source: str | None = None

    def admit(self, batch: Batch, expected_rows: int | None) -> None:
        """Refuse, before checking it, a batch whose arrays --full could not keep (see _Kept.refuse_beyond)."""
        if self.kept is not None and self.keep.limit is None:
            rows = max(expected_rows or 0, self.rows + batch.rows)
            self.kept.refuse_beyond(rows, batch.classes, self.keep.keeps(rows, batch.classes)[1])

    def add(self, batch: Batch, part: RowChecks, checks: list[CheckResult]) -> None:
        offset = (self.rows,)
        for check in checks:  # a check's index starts with the row, if it has one
            shift = (offset + (0,) * (len(check.worst_index) - 1)) if check.worst_index else ()
            self.merged[check.name] = merge(self.merged.get(check.name), check, shift)
        losses = part.row_losses.astype(np.float64)
        self.losses.add(losses)
        if self.settings.reduction == "none":  # a row loss that overflows fails the 'loss is finite' check
            self.finite_rows = merge(self.finite_rows, _finite("loss", losses), offset)
        if "loss" in batch.supplied and self.settings.reduction != "none":
            # One number for the whole input: checked once its sum is known, in its place among the supplied
            # checks (which follow the reference's own, one per supplied value but this one).
            self.reference_losses.add(part.reference_loss.row_losses(part.logits))
            allowance, size = row_loss_allowance(part.reference_loss, part.logits, self.settings)
            self.loss_allowance.add(allowance)
            self.loss_size.add(size)
            references = len(part.checks) - (len(batch.supplied) - 1)
            self.supplied_loss = (references + list(batch.supplied).index("loss"), batch.supplied["loss"])
        if batch.row_lines is not None:
            worst = [*self.merged.values(), *([self.finite_rows] if self.finite_rows is not None else [])]
            self.lines.add(self.rows, np.asarray(batch.row_lines), worst)
        self.source = batch.source
        self.rows += batch.rows
        self.classes = batch.classes
        self._keep_arrays(part)

    def _keep_arrays(self, part: RowChecks) -> None:
        if self.kept is None:
            return
        arrays, jacobian = self.keep.keeps(self.rows, self.classes)
        if not arrays:
            self.kept.close()
            self.kept = None  # too big to show whole: a summary, in memory bounded by the limit
            return
        kept = {"probabilities": part.probabilities, "analytic_gradient": part.analytic_gradient,
                "numeric_gradient": part.numeric_gradient, "row_losses": part.row_losses}
        for key, array in kept.items():
            self.kept.add(key, array)
        if jacobian:
            self.kept.add_jacobian(part.softmax.s, part.softmax.complement, self.settings.temperature)
        else:
            self.kept.drop("jacobian")  # the rows grew past the Jacobian's limit: the tables do without it

    def report(self) -> Report:
        if self.rows == 0:
            raise InputError("no data rows")
        settings = self.settings
        checks = list(self.merged.values())
        loss: float | np.ndarray | None = None
        kept = self.kept.arrays() if self.kept is not None else {}
        note = self.keep.summary_note(self.rows, self.classes)
        notes = self.notes if note is None else [*self.notes, note]
        if settings.reduction == "none":
            loss = kept.get("row_losses")
            if self.finite_rows is not None and not self.finite_rows.passed:
                checks.append(self.finite_rows._replace(description="the loss is finite"))
        else:
            loss = self._reduced(self.losses)
            if not np.isfinite(loss):  # a loss that overflows is a failure, never a NaN in JSON
                checks.append(_finite("loss", np.asarray(loss)))
        if self.supplied_loss is not None:
            place, value = self.supplied_loss
            expected = self._reduced(self.reference_losses)
            assert settings.atol is not None and settings.rtol is not None
            # The rounding of the row losses and of their sum (a float32 loss rounds like float32 throughout).
            summed = unit_roundoff(settings.dtype) * (2.0 + np.log2(self.rows)) * self.loss_size.value()
            atol = settings.atol + abs(self._reduced_sum(self.loss_allowance.value() + summed))
            checks.insert(place, compare("supplied loss", value.reshape(()), np.asarray(expected), atol,
                                         settings.rtol, description="the loss you supplied vs gradcheck's reference"))
        return Report(settings=settings, rows=self.rows, classes=self.classes, loss=loss, checks=checks,
                      probabilities=kept.get("probabilities"), jacobian=kept.get("jacobian"),
                      analytic_gradient=kept.get("analytic_gradient"), numeric_gradient=kept.get("numeric_gradient"),
                      notes=notes, source=self.source, line_of=self.lines.lookup(self.rows))

    def _reduced(self, losses: ExactSum) -> float:
        return self._reduced_sum(losses.value())

    def _reduced_sum(self, total: float) -> float:
        return total / self.normalizer if self.settings.reduction == "mean" else total


def _finite(name: str, values: np.ndarray) -> CheckResult:
    """A check that fails where a value is not finite (compared with itself: NaN never equals NaN)."""
    value = np.atleast_1d(np.asarray(values, dtype=np.float64))
    return compare(name, value, value, 0.0, 0.0, description="the loss is finite")


class _Kept:
    """The per-row arrays kept for the output, by name: in memory while small, then in temporary files.

    Past SPILL_BYTES every array goes to its own unlinked temporary file (nothing is left behind, even if
    the process is killed) and comes back as a read-only np.memmap: a renderer reads it a block at a time,
    so a --full report of any length costs the memory of a block, and the disk space of its numbers. The
    Jacobian is then written BLOCK_NUMBERS at a time, never a batch's N x C x C at once.
    """

    BLOCK_NUMBERS = 1 << 20

    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {}  # in memory, until spilled
        self.files: dict[str, IO[bytes]] = {}
        self.shapes: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}  # each array's dtype and row shape
        self.rows: dict[str, int] = {}
        self.bytes = 0
        self.spilled = False

    def refuse_beyond(self, rows: int, classes: int, jacobian: bool) -> None:
        """Refuse (exit 2) arrays of `rows` that the temporary directory cannot hold, before they are made."""
        import shutil
        import tempfile

        needed = rows * (3 * classes + 1 + (classes * classes if jacobian else 0)) * 8
        if needed <= SPILL_BYTES:
            return
        directory = tempfile.gettempdir()
        free = shutil.disk_usage(directory).free
        if needed > free - SPILL_RESERVE:
            what = f"the {rows} x {classes} x {classes} Jacobian and " if jacobian else ""
            raise InputError(
                f"--full: {what}the other per-row arrays are {needed / 1e9:.3g} GB of numbers, and {directory} "
                f"has {max(free, 0) / 1e9:.3g} GB free for them; leave out --full (every element is still "
                "checked, and the report is a summary with the worst rows), use -f ndjson for each row's arrays "
                "without the Jacobian, or set TMPDIR to a disk with room"
            )

    def add(self, key: str, array: np.ndarray) -> None:
        self._count(key, array.dtype, array.shape[1:], array.shape[0])
        if self.spilled:
            self._file(key).write(np.ascontiguousarray(array).data)
            return
        self.parts.setdefault(key, []).append(array)
        self.bytes += array.nbytes
        if self.bytes > SPILL_BYTES:
            self._spill()

    def add_jacobian(self, s: np.ndarray, complement: np.ndarray, temperature: float) -> None:
        """The batch's Jacobians J = diag(s) - s s^T (over T), kept whole when small, else in blocks."""
        rows, classes = s.shape
        divisor = s.dtype.type(temperature)
        if not self.spilled and self.bytes + s.size * classes * s.itemsize <= SPILL_BYTES:
            jacobian = softmax_jacobian(s, complement)
            jacobian /= divisor
            self.add("jacobian", jacobian)
            return
        self._spill()
        self._count("jacobian", s.dtype, (classes, classes), rows)
        file = self._file("jacobian")
        for block in _jacobian_blocks(s, complement, divisor, self.BLOCK_NUMBERS):
            file.write(block.data)

    def drop(self, key: str) -> None:
        for kept in (self.parts, self.rows, self.shapes):
            kept.pop(key, None)
        if key in self.files:
            self.files.pop(key).close()

    def _count(self, key: str, dtype: np.dtype, row: tuple[int, ...], rows: int) -> None:
        self.shapes[key] = (dtype, row)
        self.rows[key] = self.rows.get(key, 0) + rows

    def _file(self, key: str) -> IO[bytes]:
        import tempfile

        if key not in self.files:  # closed in arrays() or close(): it outlives this method
            self.files[key] = tempfile.TemporaryFile()  # noqa: SIM115
        return self.files[key]

    def _spill(self) -> None:
        for key, parts in self.parts.items():
            file = self._file(key)
            for part in parts:
                file.write(np.ascontiguousarray(part).data)
        self.parts, self.spilled = {}, True

    def arrays(self) -> dict[str, np.ndarray]:
        """Each array whole: concatenated in memory, or mapped from its file (the file closes with the map)."""
        if not self.spilled:
            return {key: np.concatenate(parts) for key, parts in self.parts.items()}
        mapped: dict[str, np.ndarray] = {}
        for key, file in self.files.items():
            file.flush()
            dtype, row = self.shapes[key]
            mapped[key] = np.memmap(file, dtype=dtype, mode="r", shape=(self.rows[key], *row))
            file.close()  # the map holds its own descriptor of the (unlinked) file
        self.files = {}
        return mapped

    def close(self) -> None:
        for file in self.files.values():
            file.close()
        self.files, self.parts = {}, {}


def _jacobian_blocks(s: np.ndarray, complement: np.ndarray, divisor: np.floating, numbers: int) -> Iterator[np.ndarray]:
    """The Jacobians of these rows in row-major order, about `numbers` entries at a time, each entry computed
    as softmax_jacobian computes it (-s_i s_j off the diagonal, s_i (1 - s_i) on it, then over T)."""
    rows, classes = s.shape
    if classes * classes <= numbers:
        step = numbers // (classes * classes)
        for start in range(0, rows, step):
            block = softmax_jacobian(s[start:start + step], complement[start:start + step])
            block /= divisor
            yield block
        return
    step = max(1, numbers // classes)  # rows i of one sample's C x C Jacobian at a time
    diagonal = s * complement
    for n in range(rows):
        for start in range(0, classes, step):
            index = np.arange(start, min(start + step, classes))
            block = -s[n, index, None] * s[n, None, :]
            block[index - start, index] = diagonal[n, index]
            block /= divisor
            yield block


class _Lines:
    """Row -> file line, in memory bounded whatever the input's length.

    Runs of consecutive lines (one for a file without blank or comment lines, however long), up to MAX_RUNS;
    past that only each check's worst row's line (what reports and annotations ask for), updated as checks
    merge. The runs are Python ints, added only when a run begins: a small numpy array kept per chunk sits
    between the chunks' big temporaries on the heap and fragments it (RSS grew 5 MB a million rows that way).
    """

    MAX_RUNS = 1 << 16

    def __init__(self) -> None:
        self.rows: list[int] = []  # the first row of each run
        self.lines: list[int] = []  # and its line
        self.next_line: int | None = None  # the line that would continue the last run
        self.too_many = False  # past MAX_RUNS: the worst rows' lines only
        self.worst: dict[str, tuple[int, int]] = {}  # check -> (its worst row, that row's line)

    def add(self, first_row: int, lines: np.ndarray, checks: list[CheckResult]) -> None:
        for check in checks:
            row = check.worst_index[0] if check.worst_index else -1
            if first_row <= row < first_row + len(lines):
                self.worst[check.name] = (row, int(lines[row - first_row]))
        if self.too_many or not len(lines):
            return
        previous = -2 if self.next_line is None else self.next_line - 1
        begins = np.flatnonzero(np.diff(lines, prepend=previous) != 1)
        if begins.size:
            self.rows += (begins + first_row).tolist()
            self.lines += lines[begins].tolist()
        self.next_line = int(lines[-1]) + 1
        if len(self.rows) > self.MAX_RUNS:
            self.too_many, self.rows, self.lines = True, [], []

    def lookup(self, rows: int) -> Callable[[int], int | None]:
        worst = dict(self.worst.values())
        if self.too_many or self.next_line is None:
            return worst.get
        starts, lines = self.rows, self.lines

        def line_of(row: int) -> int | None:
            if not 0 <= row < rows:
                return None
            k = bisect.bisect_right(starts, row) - 1
            return lines[k] + (row - starts[k])

        return line_of
