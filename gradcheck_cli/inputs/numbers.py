"""Numbers, class indices and rows as a user writes them, read exactly or refused with where and why.

Positions are counted from 0 and written as indices, `--logits[1][2]` (the second --logits, its third value),
`--labels[0]`, as the JSON paths of a file's errors (`logits[1][2]`), the tables and the report count them.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from gradcheck_cli.errors import InputError

# Exactly what a decimal number looks like: no underscores, no hex, no 'nan' or 'inf' (float() takes all).
NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\Z", re.ASCII)
_INTEGER = re.compile(r"[+-]?\d+\Z", re.ASCII)
NON_FINITE = re.compile(r"[+-]?(?:nan|inf|infinity)\Z", re.IGNORECASE)
_SEPARATORS = re.compile(r"[,\s]+")
# Class indices beyond this are certainly out of range, and would not fit the int64 arrays that hold them.
LARGEST_LABEL = 2**63


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




# Beyond this the spacing of float64 at z (2.2e-16 |z|) is larger than any accurate finite-difference step,
# and z - max(z) can overflow: such a logit cannot be checked, so it is refused. Real logits stay far below.
LARGEST_LOGIT = 1e9


def check_logit_range(logits: np.ndarray, locate: Callable[[int], str]) -> None:
    # Two reductions decide the usual case without an |z| array (a NaN fails both: looked for below, as ever).
    if logits.size == 0 or (logits.min() >= -LARGEST_LOGIT and logits.max() <= LARGEST_LOGIT):
        return
    huge = np.argwhere(np.abs(logits) > LARGEST_LOGIT)
    if huge.size:
        n, c = (int(i) for i in huge[0])
        raise InputError(
            f"{locate(n)}: logit {float(logits[n, c])!r} of class {c} is beyond ±{LARGEST_LOGIT:g}; finite "
            "differences cannot resolve it in float64: shift or scale the logits (softmax ignores a shift)"
        )

