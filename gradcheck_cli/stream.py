"""Read CSV and JSON Lines files in chunks of rows, so a file of any size is checked in bounded memory.

Each chunk becomes an ordinary Batch; report.stream_check checks them one by one and merges the results,
which come out identical to reading the file whole (tests/test_streaming.py holds that to the last bit).
Parsing reuses inputs.py's CSV layout and row parser, so every error names the same file, line and column.
"""

from __future__ import annotations

import codecs
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

import numpy as np

from gradcheck_cli import core
from gradcheck_cli.errors import InputError
from gradcheck_cli.inputs import (
    Batch,
    CsvLayout,
    check_logit_range,
    csv_layout,
    parse_csv_fast,
    parse_csv_rows,
    strict_json_line,
)

if TYPE_CHECKING:
    import multiprocessing

# About this many bytes of text per chunk: a few MB of arrays, whatever the number of rows.
CHUNK_BYTES = 1 << 20
# Files up to this size are read whole; larger CSV and JSON Lines files stream.
STREAM_ABOVE_BYTES = 8 << 20
def _skipped(lines: list[bytes]) -> int:
    """How many of these lines are blank or '#' comments."""
    return sum(1 for line in lines if not line.strip() or line.lstrip().startswith(b"#"))


# A blank (or whitespace-only) line, found in one pass in C; most files have none.
_BLANK_LINE = re.compile(rb"\n[ \t\f\v]*\n")


@dataclass
class Source:
    path: str  # a real file (stdin is spooled to one first)
    name: str  # what messages call it
    format: str  # "csv" or "jsonl"
    size: int


@contextmanager
def open_source(path: str, requested_format: str) -> Iterator[Source]:
    """The input as a file on disk: stdin is copied to a temporary file first (in blocks: bounded memory)."""
    if path != "-":
        if not os.path.isfile(path):  # missing, a directory...: inputs.read_text words the error
            yield Source(path, path, "unreadable", 0)
            return
        try:
            yield Source(path, path, _format_of(path, requested_format), os.stat(path).st_size)
        except PermissionError:
            yield Source(path, path, "unreadable", 0)
        return
    import shutil  # only a spooled stdin needs these; start-up does not pay for them
    import tempfile

    with tempfile.NamedTemporaryFile(prefix="gradcheck-stdin-", suffix=".txt") as spool:
        shutil.copyfileobj(sys.stdin.buffer, spool, 1 << 20)
        spool.flush()
        yield Source(spool.name, "<stdin>", _format_of(spool.name, requested_format, sniff=True), spool.tell())


def _format_of(path: str, requested: str, sniff: bool = False) -> str:
    if requested != "auto":
        return requested
    suffix = os.path.splitext(path)[1].lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix in (".csv", ".txt") and not sniff:
        return "csv"
    with open(path, "rb") as handle:
        start = handle.read(4096).lstrip()
    return "jsonl" if start[:1] == b"{" else "csv"


def _byte_blocks(source: Source, chunk_bytes: int) -> Iterator[bytes]:
    """The file in blocks of about chunk_bytes that end on a line boundary, newlines made '\\n'."""
    with open(source.path, "rb") as handle:
        while block := handle.read(chunk_bytes):
            block += handle.readline()  # a '\\r\\n' or a UTF-8 character is never split between blocks
            if b"\r" in block:  # as text mode's universal newlines: CR LF and a lone CR end a line
                block = block.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            yield block


def count_rows(source: Source) -> int:
    """Data rows in the file, counted on raw bytes (blank lines and '#' comments skipped), header excluded."""
    rows = 0
    first_data: bytes | None = None
    for block in _byte_blocks(source, CHUNK_BYTES):
        lines = block.count(b"\n") + (not block.endswith(b"\n"))
        if b"#" in block or _BLANK_LINE.search(b"\n" + block):
            lines -= _skipped(block.splitlines())
        rows += lines
        if first_data is None:
            first_data = next((line for line in block.splitlines() if line.strip() and
                               not line.lstrip().startswith(b"#")), None)
    if source.format == "csv" and first_data is not None:
        text = first_data.decode("utf-8-sig", errors="replace")
        rows -= csv_layout((1, text), source.name).header is not None
    return rows


def _text_blocks(source: Source, chunk_bytes: int) -> Iterator[tuple[int, list[str]]]:
    """(number of the first line, lines without their newlines) in blocks of about chunk_bytes, strict UTF-8."""
    number = 1
    for block in _byte_blocks(source, chunk_bytes):
        if number == 1 and block.startswith(codecs.BOM_UTF8):
            block = block[len(codecs.BOM_UTF8) :]
        if (nul := block.find(b"\x00")) >= 0:
            line = number + block.count(b"\n", 0, nul)
            raise InputError(f"{source.name}: binary data (a NUL byte on line {line}), expected text")
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError as error:
            line = number + block.count(b"\n", 0, error.start)
            raise InputError(f"{source.name}: not UTF-8 text (byte {block[error.start]:#04x} on line {line})") from None
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()
        yield number, lines
        number += len(lines)


def csv_batches(source: Source, chunk_bytes: int = CHUNK_BYTES, ignore_index: int | None = None) -> Iterator[Batch]:
    """The CSV's rows as Batches of about chunk_bytes of text each, with the same rules as inputs.read_csv."""
    layout: CsvLayout | None = None
    for first, block in _text_blocks(source, chunk_bytes):
        # The common block, data lines only, goes to numpy's parser whole: no Python loop over its lines.
        parsed = parse_csv_fast(block, layout) if layout is not None else None
        if parsed is not None:
            lines = np.arange(first, first + len(block), dtype=np.int64)
        else:
            numbered = [(first + k, line) for k, line in enumerate(block)
                        if (stripped := line.strip()) and not stripped.startswith("#")]
            if layout is None:
                if not numbered:
                    continue
                layout = csv_layout(numbered[0], source.name)
                if layout.header is not None:
                    numbered = numbered[1:]
            if not numbered:
                continue
            parsed = parse_csv_rows(numbered, source.name, layout)
            lines = np.fromiter((number for number, _ in numbered), dtype=np.int64, count=len(numbered))
        logits, labels = parsed
        if labels is None:
            raise InputError(f"{source.name}: streaming needs the labels in the file: a 'label' column")
        yield _labelled_batch(logits, labels, lines, source.name, ignore_index)
    if layout is None:
        raise InputError(f"{source.name}: no data rows (only blank lines or comments)")


def jsonl_batches(source: Source, chunk_bytes: int = CHUNK_BYTES, ignore_index: int | None = None) -> Iterator[Batch]:
    """JSON Lines: one object per line, {"logits": [...], "label": k} or {"logits": [...], "targets": [...]}."""
    width: int | None = None
    with_labels: bool | None = None
    for first, block in _text_blocks(source, chunk_bytes):
        rows, answers, lines = [], [], []
        for k, line in enumerate(block):
            if not line.strip():
                continue
            number = first + k
            logits, answer = strict_json_line(line, f"{source.name}:{number}")
            width = len(logits) if width is None else width
            if len(logits) != width:
                raise InputError(
                    f"{source.name}:{number}: ragged logits: {len(logits)} values, the first row has {width}"
                )
            is_label = isinstance(answer, int)
            with_labels = is_label if with_labels is None else with_labels
            if is_label != with_labels:
                raise InputError(f"{source.name}:{number}: mixes labels and targets; give one kind in every line")
            if isinstance(answer, list) and len(answer) != width:
                raise InputError(f"{source.name}:{number}: targets have {len(answer)} classes, the logits {width}")
            rows.append(logits)
            answers.append(answer)
            lines.append(number)
        if not rows:
            continue
        matrix, numbers = np.array(rows, dtype=np.float64), np.array(lines)
        if with_labels:
            labels = np.array(answers, dtype=np.int64)
            yield _labelled_batch(matrix, labels, numbers, source.name, ignore_index)
        else:
            targets = np.array(answers, dtype=np.float64)
            negative = np.argwhere(targets < 0)
            if negative.size:
                raise InputError(f"{source.name}:{numbers[negative[0][0]]}: a target is negative")
            check_logit_range(matrix, _locator(source.name, numbers))
            yield Batch(logits=matrix, labels=None, targets=targets, source=source.name, row_lines=numbers)
    if width is None:
        raise InputError(f"{source.name}: no data rows")


def _locator(name: str, lines: np.ndarray) -> Callable[[int], str]:
    return lambda row: f"{name}:{lines[row]}"


def _labelled_batch(logits: np.ndarray, labels: np.ndarray, lines: np.ndarray, name: str,
                    ignore_index: int | None) -> Batch:
    check_logit_range(logits, _locator(name, lines))
    classes = logits.shape[1]
    bad = np.flatnonzero(((labels < 0) | (labels >= classes)) & (labels != ignore_index))
    if bad.size:
        raise InputError(f"{name}:{lines[bad[0]]}: label {labels[bad[0]]} is out of range; "
                         f"with {classes} classes a label is 0 to {classes - 1}")
    kept = labels != ignore_index if ignore_index is not None else np.ones(labels.shape[0], dtype=bool)
    targets = core.one_hot(np.where(kept, labels, 0), classes) * kept[:, None]
    return Batch(logits=logits, labels=labels, targets=targets, source=name, row_lines=lines)


def batches(source: Source, chunk_bytes: int = CHUNK_BYTES, ignore_index: int | None = None) -> Iterator[Batch]:
    """The file's rows in Batches, each with the file line of every row (row_lines)."""
    read = jsonl_batches if source.format == "jsonl" else csv_batches
    return read(source, chunk_bytes, ignore_index)


@contextmanager
def read_ahead(batches: Iterator[Batch], depth: int = 8) -> Iterator[Iterator[Batch]]:
    """The same batches, parsed in a forked process (started at once) while this one checks the ones before.

    Parsing is most of a streamed check's time, and a machine has more than one core: the check of each
    chunk overlaps the parsing of the next ones. At most `depth` parsed chunks wait, so memory stays bounded.
    An error the reader meets is raised here in turn, after the batches before it, as without the reader.
    Where fork is not safe (macOS, Windows) or not possible, the batches are read in this process.
    """
    if not sys.platform.startswith("linux"):
        yield batches
        return
    import multiprocessing

    context = multiprocessing.get_context("fork")
    try:
        parsed: multiprocessing.Queue[Batch | Exception | None] = context.Queue(depth)
        reader = context.Process(target=_send_batches, args=(batches, parsed), daemon=True)
        reader.start()
    except OSError:  # no /dev/shm for the queue's semaphores, or no more processes allowed
        yield batches
        return

    def received() -> Iterator[Batch]:
        while (item := parsed.get()) is not None:
            if isinstance(item, Exception):
                raise item
            yield item

    try:
        yield received()
    finally:
        reader.terminate()
        reader.join()
        parsed.close()


def _send_batches(batches: Iterator[Batch], parsed: multiprocessing.Queue[Batch | Exception | None]) -> None:
    """The reader process: every batch, then None; or the error that stopped it."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the checking process's to handle
    try:
        for batch in batches:
            parsed.put(batch)
        parsed.put(None)
    except InputError as error:
        parsed.put(error)
    except Exception as error:  # noqa: BLE001 - an internal error: the checking process reports it, exit 3
        parsed.put(RuntimeError(f"reading the input failed: {error!r}"))
    parsed.close()
    parsed.join_thread()  # everything sent before the process ends


def line_lookup(pieces: list[np.ndarray]) -> Callable[[int], int | None]:
    """Row index -> file line, from the line numbers of each chunk (kept only as int64: 8 bytes a row)."""
    starts = np.cumsum([0] + [len(piece) for piece in pieces])

    def line_of(row: int) -> int | None:
        k = int(np.searchsorted(starts, row, side="right")) - 1
        return int(pieces[k][row - starts[k]]) if 0 <= k < len(pieces) else None

    return line_of


def write_ndjson_rows(out: IO[str], start: int, batch: Batch, part: object, lines: np.ndarray | None) -> None:
    """One JSON object per sample: its loss, probabilities, gradients and whether its gradient agrees.

    The arrays become Python lists a chunk at a time (one call each, not one per value); the loop over rows
    only assembles each row's record, which is what ndjson is.
    """
    import json  # here, not at the top: start-up pays for it only when JSON is used

    from gradcheck_cli.render import finite_or_none
    from gradcheck_cli.report import RowChecks

    assert isinstance(part, RowChecks)
    rows = batch.logits.shape[0]
    error = np.abs(part.analytic_gradient - part.numeric_gradient).max(axis=1)
    columns = zip(
        range(start, start + rows),
        [None] * rows if lines is None else lines.tolist(),
        *(finite_or_none(values) for values in (part.row_losses, part.probabilities, part.analytic_gradient,
                                              part.numeric_gradient, error)),
        strict=True,
    )
    encode = json.JSONEncoder(allow_nan=False).encode
    records = [
        encode({"row": row, "line": line, "loss": loss, "probabilities": probabilities,
                "gradient": {"analytic": analytic, "numeric": numeric}, "max_abs_error": worst})
        for row, line, loss, probabilities, analytic, numeric, worst in columns
    ]
    out.write("\n".join(records) + "\n")


def check_source(
    source: Source,
    settings: object,
    on_rows: Callable[[int, Batch, object, np.ndarray | None], None] | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> object:
    """Check a whole file chunk by chunk and return a summary Report (no per-row arrays kept).

    The mean's divisor must be known before the first chunk is scaled: the row count comes from a quick
    pass over the raw bytes; with class weights or an ignored label it needs the labels, so the file is
    parsed twice.
    """
    from gradcheck_cli.report import Report, Settings, normalizer_of, stream_check

    assert isinstance(settings, Settings)
    _keep_freed_memory()
    ignore_index = settings.ignore_index
    pieces: list[np.ndarray] = []

    def each(start: int, batch: Batch, part: object) -> None:
        if on_rows is not None:
            on_rows(start, batch, part, pieces[-1] if pieces else None)

    with read_ahead(batches(source, chunk_bytes, ignore_index)) as reading:  # parsing starts while rows are counted
        total_rows = count_rows(source)
        normalizer = None
        if settings.reduction == "mean":
            normalizer = float(total_rows)
            if settings.loss == "cross_entropy" and (settings.weights is not None or ignore_index is not None):
                with read_ahead(batches(source, chunk_bytes, ignore_index)) as labelled:
                    normalizer = normalizer_of(labelled, settings)
            if normalizer == 0.0:
                raise InputError("the mean divides by the summed weights of the rows not ignored, and that is 0 "
                                 "here: use --reduction sum or none")
        with _progress(total_rows, source) as advance:
            def tracked() -> Iterator[Batch]:
                for batch in reading:
                    assert isinstance(batch.row_lines, np.ndarray)
                    pieces.append(batch.row_lines)
                    yield batch
                    advance(batch.logits.shape[0])

            checks, loss, rows, classes = stream_check(tracked(), settings, normalizer, each)
    return Report(settings=settings.resolved(), rows=rows, classes=classes, loss=loss, checks=checks,
                  source=source.name, line_of=line_lookup(pieces))


def _keep_freed_memory() -> None:
    """Let glibc keep freed memory for reuse instead of handing it back to the system at once.

    Each chunk makes dozens of numpy temporaries of a few MB. By default glibc maps each afresh and unmaps it
    when freed, so every temporary costs page faults and zeroing, which on a streamed file took longer
    than the arithmetic itself (5.5 s against 4.5 s for 1,000,000 x 10). Memory stays bounded: what is kept
    is what the largest chunk needed. Only glibc has mallopt; elsewhere this does nothing.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: blocks below 32 MB come from the heap...
        libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD: ...which keeps up to 256 MB of free space
    except (OSError, AttributeError):  # not glibc (musl has no-op mallopt; others may lack it)
        return


# About what a streamed check gets through in a second on a 2-core machine (benchmarks/performance.py: a
# 92 MB CSV in 2.5 s; JSON Lines parses line by line, 25 MB in 3.5 s).
BYTES_PER_SECOND = {"csv": 32 << 20, "jsonl": 6 << 20}


@contextmanager
def _progress(total_rows: int, source: Source) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr, only when stderr is a terminal and the file should take a second or more."""
    if source.size < BYTES_PER_SECOND.get(source.format, 0) or not sys.stderr.isatty():
        yield lambda rows: None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("checking rows", total=total_rows)
        yield lambda rows: progress.advance(task, rows)
