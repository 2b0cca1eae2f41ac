"""The input-format registry: each format is one module here and one line below.

A text format module offers sniff(head) -> bool (does this text look like me?) and pieces(blocks, name), which
turns blocks of text (first line number, text) into Parsed pieces of rows. A binary format (a tensor file)
offers sniff(first) on the file's first bytes (its magic number), open_tensors(source, keys), the named arrays
it holds (see tensors.py), and pieces(source, plan), the same Parsed pieces cut from them in chunks of rows.
Kept free of numpy, so the command line builds its --input-format choice from FORMATS at start-up.
"""

import importlib
from types import ModuleType

from gradcheck_cli.batch import SUPPLIED_KEYS


class InputFormat:
    """A format's module, the file name endings that name it (before any sniffing), whether its rows can be read
    in chunks (else the input is read whole), its place in sniffing (the most specific, lowest, first; the
    catch-all last), and whether it is a tensor file (read as arrays from its bytes, never decoded as text).
    A plain class: a NamedTuple costs every run's start-up some 0.2 ms to make."""

    __slots__ = ("binary", "module", "sniff_order", "streams", "suffixes")

    def __init__(self, module: str, suffixes: tuple[str, ...], streams: bool, sniff_order: int,
                 binary: bool = False) -> None:
        self.module, self.suffixes, self.streams, self.sniff_order, self.binary = (module, suffixes, streams,
                                                                                   sniff_order, binary)


FORMATS = {
    "csv": InputFormat("gradcheck_cli.inputs.csv_format", (".csv", ".txt"), streams=True, sniff_order=2),
    "json": InputFormat("gradcheck_cli.inputs.json_format", (".json",), streams=False, sniff_order=1),
    "jsonl": InputFormat("gradcheck_cli.inputs.jsonl_format", (".jsonl", ".ndjson"), streams=True, sniff_order=0),
    "npy": InputFormat("gradcheck_cli.inputs.npy_format", (".npy",), streams=True, sniff_order=0, binary=True),
    "npz": InputFormat("gradcheck_cli.inputs.npz_format", (".npz",), streams=False, sniff_order=2, binary=True),
    "safetensors": InputFormat("gradcheck_cli.inputs.safetensors_format", (".safetensors",), streams=True,
                               sniff_order=1, binary=True),
    "pt": InputFormat("gradcheck_cli.inputs.pt_format", (".pt", ".pth"), streams=False, sniff_order=3, binary=True),
}
FORMAT_NAMES = tuple(FORMATS)
# What a tensor file may hold, by gradcheck's name; `--key NAME=KEY` says which key of the file holds NAME.
TENSOR_NAMES = ("logits", "labels", "targets", "teacher_logits", *SUPPLIED_KEYS, "grad_output")


def reader(name: str) -> ModuleType:
    """The module that reads format `name`."""
    return importlib.import_module(FORMATS[name].module)
