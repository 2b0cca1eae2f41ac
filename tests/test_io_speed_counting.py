"""The mean's row count of a streamed file, counted fast on its bytes (inputs/line_counts.py).

The count decides the divisor of every gradient of a --reduction mean check, so a faster count must give
exactly the number the plain one gave: these tests hold it to the plain byte-by-byte rule on blocks with
every kind of line the rule skips, at both sizes (numpy's count from 64 KB, bytes.count below).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from gradcheck_cli import pipeline
from gradcheck_cli.inputs import line_counts
from gradcheck_cli.inputs.gather import InputRequest
from gradcheck_cli.settings import Settings


def plain_data_lines(block: bytes) -> int:
    """The rule as it was written first: newlines (+1 for an unended last line), less the blank and '#'
    lines when the block has any (a blank line found by the regular expression on the block after '\\n')."""
    lines = block.count(b"\n") + (not block.endswith(b"\n"))
    if b"#" in block or re.search(rb"\n[ \t\f\v]*\n", b"\n" + block):
        lines -= sum(1 for line in block.splitlines() if not line.strip() or line.lstrip().startswith(b"#"))
    return lines


LINES = [b"1.5,2,0", b"", b"   ", b"\t", b"\x0b", b"\x0c", b"# comment", b"  # indented", b"1, 2, 0", b"3e2,-1,2"]


@hypothesis_settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(LINES), min_size=1, max_size=40), st.booleans())
def test_the_count_is_the_plain_rule(chosen, ended):
    """Every mix of data, empty, whitespace-only and comment lines, ended by a newline or not, small and
    (repeated past 64 KB) big enough for numpy: the same count as the plain rule."""
    block = b"\n".join(chosen) + (b"\n" if ended else b"")
    repeat = (64 << 10) // (len(block) + 1) + 1
    for text in (block, (block if ended else block + b"\n") * repeat + block):
        assert line_counts.data_lines(text) == plain_data_lines(text), text[:80]


@pytest.mark.parametrize("blank", [b"\n\n", b"\n \n"], ids=["empty", "spaces"])
@pytest.mark.parametrize("where", ["first", "middle", "last", "none"])
def test_a_single_blank_line_in_a_big_block_is_found(blank, where):
    """One blank line anywhere in a 1 MB block of data lines (the numpy path) is skipped, as the plain rule does."""
    data = b"1.0,2.0,3\n" * 100_000
    block = {"first": blank[1:] + data, "middle": data[:500_000] + blank[1:] + data[500_000:],
             "last": data + blank[1:], "none": data}[where]
    assert line_counts.data_lines(block) == plain_data_lines(block) == 100_000


def test_newlines_are_counted_exactly_at_every_size():
    """count_newlines equals bytes.count on both sides of the 64 KB switch, bytes 10 among every other byte."""
    rng = np.random.default_rng(3)
    for size in (0, 1, 65_535, 65_536, 65_537, 1 << 20):
        block = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        assert line_counts.count_newlines(block) == block.count(b"\n")


def test_the_streamed_mean_divides_by_the_rows(tmp_path):
    """A streamed file with blank lines and comments in its chunks: the mean's divisor is its data rows."""
    rng = np.random.default_rng(4)
    rows = [f"{a:.6f},{b:.6f},{c:.6f},{k}" for a, b, c, k in zip(*rng.standard_normal((3, 3000)),
                                                                  rng.integers(0, 3, 3000), strict=True)]
    for place in (10, 1500, 2999):
        rows[place] += "\n\n# a comment\n  \n"
    path = tmp_path / "rows.csv"
    path.write_text("z0,z1,z2,label\n" + "\n".join(rows) + "\n")
    with pipeline.open_check(InputRequest(input_path=str(path)), Settings(), chunk_bytes=4096) as job:
        assert job.input.whole is None  # read in chunks, so the count is the byte-level one
        assert pipeline.mean_divisor(job.input, job.settings) == 3000.0
