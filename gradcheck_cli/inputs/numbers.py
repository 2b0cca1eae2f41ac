"""Numbers, class indices and rows as a user writes them, read exactly or refused with where and why.

Positions are counted from 0 and written as indices, `--logits[1][2]` (the second --logits, its third value),
`--labels[0]`, as the JSON paths of a file's errors (`logits[1][2]`), the tables and the report count them.
"""

from __future__ import annotations

import re

import numpy as np

from gradcheck_cli.errors import InputError
from gradcheck_cli.inputs.limits import LARGEST_LABEL

# Exactly what a decimal number looks like: no underscores, no hex, no 'nan' or 'inf' (float() takes all).
NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\Z", re.ASCII)
_INTEGER = re.compile(r"[+-]?\d+\Z", re.ASCII)
NON_FINITE = re.compile(r"[+-]?(?:nan|inf|infinity)\Z", re.IGNORECASE)
_SEPARATORS = re.compile(r"[,\s]+")


def parse_number(text: str, where: str) -> float:
    token = text.strip()
    if NUMBER.match(token):
        value = float(token)
        if np.isfinite(value):
            return value
        raise InputError(f"{where}: {token!r} overflows float64")
    if NON_FINITE.match(token):
        raise InputError(f"{where}: {token!r} is not finite; logits and targets must be finite numbers")
    if not token:
        raise InputError(f"{where}: empty value where a number was expected")
    raise InputError(f"{where}: {token!r} is not a number")


def parse_label(text: str, where: str) -> int:
    token = text.strip()
    value: int | None = None
    if _INTEGER.match(token):
        value = int(token)
    elif NUMBER.match(token) and float(token).is_integer():
        value = int(float(token))
    if value is not None:
        if abs(value) >= LARGEST_LABEL:
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
    return [parse_number(token, f"{where}[{k}]") for k, token in enumerate(tokens)]


def parse_labels(text: str, where: str) -> list[int]:
    tokens = _split(text)
    if not tokens:
        raise InputError(f"{where}: no class indices in {text!r}")
    return [parse_label(token, f"{where}[{k}]") for k, token in enumerate(tokens)]


def rows_to_matrix(rows: list[list[float]], what: str, where_row: list[str]) -> np.ndarray:
    widths = {len(row) for row in rows}
    if len(widths) > 1:
        first = len(rows[0])
        bad = next(k for k, row in enumerate(rows) if len(row) != first)
        raise InputError(
            f"{where_row[bad]}: ragged {what}: this row has {len(rows[bad])} values, the first has {first}"
        )
    return np.array(rows, dtype=np.float64)


def rows_from_args(texts: tuple[str, ...], option: str) -> np.ndarray:
    wheres = [f"{option}[{k}]" for k in range(len(texts))]
    rows = [parse_row(text, where) for text, where in zip(texts, wheres, strict=True)]
    return rows_to_matrix(rows, option.lstrip("-"), wheres)
