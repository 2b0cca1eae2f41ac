"""The input-format registry: each format is one module here and one line below.

A format module offers sniff(head) -> bool (does this text look like me?) and pieces(blocks, name), which
turns blocks of text (first line number, text) into Parsed pieces of rows. Kept free of numpy, so the
command line builds its --input-format choice from FORMATS at start-up.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import NamedTuple


class InputFormat(NamedTuple):
    module: str
    suffixes: tuple[str, ...]  # file name endings that name this format (before any sniffing)
    streams: bool  # rows can be read in chunks (else the input is read whole)
    sniff_order: int  # formats are sniffed from the most specific (lowest) to the catch-all


FORMATS = {
    "csv": InputFormat("gradcheck_cli.inputs.csv_format", (".csv", ".txt"), streams=True, sniff_order=2),
    "json": InputFormat("gradcheck_cli.inputs.json_format", (".json",), streams=False, sniff_order=1),
    "jsonl": InputFormat("gradcheck_cli.inputs.jsonl_format", (".jsonl", ".ndjson"), streams=True, sniff_order=0),
}
FORMAT_NAMES = tuple(FORMATS)


def reader(name: str) -> ModuleType:
    """The module that reads format `name`."""
    return importlib.import_module(FORMATS[name].module)
