"""CSV: one sample per line, an optional header whose 'label' column holds class indices; also the labels
and targets files that go beside an input. Read in blocks of lines, so a file of any size streams."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from gradcheck_cli.errors import InputError
from gradcheck_cli.inputs.numbers import NON_FINITE, NUMBER, parse_label, parse_number, rows_to_matrix
from gradcheck_cli.inputs.validate import Parsed, line_answers

_LABEL_COLUMN = "label"


def _csv_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) for each line that holds data: blank lines and '#' comments are skipped."""
    numbered = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            numbered.append((number, line))
    return numbered


def _csv_cells(line: str) -> list[tuple[int, str]]:
    """(1-based character column, cell text) for each comma-separated cell; one trailing comma is allowed."""
    cells = []
    column = 1
    for cell in line.split(","):
        cells.append((column + len(cell) - len(cell.lstrip()), cell.strip()))
        column += len(cell) + 1
    if len(cells) > 1 and cells[-1][1] == "":
        cells.pop()
    return cells


def _is_header(cells: list[tuple[int, str]]) -> bool:
    return any(not NUMBER.match(cell) and not NON_FINITE.match(cell) for _, cell in cells)


class CsvLayout(NamedTuple):
    """What the first data line of a CSV says about the rest: its width and where the label column is."""

    header: list[str] | None
    width: int
    label_at: int | None


def csv_layout(first: tuple[int, str], name: str) -> CsvLayout:
    cells = [cell for _, cell in _csv_cells(first[1])]
    if not _is_header(_csv_cells(first[1])):
        return CsvLayout(None, len(cells), None)
    label_at = cells.index(_LABEL_COLUMN) if _LABEL_COLUMN in cells else None
    if label_at is not None and len(cells) == 1:
        raise InputError(f"{name}: only a 'label' column; the other columns must hold the logits")
    return CsvLayout(cells, len(cells), label_at)


def parse_csv_fast(lines: list[str], layout: CsvLayout) -> tuple[np.ndarray, np.ndarray | None] | None:
    """numpy's C parser on lines that should all be data rows, or None if it cannot take them whole.

    None for anything the exact parser must look at: a blank or comment line (numpy would skip or reject
    it), a trailing comma, a bad cell, a non-finite or non-integer value, a label too large.
    """
    try:
        values = np.loadtxt(lines, delimiter=",", dtype=np.float64, ndmin=2, comments=None)
    except ValueError:
        return None
    if values.shape != (len(lines), layout.width) or not np.isfinite(values).all():
        return None
    if layout.label_at is None:
        return values, None
    labels = values[:, layout.label_at]
    if not ((labels == np.round(labels)).all() and (np.abs(labels) < 2**53).all()):
        return None
    return np.delete(values, layout.label_at, axis=1), labels.astype(np.int64)


def parse_csv_rows(
    lines: list[tuple[int, str]], name: str, layout: CsvLayout
) -> tuple[np.ndarray, np.ndarray | None]:
    """Logits (and labels, if the layout has a label column) of numbered data lines, or the first error.

    The fast path hands the lines to numpy's C parser; anything it cannot take whole goes through the exact
    parser, which either reads it the same way or names the line and column of what is wrong.
    """
    parsed = parse_csv_fast([line for _, line in lines], layout)
    return parsed if parsed is not None else _parse_csv_rows_exactly(lines, name, layout)


def _parse_csv_rows_exactly(
    lines: list[tuple[int, str]], name: str, layout: CsvLayout
) -> tuple[np.ndarray, np.ndarray | None]:
    logits_rows: list[list[float]] = []
    labels: list[int] = []
    for number, line in lines:
        cells = _csv_cells(line)
        if len(cells) != layout.width:
            expected = "the header has" if layout.header else "the first row has"
            raise InputError(f"{name}:{number}: ragged row: {len(cells)} values, {expected} {layout.width}")
        row = []
        for k, (column, cell) in enumerate(cells):
            where = f"{name}:{number}:{column}"
            if k == layout.label_at:
                labels.append(parse_label(cell, where))
            else:
                row.append(parse_number(cell, where))
        logits_rows.append(row)
    return np.array(logits_rows, dtype=np.float64), (
        np.array(labels, dtype=np.int64) if layout.label_at is not None else None
    )


def sniff(head: str) -> bool:
    """Anything that is not JSON is read as CSV (and its parser says what is wrong with it)."""
    return True


def pieces(blocks: Iterator[tuple[int, str]], name: str) -> Iterator[Parsed]:
    """The rows of each block of text (first line number, text) as logits and, with a 'label' column, labels."""
    layout: CsvLayout | None = None
    rows = 0
    for first, text in blocks:
        block = text.split("\n")
        if block[-1] == "":
            block.pop()
        # The common block, data lines only, goes to numpy's parser whole: no Python loop over its lines.
        parsed = parse_csv_fast(block, layout) if layout is not None else None
        if parsed is not None:
            lines = np.arange(first, first + len(block), dtype=np.int64)
        else:
            numbered = [(first + k, line) for k, line in enumerate(block)
                        if (stripped := line.strip()) and not stripped.startswith("#")]
            if layout is None:
                if not numbered:
                    continue
                layout = csv_layout(numbered[0], name)
                if layout.header is not None:
                    numbered = numbered[1:]
            if not numbered:
                continue
            parsed = parse_csv_rows(numbered, name, layout)
            lines = np.fromiter((number for number, _ in numbered), dtype=np.int64, count=len(numbered))
        logits, labels = parsed
        answers = []
        if labels is not None:
            answers.append(line_answers(labels, True, f"the '{_LABEL_COLUMN}' column of {name}", name, lines))
        yield Parsed(logits=logits, answers=answers, row_lines=lines)
        rows += len(lines)
    if layout is None:
        raise InputError(f"{name}: no data rows (only blank lines or comments)")
    if rows == 0:
        raise InputError(f"{name}: a header but no data rows")



def read_labels_file(text: str, name: str) -> tuple[np.ndarray, list[int]]:
    """One class index per line (blank lines and '#' comments skipped), and the line of each."""
    lines = _csv_lines(text)
    labels = [parse_label(line, f"{name}:{number}") for number, line in lines]
    if not labels:
        raise InputError(f"{name}: no labels")
    return np.array(labels, dtype=np.int64), [number for number, _ in lines]


def read_targets_file(text: str, name: str) -> tuple[np.ndarray, list[int]]:
    """A CSV of probability rows, one per sample (a header row of class names is skipped), and their lines."""
    lines = _csv_lines(text)
    if lines and _is_header(_csv_cells(lines[0][1])):
        lines = lines[1:]
    if not lines:
        raise InputError(f"{name}: no target rows")
    rows = [
        [parse_number(cell, f"{name}:{number}:{column}") for column, cell in _csv_cells(line)] for number, line in lines
    ]
    matrix = rows_to_matrix(rows, "targets", [f"{name}:{number}" for number, _ in lines])
    return matrix, [number for number, _ in lines]

