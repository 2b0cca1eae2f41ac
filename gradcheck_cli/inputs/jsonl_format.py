"""JSON Lines: one sample per line, {"logits": [...], "label": k} or {"logits": [...], "targets": [...]}, read
in blocks of lines so a file of any size streams."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from gradcheck_cli.errors import InputError
from gradcheck_cli.inputs.json_format import is_number, json_matrix, load_json, shown
from gradcheck_cli.inputs.numbers import LARGEST_LABEL
from gradcheck_cli.inputs.validate import Parsed, line_answers


def sniff(head: str) -> bool:
    """Two or more lines that each hold one whole object: JSON Lines, not one (pretty-printed) object."""
    lines = [line.strip() for line in head.lstrip().splitlines()[:3] if line.strip()]
    return len(lines) > 1 and all(line.startswith("{") and line.endswith("}") for line in lines)


def pieces(blocks: Iterator[tuple[int, str]], name: str) -> Iterator[Parsed]:
    """Each block's samples as logits with labels or targets; every line has the same width and kind."""
    width: int | None = None
    with_labels: bool | None = None
    for first, text in blocks:
        rows, answers, lines = [], [], []
        for k, line in enumerate(text.split("\n")):
            if not line.strip():
                continue
            number = first + k
            logits, answer = strict_json_line(line, f"{name}:{number}")
            width = len(logits) if width is None else width
            if len(logits) != width:
                raise InputError(f"{name}:{number}: ragged logits: {len(logits)} values, the first row has {width}")
            is_label = isinstance(answer, int)
            with_labels = is_label if with_labels is None else with_labels
            if is_label != with_labels:
                raise InputError(f"{name}:{number}: mixes labels and targets; give one kind in every line")
            if isinstance(answer, list) and len(answer) != width:
                raise InputError(f"{name}:{number}: targets have {len(answer)} classes, the logits {width}")
            rows.append(logits)
            answers.append(answer)
            lines.append(number)
        if not rows:
            continue
        numbers = np.array(lines, dtype=np.int64)
        kind = "labels" if with_labels else "targets"
        values = np.array(answers, dtype=np.int64 if with_labels else np.float64)
        yield Parsed(logits=np.array(rows, dtype=np.float64), row_lines=numbers,
                     answers=[line_answers(values, bool(with_labels), f"the {kind} of {name}", name, numbers)])
    if width is None:
        raise InputError(f"{name}: no data rows")


def strict_json_line(line: str, where: str) -> tuple[list[float], int | list[float]]:
    """One JSON Lines sample: {"logits": [...], "label": k} (or "labels": k) or {"logits": [...], "targets": [...]}."""
    document = load_json(line, where)
    if not isinstance(document, dict):
        raise InputError(f'{where}: expected an object such as {{"logits": [...], "label": 0}}')
    unknown = sorted(set(document) - {"logits", "label", "labels", "targets"})
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r}; expected logits and label or targets")
    if "logits" not in document:
        raise InputError(f'{where}: no "logits" key')
    logits = json_matrix(document["logits"], "logits", where)
    if logits.shape[0] != 1:
        raise InputError(f"{where}: logits: one sample per line, a flat list of numbers")
    given = [key for key in ("label", "labels", "targets") if key in document]
    if len(given) != 1:
        raise InputError(f'{where}: give exactly one of "label" or "targets"')
    if given[0] == "targets":
        targets = json_matrix(document["targets"], "targets", where)
        return logits[0].tolist(), targets[0].tolist()
    label = document[given[0]]
    if isinstance(label, list) and len(label) == 1:
        label = label[0]
    if not (is_number(label) and float(label).is_integer()):
        raise InputError(f"{where}: {given[0]}: expected an integer class index, got {shown(label)}")
    if abs(label) >= LARGEST_LABEL:
        raise InputError(f"{where}: {given[0]}: {label} is far too large for a class index")
    return logits[0].tolist(), int(label)

