"""The one way into an input: logits and labels or targets from wherever they were given, as batches.

open_input gives an Input whose batches are the whole input as one batch, or, for a big CSV or JSON Lines
file given alone, chunks of rows parsed ahead in another process. Either way each batch comes from the same
readers and the same validation (validate.make_batch); the caller never knows which. Files are opened by
source.py, imported where a file is read: logits given as arguments (a one-row check) do without it.
"""

# No `from __future__ import annotations`: typing.NamedTuple compiles every annotation it is given as a
# string (a ForwardRef each), start-up time every run pays; evaluated, they cost next to nothing.
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from gradcheck_cli.batch import Batch
from gradcheck_cli.errors import InputError
from gradcheck_cli.inputs.validate import Answers, Parsed, Teacher, line_answers, make_batch

if TYPE_CHECKING:
    from gradcheck_cli.inputs.source import Source
    from gradcheck_cli.inputs.tensors import TensorPlan


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
    key_names: tuple[tuple[str, str], ...] = ()  # --key NAME=KEY: which array of a tensor file holds NAME
    teacher_logits_args: tuple[str, ...] = ()  # --teacher-logits ROW, one per sample (distillation losses)
    teacher_path: str | None = None  # --teacher-file: a CSV of teacher logits for the rows of --input

    @property
    def beside_the_file(self) -> bool:
        """Whether anything besides the input file gives part of the data (then the file is read whole)."""
        return bool(self.labels_arg is not None or self.targets_args or self.labels_path or self.targets_path
                    or self.gradient_path or self.probabilities_path or self.loss_value is not None
                    or self.teacher_logits_args or self.teacher_path)


class Input:
    """An opened input: what messages call it (name None: the command line), its format and size (bytes of the
    file, 0 for the command line), and its rows as batches: `whole`, the input as one batch, or None when it is
    read in chunks from `chunked` (text in chunks of `chunk_bytes`, or a tensor file's rows sliced by `plan`).
    A plain class: making a dataclass costs every run's start-up some 0.3 ms."""

    __slots__ = ("chunk_bytes", "chunked", "counted", "format", "ignore_index", "name", "plan", "size", "whole")

    def __init__(self, name: str | None, format: str | None, size: int, whole: Batch | None,
                 chunked: "Source | None" = None, chunk_bytes: int | None = None, ignore_index: int | None = None,
                 plan: "TensorPlan | None" = None) -> None:
        self.name, self.format, self.size, self.whole = name, format, size, whole
        self.chunked, self.chunk_bytes, self.ignore_index, self.plan = chunked, chunk_bytes, ignore_index, plan
        self.counted: int | None = None  # count_rows' answer, once it has been asked

    @contextmanager
    def reading(self) -> Iterator[Iterator[Batch]]:
        """The batches; in chunks they are parsed ahead from the moment this is entered (see read_ahead)."""
        if self.whole is not None:
            yield iter([self.whole])
            return
        assert self.chunked is not None
        from gradcheck_cli.inputs.readahead import keep_freed_memory, read_ahead  # only a chunked input needs it

        keep_freed_memory()  # each chunk's temporaries reuse the last one's memory
        if self.plan is not None:  # slicing a tensor file costs little: no process to parse ahead in
            yield self.plan.batches(self.chunked, self.ignore_index)
            return
        with read_ahead(self._parse(self.chunked)) as batches:
            yield batches

    def _parse(self, chunked: "Source") -> Iterator[Batch]:
        from gradcheck_cli.inputs import source

        for parsed in chunked.reader.pieces(source.text_blocks(chunked, self.chunk_bytes), chunked.name):
            yield make_batch(parsed, chunked.name, [], {}, self.ignore_index)

    def count_rows(self) -> int:
        """How many rows the input has: a chunked file's are counted on its bytes, without parsing."""
        if self.whole is not None:
            return self.whole.rows
        if self.plan is not None:
            return self.plan.rows
        assert self.chunked is not None
        if self.counted is None:  # a pass over the file's bytes: the mean's divisor and --full both ask
            from gradcheck_cli.inputs import source

            self.counted = source.count_rows(self.chunked)
        return self.counted


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
        from gradcheck_cli.inputs.numbers import rows_from_args  # its patterns only for what arguments give

        parsed = Parsed(logits=rows_from_args(request.logits_args, "--logits"))
        yield Input(None, None, 0, _batch(parsed, None, request, ignore_index))
        return
    from gradcheck_cli.inputs import source

    with source.open_source(request.input_path, request.input_format) as opened:
        if opened.binary:
            yield _tensor_input(opened, request, ignore_index, whole, chunk_bytes)
            return
        if request.key_names:
            raise InputError(f"--key names the arrays of a tensor file; {opened.name} is {opened.format} text")
        chunks = opened.streams and not whole and not request.beside_the_file and (
            chunk_bytes is not None or opened.size > source.STREAM_ABOVE_BYTES)
        if chunks:
            size = source.CHUNK_BYTES if chunk_bytes is None else chunk_bytes
            yield Input(opened.name, opened.format, opened.size, None, opened, size, ignore_index)
            return
        (parsed,) = opened.reader.pieces(source.text_blocks(opened, None), opened.name)  # one block, one piece
        yield Input(opened.name, opened.format, opened.size, _batch(parsed, opened.name, request, ignore_index))


def _tensor_input(opened: "Source", request: InputRequest, ignore_index: int | None, whole: bool,
                  chunk_bytes: int | None) -> Input:
    """A tensor file: read as one batch (small, or a function is called on it, or its format cannot stream),
    else in chunks of rows sliced from it, with whatever was given beside it sliced alike."""
    from gradcheck_cli.inputs import source, tensors

    plan = tensors.plan(opened, tensors.key_map(request.key_names), _answers_beside(request),
                        _supplied_beside(request), _teacher_beside(request), chunk_bytes)
    if whole or not opened.streams or (chunk_bytes is None and opened.size <= source.STREAM_ABOVE_BYTES):
        plan.chunk_rows = max(plan.rows, 1)
        (batch,) = plan.batches(opened, ignore_index)
        return Input(opened.name, opened.format, opened.size, batch)
    return Input(opened.name, opened.format, opened.size, None, opened, ignore_index=ignore_index, plan=plan)


def _batch(parsed: Parsed, name: str | None, request: InputRequest, ignore_index: int | None) -> Batch:
    """The one batch of an input read whole, with the labels, targets, teacher logits and values given beside it."""
    return make_batch(parsed, name, _answers_beside(request), _supplied_beside(request), ignore_index,
                      _teacher_beside(request))


def _teacher_beside(request: InputRequest) -> Teacher | None:
    """Teacher logits from --teacher-logits arguments or a --teacher-file CSV (one row per sample)."""
    if request.teacher_logits_args and request.teacher_path is not None:
        raise InputError("give the teacher logits either with --teacher-logits or with --teacher-file, not both")
    if request.teacher_logits_args:
        from gradcheck_cli.inputs.numbers import rows_from_args

        values = rows_from_args(request.teacher_logits_args, "--teacher-logits")
        return Teacher(values, "--teacher-logits", lambda n: f"--teacher-logits[{n}]")
    if request.teacher_path is None:
        return None
    from gradcheck_cli.inputs import csv_format, source  # only a file beside the input needs them

    text, name = source.read_text(request.teacher_path)
    values, lines = csv_format.read_targets_file(text, name)
    return Teacher(values, name, lambda n: f"{name}:{lines[n]}")


def _answers_beside(request: InputRequest) -> list[Answers]:
    answers = []
    if request.labels_arg is not None:
        from gradcheck_cli.inputs.numbers import parse_labels

        values = np.array(parse_labels(request.labels_arg, "--labels"), dtype=np.int64)
        answers.append(Answers(values, True, "--labels", lambda n: f"--labels[{n}]"))
    if request.targets_args:
        from gradcheck_cli.inputs.numbers import rows_from_args

        values = rows_from_args(request.targets_args, "--targets")
        answers.append(Answers(values, False, "--targets", lambda n: f"--targets[{n}]"))
    for path, are_labels in ((request.labels_path, True), (request.targets_path, False)):
        if path is not None and path.lower().endswith(".npy"):
            from gradcheck_cli.inputs import npy_format

            answers.append(npy_format.beside_answers(path, are_labels))
        elif path is not None:
            from gradcheck_cli.inputs import csv_format, source  # only a file beside the input needs them

            text, name = source.read_text(path)
            read = csv_format.read_labels_file if are_labels else csv_format.read_targets_file
            values, lines = read(text, name)
            answers.append(line_answers(values, are_labels, name, name, np.asarray(lines)))
    return answers


def _supplied_beside(request: InputRequest) -> dict[str, tuple[np.ndarray, str]]:
    supplied = {}
    for key, path in (("gradient", request.gradient_path), ("probabilities", request.probabilities_path)):
        if path is not None:
            from gradcheck_cli.inputs import csv_format, source

            text, name = source.read_text(path)
            supplied[key] = (csv_format.read_targets_file(text, name)[0], name)
    if request.loss_value is not None:
        from gradcheck_cli.inputs.numbers import parse_row

        supplied["loss"] = (np.array(parse_row(request.loss_value, "--loss-value")), "--loss-value")
    return supplied
