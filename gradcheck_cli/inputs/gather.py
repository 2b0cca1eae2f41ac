"""The one way into an input: logits and labels or targets from wherever they were given, as batches.

open_input gives an Input whose batches are the whole input as one batch, or, for a big CSV or JSON Lines
file given alone, chunks of rows parsed ahead in another process. Either way each batch comes from the same
readers and the same validation (validate.make_batch); the caller never knows which.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from gradcheck_cli.batch import Batch
from gradcheck_cli.errors import InputError
from gradcheck_cli.inputs import source
from gradcheck_cli.inputs.numbers import parse_labels, parse_row, rows_from_args
from gradcheck_cli.inputs.validate import Answers, Parsed, line_answers, make_batch


class InputRequest(NamedTuple):
    """Where the data is, as the command line names it."""

    logits_args: tuple[str, ...] = ()
    labels_arg: str | None = None
    targets_args: tuple[str, ...] = ()
    input_path: str | None = None
    input_format: str = "auto"
    labels_path: str | None = None
    targets_path: str | None = None
    gradient_path: str | None = None
    probabilities_path: str | None = None
    loss_value: str | None = None

    @property
    def beside_the_file(self) -> bool:
        """Whether anything besides the input file gives part of the data (then the file is read whole)."""
        return bool(self.labels_arg is not None or self.targets_args or self.labels_path or self.targets_path
                    or self.gradient_path or self.probabilities_path or self.loss_value is not None)


@dataclass(eq=False)
class Input:
    """An opened input: what messages call it, its format and size, and its rows as batches."""

    name: str | None  # None: the command line
    format: str | None
    size: int  # bytes of the file (0 for the command line)
    whole: Batch | None  # the input as one batch, or None when it is read in chunks from `chunked`
    chunked: source.Source | None = None
    chunk_bytes: int = source.CHUNK_BYTES
    ignore_index: int | None = None

    @contextmanager
    def reading(self) -> Iterator[Iterator[Batch]]:
        """The batches; in chunks they are parsed ahead from the moment this is entered (see read_ahead)."""
        if self.whole is not None:
            yield iter([self.whole])
            return
        assert self.chunked is not None
        from gradcheck_cli.inputs.readahead import keep_freed_memory, read_ahead  # only a chunked input needs it

        keep_freed_memory()  # each chunk's temporaries reuse the last one's memory
        with read_ahead(self._parse(self.chunked)) as batches:
            yield batches

    def _parse(self, chunked: source.Source) -> Iterator[Batch]:
        for parsed in chunked.reader.pieces(source.text_blocks(chunked, self.chunk_bytes), chunked.name):
            yield make_batch(parsed, chunked.name, [], {}, self.ignore_index)

    def count_rows(self) -> int:
        """How many rows the input has: a chunked file's are counted on its bytes, without parsing."""
        if self.whole is not None:
            return self.whole.rows
        assert self.chunked is not None
        return source.count_rows(self.chunked)


@contextmanager
def open_input(
    request: InputRequest, ignore_index: int | None, whole: bool = False, chunk_bytes: int | None = None
) -> Iterator[Input]:
    """The input the request names. `whole` reads it as one batch however big (a function is called on it);
    `chunk_bytes` reads a file that can stream in chunks of that size whatever its size (tests use it)."""
    if request.input_path is not None and request.logits_args:
        raise InputError("give the logits either with --logits or with --input, not both")
    if request.input_path is None:
        if not request.logits_args:
            raise InputError("no logits: give --logits ROW (repeatable) or --input PATH")
        parsed = Parsed(logits=rows_from_args(request.logits_args, "--logits"))
        yield Input(None, None, 0, _batch(parsed, None, request, ignore_index))
        return
    with source.open_source(request.input_path, request.input_format) as opened:
        chunks = opened.streams and not whole and not request.beside_the_file and (
            chunk_bytes is not None or opened.size > source.STREAM_ABOVE_BYTES)
        if chunks:
            size = source.CHUNK_BYTES if chunk_bytes is None else chunk_bytes
            yield Input(opened.name, opened.format, opened.size, None, opened, size, ignore_index)
            return
        (parsed,) = opened.reader.pieces(source.text_blocks(opened, None), opened.name)  # one block, one piece
        yield Input(opened.name, opened.format, opened.size, _batch(parsed, opened.name, request, ignore_index))


def _batch(parsed: Parsed, name: str | None, request: InputRequest, ignore_index: int | None) -> Batch:
    """The one batch of an input read whole, with the labels, targets and values given beside it."""
    return make_batch(parsed, name, _answers_beside(request), _supplied_beside(request), ignore_index)


def _answers_beside(request: InputRequest) -> list[Answers]:
    answers = []
    if request.labels_arg is not None:
        values = np.array(parse_labels(request.labels_arg, "--labels"), dtype=np.int64)
        answers.append(Answers(values, True, "--labels", lambda n: f"--labels[{n}]"))
    if request.targets_args:
        values = rows_from_args(request.targets_args, "--targets")
        answers.append(Answers(values, False, "--targets", lambda n: f"--targets[{n}]"))
    for path, are_labels in ((request.labels_path, True), (request.targets_path, False)):
        if path is not None:
            from gradcheck_cli.inputs import csv_format  # only a file beside the input needs it

            text, name = source.read_text(path)
            read = csv_format.read_labels_file if are_labels else csv_format.read_targets_file
            values, lines = read(text, name)
            answers.append(line_answers(values, are_labels, name, name, np.asarray(lines)))
    return answers


def _supplied_beside(request: InputRequest) -> dict[str, tuple[np.ndarray, str]]:
    supplied = {}
    for key, path in (("gradient", request.gradient_path), ("probabilities", request.probabilities_path)):
        if path is not None:
            from gradcheck_cli.inputs import csv_format

            text, name = source.read_text(path)
            supplied[key] = (csv_format.read_targets_file(text, name)[0], name)
    if request.loss_value is not None:
        supplied["loss"] = (np.array(parse_row(request.loss_value, "--loss-value")), "--loss-value")
    return supplied
