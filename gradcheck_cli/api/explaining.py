# ruff: noqa: RUF001  # the derivation writes real minus and multiplication signs, as commands/explain.py did
"""`explain`: the command line's `gradcheck explain` as a function: one sample's derivation with its numbers.

Explanation is plain data: the numbers of each step (softmax, the Jacobian entries shown, the loss and its
gradient) and the lines of the derivation; the command prints the lines or the JSON of to_dict().

Classes are numbered from 0, as check's tables, its JSON and numpy number them: check's "class 2" is s_2 here.
Time and memory are O(C) beyond the batch: only the Jacobian entries shown are computed (a wide row lists two
rows and the diagonal, never the C x C matrix), each array's numbers are written at once (numerics/shown.py:
numpy and tables, what Python's "%#.3g" writes) and each kind of line is one join for all its classes, never a
Python loop over them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from gradcheck_cli.api import keywords
from gradcheck_cli.api.checking import Path, _refuse_beside, batch_from_arrays, file_request
from gradcheck_cli.api.sweeping import loss_settings
from gradcheck_cli.batch import Batch
from gradcheck_cli.errors import InputError
from gradcheck_cli.inputs.gather import InputRequest
from gradcheck_cli.numerics.losses import accepted_kind
from gradcheck_cli.numerics.shown import numbers
from gradcheck_cli.numerics.softmax import softmax_parts
from gradcheck_cli.pipeline import load_whole
from gradcheck_cli.report import SCHEMA_VERSION, finite_or_none
from gradcheck_cli.settings import Settings

if TYPE_CHECKING:
    from gradcheck_cli.numerics.losses.base import Loss

# Up to this many classes the derivation lists every Jacobian entry; beyond, the first rows and the diagonal.
FULL_JACOBIAN_CLASSES = 6


@dataclass(eq=False, repr=False)  # holds arrays: == has no truth value
class Explanation:
    """One sample's derivation: its numbers (z = its logits / T; every array has C entries) and its lines."""

    row: int
    loss_name: str
    temperature: float
    logits: np.ndarray  # z, the row's logits / T
    maximum: float  # m = max z
    exponentials: np.ndarray  # e^(z - m)
    probabilities: np.ndarray  # s
    jacobian_rows: np.ndarray  # the rows of J = ds/dz listed in full (k x C), the first k classes
    jacobian_diagonal: np.ndarray  # s_i (1 - s_i)
    probabilities_complement: np.ndarray  # 1 - s_i, computed without cancellation
    loss: float  # the row's own loss (before the reduction)
    gradient: np.ndarray  # dL/dz of the row's own loss, by z = logits / T
    # The derivation as blocks of lines (a wide row's steps are long texts, kept whole rather than as C strings).
    blocks: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The derivation, one line per line, as the command prints it."""
        return "\n".join(self.blocks)

    @property
    def lines(self) -> list[str]:
        return self.text.split("\n")

    @property
    def classes(self) -> int:
        return int(self.logits.size)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of `gradcheck explain -f json`: the numbers of each step, and the lines."""
        return {
            "schema_version": SCHEMA_VERSION,
            "command": "explain",
            "row": self.row,
            "loss_name": self.loss_name,
            "temperature": self.temperature,
            "logits": finite_or_none(self.logits),
            "max": finite_or_none(self.maximum),
            "exponentials": finite_or_none(self.exponentials),
            "exp_sum": finite_or_none(float(self.exponentials.sum())),
            "probabilities": finite_or_none(self.probabilities),
            "jacobian": {"rows": finite_or_none(self.jacobian_rows),
                         "diagonal": finite_or_none(self.jacobian_diagonal)},
            "loss": finite_or_none(self.loss),
            "gradient": finite_or_none(self.gradient),
            "lines": self.lines,
        }

    def summary(self) -> str:
        """The one line of -q: the row's loss and (the first classes of) its gradient."""
        shown = ", ".join(numbers(self.gradient[:FULL_JACOBIAN_CLASSES]))
        more = f", ... ({self.classes} classes)" if self.classes > FULL_JACOBIAN_CLASSES else ""
        return f"sample {self.row}: L = {numbers([self.loss])[0]}; ∂L/∂z = ({shown}{more})"


def block(template: str, *columns: list[str]) -> str:
    """The template with its k-th "%s" filled from each column's k-th string, for every k, as the lines of one
    text, joined once: the literal pieces and the columns are interleaved by slice assignments, one a column
    (the numbers already written by numbers(): each is formatted once, however many lines show it)."""
    count, literals = len(columns[0]), template.split("%s")
    assert len(literals) == len(columns) + 1, "one column per %s"
    stride = 2 * len(columns) + 1
    pieces: list[str] = [""] * (count * stride)
    pieces[0::stride] = ["\n" + literals[0]] * count
    for place, column in enumerate(columns):  # one slice assignment per column, not a loop over classes
        pieces[2 * place + 1::stride] = column
        pieces[2 * place + 2::stride] = [literals[place + 1]] * count
    if pieces:
        pieces[0] = literals[0]  # no line break before the first line
    return "".join(pieces)


def explain_batch(batch: Batch, settings: Settings, row: int = 0) -> Explanation:
    """The derivation of one row of a batch in memory (0-based), with the loss the settings describe."""
    kind = accepted_kind(settings)
    if not 0 <= row < batch.rows:
        raise InputError(f"--row {row}: the input has {batch.rows} row{'s' if batch.rows != 1 else ''} "
                         f"(0 to {batch.rows - 1})")
    # Built at T = 1 on z = logits / T: every step below is then the derivation of softmax(z) the sources write.
    # The teacher's logits are divided by T too, and a soft cap c on the logits is c / T on z / T
    # (c tanh(x / c) / T = (c / T) tanh((x / T) / (c / T))); a logit scale commutes with the division.
    temperature = settings.temperature
    at_one = settings._replace(temperature=1.0,
                               softcap=None if settings.softcap is None else settings.softcap / temperature)
    if batch.teacher_logits is not None:
        batch = replace(batch, teacher_logits=batch.teacher_logits / temperature)
    built = kind.build(batch, at_one, np.dtype(np.float64))
    scaled = batch.logits / settings.temperature
    z = scaled[row]
    sigmoid = kind.activation == "sigmoid"  # each s_i = sigmoid(z_i) alone: a diagonal Jacobian
    parts = built.softmax(z[None, :]) if sigmoid else softmax_parts(z[None, :])
    s, complement = parts.s[0], parts.complement[0]
    listed = z.size if z.size <= FULL_JACOBIAN_CLASSES else min(2, z.size)
    # J_ij = -s_i s_j (0 for a sigmoid), its diagonal s_i (1 - s_i) set below
    jacobian_rows = np.zeros((listed, z.size)) if sigmoid else -s[:listed, None] * s[None, :]
    diagonal = s * complement
    jacobian_rows[np.arange(listed), np.arange(listed)] = diagonal[:listed]
    m = float(z.max())
    explanation = Explanation(
        row, settings.loss, settings.temperature, z, m, np.exp(z - m), s, jacobian_rows, diagonal, complement,
        *_row_loss_and_gradient(built, scaled, row))
    steps = _sigmoid_and_jacobian(explanation) if sigmoid else _softmax_and_jacobian(explanation)
    explanation.blocks = steps + kind.explain(built, z, s, row)
    if settings.temperature != 1.0:
        explanation.blocks.insert(1, f"(--temperature {settings.temperature:g}: z below is your logits / T, and the "
                                    "gradient by your logits is each ∂L/∂z_j below divided by T)")
    return explanation


def _row_loss_and_gradient(built: Loss, scaled: np.ndarray, row: int) -> tuple[float, np.ndarray]:
    """The row's own loss and gradient, from one softmax of the batch (the loss's own: a loss whose
    probabilities are not softmax(z) computes its own, whatever it is handed)."""
    parts = built.softmax(scaled)
    return float(built.row_losses(scaled, parts)[row]), built.row_gradients(scaled, parts)[row]


def _softmax_and_jacobian(explained: Explanation) -> list[str]:
    """Steps 1 and 2, the same for every loss, as blocks of lines; the loss writes steps 3 and 4."""
    classes = explained.classes
    total = numbers([float(explained.exponentials.sum())])[0]
    k = list(map(str, range(classes)))  # the class numbers, written once
    s, exps = numbers(explained.probabilities), numbers(explained.exponentials)
    blocks = [
        f"Sample {explained.row} (classes numbered 0 to {classes - 1}, as in check's tables and JSON)",
        "z = (" + ", ".join(numbers(explained.logits)) + ")",
        "",
        "1. Softmax: s_i = e^{z_i} / Σ_l e^{z_l}",
        (f"   computed as e^{{z_i − m}} / Σ_l e^{{z_l − m}} with m = max z = {numbers([explained.maximum])[0]} "
         "(the same value, no overflow)"),
        "   Σ_l e^{z_l − m} = " + " + ".join(exps) + f" = {total}",
        block("   s_%s = %s / %s = %s", k, exps, [total] * classes, s),
        f"   check: the s_i sum to {numbers([float(explained.probabilities.sum())])[0]}",
        "",
        "2. Jacobian: ∂s_i/∂z_j = s_i(δ_ij − s_j)",
    ]
    complement, diagonal_values = numbers(explained.probabilities_complement), numbers(explained.jacobian_diagonal)

    def diagonal(first: int, stop: int) -> str:
        part = slice(first, stop)
        return block("   ∂s_%s/∂z_%s = s_%s(1 − s_%s) = %s×%s = %s", *[k[part]] * 4, s[part], complement[part],
                     diagonal_values[part])

    def off_diagonal(i: int, first: int, stop: int, entries: list[str]) -> str:
        part = slice(first, stop)  # row i's own numbers are part of the template: fewer pieces to join
        return block(f"   ∂s_{i}/∂z_%s = −s_{i}·s_%s = −{s[i]}×%s = %s", k[part], k[part], s[part], entries[part])

    listed = len(explained.jacobian_rows)
    for i in range(listed):  # the few rows listed in full: entries before the diagonal, it, and after
        entries = numbers(explained.jacobian_rows[i])
        pieces = (off_diagonal(i, 0, i, entries), diagonal(i, i + 1), off_diagonal(i, i + 1, classes, entries))
        blocks += [piece for piece in pieces if piece]
    if listed < classes:
        blocks += [diagonal(listed, classes), (f"   ... rows {listed} to {classes - 1} show only their diagonal; "
                                               "`gradcheck check -f json` has every entry")]
    return [*blocks, "   (rows and columns of J sum to 0; J is symmetric)", ""]


def _sigmoid_and_jacobian(explained: Explanation) -> list[str]:
    """Steps 1 and 2 of a loss on the elementwise sigmoid (bce): s_i = sigmoid(z_i), and its diagonal Jacobian."""
    classes = explained.classes
    k = list(map(str, range(classes)))  # the class numbers, written once
    z, s = numbers(explained.logits), numbers(explained.probabilities)
    complement, diagonal = numbers(explained.probabilities_complement), numbers(explained.jacobian_diagonal)
    return [
        f"Sample {explained.row} (classes numbered 0 to {classes - 1}, as in check's tables and JSON)",
        "z = (" + ", ".join(z) + ")",
        "",
        "1. Sigmoid, each class on its own: s_i = σ(z_i) = 1 / (1 + e^{−z_i})",
        block("   s_%s = σ(%s) = %s", k, z, s),
        "",
        "2. Jacobian: ∂s_i/∂z_j = 0 for i ≠ j; ∂s_i/∂z_i = s_i(1 − s_i)",
        block("   ∂s_%s/∂z_%s = s_%s(1 − s_%s) = %s×%s = %s", k, k, k, k, s, complement, diagonal),
        "",
    ]


def explain_request(request: InputRequest, settings: Settings, row: int = 0) -> Explanation:
    """The derivation of one row of an input the command line names (read whole)."""
    return explain_batch(load_whole(request, settings), settings, row)


def explain(
    logits: Any = None,
    labels: Any = None,
    targets: Any = None,
    *,
    row: int = 0,
    loss: str = "cross_entropy",
    weights: Any = None,
    label_smoothing: float = 0.0,
    ignore_index: int | None = None,
    temperature: float = 1.0,
    beta: float | None = None,
    t2_scaling: bool = False,
    z_loss: float = 0.0,
    softcap: float | None = None,
    logit_scale: float = 1.0,
    pos_weight: Any = None,
    gamma: float | None = None,
    alpha: float | None = None,
    teacher_logits: Any = None,
    teacher_file: Path | None = None,
    key: Any = None,
    input: Path | None = None,
    input_format: str = "auto",
    labels_file: Path | None = None,
    targets_file: Path | None = None,
) -> Explanation:
    """One sample's softmax, Jacobian, loss and gradient, derived with its own numbers: `gradcheck explain` as a
    function (keywords as its options; `row` counts from 0). The Explanation has the numbers of each step and
    the lines the command prints; a bad value raises InputError with the command line's message.

    Example:

        explained = explain([[1.1, 2.2, 0.2, -1.7]], labels=[2])
        print("\\n".join(explained.lines))
    """
    settings = loss_settings(locals())  # the loss options are Settings fields of the same names
    fmt = keywords.input_format(input_format)
    chosen = keywords.integer()("--row", row)
    if chosen < 0:  # in click.IntRange(min=0)'s words, as the command line refuses it
        raise keywords.invalid("--row", f"{chosen} is not in the range x>=0.")
    accepted_kind(settings)
    files = {"labels_file": labels_file, "targets_file": targets_file, "teacher_file": teacher_file}
    if input is not None:
        if logits is not None:
            raise InputError("give the logits either as logits= or in the file input= names, not both")
        request = file_request(os.fspath(input), fmt, files, labels, targets, None, teacher_logits,
                               keywords.tensor_keys(key))
        return explain_request(request, settings, chosen)
    _refuse_beside("logits=", "input=", {"input_format": None if fmt == "auto" else fmt, "key": key, **files})
    batch = batch_from_arrays(logits, labels, targets, {}, None, settings.ignore_index, teacher_logits)
    return explain_batch(batch, settings, chosen)
