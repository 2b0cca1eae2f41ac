"""Turn what the readers parsed into a Batch, checking it once for every input form and chunk.

A reader hands over a Parsed piece (logits and whatever else its source holds); labels or targets from
elsewhere (--labels, a labels file, ...) come as Answers. Exactly one kind of answers, rows that match,
labels in range, targets not negative, logits within range, the user's values in their report shapes: each is
decided here only, so whole and chunked reading cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gradcheck_cli.batch import Batch
from gradcheck_cli.errors import InputError
from gradcheck_cli.inputs.limits import check_logit_range


def _row(n: int) -> str:
    return f"row {n}"


# Plain classes, not dataclasses: they hold arrays (== would have no truth value), and making a dataclass costs
# every run's start-up some 0.3 ms (its __init__ generated and compiled).
class Answers:
    """Labels or targets from one place, and how to name the place of row n in a message."""

    __slots__ = ("are_labels", "locate", "source", "values")

    def __init__(self, values: np.ndarray, are_labels: bool, source: str, locate: Callable[[int], str]) -> None:
        self.values, self.are_labels, self.source, self.locate = values, are_labels, source, locate


class Teacher:
    """Teacher logits (N x C) from one place, for the distillation losses, and how to name the place of row n."""

    __slots__ = ("locate", "source", "values")

    def __init__(self, values: np.ndarray, source: str, locate: Callable[[int], str]) -> None:
        self.values, self.source, self.locate = values, source, locate


class Parsed:
    """What one source supplied for some rows: logits, and labels, targets or the user's values if it has them."""

    __slots__ = ("answers", "logits", "row_lines", "supplied", "teacher")

    def __init__(self, logits: np.ndarray, answers: list[Answers] | None = None, row_lines: np.ndarray | None = None,
                 supplied: dict[str, tuple[np.ndarray, str]] | None = None, teacher: Teacher | None = None) -> None:
        self.logits = logits
        self.answers = [] if answers is None else answers
        self.row_lines = row_lines  # the file line of each row, when they came from a file
        self.supplied = {} if supplied is None else supplied  # name -> (values, where)
        self.teacher = teacher  # teacher logits, when the source holds them (the rows travel together)

    def locate(self, name: str | None) -> Callable[[int], str]:
        lines = self.row_lines
        return _row if lines is None else (lambda n: f"{name}:{lines[n]}")


def line_answers(values: np.ndarray, are_labels: bool, source: str, name: str, lines: np.ndarray) -> Answers:
    """Answers read from a file, each located by its line."""
    return Answers(values, are_labels, source, lambda n: f"{name}:{lines[n]}")


def one_hot(labels: np.ndarray, classes: int) -> np.ndarray:
    targets = np.zeros((labels.shape[0], classes))
    targets[np.arange(labels.shape[0]), labels] = 1.0
    return targets


def make_batch(
    parsed: Parsed,
    name: str | None,
    others: list[Answers],
    supplied: dict[str, tuple[np.ndarray, str]],
    ignore_index: int | None,
    teacher: Teacher | None = None,
) -> Batch:
    """The Batch of a parsed piece, with the answers, teacher logits and user's values given beside it, or the
    first error. Teacher logits stand instead of labels or targets (no loss takes both)."""
    logits = parsed.logits
    answers = [*parsed.answers, *others]
    teacher_logits = _teacher_logits(parsed, teacher, answers)
    if teacher_logits is not None:
        check_logit_range(logits, parsed.locate(name))
        # targets: what the logits are compared with, which --impl's function receives as its second argument
        return Batch(logits=logits, labels=None, targets=teacher_logits, source=name,
                     row_lines=parsed.row_lines, supplied=_supplied(parsed, supplied, logits.shape),
                     teacher_logits=teacher_logits)
    if not answers:
        raise InputError(
            "no labels or targets: give --labels, --targets, --labels-file, --targets-file, "
            "a 'label' column in the CSV, or \"labels\"/\"targets\" in the JSON"
        )
    if len(answers) > 1:
        raise InputError(
            f"both {answers[0].source} and {answers[1].source} give the answers; give labels or targets once"
        )
    check_logit_range(logits, parsed.locate(name))
    given = answers[0]
    what = "labels" if given.are_labels else "target rows"
    if given.values.shape[0] != logits.shape[0]:
        rows = f"{logits.shape[0]} row{'' if logits.shape[0] == 1 else 's'}"
        raise InputError(f"{given.source}: {given.values.shape[0]} {what} for {rows} of logits")
    labels: np.ndarray | None = None
    if given.are_labels:
        _validate_labels(given, logits.shape[1], ignore_index)
        labels = given.values
        kept = labels != ignore_index if ignore_index is not None else np.ones(logits.shape[0], dtype=bool)
        # An ignored row has no target: its label may be out of range (torch's default -100).
        targets = one_hot(np.where(kept, labels, 0), logits.shape[1])
        if not kept.all():  # a pass over N x C only where a row is ignored
            targets *= kept[:, None]
    else:
        _validate_targets(given, logits)
        targets = given.values
    return Batch(
        logits=logits,
        labels=labels,
        targets=targets,
        source=name,
        row_lines=parsed.row_lines,
        supplied=_supplied(parsed, supplied, logits.shape),
    )


def _supplied(parsed: Parsed, beside: dict[str, tuple[np.ndarray, str]], shape: tuple[int, ...]
              ) -> dict[str, np.ndarray]:
    values = {**parsed.supplied, **beside}
    return {key: _supplied_shape(key, array, where, shape) for key, (array, where) in values.items()}


def _teacher_logits(parsed: Parsed, beside: Teacher | None, answers: list[Answers]) -> np.ndarray | None:
    """The teacher logits, given once, of the logits' shape and range, and never with labels or targets."""
    given = [teacher for teacher in (parsed.teacher, beside) if teacher is not None]
    if not given:
        return None
    if len(given) > 1:
        raise InputError(f"both {given[0].source} and {given[1].source} give the teacher logits; give them once")
    teacher, logits = given[0], parsed.logits
    if answers:
        raise InputError(f"{answers[0].source} and {teacher.source} both give what the logits are compared with: "
                         "labels or targets for the other losses, teacher logits for kl, reverse-kl and jsd")
    rows, classes = teacher.values.shape
    if rows != logits.shape[0]:
        raise InputError(f"{teacher.source}: {rows} teacher row{'' if rows == 1 else 's'} for "
                         f"{logits.shape[0]} row{'' if logits.shape[0] == 1 else 's'} of logits")
    if classes != logits.shape[1]:
        raise InputError(f"{teacher.source}: teacher logits have {classes} classes, the logits have {logits.shape[1]}")
    check_logit_range(teacher.values, teacher.locate)
    return teacher.values


def _validate_labels(answers: Answers, classes: int, ignore_index: int | None = None) -> None:
    labels = answers.values
    bad = np.flatnonzero(((labels < 0) | (labels >= classes)) & (labels != ignore_index))
    if bad.size:
        n = int(bad[0])
        raise InputError(
            f"{answers.locate(n)}: label {int(labels[n])} is out of range; "
            f"with {classes} classes a label is 0 to {classes - 1}"
        )


def _validate_targets(answers: Answers, logits: np.ndarray) -> None:
    targets = answers.values
    if targets.shape[1] != logits.shape[1]:
        raise InputError(
            f"{answers.source}: targets have {targets.shape[1]} classes, the logits have {logits.shape[1]}"
        )
    negative = np.argwhere(targets < 0)
    if negative.size:
        n, c = (int(i) for i in negative[0])
        raise InputError(f"{answers.locate(n)}: target {float(targets[n, c])!r} for class {c} is negative")


def _supplied_shape(key: str, values: np.ndarray, where: str, shape: tuple[int, ...]) -> np.ndarray:
    """A supplied value must have the shape the report gives it; a loss is one number or one per row, an lse
    one per row."""
    rows, classes = shape
    expected: dict[str, tuple[int, ...]] = {
        "probabilities": (rows, classes), "gradient": (rows, classes), "jacobian": (rows, classes, classes),
        "lse": (rows,),
    }
    if key == "loss":
        if values.size not in (1, rows):
            raise InputError(f"{where}: {values.size} loss values; give one number, or one per row ({rows})")
        return values
    if values.shape != expected[key]:
        wanted, got = (" x ".join(map(str, e)) for e in (expected[key], values.shape))
        wanted = f"{rows} values, one per row" if key == "lse" else wanted
        raise InputError(f"{where}: the supplied {key} is {got}; for {rows} x {classes} logits it must be {wanted}")
    return values
