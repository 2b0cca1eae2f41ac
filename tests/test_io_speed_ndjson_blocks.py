"""ndjson rows are formatted a block of about BLOCK_BYTES at a time (render/ndjson_rows.py): a checked batch
of 100,000 rows formatted at once spends twice as long cutting and joining as in cache-sized blocks. These
tests hold the blocks to their size and the records to the bytes the whole-batch formatting wrote.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from gradcheck_cli.batch import Batch
from gradcheck_cli.checks.rows import check_rows
from gradcheck_cli.numerics import differences
from gradcheck_cli.numerics.losses import accepted_kind
from gradcheck_cli.render import ndjson_rows
from gradcheck_cli.settings import Settings


def _checked(rows: int, classes: int, lines: bool) -> tuple[Batch, object]:
    rng = np.random.default_rng(rows + classes)
    logits = rng.standard_normal((rows, classes)) * 3
    labels = rng.integers(0, classes, rows)
    row_lines = np.arange(2, 2 * rows + 2, 2) if lines else None
    batch = Batch(logits, labels, np.eye(classes)[labels], row_lines=row_lines)
    resolved = differences.resolve(Settings())
    return batch, check_rows(batch, resolved, accepted_kind(resolved), 1.0)


def _whole_batch(encoder: str, start: int, batch: Batch, part: object, monkeypatch) -> str:
    """The records as one block of every row: what write_rows wrote before it wrote in blocks."""
    with monkeypatch.context() as patched:
        patched.setattr(ndjson_rows, "_blocks", lambda rows, classes: [slice(0, rows)])
        written = io.StringIO()
        ndjson_rows.write_rows(written, start, batch, part)  # type: ignore[arg-type]
    return written.getvalue()


@pytest.mark.parametrize("lines", [True, False])
@pytest.mark.parametrize("encoder", ["json", "orjson"])
def test_blocks_write_the_whole_batchs_bytes(encoder: str, lines: bool, monkeypatch) -> None:
    """Protects the output's bytes: records written block by block are the whole batch's records, joined, for
    both writers, with and without file lines, across several blocks and a short last one."""
    if encoder == "json":
        monkeypatch.setattr(ndjson_rows, "orjson_module", lambda: None)
    else:
        pytest.importorskip("orjson")
    batch, part = _checked(2_000, 6, lines)
    assert len(ndjson_rows._blocks(batch.rows, batch.classes)) > 2
    written = io.StringIO()
    ndjson_rows.write_rows(written, 40, batch, part)  # type: ignore[arg-type]
    assert written.getvalue() == _whole_batch(encoder, 40, batch, part, monkeypatch)
    records = [json.loads(line) for line in written.getvalue().splitlines()]
    assert [record["row"] for record in records] == list(range(40, 2_040))
    assert [record["line"] for record in records] == (list(range(2, 4_002, 2)) if lines else [None] * 2_000)


def test_blocks_are_bounded_and_cover_every_row_once(monkeypatch) -> None:
    """Protects the speed-up: a big batch is never formatted at once; each block's records stay within
    twice BLOCK_BYTES (the estimate of a record's size is rough), and the blocks cover every row in order."""
    pytest.importorskip("orjson")
    batch, part = _checked(4_000, 10, True)
    sizes: list[tuple[int, int]] = []
    encode = ndjson_rows._orjson_records

    def measured(orjson: object, block: ndjson_rows._Rows, values: list[np.ndarray]) -> bytes:
        records = encode(orjson, block, values)
        sizes.append((int(block.numbers[0]), len(records)))
        return records

    monkeypatch.setattr(ndjson_rows, "_orjson_records", measured)
    ndjson_rows.write_rows(io.StringIO(), 0, batch, part)  # type: ignore[arg-type]
    assert len(sizes) > 1
    assert all(size <= 2 * ndjson_rows.BLOCK_BYTES for _, size in sizes)
    firsts = [first for first, _ in sizes]
    assert firsts == sorted(firsts) and firsts[0] == 0


@pytest.mark.parametrize("classes", [1, 10, 50_000, 300_000])
def test_a_block_has_at_least_one_row(classes: int) -> None:
    """Protects wide rows: a row wider than a block is a block of its own, never skipped."""
    blocks = ndjson_rows._blocks(3, classes)
    assert [row for block in blocks for row in range(block.start, block.stop)] == [0, 1, 2]
