"""What a run keeps for its output, in memory bounded whatever the input's length: the per-row arrays (Kept, in
memory while small, then in unlinked temporary files) and the row -> file line map (Lines).

Split out of runner.py, which folds the batches and decides what to keep; these only hold it.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from typing import IO

import numpy as np

from gradcheck_cli.errors import InputError
from gradcheck_cli.numerics.softmax import softmax_jacobian
from gradcheck_cli.report import CheckResult


class Kept:
    """The per-row arrays kept for the output, by name: in memory while small, then in temporary files.

    Past `spill_bytes` every array goes to its own unlinked temporary file (nothing is left behind, even if
    the process is killed) and comes back as a read-only np.memmap: a renderer reads it a block at a time,
    so a --full report of any length costs the memory of a block, and the disk space of its numbers. The
    Jacobian is then written BLOCK_NUMBERS at a time, never a batch's N x C x C at once.
    """

    BLOCK_NUMBERS = 1 << 20

    def __init__(self, spill_bytes: int, reserve: int) -> None:
        self.spill_bytes, self.reserve = spill_bytes, reserve  # runner's SPILL_BYTES and SPILL_RESERVE
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

        needed = rows * (3 * classes + 2 + (classes * classes if jacobian else 0)) * 8  # + row losses and lse
        if needed <= self.spill_bytes:
            return
        directory = tempfile.gettempdir()
        free = shutil.disk_usage(directory).free
        if needed > free - self.reserve:
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
        if self.bytes > self.spill_bytes:
            self._spill()

    def add_jacobian(self, s: np.ndarray, complement: np.ndarray, temperature: float, coupled: bool = True) -> None:
        """The batch's Jacobians J = diag(s) - s s^T (over T), kept whole when small, else in blocks; a sigmoid's
        (not `coupled`: each s_i depends on z_i alone) is diag(s (1 - s)) / T."""
        rows, classes = s.shape
        divisor = s.dtype.type(temperature)
        if not self.spilled and self.bytes + s.size * classes * s.itemsize <= self.spill_bytes:
            jacobian = softmax_jacobian(s, complement) if coupled else _diagonal(s, complement, np.arange(classes))
            jacobian /= divisor
            self.add("jacobian", jacobian)
            return
        self._spill()
        self._count("jacobian", s.dtype, (classes, classes), rows)
        file = self._file("jacobian")
        for block in jacobian_blocks(s, complement, divisor, self.BLOCK_NUMBERS, coupled):
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


def jacobian_blocks(s: np.ndarray, complement: np.ndarray, divisor: np.floating, numbers: int,
                    coupled: bool = True) -> Iterator[np.ndarray]:
    """The Jacobians of these rows in row-major order, about `numbers` entries at a time, each entry computed
    as softmax_jacobian computes it (-s_i s_j off the diagonal, s_i (1 - s_i) on it, then over T); not
    `coupled` (a sigmoid's), 0 off the diagonal."""
    rows, classes = s.shape
    if classes * classes <= numbers:
        step = numbers // (classes * classes)
        for start in range(0, rows, step):
            part = slice(start, start + step)
            block = (softmax_jacobian(s[part], complement[part]) if coupled
                     else _diagonal(s[part], complement[part], np.arange(classes)))
            block /= divisor
            yield block
        return
    step = max(1, numbers // classes)  # rows i of one sample's C x C Jacobian at a time
    diagonal = s * complement
    for n in range(rows):
        for start in range(0, classes, step):
            index = np.arange(start, min(start + step, classes))
            block = -s[n, index, None] * s[n, None, :] if coupled else np.zeros((index.size, classes), s.dtype)
            block[index - start, index] = diagonal[n, index]
            block /= divisor
            yield block


def _diagonal(s: np.ndarray, complement: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """N x C x C zeros with s (1 - s) on each row's diagonal: the Jacobian of an elementwise sigmoid."""
    jacobian = np.zeros((*s.shape, columns.size), s.dtype)
    jacobian[:, columns, columns] = s * complement
    return jacobian


class Lines:
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
