"""Where the text comes from: one input file (stdin spooled to one), its format, and its text in blocks.

Everything that reads a file goes through here, so the rules are the same whether it is read whole or in
chunks: strict UTF-8 (a BOM allowed), no NUL bytes, CR LF and lone CR read as newlines, and every error
named by file and line.
"""

from __future__ import annotations

import codecs
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType

from gradcheck_cli.errors import InputError
from gradcheck_cli.inputs import FORMATS, reader

# About this many bytes of text per chunk: a few MB of arrays, whatever the number of rows.
CHUNK_BYTES = 1 << 20
# Files up to this size are read whole; larger CSV and JSON Lines files are read in chunks.
STREAM_ABOVE_BYTES = 8 << 20
# An input read whole (JSON, or beside a labels file or --impl) may hold at most this much text: as
# numbers in memory it takes several times its size. CSV and JSON Lines files stream without a limit.
MAX_IN_MEMORY_BYTES = 512 << 20
# The longest line a format is sniffed from.
_HEAD_BYTES = 1 << 20
# A blank (or whitespace-only) line, found in one pass in C; most files have none.
_BLANK_LINE = re.compile(rb"\n[ \t\f\v]*\n")


@dataclass
class Source:
    path: str  # a real file (stdin is spooled to one first)
    name: str  # what messages call it
    format: str
    size: int

    @property
    def reader(self) -> ModuleType:
        """The format's module (see inputs/__init__.py for what it offers)."""
        return reader(self.format)

    @property
    def streams(self) -> bool:
        return FORMATS[self.format].streams


@contextmanager
def open_source(path: str, requested_format: str) -> Iterator[Source]:
    """The input as a file on disk with its format: stdin is copied to a temporary file first (in blocks)."""
    if path != "-":
        size = _size(path, path)  # first: it says what is wrong with a path that is not a readable file
        yield Source(path, path, _detect(path, path, requested_format), size)
        return
    import shutil  # only a spooled stdin needs these; start-up does not pay for them
    import tempfile

    with tempfile.NamedTemporaryFile(prefix="gradcheck-stdin-", suffix=".txt") as spool:
        shutil.copyfileobj(sys.stdin.buffer, spool, 1 << 20)
        spool.flush()
        # stdin has no file name: its format is sniffed from the text.
        yield Source(spool.name, "<stdin>", _detect(spool.name, "", requested_format), spool.tell())


def _size(path: str, name: str) -> int:
    try:
        if os.path.isdir(path):
            raise InputError(f"{name}: is a directory, not a file")
        with open(path, "rb") as handle:  # not pathlib: its import is a cost of every start-up
            return os.fstat(handle.fileno()).st_size
    except FileNotFoundError:
        raise InputError(f"{name}: no such file") from None
    except PermissionError:
        raise InputError(f"{name}: permission denied") from None
    except OSError as error:
        raise InputError(f"{name}: cannot read: {error.strerror or error}") from None


def _detect(path: str, name_for_suffix: str, requested: str) -> str:
    """The requested format; else the one the file name's ending says; else the first whose sniff accepts it."""
    if requested != "auto":
        return requested
    suffix = os.path.splitext(name_for_suffix)[1].lower()
    for format_name, spec in FORMATS.items():
        if suffix in spec.suffixes:
            return format_name
    with open(path, "rb") as handle:  # the first lines: JSON Lines is told from JSON by its second line
        head = b"".join(handle.readline(_HEAD_BYTES) for _ in range(3)).decode("utf-8", errors="replace")
    for format_name in sorted(FORMATS, key=lambda known: FORMATS[known].sniff_order):
        if reader(format_name).sniff(head):
            return format_name
    return "csv"


def _byte_blocks(path: str, chunk_bytes: int | None) -> Iterator[bytes]:
    """The file in blocks of about chunk_bytes (None: whole) that end on a line boundary, newlines made '\\n'."""
    with open(path, "rb") as handle:
        while block := handle.read(-1 if chunk_bytes is None else chunk_bytes):
            block += handle.readline()  # a '\\r\\n' or a UTF-8 character is never split between blocks
            if b"\r" in block:  # as text mode's universal newlines: CR LF and a lone CR end a line
                block = block.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            yield block


def decode(data: bytes, name: str, first_line: int = 1) -> str:
    """Strict UTF-8 text, or an InputError naming the line (and, in a file's first block, the offset)."""
    if first_line == 1 and data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    if (nul := data.find(b"\x00")) >= 0:
        line = first_line + data.count(b"\n", 0, nul)
        raise InputError(f"{name}: binary data (a NUL byte on line {line}, offset {nul}), expected text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = first_line + data.count(b"\n", 0, error.start)
        raise InputError(f"{name}: not UTF-8 text (byte {data[error.start]:#04x} on line {line}, "
                         f"offset {error.start})") from None


def text_blocks(source: Source, chunk_bytes: int | None) -> Iterator[tuple[int, str]]:
    """(number of the first line, text ending on a line boundary) in blocks of about chunk_bytes; None: whole."""
    if chunk_bytes is None and source.size > MAX_IN_MEMORY_BYTES:
        raise InputError(
            f"{source.name}: over {MAX_IN_MEMORY_BYTES >> 20} MB to read whole; give it as CSV (with a 'label' "
            "column) or JSON Lines, without a separate labels file or --impl, and it streams in bounded memory"
        )
    number = 1
    for block in _byte_blocks(source.path, chunk_bytes):
        text = decode(block, source.name, number)
        if number == 1 and not text.strip() and len(block) == source.size:
            raise InputError(f"{source.name}: empty input")
        yield number, text
        number += text.count("\n") + (not text.endswith("\n"))
    if number == 1:
        raise InputError(f"{source.name}: empty input")


def read_text(path: str) -> tuple[str, str]:
    """The whole text of a file beside the input (a labels file, your gradient...) and its name."""
    name = "<stdin>" if path == "-" else path
    if path == "-":
        data = sys.stdin.buffer.read(MAX_IN_MEMORY_BYTES + 1)
    else:
        _size(path, name)
        with open(path, "rb") as handle:
            data = handle.read(MAX_IN_MEMORY_BYTES + 1)
    if len(data) > MAX_IN_MEMORY_BYTES:
        raise InputError(f"{name}: over {MAX_IN_MEMORY_BYTES >> 20} MB to read whole")
    text = decode(data.replace(b"\r\n", b"\n").replace(b"\r", b"\n"), name)
    if not text.strip():
        raise InputError(f"{name}: empty input")
    return text, name


def count_rows(source: Source) -> int:
    """Data rows in the file, counted on raw bytes (blank lines and '#' comments skipped), header excluded."""
    rows = 0
    first_data: bytes | None = None
    for block in _byte_blocks(source.path, CHUNK_BYTES):
        lines = block.count(b"\n") + (not block.endswith(b"\n"))
        if b"#" in block or _BLANK_LINE.search(b"\n" + block):
            lines -= _skipped(block.splitlines())
        rows += lines
        if first_data is None:
            first_data = next((line for line in block.splitlines() if line.strip() and
                               not line.lstrip().startswith(b"#")), None)
    if source.format == "csv" and first_data is not None:
        from gradcheck_cli.inputs.csv_format import csv_layout

        text = first_data.decode("utf-8-sig", errors="replace")
        rows -= csv_layout((1, text), source.name).header is not None
    return rows


def _skipped(lines: list[bytes]) -> int:
    """How many of these lines are blank or '#' comments."""
    return sum(1 for line in lines if not line.strip() or line.lstrip().startswith(b"#"))
