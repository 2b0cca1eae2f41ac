"""ndjson: one JSON line per sample as its batch is checked, then the report (the JSON document) as the last line."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any, NamedTuple

import numpy as np

from gradcheck_cli.batch import Batch
from gradcheck_cli.render.json_report import json_text, orjson_module, render_json
from gradcheck_cli.report import Report, RowChecks

if TYPE_CHECKING:
    from gradcheck_cli.checks.runner import OnRows
    from gradcheck_cli.terminal import Output

# The text between a record's values, as json.dumps writes a record; with orjson, as orjson writes it. A
# softmax loss's records carry the row's log-sum-exp after its probabilities, where the JSON report has it.
_KEYS = ('{"row": ', ', "line": ', ', "loss": ', ', "probabilities": [', '], "gradient": {"analytic": [',
         '], "numeric": [', ']}, "max_abs_error": ', "}\n")
_LSE_KEYS = (*_KEYS[:4], '], "lse": ', ', "gradient": {"analytic": [', *_KEYS[5:])
_COMPACT_KEYS = tuple(key.replace(": ", ":").replace(", ", ",").encode() for key in _KEYS)
_COMPACT_LSE_KEYS = tuple(key.replace(": ", ":").replace(", ", ",").encode() for key in _LSE_KEYS)


def write(report: Report, out: Output, color: str, quiet: bool) -> None:
    out.echo(render_json(report))


@contextmanager
def rows_writer(out: Output) -> Iterator[OnRows]:
    """What the runner calls with each checked batch: its rows, written as they are done (from the second batch
    on by a forked process, render/forked_writer.py, while this one checks the next); all out on leaving."""
    from gradcheck_cli.render.forked_writer import forked_writer

    with forked_writer(out, write_records) as send:

        def on_rows(start: int, batch: Batch, part: RowChecks) -> None:
            send(records_of(start, batch, part))

        yield on_rows


class Records(NamedTuple):
    """A checked batch's records, as arrays (what crosses to the formatting process): the first row's number in
    the whole input, the file lines the rows came from (None: no file), and the values of the records' fields in
    order: row losses, probabilities, the log-sum-exp (not for bce), analytic and numeric gradients."""

    start: int
    lines: np.ndarray | None
    values: list[np.ndarray]


def records_of(start: int, batch: Batch, part: RowChecks) -> Records:
    from gradcheck_cli.checks.runner import row_lse

    values = [part.row_losses, part.probabilities, part.analytic_gradient, part.numeric_gradient]
    lse = row_lse(part, part.reference_loss.temperature)
    if lse is not None:  # not for bce, which has no softmax
        values.insert(2, lse)
    lines = None if batch.row_lines is None else np.asarray(batch.row_lines, dtype=np.int64)
    return Records(start, lines, values)


def write_rows(stream: IO[str], start: int, batch: Batch, part: RowChecks) -> None:
    """A batch's records written to `stream` in this process (write_records)."""
    write_records(stream, records_of(start, batch, part))


def write_records(stream: IO[str], records: Records) -> None:
    """One JSON object per sample: its loss, probabilities, gradients and how far they disagree.

    Each array of a block of rows is formatted by one call, then cut into rows, and the records are the
    rows' texts interleaved with the keys between them, joined once: no Python code runs per row or per
    number. Formatting is the cost of this format (json.dumps takes ~1 us a number); the optional orjson
    takes a tenth of that, and its records go out as the bytes it wrote, compact as it writes them.
    """
    analytic, numeric = records.values[-2:]
    values = [*records.values, np.abs(analytic - numeric).max(axis=1)]
    orjson = orjson_module()
    binary = None if orjson is None else getattr(stream, "buffer", None)
    if binary is not None:
        stream.flush()  # what went to the text layer before goes out first
    lines, (rows, classes) = records.lines, analytic.shape
    for block in _blocks(rows, classes):
        numbers = _Rows(np.arange(records.start + block.start, records.start + block.stop),
                        None if lines is None else lines[block])
        if orjson is None:
            stream.write(_plain_records(numbers, [array[block] for array in values]))
            continue
        text = _orjson_records(orjson, numbers, [array[block] for array in values])
        if binary is None:
            stream.write(text.decode("ascii"))
        else:
            binary.write(text)


# A block's records are built in about this many bytes. The pieces a block is cut into (a bytes object a
# number or a row) are allocated, filled and joined while they are still in the processor's cache: measured
# on 100,000 rows x 10 (81 MB of records, load 4-5, medians of 5), the whole batch at once took 1.33 s,
# blocks of 2,000 rows 0.59 s, 1,000 rows 0.49 s, 540 rows (this size) 0.45 s, 270 rows 0.47 s.
BLOCK_BYTES = 1 << 19


def _blocks(rows: int, classes: int) -> list[slice]:
    """The batch's rows in blocks of about BLOCK_BYTES of records (a record: ~24 bytes a number, three
    numbers a class and a few a row, plus its keys), at least one row a block."""
    record_bytes = 24 * (3 * classes + 4) + 120
    size = max(1, BLOCK_BYTES // record_bytes)
    return [slice(first, min(first + size, rows)) for first in range(0, rows, size)]


class _Rows(NamedTuple):
    """A block's row numbers in the whole input and the file lines they came from (None: no file)."""

    numbers: np.ndarray
    lines: np.ndarray | None


def _plain_records(block: _Rows, values: list[np.ndarray]) -> str:
    """The records as json.dumps writes each of them."""
    numbers = list(map(str, block.numbers.tolist()))
    lines = ["null"] * len(numbers) if block.lines is None else list(map(str, block.lines.tolist()))
    texts = [json_text(array) for array in values]
    keys = _KEYS if len(values) == 5 else _LSE_KEYS
    return "".join(_records(keys, [numbers, lines, *map(_cut, texts, _depths(values))]))


def _orjson_records(orjson: Any, block: _Rows, values: list[np.ndarray]) -> bytes:
    """The records as orjson writes them (NaN and infinities as null; float32 values printed as float64)."""

    def encode(array: np.ndarray) -> bytes:
        text: bytes = orjson.dumps(np.ascontiguousarray(array), option=orjson.OPT_SERIALIZE_NUMPY)
        return text

    numbers = _cut(encode(block.numbers), 1)
    lines = [b"null"] * len(numbers) if block.lines is None else _cut(encode(block.lines), 1)
    texts = [encode(np.asarray(array, dtype=np.float64)) for array in values]
    keys = _COMPACT_KEYS if len(values) == 5 else _COMPACT_LSE_KEYS
    return b"".join(_records(keys, [numbers, lines, *map(_cut, texts, _depths(values))]))


def _depths(values: list[np.ndarray]) -> list[int]:
    """How deep each array's rows sit in its JSON text: 1 for a number a row, 2 for a vector a row."""
    return [array.ndim for array in values]


def _cut(text: Any, depth: int) -> list[Any]:
    """The rows of a matrix's JSON text "[[a, b], [c, d]]" without their brackets (depth 2), or the numbers of
    a vector's "[a, b]" (depth 1); str from json.dumps, bytes (no spaces) from orjson."""
    if isinstance(text, bytes):
        return text[depth:-depth].split(b"],[" if depth == 2 else b",")
    return text[depth:-depth].split("], [" if depth == 2 else ", ")


def _records(keys: tuple[Any, ...], columns: list[list[Any]]) -> list[Any]:
    """keys[0] column[0][k] keys[1] column[1][k] ... keys[-1] for every row k, as one flat list of pieces."""
    rows, width = len(columns[0]), 2 * len(columns) + 1
    pieces: list[Any] = [None] * (rows * width)
    for place, key in enumerate(keys):  # one slice assignment per field, not a loop over rows
        pieces[2 * place::width] = [key] * rows
    for place, column in enumerate(columns):
        pieces[2 * place + 1::width] = column
    return pieces

