"""Counting a block's lines on its bytes, fast: a streamed file's line numbers and the rows of the mean's divisor."""

from __future__ import annotations

import re

# A blank (or whitespace-only) line, found in one pass in C; most files have none.
_BLANK_LINE = re.compile(rb"\n[ \t\f\v]*\n")
# Blocks from this size up have their newlines counted by numpy (below it, bytes.count is as fast).
_NUMPY_COUNT_BYTES = 64 << 10


def data_lines(block: bytes) -> int:
    """The block's lines that are neither blank nor '#' comments (its newlines made '\\n')."""
    lines = count_newlines(block) + (not block.endswith(b"\n"))
    if b"#" in block or _has_blank_line(block):
        lines -= _skipped(block.splitlines())
    return lines


def count_newlines(block: bytes) -> int:
    """How many '\n' the block holds. numpy compares a MB of bytes in a fifth of the time bytes.count takes
    (0.28 ms vs 1.24 ms here), and a streamed file is counted twice: its line numbers and the mean's rows."""
    if len(block) < _NUMPY_COUNT_BYTES:
        return block.count(b"\n")
    import numpy as np  # a big file is being read: numpy is loaded already

    return int(np.count_nonzero(np.frombuffer(block, dtype=np.uint8) == ord("\n")))


def _has_blank_line(block: bytes) -> bool:
    """Whether a line of the block is blank or whitespace only (after the newline before it, if any).

    Without a space, tab, form feed or vertical tab in the block (four memchr scans, 0.03 ms a MB), such
    a line is an empty one: two newlines in a row or one first. Only a block holding whitespace is searched
    with the regular expression (1.5 ms a MB, as slow as the rest of the count together)."""
    if any(space in block for space in (b" ", b"\t", b"\f", b"\v")):
        return _BLANK_LINE.search(b"\n" + block) is not None
    if block.startswith(b"\n"):
        return True
    if len(block) < _NUMPY_COUNT_BYTES:
        return b"\n\n" in block
    import numpy as np

    ends = np.frombuffer(block, dtype=np.uint8) == ord("\n")
    return bool((ends[1:] & ends[:-1]).any())  # b"\n\n" in block takes 1.3 ms a MB: newlines are frequent


def _skipped(lines: list[bytes]) -> int:
    """How many of these lines are blank or '#' comments."""
    return sum(1 for line in lines if not line.strip() or line.lstrip().startswith(b"#"))
