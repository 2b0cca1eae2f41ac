"""Where the text comes from: one input file (stdin spooled to one), its format, and its text in blocks.

Everything that reads a file goes through here, so the rules are the same whether it is read whole or in
chunks: strict UTF-8 (a BOM allowed), no NUL bytes, CR LF and lone CR read as newlines, and every error
named by file and line. A tensor file (a binary format: .npy, .npz, .safetensors, .pt) is only opened
here, and known by its name's ending or its magic number; its format module reads its arrays. Nothing here
reads without a bound: the first block is looked at before anything else (binary data that is no tensor file
is refused from it), a pipe is copied up to MAX_SPOOL_BYTES, a line read in chunks is at
most MAX_LINE_BYTES, and a file that changes while it is read is refused rather than checked half old.
"""

# No `from __future__ import annotations`: typing.NamedTuple compiles each string annotation (start-up time).
import codecs
import os
import re
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import IO, NamedTuple

from gradcheck_cli.errors import InputError
from gradcheck_cli.inputs import FORMATS, reader
from gradcheck_cli.inputs.line_counts import count_newlines, data_lines

# About this many bytes of text per chunk: a few MB of arrays, whatever the number of rows.
CHUNK_BYTES = 1 << 20
# Files up to this size are read whole; larger CSV and JSON Lines files are read in chunks.
STREAM_ABOVE_BYTES = 8 << 20
# An input read whole (JSON, or beside a labels file or --impl) may hold at most this much text: as
# numbers in memory it takes several times its size. CSV and JSON Lines files stream without a limit.
MAX_IN_MEMORY_BYTES = 512 << 20
# The longest line of a file read in chunks: 16 MB is some 600,000 logits (a 256k vocabulary written with
# full float precision takes 7 MB). A chunk's last line is looked through for its end in small pieces, kept
# by none: one up to this long is then read with its chunk, a longer one refused, by number, after 16 MB.
MAX_LINE_BYTES = 16 << 20
# The most copied from stdin or a pipe to the temporary file it is read from (about two minutes of checking).
MAX_SPOOL_BYTES = 4 << 30
# The first block of every input is read, and binary data refused, before anything else is done with it.
FIRST_BLOCK_BYTES = 64 << 10
# The longest line a format is sniffed from.
_HEAD_BYTES = 1 << 20
# A long line is looked through for its end in pieces of this size.
_LINE_PIECE_BYTES = 64 << 10
_LINE_END = re.compile(rb"[\r\n]")


class _Stamp(NamedTuple):
    """What fstat says of a file; any difference later means someone wrote to it while it was read."""

    size: int
    modified_ns: int
    inode: int


@dataclass(eq=False, repr=False)  # each generated method costs start-up
class Source:
    descriptor: int  # the open input: the file itself, or the file without a name stdin was copied to
    name: str  # what messages call it
    format: str
    size: int
    stamp: _Stamp

    @property
    def reader(self) -> ModuleType:
        """The format's module (see inputs/__init__.py for what it offers)."""
        return reader(self.format)

    @property
    def streams(self) -> bool:
        return FORMATS[self.format].streams

    @property
    def binary(self) -> bool:
        return FORMATS[self.format].binary

    def file_path(self) -> str:
        """A path that opens this very file (the one open here, even if its name now points elsewhere), for
        the libraries that read a tensor file by name (memory-mapping, safetensors)."""
        path = f"/proc/self/fd/{self.descriptor}"
        if os.path.exists(path):
            return path
        if self.name != "<stdin>" and os.path.isfile(self.name):
            return self.name
        raise InputError(f"{self.name}: a tensor file from a pipe needs /proc (Linux); give it with -i PATH")


@contextmanager
def open_source(path: str, requested_format: str) -> Iterator[Source]:
    """The input, open, with its format. A regular file is read where it is; stdin and anything else that
    can be read only once (a pipe, `<(...)`, a device) are first copied to a temporary file without a name."""
    name = "<stdin>" if path == "-" else path
    with _input_descriptor(path, name, requested_format) as descriptor:
        first = _read_at(descriptor, FIRST_BLOCK_BYTES, 0, name)
        status = _status(descriptor, name)
        opened = Source(descriptor, name, "", status.size, status)
        # stdin has no file name: its format is sniffed from its first bytes.
        opened.format = _detect(opened, first, "" if path == "-" else path, requested_format)
        if not opened.binary:
            _refuse_binary(first, name)
        yield opened


@contextmanager
def _input_descriptor(path: str, name: str, requested_format: str) -> Iterator[int]:
    if path == "-":
        with _spooled(sys.stdin.buffer, name, requested_format) as spool:
            yield spool
        return
    descriptor = _open(path, name)
    try:
        if stat.S_ISREG(os.fstat(descriptor).st_mode):
            yield descriptor
        else:  # a FIFO or a device: read once, as stdin is (os.open above waited for a FIFO's writer)
            with open(descriptor, "rb", closefd=False) as stream, _spooled(stream, name, requested_format) as spool:
                yield spool
    finally:
        os.close(descriptor)


def _open(path: str, name: str) -> int:
    """A descriptor for reading path (a FIFO's open waits for its writer), or an InputError saying why not."""
    try:
        if os.path.isdir(path):
            raise InputError(f"{name}: is a directory, not a file")
        return os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise InputError(f"{name}: no such file") from None
    except PermissionError:
        raise InputError(f"{name}: permission denied") from None
    except OSError as error:
        raise InputError(f"{name}: cannot read: {error.strerror or error}") from None


@contextmanager
def _spooled(stream: IO[bytes], name: str, requested_format: str) -> Iterator[int]:
    """stdin (or a pipe) copied to a temporary file that has no name (O_TMPFILE, or unlinked at once where
    that is missing), so no signal can leave it behind. The first block is looked at before anything is
    copied (binary data only if it is a tensor file), and at most MAX_SPOOL_BYTES are."""
    first = _read_stream(stream, FIRST_BLOCK_BYTES, name)
    if _tensor_format(first, requested_format) is None:
        _refuse_binary(first, name)
    with _new_spool(name) as spool:
        _copy(first, stream, spool, name)
        yield spool.fileno()


def _new_spool(name: str) -> IO[bytes]:
    import tempfile  # only a spooled input needs it; start-up does not pay for it

    try:
        return tempfile.TemporaryFile(prefix="gradcheck-stdin-")
    except OSError as error:
        raise InputError(f"{name}: cannot make a temporary file to copy it to: {error.strerror or error} "
                         "(set TMPDIR to a writable directory)") from None


def _copy(first: bytes, stream: IO[bytes], spool: IO[bytes], name: str) -> None:
    """The stream, from its first block on, into the spool: at most MAX_SPOOL_BYTES, and a full disk is an
    InputError (a read error is one already, from _read_stream)."""
    block, copied = first, 0
    try:
        while block:
            if copied + len(block) > MAX_SPOOL_BYTES:
                raise InputError(f"{name}: over {_amount(MAX_SPOOL_BYTES)} from a pipe, the most gradcheck copies "
                                 "to a temporary file to read; write it to a file and give that with -i instead "
                                 "(a file streams without a limit)")
            spool.write(block)
            copied += len(block)
            block = _read_stream(stream, CHUNK_BYTES, name)
        spool.flush()
    except OSError as error:
        import errno
        import tempfile

        where = tempfile.gettempdir()
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InputError(f"{name}: no space left in {where} after copying {_amount(copied)} of it to a "
                             "temporary file; free some space there or point TMPDIR at a bigger disk") from None
        raise InputError(f"{name}: cannot copy it to a temporary file in {where}: "
                         f"{error.strerror or error}") from None


def _read_stream(stream: IO[bytes], size: int, name: str) -> bytes:
    try:
        return stream.read(size)
    except OSError as error:
        raise InputError(f"{name}: cannot read: {error.strerror or error}") from None


def _read_at(descriptor: int, size: int, offset: int, name: str) -> bytes:
    """Up to size bytes from offset, wherever anyone else (the read-ahead process) is reading the same file."""
    try:
        if hasattr(os, "pread"):
            return os.pread(descriptor, size, offset)
        os.lseek(descriptor, offset, os.SEEK_SET)  # Windows: no pread, and no second process reading
        return os.read(descriptor, size)
    except OSError as error:
        raise InputError(f"{name}: cannot read: {error.strerror or error}") from None


def _status(descriptor: int, name: str) -> _Stamp:
    try:
        status = os.fstat(descriptor)
    except OSError as error:
        raise InputError(f"{name}: cannot read: {error.strerror or error}") from None
    return _Stamp(status.st_size, status.st_mtime_ns, status.st_ino)


def unchanged(source: Source) -> None:
    """Nothing, or an InputError if the file is not as it was when it was opened (grown, cut or rewritten)."""
    now = _status(source.descriptor, source.name)
    if now != source.stamp:
        raise InputError(f"{source.name}: the file changed while it was read ({source.stamp.size} bytes when "
                         f"opened, {now.size} now); check a copy that nothing writes to")


def _amount(size: int) -> str:
    for unit, shift in (("GB", 30), ("MB", 20), ("KB", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size} bytes"


def _refuse_binary(first: bytes, name: str) -> None:
    """Nothing if the first block of an input is UTF-8 text (a character cut at its end allowed); else the
    InputError `decode` raises for it: binary data is refused before anything else reads or copies it."""
    cut = next((k for k in range(1, min(4, len(first)) + 1) if first[-k] & 0xC0 != 0x80), 0)
    if cut and first[-cut] >= 0xC0 and (first[-cut] >= 0xF0) + (first[-cut] >= 0xE0) + 2 > cut:
        first = first[:-cut]  # the start of a character whose other bytes come in the next block
    decode(_newlines(first), name)


def _tensor_format(first: bytes, requested: str) -> str | None:
    """The binary format requested, or (auto) the one whose magic number the first bytes start with; else None."""
    if requested != "auto":
        return requested if FORMATS[requested].binary else None
    binaries = sorted((name for name in FORMATS if FORMATS[name].binary), key=lambda name: FORMATS[name].sniff_order)
    return next((name for name in binaries if reader(name).sniff(first)), None)


def _detect(source: Source, first: bytes, name_for_suffix: str, requested: str) -> str:
    """The requested format; else the one the file name's ending says; else a tensor file's by its magic
    number; else the first text format whose sniff accepts the first lines."""
    if requested != "auto":
        return requested
    suffix = os.path.splitext(name_for_suffix)[1].lower()
    for format_name, spec in FORMATS.items():
        if suffix in spec.suffixes:
            return format_name
    if (tensor := _tensor_format(first, requested)) is not None:
        return tensor
    # The first lines: JSON Lines is told from JSON by its second line.
    head = _read_at(source.descriptor, 3 * _HEAD_BYTES, 0, source.name)
    text = b"".join(head.splitlines(keepends=True)[:3]).decode("utf-8", errors="replace")
    for format_name in sorted(FORMATS, key=lambda known: FORMATS[known].sniff_order):
        if not FORMATS[format_name].binary and reader(format_name).sniff(text):
            return format_name
    return "csv"


class _Block(NamedTuple):
    first_line: int
    data: bytes  # ends on a line boundary, newlines made '\n'
    end: int  # how far into the file it reaches


def _byte_blocks(source: Source, chunk_bytes: int | None) -> Iterator[_Block]:
    """The file in blocks of chunk_bytes (None: whole) carried on to the end of the line they end in.

    A CR LF is never split between blocks, nor (ending on a newline) is a UTF-8 character. A line that goes
    on past MAX_LINE_BYTES is refused before any of it is kept.
    """
    if chunk_bytes is None:
        data = _whole(source)
        if data:
            yield _Block(1, _newlines(data), len(data))
        return
    number, start = 1, 0
    while data := _read_at(source.descriptor, chunk_bytes, start, source.name):
        if len(data) == chunk_bytes:  # not the last block: on to the end of its last line
            line_start = start + max(data.rfind(b"\n"), data.rfind(b"\r", 0, len(data) - 1)) + 1
            end = _end_of_line(source, start + len(data) - data.endswith(b"\r"), line_start + MAX_LINE_BYTES)
            if end is None:
                line = number + _newlines(data[: line_start - start]).count(b"\n")
                raise InputError(f"{source.name}:{line}: a line longer than {_amount(MAX_LINE_BYTES)}; a file is "
                                 "read a line at a time, and a line that long is not a row of logits")
            data += _read_at(source.descriptor, end - start - len(data), start + len(data), source.name)
        unchanged(source)  # every block is read from the file as it was opened
        start += len(data)
        block = _newlines(data)
        yield _Block(number, block, start)
        number += count_newlines(block)
    unchanged(source)  # and it has not grown since the last block


def _end_of_line(source: Source, offset: int, longest: int) -> int | None:
    """Where the line going on at offset ends: past its '\n', '\r\n' or '\r', or at the end of the file.
    None if it goes on past `longest` (its line end not there either); it is looked through, not kept."""
    while offset <= longest and (piece := _read_at(source.descriptor, min(_LINE_PIECE_BYTES, longest + 1 - offset),
                                                   offset, source.name)):
        if found := _LINE_END.search(piece):
            after = offset + found.end()
            return after + (found[0] == b"\r" and _read_at(source.descriptor, 1, after, source.name) == b"\n")
        offset += len(piece)
    return None if offset > longest else offset


def _whole(source: Source) -> bytes:
    """The whole file, at most MAX_IN_MEMORY_BYTES (its size said so already, unless it is a /proc file)."""
    pieces, offset = [], 0
    while data := _read_at(source.descriptor, max(source.size, CHUNK_BYTES) + 1, offset, source.name):
        offset += len(data)  # usually one read, then the end
        if offset > MAX_IN_MEMORY_BYTES:
            raise InputError(f"{source.name}: over {_amount(MAX_IN_MEMORY_BYTES)} to read whole")
        pieces.append(data)
    unchanged(source)
    return b"".join(pieces)  # one piece: the same bytes, not a copy


def _newlines(data: bytes) -> bytes:
    """As text mode's universal newlines: CR LF and a lone CR end a line."""
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n") if b"\r" in data else data


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
    blocks = 0
    for number, block, end in _byte_blocks(source, chunk_bytes):
        text = decode(block, source.name, number)
        if number == 1 and not text.strip() and end >= source.size:
            raise InputError(f"{source.name}: empty input")
        blocks += 1
        yield number, text
    if blocks == 0:
        raise InputError(f"{source.name}: empty input")


def read_text(path: str) -> tuple[str, str]:
    """The whole text of a file beside the input (a labels file, your gradient...) and its name."""
    with open_source(path, "csv") as beside:
        if beside.size > MAX_IN_MEMORY_BYTES:
            raise InputError(f"{beside.name}: over {MAX_IN_MEMORY_BYTES >> 20} MB to read whole")
        text = decode(_newlines(_whole(beside)), beside.name)
    if not text.strip():
        raise InputError(f"{beside.name}: empty input")
    return text, beside.name


def count_rows(source: Source) -> int:
    """Data rows in the file, counted on raw bytes (blank lines and '#' comments skipped), header excluded."""
    rows = 0
    first_data: bytes | None = None
    for _, block, _ in _byte_blocks(source, CHUNK_BYTES):
        rows += data_lines(block)
        if first_data is None:
            first_data = next((line for line in block.splitlines() if line.strip() and
                               not line.lstrip().startswith(b"#")), None)
    if source.format == "csv" and first_data is not None:
        from gradcheck_cli.inputs.csv_format import csv_layout

        text = first_data.decode("utf-8-sig", errors="replace")
        rows -= csv_layout((1, text), source.name).header is not None
    return rows
