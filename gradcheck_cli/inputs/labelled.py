"""How many rows of an opened input carry one label, before any is checked: torch's default ignore_index (-100)
is taken only where a row has it, and counted, for an input read in chunks as for one read whole.

A chunked tensor file's labels are N integers, counted in a pass costing little beside the logits. A chunked
text file is first searched for the label as written ("-100": one scan of its bytes at memory speed, nothing
parsed); only a file where that text appears (in a label, or in a logit such as -100.5) is parsed once more to
count its rows so labelled. A label -100 written otherwise (-1e2) is not looked for: such a file is read as if
it had none, and that row is then refused, naming --ignore-index.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from gradcheck_cli.inputs import source

if TYPE_CHECKING:
    from gradcheck_cli.inputs.gather import Input

_SCAN_BYTES = 1 << 20  # the block a text file is searched in for the label


def count_label(opened: Input, label: int) -> int:
    """The rows of the whole input whose class label is `label` (0 when it has targets rather than labels)."""
    if opened.whole is not None:
        return 0 if opened.whole.labels is None else int(np.count_nonzero(opened.whole.labels == label))
    assert opened.chunked is not None
    if opened.plan is not None:
        return opened.plan.count_label(opened.chunked, label)
    if not _written_in(opened.chunked, str(label).encode()):
        return 0
    counted = 0
    for parsed in opened.chunked.reader.pieces(source.text_blocks(opened.chunked, opened.chunk_bytes),
                                               opened.chunked.name):
        counted += sum(int(np.count_nonzero(given.values == label)) for given in parsed.answers if given.are_labels)
    return counted


def _written_in(text_file: source.Source, written: bytes) -> bool:
    """Whether the file's bytes hold `written` anywhere (strict UTF-8: the text is those bytes), read a block at a
    time so that memory stays bounded (a memory map would count the whole file as resident)."""
    offset, carried = 0, b""
    while block := os.pread(text_file.descriptor, _SCAN_BYTES, offset):
        if written in carried + block[: len(written) - 1] or written in block:
            return True
        carried, offset = block[-(len(written) - 1):], offset + len(block)
    return False
