"""Rich tables for people, readable at 80 columns: the per-row arrays of a small input, a summary of a big one.

Everything else printed here is prose (headings, notes, the failing values, the verdict): each line goes
through `_say`, which wraps it at word boundaries to the console's width, so no line is wider than the
tables and no number is split. Colour marks the result only: the verdict line, and pass/FAIL in the Checks
table (with bold table headings); no data cell is ever styled."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from gradcheck_cli.checks.runner import FULL_LIMIT
from gradcheck_cli.render import layout
from gradcheck_cli.render.verdict import count, digits, verdict_line, where, worst_values
from gradcheck_cli.report import Report

if TYPE_CHECKING:
    from rich.console import Console

    from gradcheck_cli.terminal import Output

# Tables show at most this many samples (and gradient entries); JSON always carries everything.
MAX_TABLE_ROWS = 10
MAX_GRADIENT_ENTRIES = 24
MAX_JACOBIAN_ROWS = 3  # samples whose Jacobian is shown
MAX_JACOBIAN_CLASSES = 8  # rows s_i of one Jacobian shown before it is cut in the middle


def write(report: Report, out: Output, color: str, quiet: bool) -> None:
    console = out.console(color)
    out.write(lambda: render_tables(report, console, quiet=quiet))


def _number(value: float) -> str:
    """Six significant digits; a negative zero (the Jacobian of a saturated row) is shown as 0, not -0."""
    return f"{value + 0.0:.6g}" if np.isfinite(value) else str(value)


def _say(console: Console, text: str, style: str = "") -> None:
    """A line of prose, wrapped at word boundaries to the console's width (never inside a number)."""
    from rich.text import Text

    console.print(Text(layout.wrap(text, console.width), style=style), soft_wrap=True)


def _step(eps: float) -> str:
    """The step the differences used: --eps or the default, rounded down to a power of two (differences.steps),
    so that every offset of a stencil is exact in binary."""
    from gradcheck_cli.numerics.differences import exact_step

    step = float(exact_step(eps))
    return f"step h = 2^{int(np.log2(step))} = {step:.3g}"


def _error(value: float | None) -> str:
    return "non-finite" if value is None else f"{value:.2e}"


def _table(title: str, *columns: str, wrapping: tuple[str, ...] = ()) -> Any:
    """A table whose columns never wrap, but for those named in `wrapping` (wrapping costs a third of drawing)."""
    from rich import box
    from rich.table import Table

    # Titles plain ("none": rich would make them italic), as the matrices' titles are: colour and bold mark
    # only the result and the headings.
    table = Table(title=title, title_justify="left", title_style="none", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in columns:
        table.add_column(column, justify="right", no_wrap=column not in wrapping)
    return table


def _cells(matrix: np.ndarray) -> Callable[[int, int], str]:
    return lambda i, j: _number(float(matrix[i, j]))


def _matrix(
    console: Console,
    title: str,
    corner: str,
    row_names: list[str],
    column_names: list[str],
    cell: Callable[[int, int], str],
    columns_are: str,
    max_rows: int | None = None,
) -> None:
    """A titled matrix that fits the console, with a line saying which rows and columns were cut."""
    table, rows, columns = layout.matrix_table(console, corner, row_names, column_names, cell, max_rows)
    _say(console, title)
    console.print(table)
    for note in (layout.cut_note(rows, row_names, "rows"), layout.cut_note(columns, column_names, columns_are)):
        if note:
            _say(console, f"  {note}; --format json has them all")


def _more(console: Console, shown: int, total: int, singular: str, plural: str | None = None) -> None:
    if total > shown:
        _say(console, f"  {layout.GAP} {count(total - shown, 'more ' + singular, plural and 'more ' + plural)} "
                      "not shown; --format json has them all")


def _verdict(report: Report, console: Console) -> None:
    _say(console, verdict_line(report), "bold green" if report.passed else "bold red")


def render_tables(report: Report, console: Console, quiet: bool = False) -> None:
    if quiet:
        _verdict(report, console)
        return
    settings = report.settings
    rows, classes = report.rows, report.classes
    assert settings.eps is not None  # resolved: the default step is filled in
    _say(console, f"gradcheck: {rows} x {classes} logits, {settings.loss} ({settings.reduction}), {settings.dtype}")
    _say(console, f"{settings.method} differences, {_step(settings.eps)}, atol {settings.atol:g}, "
                  f"rtol {settings.rtol:g}")
    if not report.full:
        _render_summary(report, console)
        return

    assert report.probabilities is not None
    assert report.analytic_gradient is not None and report.numeric_gradient is not None
    shown_rows = min(rows, MAX_TABLE_ROWS)
    _matrix(console, "Softmax probabilities s", "row", [str(n) for n in range(shown_rows)],
            [f"s_{c}" for c in range(classes)], _cells(report.probabilities), "classes")
    _more(console, MAX_TABLE_ROWS, rows, "row")

    names = ([f"s_{i}" for i in range(classes)], [f"z_{j}" for j in range(classes)])
    if report.jacobian is None:  # too wide to be worth building only to show a corner of it
        _say(console, f"Softmax Jacobian: {classes} x {classes} per row, checked without building it "
                      "(-f json prints it)")
    else:
        for n in range(min(rows, MAX_JACOBIAN_ROWS)):
            _matrix(console, f"Softmax Jacobian of row {n}: J_ij = ds_i/dz_j = s_i (d_ij - s_j)", "", *names,
                    _cells(report.jacobian[n]), "columns", max_rows=MAX_JACOBIAN_CLASSES)
        _more(console, MAX_JACOBIAN_ROWS, rows, "Jacobian")

    loss = report.loss
    if isinstance(loss, np.ndarray):
        shown = ", ".join(_number(v) for v in loss[:MAX_TABLE_ROWS])
        _say(console, f"\nLoss per row ({settings.reduction}): {shown}")
        _more(console, MAX_TABLE_ROWS, rows, "row loss", "row losses")
    elif loss is not None:
        _say(console, f"\nLoss ({settings.loss}, {settings.reduction}): {digits(loss)}")

    gradient = _table("\nGradient dL/dz", "row", "class", "analytic", "numeric", "abs error", "rel error")
    analytic, numeric = report.analytic_gradient, report.numeric_gradient
    entries = [(n, c) for n in range(min(rows, MAX_GRADIENT_ENTRIES)) for c in range(classes)][:MAX_GRADIENT_ENTRIES]
    for n, c in entries:
        a, b = analytic[n, c], numeric[n, c]
        error = abs(a - b)
        relative = error / max(abs(a), abs(b), np.finfo(np.float64).tiny)
        gradient.add_row(str(n), str(c), _number(a), _number(b), _error(error), _error(relative))
    console.print(gradient)
    _more(console, len(entries), rows * classes, "gradient entry", "gradient entries")

    _render_checks(report, console)


def _render_summary(report: Report, console: Console) -> None:
    """A big input: no per-row tables, but the loss, every check, and the rows where each check is worst."""
    _say(console, f"{count(report.rows, 'row')} checked in full; per-row tables are left out above "
                  f"{FULL_LIMIT:,} logits (--full prints them, --format ndjson streams them)")
    loss = report.loss
    if loss is not None and not isinstance(loss, np.ndarray):
        _say(console, f"Loss ({report.settings.loss}, {report.settings.reduction}): {digits(loss)}")
    worst = _table("Worst rows", "check", "row", "line", "result", wrapping=("check",))
    for entry in report.worst_rows():
        line = "" if entry["line"] is None else str(entry["line"])
        worst.add_row(entry["check"], str(entry["row"]), line, "pass" if entry["passed"] else "FAIL")
    console.print(worst)
    _render_checks(report, console)


def _render_checks(report: Report, console: Console) -> None:
    from rich.text import Text

    checks = _table("Checks", "check", "result", "max abs err", "max rel err", "worst element",
                    wrapping=("check", "worst element"))
    for check in report.checks:
        result = Text("pass", style="green") if check.passed else Text("FAIL", style="bold red")
        checks.add_row(check.name, result, _error(check.max_abs_error), _error(check.max_rel_error), where(check))
    checks.columns[0].justify = "left"
    checks.columns[-1].justify = "left"
    console.print(checks)
    # The worst element is not where the largest error is when a smaller error has a tighter tolerance.
    _say(console, "worst element: most of its tolerance used (not always where max abs err is)")
    for check in report.checks:
        if not check.passed:
            _say(console, worst_values(check))
    _verdict(report, console)
