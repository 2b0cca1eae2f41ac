"""ndjson rows cut at one byte (render/ndjson_rows.py): the probabilities and the analytic gradient are split
at "[" with the "], " that closes each row kept in its piece, and the ends of every array's text are trimmed
from its first and last pieces instead of copying the whole text. These tests hold the records to what the
encoders write for each record on its own, byte for byte, at the edges the trimming meets (a block of one row,
one class, non-finite values, several blocks), for both encoders and both kinds of stream.
"""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest

from gradcheck_cli.batch import Batch
from gradcheck_cli.checks.rows import check_rows
from gradcheck_cli.checks.runner import row_lse
from gradcheck_cli.numerics import differences
from gradcheck_cli.numerics.losses import accepted_kind
from gradcheck_cli.render import ndjson_rows
from gradcheck_cli.settings import Settings


def _checked(settings: Settings, rows: int, classes: int, lines: bool, seed: int = 3) -> tuple[Batch, object]:
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((rows, classes)) * 6
    labels = rng.integers(0, classes, rows)
    batch = Batch(logits, labels, np.eye(classes)[labels], row_lines=7 + 3 * np.arange(rows) if lines else None)
    if settings.weights == (OVERFLOWING,):  # weights of 1e308 a class: losses overflow to inf, written as null
        settings = Settings(reduction="none", weights=(OVERFLOWING,) * classes)
    resolved = differences.resolve(settings)
    return batch, check_rows(batch, resolved, accepted_kind(resolved), float(rows))


def _record_values(start: int, batch: Batch, part, zero: float = -0.0) -> list[dict]:
    """Each row's record as a dict of Python values (non-finite numbers as None), in the record's key order.
    The standard library's path writes -0.0 as 0.0 (finite_or_none adds zero: 0.0); orjson's as -0.0."""

    def plain(values: np.ndarray) -> list:
        numbers = (np.asarray(values, np.float64) + zero).ravel().tolist()
        return [value if math.isfinite(value) else None for value in numbers]

    lse = row_lse(part, part.reference_loss.temperature)
    error = np.abs(part.analytic_gradient - part.numeric_gradient).max(axis=1)
    classes = part.probabilities.shape[1]
    records = []
    for row in range(batch.rows):  # the reference: one record at a time, as a reader would build it
        def vector(array: np.ndarray, row: int = row) -> list:
            return plain(array[row])

        record = {"row": start + row, "line": None if batch.row_lines is None else int(batch.row_lines[row]),
                  "loss": plain(part.row_losses[row:row + 1])[0], "probabilities": vector(part.probabilities)}
        if lse is not None:
            record["lse"] = plain(lse[row:row + 1])[0]
        record["gradient"] = {"analytic": vector(part.analytic_gradient), "numeric": vector(part.numeric_gradient)}
        record["max_abs_error"] = plain(error[row:row + 1])[0]
        assert len(record["probabilities"]) == classes
        records.append(record)
    return records


def _written(start: int, batch: Batch, part, binary: bool) -> str:
    """What write_rows writes to a text stream with a binary buffer (stdout's kind), or to one without."""
    if not binary:
        text = io.StringIO()
        ndjson_rows.write_rows(text, start, batch, part)
        return text.getvalue()
    stream = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    ndjson_rows.write_rows(stream, start, batch, part)
    stream.flush()
    return stream.buffer.getvalue().decode("ascii")


OVERFLOWING = 1e308
SETTINGS = [Settings(), Settings(loss="bce"), Settings(dtype="float32"), Settings(loss="mse"),
            Settings(reduction="none", weights=(OVERFLOWING,))]
NAMES = ["ce", "bce", "float32", "mse", "overflow"]
SHAPES = [(1, 1), (1, 4), (2, 3), (40, 5)]


@pytest.mark.parametrize("settings", SETTINGS, ids=NAMES)
@pytest.mark.parametrize(("rows", "classes"), SHAPES)
@pytest.mark.parametrize("block_rows", [1, 3, None])
def test_orjson_records_are_each_records_orjson_bytes(settings, rows, classes, block_rows, monkeypatch) -> None:
    """Protects the bytes of the fast path: every record is orjson.dumps of that record alone, byte for byte
    (with and without lse, one class, a block of one row, blocks ending short), on stdout's binary buffer
    and on a stream without one."""
    orjson = pytest.importorskip("orjson")
    if block_rows is not None:
        monkeypatch.setattr(ndjson_rows, "_blocks",
                            lambda count, width: [slice(at, min(at + block_rows, count)) for at in range(0, count, block_rows)])
    batch, part = _checked(settings, rows, classes, lines=rows % 2 == 0)
    expected = "".join(orjson.dumps(record).decode() + "\n" for record in _record_values(11, batch, part))
    assert _written(11, batch, part, binary=True) == expected
    assert _written(11, batch, part, binary=False) == expected


@pytest.mark.parametrize("settings", SETTINGS, ids=NAMES)
@pytest.mark.parametrize(("rows", "classes"), SHAPES)
@pytest.mark.parametrize("block_rows", [1, None])
def test_json_records_are_each_records_json_dumps(settings, rows, classes, block_rows, monkeypatch) -> None:
    """Protects the path without orjson: every record is json.dumps of that record alone, byte for byte."""
    monkeypatch.setattr(ndjson_rows, "orjson_module", lambda: None)
    if block_rows is not None:
        monkeypatch.setattr(ndjson_rows, "_blocks", lambda count, width: [slice(at, at + 1) for at in range(count)])
    batch, part = _checked(settings, rows, classes, lines=rows % 2 == 1)
    expected = "".join(json.dumps(record, allow_nan=False) + "\n" for record in _record_values(5, batch, part, zero=0.0))
    assert _written(5, batch, part, binary=True) == expected
