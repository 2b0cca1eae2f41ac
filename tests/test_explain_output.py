"""`gradcheck explain` writes a wide derivation in a few joined writes (commands/explain.py), not line by line
(the loss modules hand one string per line: 100,000 writes at 50,257 classes) nor as one copy of the whole text."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest

from gradcheck_cli.api.explaining import explain
from gradcheck_cli.commands import explain as command


class _CountingOut(io.StringIO):
    """stdout that counts its writes and the longest one."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.longest = 0

    def write(self, text: str) -> int:
        self.writes += 1
        self.longest = max(self.longest, len(text))
        return super().write(text)


@pytest.mark.parametrize("classes", [4, 3000])
def test_the_derivation_is_written_whole_in_a_few_writes(monkeypatch, classes):
    """Protects the writer: the text is the derivation's own, line for line; it takes two writes per
    WRITTEN_TOGETHER blocks (never one per line), and with runs of a few blocks no write is the whole text."""
    rng = np.random.default_rng(4)
    explained = explain(rng.standard_normal((1, classes)) * 3, labels=[1])
    monkeypatch.setattr(command, "WRITTEN_TOGETHER", 3)
    out = _CountingOut()
    monkeypatch.setattr(sys, "stdout", out)
    command._print(explained, "never")
    assert out.getvalue() == explained.text + "\n"
    runs = -(-len(explained.blocks) // 3)
    assert out.writes == 2 * runs
    if classes > 100:  # a wide row: a line per class, so the whole text is far longer than any one write
        assert len(explained.lines) > 4 * classes
        assert out.longest < len(out.getvalue()) / 2


def test_a_run_of_long_blocks_is_written_block_by_block(monkeypatch):
    """Protects the memory bound of the writer: a run holding more than JOINED_CHARACTERS is not joined (at
    50,257 classes the steps' blocks are a few MB each), so no write is longer than the longest block."""
    rng = np.random.default_rng(5)
    explained = explain(rng.standard_normal((1, 3000)) * 3, labels=[1])
    monkeypatch.setattr(command, "JOINED_CHARACTERS", 1000)
    out = _CountingOut()
    monkeypatch.setattr(sys, "stdout", out)
    command._print(explained, "never")
    assert out.getvalue() == explained.text + "\n"
    assert out.longest == max(map(len, explained.blocks)) < len(out.getvalue()) / 2
