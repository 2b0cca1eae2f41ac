"""JSON Lines read fast (issue 13): a block whose lines are bare objects is joined by one str.replace and
decoded by one loads call (orjson's when installed), its columns made arrays by np.fromiter. None of that
may change what is read: every mix of odd lines gives the arrays, lines and errors the strict line-by-line
reader gives, with either decoder, whether the block takes the tight path or the stripped one.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from gradcheck_cli.errors import InputError
from gradcheck_cli.inputs import jsonl_format

GOOD = '{"logits": [1.5, -2, 3e2], "label": 2}'
LINES = [
    GOOD, ' ' + GOOD, GOOD + '  ', '{"logits":[1,2,3],"label":0}', '{"logits": [1, 2, 3], "label": 2.0}',
    '{"logits": [1, 2, 3], "targets": [0.2, 0.3, 0.5]}', '{"logits": [1, 2, 3], "targets": 5}',
    '{"logits": [1, 2, 3], "targets": [0.2, 0.8]}', '{"logits": [1, 2, 3], "targets": [[0.2, 0.3, 0.5]]}',
    '{"logits": [1, 2, 3], "teacher_logits": [0, 1, 2]}', '{"logits": [1, 2, 3], "label": 0, "lse": 3.5}',
    '{"logits": [1, 2, 3], "label": 0, "lse": [3.5]}', '{"logits": [1, 2, 3], "label": 18446744073709551616}',
    '{"logits": [18446744073709551616, 2, 3], "label": 0}', '{"logits": [1, 2, 1e400], "label": 0}',
    '{"logits": [1, 2, 3], "label": [1]}', '{"logits": [[1, 2, 3]], "label": 0}', '{"logits": [1, 2], "label": 0}',
    '{"logits": [1, 2, 3], "label": 0}, {"logits": [1, 2, 3], "label": 0}', '{"logits": [1, 2,', '3], "label": 0}',
    '{"logits": [1, 2, 3], "label": 0}{"logits": [1, 2, 3], "label": 0}', '{"logits": [{}', '{}], "label": 0}',
    '{"logits": [1, 2, 3], "label": "1"}', '{"logits": ["1", 2, 3], "label": 0}', '{"logits": [], "label": 0}',
    '{"logits": 3, "label": 0}', '', '   ', '{}', '{"logits": [1, 2, 3], "label": 1}\r',
]


def read(text: str, chunk_lines: int, monkeypatch, how: str) -> list | str:
    """Every piece read from the text cut into blocks of chunk_lines lines: arrays, lines, kinds, lse (or
    the error). `how` is "json" or "orjson" (the decoder of the fast way) or "strict" (line by line only)."""
    lines = text.split("\n")
    blocks = [(1 + k, "\n".join(lines[k:k + chunk_lines])) for k in range(0, len(lines), chunk_lines)]
    with monkeypatch.context() as patch:
        if how == "strict":
            patch.setattr(jsonl_format, "_plain_block", lambda *args: None)
        elif how == "json":
            patch.setattr(jsonl_format, "_loads", lambda: json.loads)
        try:
            parsed = list(jsonl_format.pieces(iter(blocks), "f.jsonl"))
        except InputError as error:
            return str(error)
    return [(piece.logits.tolist(), piece.row_lines.tolist(),
             None if piece.teacher is None else piece.teacher.values.tolist(),
             [(answer.values.tolist(), answer.values.dtype.str, answer.are_labels) for answer in piece.answers],
             {key: value[0].tolist() for key, value in piece.supplied.items()}) for piece in parsed]


@pytest.fixture(params=["json", "orjson"])
def decoder(request):
    if request.param == "orjson":
        pytest.importorskip("orjson")
    return request.param


@pytest.mark.parametrize("line", LINES)
@pytest.mark.parametrize("chunk_lines", [1, 3])
def test_each_kind_of_line_reads_as_the_strict_reader_reads_it(line, chunk_lines, decoder, monkeypatch):
    """One odd line among good ones, in the middle and first: the same result as the strict reader."""
    for text in ("\n".join([GOOD, line, GOOD, ""]), "\n".join([line, GOOD, GOOD])):
        assert read(text, chunk_lines, monkeypatch, decoder) == read(text, chunk_lines, monkeypatch, "strict")


@hypothesis_settings(max_examples=120, deadline=None)
@given(st.lists(st.sampled_from(LINES), min_size=1, max_size=10), st.integers(1, 5), st.booleans())
def test_any_mix_of_lines_reads_as_the_strict_reader_reads_it(lines, chunk_lines, ended):
    """Random mixes in random blocks, the last line ended or not, with both decoders: never a difference."""
    text = "\n".join(lines) + ("\n" if ended else "")
    with pytest.MonkeyPatch.context() as monkeypatch:
        strict = read(text, chunk_lines, monkeypatch, "strict")
        for how in ("json", "orjson") if jsonl_format._loads() is not json.loads else ("json",):
            assert read(text, chunk_lines, monkeypatch, how) == strict


def test_a_tight_block_is_joined_without_a_line_loop():
    """Bare objects, one a line, take the tight path (one replace); a line with spaces or a blank line does not."""
    assert jsonl_format._tight_lines(f"{GOOD}\n{GOOD}\n") == (f"{GOOD},{GOOD}", 2)
    assert jsonl_format._tight_lines(f"{GOOD}\n\n{GOOD}\n") is None
    assert jsonl_format._tight_lines(f"{GOOD} \n{GOOD}\n") is None
    assert jsonl_format._tight_lines('{"logits": [1,\n2], "label": 0}\n') is None


def test_a_big_tight_block_reads_every_row_and_line(monkeypatch, decoder):
    """5,000 rows in one block: the values are the ones written (repr round-trips) and the lines 1..5,000."""
    rng = np.random.default_rng(7)
    logits, labels = rng.standard_normal((5000, 4)) * 5, rng.integers(0, 4, 5000)
    text = "".join(f'{{"logits": {json.dumps(row)}, "label": {label}}}\n'
                   for row, label in zip(logits.tolist(), labels.tolist(), strict=True))
    pieces = read(text, 10_000, monkeypatch, decoder)
    assert isinstance(pieces, list) and len(pieces) == 1
    read_logits, read_lines, _, answers, _ = pieces[0]
    assert np.array_equal(read_logits, logits) and read_lines == list(range(1, 5001))
    assert answers == [(labels.tolist(), "<i8", True)]
