"""Read logits and labels or targets from arguments, CSV and JSON into numpy arrays, or say exactly why not.

Every problem raises InputError with a message that names what was wrong and where (`path:line:col`, a
JSON path such as `logits[1][2]`, or the option and its occurrence). Nothing here prints or exits.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from gradcheck_cli.core import one_hot
from gradcheck_cli.errors import InputError

FORMATS = ("auto", "csv", "json", "jsonl")

# Exactly what a decimal number looks like: no underscores, no hex, no 'nan' or 'inf' (float() takes all).
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\Z", re.ASCII)
_INTEGER = re.compile(r"[+-]?\d+\Z", re.ASCII)
_NON_FINITE = re.compile(r"[+-]?(?:nan|inf|infinity)\Z", re.IGNORECASE)
_MAY_OVERFLOW = re.compile(r"[eE]\+?0*[1-9]\d{2}")
_SEPARATORS = re.compile(r"[,\s]+")
# Values a user computed with their own implementation, each checked against gradcheck's reference.
SUPPLIED_KEYS = ("probabilities", "jacobian", "loss", "gradient")
_JSON_KEYS = ("logits", "labels", "targets", *SUPPLIED_KEYS)
_LABEL_COLUMN = "label"
# Class indices beyond this are certainly out of range, and would not fit the int64 arrays that hold them.
_LARGEST_LABEL = 2**63


@dataclass(eq=False, repr=False)  # holds arrays: == has no truth value, and each method costs start-up
class Batch:
    """One batch of samples: N x C logits with N class labels or an N x C target distribution."""

    logits: np.ndarray
    labels: np.ndarray | None
    targets: np.ndarray
    source: str | None = None
    # The line of the input file each row came from, for annotations; None when rows came from arguments.
    row_lines: list[int] | np.ndarray | None = field(default=None, repr=False)
    # The user's own values by name (SUPPLIED_KEYS), shaped as in the report: N x C, N x C x C, () or (N,).
    supplied: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(eq=False, repr=False)  # holds arrays: == has no truth value, and each method costs start-up
class _Parsed:
    """What one input source supplied; the parts it did not supply stay None."""

    logits: np.ndarray | None = None
    labels: np.ndarray | None = None
    targets: np.ndarray | None = None
    row_lines: list[int] | None = None
    labels_from: str = ""
    targets_from: str = ""
    locate_labels: Callable[[int], str] = lambda n: f"row {n}"
    locate_targets: Callable[[int], str] = lambda n: f"row {n}"
    supplied: dict[str, tuple[np.ndarray, str]] = field(default_factory=dict)  # name -> (values, where)


# --- numbers and rows -------------------------------------------------------------------------------


def parse_number(text: str, where: str) -> float:
    token = text.strip()
    if _NUMBER.match(token):
        value = float(token)
        if np.isfinite(value):
            return value
        raise InputError(f"{where}: {token!r} overflows float64")
    if _NON_FINITE.match(token):
        raise InputError(f"{where}: {token!r} is not finite; logits and targets must be finite numbers")
    if not token:
        raise InputError(f"{where}: empty value where a number was expected")
    raise InputError(f"{where}: {token!r} is not a number")


def parse_label(text: str, where: str) -> int:
    token = text.strip()
    value: int | None = None
    if _INTEGER.match(token):
        value = int(token)
    elif _NUMBER.match(token) and float(token).is_integer():
        value = int(float(token))
    if value is not None:
        if abs(value) >= _LARGEST_LABEL:
            raise InputError(f"{where}: {token!r} is far too large for a class index")
        return value
    if not token:
        raise InputError(f"{where}: empty value where a class index was expected")
    raise InputError(f"{where}: {token!r} is not an integer class index")


def _split(text: str) -> list[str]:
    return [token for token in _SEPARATORS.split(text.strip()) if token]


def parse_row(text: str, where: str) -> list[float]:
    """A row given on the command line: numbers separated by commas and/or spaces."""
    tokens = _split(text)
    if not tokens:
        raise InputError(f"{where}: no numbers in {text!r}")
    return [parse_number(token, f"{where}, value {k + 1}") for k, token in enumerate(tokens)]


def parse_labels(text: str, where: str) -> list[int]:
    tokens = _split(text)
    if not tokens:
        raise InputError(f"{where}: no class indices in {text!r}")
    return [parse_label(token, f"{where}, value {k + 1}") for k, token in enumerate(tokens)]


def _rows_to_matrix(rows: list[list[float]], what: str, where_row: list[str]) -> np.ndarray:
    widths = {len(row) for row in rows}
    if len(widths) > 1:
        first = len(rows[0])
        bad = next(k for k, row in enumerate(rows) if len(row) != first)
        raise InputError(
            f"{where_row[bad]}: ragged {what}: this row has {len(rows[bad])} values, the first has {first}"
        )
    return np.array(rows, dtype=np.float64)


def rows_from_args(texts: tuple[str, ...], option: str) -> np.ndarray:
    wheres = [f"{option} #{k + 1}" for k in range(len(texts))]
    rows = [parse_row(text, where) for text, where in zip(texts, wheres, strict=True)]
    return _rows_to_matrix(rows, option.lstrip("-"), wheres)


# --- files --------------------------------------------------------------------------------------------


# An input read whole (JSON, --full, or with a labels file beside it) may hold at most this much text:
# as numbers in memory it takes several times its size. CSV and JSON Lines files stream without a limit.
MAX_IN_MEMORY_BYTES = 512 << 20


def read_text(path: str, name: str | None = None) -> tuple[str, str]:
    """The UTF-8 text of a file (or of stdin for '-') and the name to use in messages."""
    name = name or ("<stdin>" if path == "-" else path)
    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_IN_MEMORY_BYTES + 1)
        else:
            with open(path, "rb") as handle:  # not pathlib: its import is a cost of every start-up
                data = handle.read(MAX_IN_MEMORY_BYTES + 1)
    except FileNotFoundError:
        raise InputError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{name}: is a directory, not a file") from None
    except PermissionError:
        raise InputError(f"{name}: permission denied") from None
    except OSError as error:
        raise InputError(f"{name}: cannot read: {error.strerror or error}") from None
    if len(data) > MAX_IN_MEMORY_BYTES:
        raise InputError(
            f"{name}: over {MAX_IN_MEMORY_BYTES >> 20} MB to read whole; give it as CSV (with a 'label' column) "
            "or JSON Lines, without --full or a separate labels file, and it streams in bounded memory"
        )
    nul = data.find(b"\x00")
    if nul >= 0:
        raise InputError(f"{name}: binary data (a NUL byte at offset {nul}), expected text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(f"{name}: not UTF-8 text (byte {data[error.start]:#04x} at offset {error.start})") from None
    if not text.strip():
        raise InputError(f"{name}: empty input")
    return text, name


def detect_format(path: str, text: str, requested: str) -> str:
    if requested != "auto":
        return requested
    suffix = os.path.splitext(path)[1].lower() if path != "-" else ""
    if suffix == ".json":
        return "json"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix in (".csv", ".txt"):
        return "csv"
    start = text.lstrip()
    if start[:1] == "{" and _looks_like_json_lines(start):
        return "jsonl"
    return "json" if start[:1] in ("{", "[") else "csv"


def _looks_like_json_lines(text: str) -> bool:
    """Two or more lines that each hold one whole object: JSON Lines, not one (pretty-printed) object."""
    lines = [line.strip() for line in text.splitlines()[:3] if line.strip()]
    return len(lines) > 1 and all(line.startswith("{") and line.endswith("}") for line in lines)


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
    return any(not _NUMBER.match(cell) and not _NON_FINITE.match(cell) for _, cell in cells)


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


def read_csv(text: str, name: str) -> _Parsed:
    """One sample per line. A header row is optional; in it, a column named 'label' holds class indices."""
    lines = _csv_lines(text)
    if not lines:
        raise InputError(f"{name}: no data rows (only blank lines or comments)")
    layout = csv_layout(lines[0], name)
    if layout.header is not None:
        lines = lines[1:]
        if not lines:
            raise InputError(f"{name}: a header but no data rows")
    logits, labels = parse_csv_rows(lines, name, layout)
    row_lines = [number for number, _ in lines]
    return _Parsed(
        logits=logits,
        labels=labels,
        row_lines=row_lines,
        labels_from=f"the '{_LABEL_COLUMN}' column of {name}",
        locate_labels=lambda n: f"{name}:{row_lines[n]}",
    )


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
    matrix = _rows_to_matrix(rows, "targets", [f"{name}:{number}" for number, _ in lines])
    return matrix, [number for number, _ in lines]


# --- JSON -------------------------------------------------------------------------------------------------


def _reject_constant(token: str) -> float:
    raise ValueError(f"{token} is not allowed; JSON numbers must be finite")


def _finite_float(token: str) -> float:
    value = float(token)
    if not np.isfinite(value):
        raise ValueError(f"the number {token} overflows float64")
    return value


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    seen: dict[str, object] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {key!r}")
        seen[key] = value
    return seen


def _line_col(text: str, position: int) -> str:
    line = text.count("\n", 0, position) + 1
    return f"{line}:{position - (text.rfind(chr(10), 0, position) + 1) + 1}"


def _shown(value: object) -> str:
    """A JSON value as the user wrote it, cut short, for an error message."""
    import json  # here, not at the top: start-up pays for it only when JSON is used

    return json.dumps(value)[:40]


def _may_overflow(text: str) -> bool:
    """Whether some number has a three-digit exponent: the only way one number alone overflows float64."""
    if text.count("e") + text.count("E") > 16:  # numbers with exponents: search them all
        return _MAY_OVERFLOW.search(text) is not None
    # Most texts have no exponents, only the e of "labels" or "true": try the pattern at each e, not at every
    # character (the regex scan costs 13 ms on 100,000 logits).
    starts = (i for letter in "eE" for i in _positions(text, letter))
    return any(_MAY_OVERFLOW.match(text, i) for i in starts)


def _positions(text: str, letter: str) -> Iterator[int]:
    start = text.find(letter)
    while start >= 0:
        yield start
        start = text.find(letter, start + 1)


def _load_json(text: str, name: str) -> object:
    import json  # here, not at the top: start-up pays for it only when JSON is used

    # The parse_float hook costs a Python call per number (a third of reading 100,000 logits); only a number
    # with a three-digit exponent can overflow by itself; a long mantissa that overflows reads as inf, which
    # _json_matrix reports with its JSON path.
    parse_float = _finite_float if _may_overflow(text) else float
    decoder = json.JSONDecoder(
        parse_constant=_reject_constant, parse_float=parse_float, object_pairs_hook=_unique_keys
    )
    try:
        value, end = decoder.raw_decode(text, len(text) - len(text.lstrip()))
    except json.JSONDecodeError as error:
        raise InputError(f"{name}:{error.lineno}:{error.colno}: malformed JSON: {error.msg}") from None
    except ValueError as error:
        # Raised by the hooks above; the decoder does not say where, so name the file only.
        raise InputError(f"{name}: {error}") from None
    except RecursionError:
        raise InputError(f"{name}: JSON nested too deeply") from None
    if text[end:].strip():
        position = end + len(text[end:]) - len(text[end:].lstrip())
        raise InputError(f"{name}:{_line_col(text, position)}: unexpected data after the JSON value")
    return value


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _json_matrix(value: object, key: str, name: str, nulls: bool = False) -> np.ndarray:
    """A list of numbers (one row) or a list of equally long lists of numbers, as an N x C array.

    With `nulls`, null stands for a value that was not finite (strict JSON has no NaN): it becomes NaN,
    which fails its check. Only the user's supplied values may hold it, never the logits or targets.
    """
    if not isinstance(value, list) or not value:
        raise InputError(f"{name}: {key}: expected a non-empty list of numbers or of rows")
    single_row = not any(isinstance(row, list) for row in value)
    rows = [value] if single_row else value
    allowed = {int, float, type(None)} if nulls else {int, float}
    width = len(rows[0]) if isinstance(rows[0], list) else 0
    plain = all(isinstance(row, list) and len(row) == width and allowed.issuperset(map(type, row)) for row in rows)
    for n, row in enumerate([] if plain and width else rows):  # the loop only to say what is wrong
        path = key if single_row else f"{key}[{n}]"
        if not isinstance(row, list) or not row:
            raise InputError(f"{name}: {path}: expected a non-empty list of numbers")
        for c, x in enumerate(row):
            if not (_is_number(x) or (nulls and x is None)):
                raise InputError(f"{name}: {path}[{c}]: expected a number, got {_shown(x)}")
        if len(row) != len(rows[0]):
            raise InputError(
                f"{name}: {path}: ragged {key}: this row has {len(row)} values, the first has {len(rows[0])}"
            )
    if nulls:
        rows = [[np.nan if x is None else x for x in row] for row in rows]
    try:
        matrix = np.array(rows, dtype=np.float64)
    except OverflowError:
        matrix = np.array([[float(x) if abs(x) < 1e308 else np.inf for x in row] for row in rows])
    if not np.isfinite(matrix[~np.isnan(matrix)] if nulls else matrix).all():
        n, c = (int(i) for i in np.argwhere(~np.isfinite(matrix))[0])
        path = f"{key}[{c}]" if single_row else f"{key}[{n}][{c}]"
        raise InputError(f"{name}: {path}: the number overflows float64")
    return matrix


def _json_labels(value: object, name: str) -> np.ndarray:
    if _is_number(value):
        value = [value]
    if not isinstance(value, list) or not value:
        raise InputError(f"{name}: labels: expected a non-empty list of class indices")
    for n, x in enumerate(value):
        if not (_is_number(x) and float(x).is_integer()):
            raise InputError(f"{name}: labels[{n}]: expected an integer class index, got {_shown(x)}")
        if abs(x) >= _LARGEST_LABEL:
            raise InputError(f"{name}: labels[{n}]: {x} is far too large for a class index")
    return np.array([int(x) for x in value], dtype=np.int64)


def read_json(text: str, name: str) -> _Parsed:
    document = _load_json(text, name)
    if not isinstance(document, dict):
        raise InputError(f'{name}: expected a JSON object such as {{"logits": [...], "labels": [...]}}')
    unknown = sorted(set(document) - set(_JSON_KEYS))
    if unknown:
        raise InputError(f"{name}: unknown key {unknown[0]!r}; expected {', '.join(_JSON_KEYS)}")
    if "logits" not in document:
        raise InputError(f'{name}: no "logits" key')
    parsed = _Parsed(logits=_json_matrix(document["logits"], "logits", name))
    if "labels" in document:
        parsed.labels = _json_labels(document["labels"], name)
        parsed.labels_from = f'"labels" in {name}'
        parsed.locate_labels = lambda n: f"{name}: labels[{n}]"
    if "targets" in document:
        parsed.targets = _json_matrix(document["targets"], "targets", name)
        parsed.targets_from = f'"targets" in {name}'
        parsed.locate_targets = lambda n: f"{name}: targets[{n}]"
    for key in ("probabilities", "gradient"):
        if key in document:
            parsed.supplied[key] = (_json_matrix(document[key], key, name, nulls=True), f'"{key}" in {name}')
    if "jacobian" in document:
        jacobian = document["jacobian"]
        if not isinstance(jacobian, list) or not jacobian:
            raise InputError(f"{name}: jacobian: expected a list of C x C matrices, one per row")
        matrices = [_json_matrix(matrix, f"jacobian[{n}]", name, nulls=True) for n, matrix in enumerate(jacobian)]
        if len({m.shape for m in matrices}) > 1:
            raise InputError(f"{name}: jacobian: the matrices have different shapes")
        parsed.supplied["jacobian"] = (np.stack(matrices), f'"jacobian" in {name}')
    if "loss" in document:
        loss = document["loss"]
        values = _json_matrix(loss if isinstance(loss, list) else [loss], "loss", name, nulls=True)[0]
        parsed.supplied["loss"] = (values, f'"loss" in {name}')
    return parsed


def strict_json_line(line: str, where: str) -> tuple[list[float], int | list[float]]:
    """One JSON Lines sample: {"logits": [...], "label": k} (or "labels": k) or {"logits": [...], "targets": [...]}."""
    document = _load_json(line, where)
    if not isinstance(document, dict):
        raise InputError(f'{where}: expected an object such as {{"logits": [...], "label": 0}}')
    unknown = sorted(set(document) - {"logits", "label", "labels", "targets"})
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r}; expected logits and label or targets")
    if "logits" not in document:
        raise InputError(f'{where}: no "logits" key')
    logits = _json_matrix(document["logits"], "logits", where)
    if logits.shape[0] != 1:
        raise InputError(f"{where}: logits: one sample per line, a flat list of numbers")
    given = [key for key in ("label", "labels", "targets") if key in document]
    if len(given) != 1:
        raise InputError(f'{where}: give exactly one of "label" or "targets"')
    if given[0] == "targets":
        targets = _json_matrix(document["targets"], "targets", where)
        return logits[0].tolist(), targets[0].tolist()
    label = document[given[0]]
    if isinstance(label, list) and len(label) == 1:
        label = label[0]
    if not (_is_number(label) and float(label).is_integer()):
        raise InputError(f"{where}: {given[0]}: expected an integer class index, got {_shown(label)}")
    if abs(label) >= _LARGEST_LABEL:
        raise InputError(f"{where}: {given[0]}: {label} is far too large for a class index")
    return logits[0].tolist(), int(label)


def read_jsonl(text: str, name: str) -> _Parsed:
    """JSON Lines held in memory: the same rows as the streaming reader, with the same messages."""
    rows, answers, lines = [], [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            logits, answer = strict_json_line(line, f"{name}:{number}")
            rows.append(logits)
            answers.append(answer)
            lines.append(number)
    if not rows:
        raise InputError(f"{name}: no data rows")
    matrix = _rows_to_matrix(rows, "logits", [f"{name}:{number}" for number in lines])
    parsed = _Parsed(logits=matrix, row_lines=lines)
    if all(isinstance(answer, int) for answer in answers):
        parsed.labels = np.array(answers, dtype=np.int64)
        parsed.labels_from = f"the labels of {name}"
        parsed.locate_labels = lambda n: f"{name}:{lines[n]}"
    elif any(isinstance(answer, int) for answer in answers):
        raise InputError(f"{name}: mixes labels and targets; give one kind in every line")
    else:
        parsed.targets = _rows_to_matrix(answers, "targets", [f"{name}:{number}" for number in lines])  # type: ignore[arg-type]
        parsed.targets_from = f"the targets of {name}"
        parsed.locate_targets = lambda n: f"{name}:{lines[n]}"
    return parsed


# --- putting a batch together -----------------------------------------------------------------------------


# Beyond this the spacing of float64 at z (2.2e-16 |z|) is larger than any accurate finite-difference step,
# and z - max(z) can overflow: such a logit cannot be checked, so it is refused. Real logits stay far below.
LARGEST_LOGIT = 1e9


def check_logit_range(logits: np.ndarray, locate: Callable[[int], str]) -> None:
    huge = np.argwhere(np.abs(logits) > LARGEST_LOGIT)
    if huge.size:
        n, c = (int(i) for i in huge[0])
        raise InputError(
            f"{locate(n)}: logit {float(logits[n, c])!r} of class {c} is beyond ±{LARGEST_LOGIT:g}; finite "
            "differences cannot resolve it in float64: shift or scale the logits (softmax ignores a shift)"
        )


@dataclass(eq=False, repr=False)  # holds arrays: == has no truth value, and each method costs start-up
class _Answers:
    """Labels or targets from one place, and how to name the place of row n in a message."""

    values: np.ndarray
    are_labels: bool
    source: str
    locate: Callable[[int], str]


def _validate_labels(answers: _Answers, classes: int, ignore_index: int | None = None) -> None:
    labels = answers.values
    bad = np.flatnonzero(((labels < 0) | (labels >= classes)) & (labels != ignore_index))
    if bad.size:
        n = int(bad[0])
        raise InputError(
            f"{answers.locate(n)}: label {int(labels[n])} is out of range; "
            f"with {classes} classes a label is 0 to {classes - 1}"
        )


def _validate_targets(answers: _Answers, logits: np.ndarray) -> None:
    targets = answers.values
    if targets.shape[1] != logits.shape[1]:
        raise InputError(
            f"{answers.source}: targets have {targets.shape[1]} classes, the logits have {logits.shape[1]}"
        )
    negative = np.argwhere(targets < 0)
    if negative.size:
        n, c = (int(i) for i in negative[0])
        raise InputError(f"{answers.locate(n)}: target {float(targets[n, c])!r} for class {c} is negative")


def load_batch(
    *,
    logits_args: tuple[str, ...] = (),
    labels_arg: str | None = None,
    targets_args: tuple[str, ...] = (),
    input_path: str | None = None,
    input_format: str = "auto",
    labels_path: str | None = None,
    targets_path: str | None = None,
    ignore_index: int | None = None,
    gradient_path: str | None = None,
    probabilities_path: str | None = None,
    loss_value: str | None = None,
    input_name: str | None = None,
) -> Batch:
    """Gather logits and exactly one of labels or targets from wherever they were given, and validate them."""
    if input_path is not None and logits_args:
        raise InputError("give the logits either with --logits or with --input, not both")
    parsed = _Parsed()
    source = None
    if input_path is not None:
        text, source = read_text(input_path, input_name)
        readers = {"json": read_json, "jsonl": read_jsonl, "csv": read_csv}
        # A spooled stdin keeps stdin's rule: no extension, so the format is sniffed from the text.
        path_for_format = "-" if source == "<stdin>" else input_path
        parsed = readers[detect_format(path_for_format, text, input_format)](text, source)
    elif logits_args:
        parsed.logits = rows_from_args(logits_args, "--logits")
    else:
        raise InputError("no logits: give --logits ROW (repeatable) or --input PATH")

    answers: list[_Answers] = []
    if parsed.labels is not None:
        answers.append(_Answers(parsed.labels, True, parsed.labels_from, parsed.locate_labels))
    if parsed.targets is not None:
        answers.append(_Answers(parsed.targets, False, parsed.targets_from, parsed.locate_targets))
    if labels_arg is not None:
        values = np.array(parse_labels(labels_arg, "--labels"), dtype=np.int64)
        answers.append(_Answers(values, True, "--labels", lambda n: f"--labels, value {n + 1}"))
    if targets_args:
        values = rows_from_args(targets_args, "--targets")
        answers.append(_Answers(values, False, "--targets", lambda n: f"--targets #{n + 1}"))
    if labels_path is not None:
        text, name = read_text(labels_path)
        values, lines = read_labels_file(text, name)
        answers.append(_Answers(values, True, name, lambda n: f"{name}:{lines[n]}"))
    if targets_path is not None:
        text, name = read_text(targets_path)
        values, lines = read_targets_file(text, name)
        answers.append(_Answers(values, False, name, lambda n: f"{name}:{lines[n]}"))

    if not answers:
        raise InputError(
            "no labels or targets: give --labels, --targets, --labels-file, --targets-file, "
            "a 'label' column in the CSV, or \"labels\"/\"targets\" in the JSON"
        )
    if len(answers) > 1:
        raise InputError(
            f"both {answers[0].source} and {answers[1].source} give the answers; give labels or targets once"
        )

    logits = parsed.logits
    assert logits is not None
    check_logit_range(logits, lambda n: f"row {n}" if parsed.row_lines is None else f"{source}:{parsed.row_lines[n]}")
    given = answers[0]
    what = "labels" if given.are_labels else "target rows"
    if given.values.shape[0] != logits.shape[0]:
        raise InputError(f"{given.source}: {given.values.shape[0]} {what} for {logits.shape[0]} rows of logits")
    if given.are_labels:
        _validate_labels(given, logits.shape[1], ignore_index)
        labels: np.ndarray | None = given.values
        kept = given.values != ignore_index if ignore_index is not None else np.ones(logits.shape[0], dtype=bool)
        # An ignored row has no target: its label may be out of range (torch's default -100).
        targets = one_hot(np.where(kept, given.values, 0), logits.shape[1]) * kept[:, None]
    else:
        _validate_targets(given, logits)
        labels, targets = None, given.values
    supplied = dict(parsed.supplied)
    if gradient_path is not None:
        text, name = read_text(gradient_path)
        supplied["gradient"] = (read_targets_file(text, name)[0], name)
    if probabilities_path is not None:
        text, name = read_text(probabilities_path)
        supplied["probabilities"] = (read_targets_file(text, name)[0], name)
    if loss_value is not None:
        values = np.array(parse_row(loss_value, "--loss-value"))
        supplied["loss"] = (values, "--loss-value")
    return Batch(
        logits=logits,
        labels=labels,
        targets=targets,
        source=source,
        row_lines=parsed.row_lines,
        supplied={key: _supplied_shape(key, values, where, logits.shape) for key, (values, where) in supplied.items()},
    )


def _supplied_shape(key: str, values: np.ndarray, where: str, shape: tuple[int, ...]) -> np.ndarray:
    """A supplied value must have the shape the report gives it; a loss is one number or one per row."""
    rows, classes = shape
    expected: dict[str, tuple[int, ...]] = {
        "probabilities": (rows, classes), "gradient": (rows, classes), "jacobian": (rows, classes, classes)
    }
    if key == "loss":
        if values.size not in (1, rows):
            raise InputError(f"{where}: {values.size} loss values; give one number, or one per row ({rows})")
        return values
    if values.shape != expected[key]:
        wanted, got = (" x ".join(map(str, e)) for e in (expected[key], values.shape))
        raise InputError(f"{where}: the supplied {key} is {got}; for {rows} x {classes} logits it must be {wanted}")
    return values
