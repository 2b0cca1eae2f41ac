"""The JSON report: one strict JSON document (no NaN or Infinity tokens), valid against schema.json.

It is written as it goes: the head (settings, checks, worst rows, notes) from Report.to_dict without the
per-row arrays, then each array a block of rows at a time, so writing a --full report of any size costs the
memory of one block. The text is byte for byte json.dumps(report.to_dict()), numbers in Python's repr.

Formatting numbers is most of the cost of a big document (Python's float repr takes ~1 us a number on a
2-core VM: 13 s for the 13 million numbers of 100,000 x 10 with --full). When the optional orjson is
installed, arrays of documents over FAST_ABOVE numbers and ndjson rows are formatted by it, 10-15 times
faster; it spells some numbers differently (1e-5 for 1e-05, 0.00001 for 1e-05) but every number still
reads back as the same float. What the default limits keep is under FAST_ABOVE, so those documents never
depend on it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from gradcheck_cli.report import Report, finite_or_none

if TYPE_CHECKING:
    from gradcheck_cli.terminal import Output

# Numbers formatted at a time (about 1.5 MB of text): what writing a report of any size holds in memory.
BLOCK_NUMBERS = 1 << 16
# Documents with more numbers in their arrays than this are formatted by orjson when it is installed: the
# default limits keep at most ~1,060,000 (runner.FULL_LIMIT logits and their Jacobians), so only --full does.
FAST_ABOVE = 2 << 20
_LOSS_PLACE = "gradcheck: the row losses go here"


def render_json(report: Report) -> str:
    """The whole document as one string (for small reports: the summaries ndjson ends with)."""
    return "".join(json_pieces(report))


def write(report: Report, out: Output, color: str, quiet: bool) -> None:
    out.write(lambda: write_pieces(sys.stdout, json_pieces(report)))


def write_pieces(stream: IO[str], pieces: Iterator[str]) -> None:
    for piece in pieces:
        stream.write(piece)
    stream.write("\n")


def json_pieces(report: Report) -> Iterator[str]:
    """The document in pieces: the head, then each per-row array block by block, in to_dict's key order."""
    import json  # here, not at the top: start-up pays for it only when JSON is used

    rows_loss = isinstance(report.loss, np.ndarray) and report.loss.ndim > 0
    head = replace(report, probabilities=None, jacobian=None, analytic_gradient=None, numeric_gradient=None, lse=None,
                   loss=None if rows_loss else report.loss, supplied={}, impl={}).to_dict()
    head["arrays"] = report.full
    if rows_loss:
        head["loss"] = _LOSS_PLACE
    # allow_nan=False: a NaN that slipped past finite_or_none is a bug, and must not become invalid JSON.
    text = json.dumps(head, allow_nan=False)
    if report.full:
        text = text[:-1]  # reopened for the arrays, which come after every other field
    arrays = [report.probabilities, report.jacobian, report.analytic_gradient, report.numeric_gradient]
    users = [value for _, values in report.users() for value in values.values()]
    numbers = sum(array.size for array in [report.loss, report.lse, *arrays, *users] if isinstance(array, np.ndarray))
    encode = json_text if numbers <= FAST_ABOVE else fast_json_text()
    before, _, after = text.partition(json.dumps(_LOSS_PLACE)) if rows_loss else (text, "", "")
    yield before
    if rows_loss:
        assert isinstance(report.loss, np.ndarray)
        yield from array_pieces(report.loss, encode)
        yield after
    if report.full:
        keys = [', "probabilities": ', ', "jacobian": ', ', "gradient": {"analytic": ', ', "numeric": ']
        if report.lse is not None:  # after the probabilities, as to_dict places it
            keys.insert(1, ', "lse": ')
            arrays.insert(1, report.lse)
        for key, array in zip(keys, arrays, strict=True):
            yield key
            yield from array_pieces(array, encode) if array is not None else ["null"]
        yield from _users_pieces(report, encode)
        yield "}"


def _users_pieces(report: Report, encode: Callable[[np.ndarray], str]) -> Iterator[str]:
    """The user's values, in to_dict's order: gradient.supplied and gradient.impl, then the objects "supplied"
    and "impl" with their other quantities (a reduced loss a number, the rest arrays)."""
    import json

    for source, values in report.users():
        if "gradient" in values:
            yield f', "{source}": '
            yield from array_pieces(values["gradient"], encode)
    yield "}"
    for source, values in report.users():
        others = [(name, value) for name, value in values.items() if name != "gradient"]
        for place, (name, value) in enumerate(others):
            yield f', "{source}": {{"{name}": ' if place == 0 else f', "{name}": '
            if np.ndim(value) == 0:
                yield json.dumps(finite_or_none(value), allow_nan=False)
            else:
                yield from array_pieces(np.asarray(value), encode)
        if others:
            yield "}"


def array_pieces(array: np.ndarray, encode: Callable[[np.ndarray], str]) -> Iterator[str]:
    """An N x ... array as JSON text a block of rows at a time; the whole is json.dumps(finite_or_none(array)).
    A row of more than a block (a wide row's C x C Jacobian: 400 million numbers at 20,000 classes) is
    written the same way, its own rows a block at a time: never one row's text at once."""
    per_row = max(1, int(np.prod(array.shape[1:])))
    if per_row > BLOCK_NUMBERS:
        yield "["
        for row in range(array.shape[0]):
            if row:
                yield ", "
            yield from array_pieces(array[row], encode)
        yield "]"
        return
    step = max(1, BLOCK_NUMBERS // per_row)
    yield "["
    for start in range(0, array.shape[0], step):
        if start:
            yield ", "
        yield encode(array[start:start + step])[1:-1]
        _release(array, start + step)
    yield "]"


def json_text(array: np.ndarray) -> str:
    """JSON text of an array as json.dumps writes it, every non-finite value as null."""
    import json

    return json.dumps(finite_or_none(array), allow_nan=False)


def orjson_module() -> Any:
    """The optional orjson module (`pip install gradcheck[fast]`), or None when it is not installed."""
    import importlib

    try:
        return importlib.import_module("orjson")
    except ImportError:
        return None


def fast_json_text() -> Callable[[np.ndarray], str]:
    """orjson's json_text when it is installed (with json.dumps's separators), else json_text itself."""
    orjson = orjson_module()
    if orjson is None:
        return json_text

    def encode(array: np.ndarray) -> str:
        # orjson writes NaN and infinities as null, like finite_or_none; float32 values go through float64
        # so that each number is the one the standard path prints.
        values = np.ascontiguousarray(array, dtype=np.float64)
        text: bytes = orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY)
        return text.replace(b",", b", ").decode("ascii")

    return encode


def _release(array: np.ndarray, rows: int) -> None:
    """Let go of the pages of a mapped array (runner.py's --full spill) once written: memory stays a block's.
    The array may be a view anywhere in the map (one row of a Jacobian): its place is counted from the map's
    first byte, and everything before its written rows goes."""
    import mmap

    mapping = getattr(array, "_mmap", None)  # np.memmap's own map of the file, if the array is one
    if mapping is None or not hasattr(mmap, "MADV_DONTNEED"):
        return
    first = np.frombuffer(mapping, dtype=np.uint8, count=1).ctypes.data
    done = array.ctypes.data - first + min(rows, array.shape[0]) * array.strides[0]
    done -= done % mmap.PAGESIZE
    if done > 0:
        mapping.madvise(mmap.MADV_DONTNEED, 0, done)
