"""JSON: one object {"logits": [...], "labels": [...] or "targets": [...]} and the user's own values, read
whole; and the same object rules for one line of JSON Lines."""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np

from gradcheck_cli.batch import SUPPLIED_KEYS
from gradcheck_cli.errors import InputError
from gradcheck_cli.inputs.limits import LARGEST_LABEL
from gradcheck_cli.inputs.validate import Answers, Parsed, Teacher

_MAY_OVERFLOW = re.compile(r"[eE]\+?0*[1-9]\d{2}")
_JSON_KEYS = ("logits", "labels", "targets", "teacher_logits", *SUPPLIED_KEYS)
# Texts from this size up are read by orjson first, when it is installed: 0.04 s against json's 0.14 s for
# 8 x 50,257 logits (4.2 MB). Below it, importing orjson would cost the small files more than it saves.
_ORJSON_CHARACTERS = 1 << 18


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


def shown(value: object) -> str:
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


def load_json(text: str, name: str) -> object:
    import json  # here, not at the top: start-up pays for it only when JSON is used

    # The parse_float hook costs a Python call per number (a third of reading 100,000 logits); only a number
    # with a three-digit exponent can overflow by itself; a long mantissa that overflows reads as inf, which
    # _json_matrix reports with its JSON path.
    parse_float = _finite_float if _may_overflow(text) else float
    if parse_float is float and len(text) >= _ORJSON_CHARACTERS:
        plain = _plain_document(text)
        if plain is not None:
            return plain
    decoder = json.JSONDecoder(
        parse_constant=_reject_constant, parse_float=parse_float, object_pairs_hook=_unique_keys
    )
    try:
        value, end = decoder.raw_decode(text, len(text) - len(text.lstrip()))
    except json.JSONDecodeError as error:
        raise InputError(f"{name}:{error.lineno}:{error.colno}: malformed JSON: {plain_words(error)}") from None
    except ValueError as error:
        # Raised by the hooks above; the decoder does not say where, so name the file only.
        raise InputError(f"{name}: {error}") from None
    except RecursionError:
        raise InputError(f"{name}: JSON nested too deeply") from None
    if text[end:].strip():
        position = end + len(text[end:]) - len(text[end:].lstrip())
        raise InputError(f"{name}:{_line_col(text, position)}: unexpected data after the JSON value")
    return value


def _plain_document(text: str) -> dict[str, object] | None:
    """The text's object as orjson reads it, or None where the strict reader must decide: orjson is not
    installed, refuses the text (NaN, Infinity, a number past float64, trailing data...), or reads it
    otherwise or silently: a key given twice, which it overwrites (as many strings in the text as keys in
    its objects proves every string a key, and none repeated, escapes or not), or an integer past 64 bits,
    which it reads as a float (the same number in a matrix, but a label's message would show it otherwise).
    Both read every number correctly rounded, true, false and null alike."""
    try:
        import orjson
    except ImportError:
        return None
    try:
        document = orjson.loads(text)
    except ValueError:  # orjson.JSONDecodeError, and what it says of a text it cannot encode
        return None
    if not isinstance(document, dict):
        return None
    keys, objects = 0, [document]
    while objects:  # the objects among objects' values (one in a list has strings not counted: not plain)
        found = objects.pop()
        keys += len(found)
        objects.extend(value for value in found.values() if isinstance(value, dict))
    if text.count('"') != 2 * keys:
        return None
    labels = document.get("labels")
    labels = labels if isinstance(labels, list) else [labels]
    return None if any(type(x) is float and abs(x) >= 2.0**63 for x in labels) else document


_TOKEN = r"[^\s,:\[\]{}]{1,20}|\S"  # compiled where a malformed file is described: start-up does without
# Python's messages (json.decoder), as a person who wrote the file would say them.
_SAID = {
    "Expecting ':' delimiter": "expected ':' after the key, found {found}",
    "Unterminated string starting at": "a string that is never closed (a missing '\"')",
    "Invalid control character at": "a raw tab or line break inside a string; write it as \\t or \\n",
    "Invalid \\escape": "a backslash in a string that starts no escape (write \\\\ for a backslash)",
    "Invalid \\uXXXX escape": "a \\u escape in a string without its four hex digits",
}


def plain_words(error: ValueError) -> str:
    """What is wrong at a JSON syntax error, in plain words: `[1, 2,]` is "a trailing comma before ']'",
    not Python's "Expecting value"; unknown messages are passed on as they are."""
    import json

    assert isinstance(error, json.JSONDecodeError)
    text, at, message = error.doc, error.pos, error.msg
    token = re.compile(_TOKEN).match(text, at)
    found = "the end of the text" if token is None else repr(token[0])
    if text[:at].rstrip().endswith(",") and text[at:at + 1] in ("]", "}"):  # "Illegal trailing comma" in 3.13
        return f"a trailing comma before '{text[at]}' (JSON allows none)"
    if token is None and message.startswith(("Expecting value", "Expecting ','", "Expecting property")):
        return "the text ends too soon (a value or a closing ']' or '}' is missing)"
    if text[at:at + 1] == "'":
        return "a string in single quotes; JSON takes double quotes"
    if message.startswith("Expecting value"):
        return f"expected a value (a number, a \"string\", a [list], an {{object}}, true, false or null), found {found}"
    if message.startswith("Expecting ','"):
        return f"expected ',' or a closing ']' or '}}' after a value, found {found} (a missing comma?)"
    if message.startswith("Expecting property name"):
        return f"expected a key in double quotes, found {found}"
    said = next((words for start, words in _SAID.items() if message.startswith(start)), message)
    return said.format(found=found)


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def json_matrix(value: object, key: str, name: str, nulls: bool = False) -> np.ndarray:
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
            if not (is_number(x) or (nulls and x is None)):
                raise InputError(f"{name}: {path}[{c}]: expected a number, got {shown(x)}")
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
    if is_number(value):
        value = [value]
    if not isinstance(value, list) or not value:
        raise InputError(f"{name}: labels: expected a non-empty list of class indices")
    for n, x in enumerate(value):
        if not (is_number(x) and float(x).is_integer()):
            raise InputError(f"{name}: labels[{n}]: expected an integer class index, got {shown(x)}")
        if abs(x) >= LARGEST_LABEL:
            raise InputError(f"{name}: labels[{n}]: {x} is far too large for a class index")
    return np.array([int(x) for x in value], dtype=np.int64)


def sniff(head: str) -> bool:
    return head.lstrip()[:1] in ("{", "[")


def pieces(blocks: Iterator[tuple[int, str]], name: str) -> Iterator[Parsed]:
    """The one document of a JSON input (read whole: it comes as one block)."""
    for _, text in blocks:
        yield read_json(text, name)


def read_json(text: str, name: str) -> Parsed:
    document = load_json(text, name)
    if not isinstance(document, dict):
        raise InputError(f'{name}: expected a JSON object such as {{"logits": [...], "labels": [...]}}')
    unknown = sorted(set(document) - set(_JSON_KEYS))
    if unknown:
        raise InputError(f"{name}: unknown key {unknown[0]!r}; expected {', '.join(_JSON_KEYS)}")
    if "logits" not in document:
        raise InputError(f'{name}: no "logits" key')
    parsed = Parsed(logits=json_matrix(document["logits"], "logits", name))
    if "labels" in document:
        labels = _json_labels(document["labels"], name)
        parsed.answers.append(Answers(labels, True, f'"labels" in {name}', lambda n: f"{name}: labels[{n}]"))
    if "targets" in document:
        targets = json_matrix(document["targets"], "targets", name)
        parsed.answers.append(Answers(targets, False, f'"targets" in {name}', lambda n: f"{name}: targets[{n}]"))
    if "teacher_logits" in document:
        teacher = json_matrix(document["teacher_logits"], "teacher_logits", name)
        parsed.teacher = Teacher(teacher, f'"teacher_logits" in {name}', lambda n: f"{name}: teacher_logits[{n}]")
    for key in ("probabilities", "gradient"):
        if key in document:
            parsed.supplied[key] = (json_matrix(document[key], key, name, nulls=True), f'"{key}" in {name}')
    if "jacobian" in document:
        jacobian = document["jacobian"]
        if not isinstance(jacobian, list) or not jacobian:
            raise InputError(f"{name}: jacobian: expected a list of C x C matrices, one per row")
        matrices = [json_matrix(matrix, f"jacobian[{n}]", name, nulls=True) for n, matrix in enumerate(jacobian)]
        if len({m.shape for m in matrices}) > 1:
            raise InputError(f"{name}: jacobian: the matrices have different shapes")
        parsed.supplied["jacobian"] = (np.stack(matrices), f'"jacobian" in {name}')
    if "loss" in document:
        loss = document["loss"]
        values = json_matrix(loss if isinstance(loss, list) else [loss], "loss", name, nulls=True)[0]
        parsed.supplied["loss"] = (values, f'"loss" in {name}')
    if "lse" in document:  # N numbers, one per row (a bare number for one row), as the report writes them
        lse = document["lse"]
        values = json_matrix([lse] if is_number(lse) or lse is None else lse, "lse", name, nulls=True)
        if values.shape[0] != 1:
            raise InputError(f"{name}: lse: expected a flat list of N numbers, one per row, got {values.shape[0]} "
                             "rows of them")
        parsed.supplied["lse"] = (values[0], f'"lse" in {name}')
    return parsed
