"""JSON Lines: one sample per line, {"logits": [...], "label": k}, {"logits": [...], "targets": [...]} or
{"logits": [...], "teacher_logits": [...]}, read in blocks of lines so a file of any size streams. A line may
also carry "lse": x, the row's log-sum-exp the user computed (checked as `supplied lse`): in every line or none.

A block is first read the fast way: its lines joined into one JSON array (each newline between "}" and "{"
made a comma by one str.replace when nothing else is around the lines), decoded by one loads call (orjson's
when installed, else json's; no decoder built per line), and each column made an array straight from the
decoded lists. That way takes only
a block it can prove is plain (every line one flat object of exactly its two keys, or three with "lse",
numbers only); anything
else (an error, nested rows, label and labels mixed) is read again line by line by the strict reader, which
accepts exactly what it did before and names the line of an error. Both give the same arrays.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import chain, compress, repeat
from operator import itemgetter
from typing import Any

import numpy as np

from gradcheck_cli.errors import InputError
from gradcheck_cli.inputs.json_format import is_number, json_matrix, load_json, shown
from gradcheck_cli.inputs.limits import LARGEST_LABEL
from gradcheck_cli.inputs.validate import Parsed, Teacher, line_answers

# Characters a plain block never holds (its only letters are the keys' and the e of exponents): the u of true
# and null, the f of false and Infinity, NaN's N and Infinity's I (constants the decoder takes, and true would
# read as 1 in an array), and the backslash of an escape that could spell a key twice. One character is
# found by memchr, some twenty times faster than searching for the words.
_NOT_PLAIN = ("u", "f", "N", "I", "\\")
_ANSWER_KEYS = ("label", "labels", "targets", "teacher_logits")  # teacher logits stand for the answers


@dataclass
class _Shape:
    """What every line of a file must share: the width of its logits, and labels, targets or teacher logits."""

    width: int | None = None
    kind: str | None = None  # "labels", "targets" or "teacher_logits"
    lse: bool | None = None  # whether the lines carry the user's "lse"


def sniff(head: str) -> bool:
    """Two or more lines that each hold one whole object: JSON Lines, not one (pretty-printed) object."""
    lines = [line.strip() for line in head.lstrip().splitlines()[:3] if line.strip()]
    return len(lines) > 1 and all(line.startswith("{") and line.endswith("}") for line in lines)


def pieces(blocks: Iterator[tuple[int, str]], name: str) -> Iterator[Parsed]:
    """Each block's samples as logits with labels or targets; every line has the same width and kind."""
    shape = _Shape()
    loads = _loads()
    for first, text in blocks:
        tight = _tight_lines(text)
        if tight is not None:  # every line one object, nothing around it: no Python code per line
            joined, rows = tight
            parsed = _plain_block(joined, rows, first + np.arange(rows), name, shape, loads)
            yield parsed if parsed is not None else _strict_block(text.split("\n"), first, name, shape)
            continue
        lines = text.split("\n")
        stripped = list(map(str.strip, lines))
        numbers = np.flatnonzero(np.fromiter(map(bool, stripped), dtype=bool, count=len(stripped)))
        if not numbers.size:
            continue
        objects = list(compress(stripped, map(bool, stripped)))
        parsed = None
        if all(map(str.startswith, objects, repeat("{"))) and all(map(str.endswith, objects, repeat("}"))):
            parsed = _plain_block(",".join(objects), len(objects), numbers + first, name, shape, loads)
        yield parsed if parsed is not None else _strict_block(lines, first, name, shape)
    if shape.width is None:
        raise InputError(f"{name}: no data rows")


def _loads() -> Callable[[str], Any]:
    """orjson's loads when it is installed (three times json.loads's speed on these blocks, the same values:
    both read every number correctly rounded, and what orjson refuses the strict reader decides), else json's."""
    try:
        import orjson
    except ImportError:
        import json

        return json.loads
    loads: Callable[[str], Any] = orjson.loads
    return loads


def _tight_lines(text: str) -> tuple[str, int] | None:
    """The block's lines joined by commas, and how many, when every line begins with "{" and ends with "}" with
    nothing around them (what writers write): each newline, between "}" and "{", is replaced by a comma in one
    call. None for anything else (blank lines, spaces, a line that is not one object)."""
    body = text[:-1] if text.endswith("\n") else text
    if not (body.startswith("{") and body.endswith("}")):
        return None
    joined = body.replace("}\n{", "},{")
    return None if "\n" in joined else (joined, body.count("\n") + 1)


def _plain_block(joined: str, rows: int, numbers: np.ndarray, name: str, shape: _Shape,
                 loads: Callable[[str], Any]) -> Parsed | None:
    """The block read with one loads call, or None when it is not plain (the strict reader then decides).
    `joined` is its `rows` lines, each beginning with "{" and ending with "}", joined by commas."""
    # One "{" and one "}" a line: each line one flat object. Exactly two strings a line (three with "lse"),
    # and (below) as many keys in each object: the strings are its keys, once each.
    keys = joined.count('"') // (2 * rows)
    if joined.count("{") != rows or joined.count("}") != rows or joined.count('"') != 2 * keys * rows \
            or keys not in (2, 3) or any(word in joined for word in _NOT_PLAIN):
        return None
    try:
        documents = loads(f"[{joined}]")
        if len(documents) != rows or set(map(len, documents)) != {keys}:
            return None
        key = next(key for key in _ANSWER_KEYS if key in documents[0])
        kind = key if key in ("targets", "teacher_logits") else "labels"
        logits = _matrix(list(map(itemgetter("logits"), documents)))
        answers = list(map(itemgetter(key), documents))
        values = _labels(np.array(answers)) if kind == "labels" else _matrix(answers)
        lse = np.array(list(map(itemgetter("lse"), documents)), dtype=np.float64) if keys == 3 else None
    except (ValueError, KeyError, TypeError, OverflowError, StopIteration, RecursionError):
        return None
    plain = (logits is not None and values is not None and np.isfinite(logits).all()
             and shape.width in (None, logits.shape[1]) and shape.kind in (None, kind)
             and (kind == "labels" or (values.shape == logits.shape and np.isfinite(values).all()))
             and shape.lse in (None, lse is not None) and (lse is None or (lse.ndim == 1 and np.isfinite(lse).all())))
    if not plain:
        return None
    assert logits is not None and values is not None
    shape.width, shape.kind, shape.lse = logits.shape[1], kind, lse is not None
    return _parsed(logits, values, kind, name, numbers, lse)


def _matrix(lists: list[Any]) -> np.ndarray | None:
    """Lists of numbers of one nonzero length as a float64 matrix, None when they are not; np.fromiter over
    the chained lists takes two thirds of np.array's time, once the lengths are known equal."""
    widths = set(map(len, lists))
    if len(widths) != 1 or 0 in widths:
        return None
    width = widths.pop()
    flat = np.fromiter(chain.from_iterable(lists), dtype=np.float64, count=len(lists) * width)
    return flat.reshape(len(lists), width)


def _parsed(logits: np.ndarray, values: np.ndarray, kind: str, name: str, numbers: np.ndarray,
            lse: np.ndarray | None = None) -> Parsed:
    """The rows with their labels or targets, or with their teacher logits (which travel with them), and the
    user's lse of each row if the lines carry one."""
    supplied = {} if lse is None else {"lse": (lse, f"the lse of {name}")}
    if kind == "teacher_logits":
        return Parsed(logits=logits, row_lines=numbers, supplied=supplied,
                      teacher=Teacher(values, f"the teacher logits of {name}", lambda n: f"{name}:{numbers[n]}"))
    return Parsed(logits=logits, row_lines=numbers, supplied=supplied,
                  answers=[line_answers(values, kind == "labels", f"the {kind} of {name}", name, numbers)])


def _labels(values: np.ndarray) -> np.ndarray | None:
    """Integer class indices as int64 (2.0 is 2, as the strict reader takes it), or None if any is not one."""
    if values.ndim != 1 or values.dtype.kind not in "iuf":
        return None
    if values.dtype.kind == "f" and not (np.isfinite(values).all() and (values == np.floor(values)).all()):
        return None
    if (np.abs(values) >= LARGEST_LABEL).any():
        return None
    return values.astype(np.int64)


def _strict_block(lines: list[str], first: int, name: str, shape: _Shape) -> Parsed:
    """The block line by line, each line decoded and checked on its own: the first error names its line."""
    rows, answers, numbers, lses = [], [], [], []
    for k, line in enumerate(lines):
        if not line.strip():
            continue
        number = first + k
        logits, answer, kind, row_lse = strict_json_line(line, f"{name}:{number}")
        _same_lse(row_lse is not None, f"{name}:{number}", shape)
        lses.append(row_lse)
        shape.width = len(logits) if shape.width is None else shape.width
        if len(logits) != shape.width:
            raise InputError(f"{name}:{number}: ragged logits: {len(logits)} values, the first row has {shape.width}")
        shape.kind = kind if shape.kind is None else shape.kind
        if kind != shape.kind:
            raise InputError(f"{name}:{number}: mixes {' and '.join(sorted((kind, shape.kind)))}; give one kind in "
                             "every line")
        if isinstance(answer, list) and len(answer) != shape.width:
            raise InputError(f"{name}:{number}: {kind} have {len(answer)} classes, the logits {shape.width}")
        rows.append(logits)
        answers.append(answer)
        numbers.append(number)
    lines_of = np.array(numbers, dtype=np.int64)
    assert shape.kind is not None
    values = np.array(answers, dtype=np.int64 if shape.kind == "labels" else np.float64)
    lse = np.array(lses, dtype=np.float64) if shape.lse else None
    return _parsed(np.array(rows, dtype=np.float64), values, shape.kind, name, lines_of, lse)


def _same_lse(given: bool, where: str, shape: _Shape) -> None:
    """The user's "lse" is in every line or in none: a check of some rows only would hide the others'."""
    shape.lse = given if shape.lse is None else shape.lse
    if given != shape.lse:
        raise InputError(f'{where}: {"has" if given else "has no"} "lse" and the first line '
                         f'{"has none" if given else "has one"}; give it in every line or in none')


def _lse(document: dict[str, Any], where: str) -> float | None:
    """A line's "lse" as a float (null: NaN, a value that was not finite, which fails its check), None if absent."""
    if "lse" not in document:
        return None
    value = document["lse"]
    if value is not None and not is_number(value):
        raise InputError(f"{where}: lse: expected a number (this row's log-sum-exp), got {shown(value)}")
    return np.nan if value is None else float(value)


def strict_json_line(line: str, where: str) -> tuple[list[float], int | list[float], str, float | None]:
    """One JSON Lines sample: {"logits": [...], "label": k} (or "labels": k), {"logits": [...], "targets": [...]}
    or {"logits": [...], "teacher_logits": [...]}; with the kind of its answer (labels, targets, teacher_logits)
    and its "lse" (None when the line has none)."""
    document = load_json(line, where)
    if not isinstance(document, dict):
        raise InputError(f'{where}: expected an object such as {{"logits": [...], "label": 0}}')
    unknown = sorted(set(document) - {"logits", "lse", *_ANSWER_KEYS})
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r}; expected logits and label, targets or teacher_logits "
                         "(and optionally lse)")
    if "logits" not in document:
        raise InputError(f'{where}: no "logits" key')
    logits = json_matrix(document["logits"], "logits", where)
    if logits.shape[0] != 1:
        raise InputError(f"{where}: logits: one sample per line, a flat list of numbers")
    given = [key for key in _ANSWER_KEYS if key in document]
    if len(given) != 1:
        raise InputError(f'{where}: give exactly one of "label" or "targets" (or "teacher_logits", for kl, '
                         'reverse-kl and jsd)')
    if given[0] in ("targets", "teacher_logits"):
        row = json_matrix(document[given[0]], given[0], where)
        if row.shape[0] != 1:
            raise InputError(f"{where}: {given[0]}: one sample per line, a flat list of numbers")
        return logits[0].tolist(), row[0].tolist(), given[0], _lse(document, where)
    label = document[given[0]]
    if isinstance(label, list) and len(label) == 1:
        label = label[0]
    if not (is_number(label) and float(label).is_integer()):
        raise InputError(f"{where}: {given[0]}: expected an integer class index, got {shown(label)}")
    if abs(label) >= LARGEST_LABEL:
        raise InputError(f"{where}: {given[0]}: {label} is far too large for a class index")
    return logits[0].tolist(), int(label), "labels", _lse(document, where)
