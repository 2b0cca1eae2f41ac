"""ndjson: one JSON line per sample as its batch is checked, then the report (the JSON document) as the last line."""

from __future__ import annotations

import sys
from typing import IO, TYPE_CHECKING

import numpy as np

from gradcheck_cli.batch import Batch
from gradcheck_cli.render.json_report import render_json
from gradcheck_cli.report import Report, RowChecks, finite_or_none

if TYPE_CHECKING:
    from gradcheck_cli.checks.runner import OnRows
    from gradcheck_cli.terminal import Output


def write(report: Report, out: Output, color: str, quiet: bool) -> None:
    out.echo(render_json(report))


def rows_writer(out: Output) -> OnRows:
    """What the runner calls with each checked batch: its rows, written as they are done."""

    def on_rows(start: int, batch: Batch, part: RowChecks) -> None:
        out.write(lambda: write_rows(sys.stdout, start, batch, part))

    return on_rows


def write_rows(stream: IO[str], start: int, batch: Batch, part: RowChecks) -> None:
    """One JSON object per sample: its loss, probabilities, gradients and how far they disagree.

    The arrays become Python lists a chunk at a time (one call each, not one per value); the loop over rows
    only assembles each row's record, which is what ndjson is.
    """
    import json  # here, not at the top: start-up pays for it only when JSON is used

    rows = batch.rows
    error = np.abs(part.analytic_gradient - part.numeric_gradient).max(axis=1)
    lines = batch.row_lines
    columns = zip(
        range(start, start + rows),
        [None] * rows if lines is None else np.asarray(lines).tolist(),
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
    stream.write("\n".join(records) + "\n")
