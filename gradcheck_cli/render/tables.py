"""Rich tables for people, readable at 80 columns: the per-row arrays of a small input, a summary of a big one."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from gradcheck_cli.checks.runner import FULL_LIMIT
from gradcheck_cli.render import layout
from gradcheck_cli.render.verdict import verdict_line, where
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
    return f"{value:.6g}" if np.isfinite(value) else str(value)


def _error(value: float | None) -> str:
    return "non-finite" if value is None else f"{value:.2e}"


def _table(title: str, *columns: str, wrapping: tuple[str, ...] = ()) -> Any:
    """A table whose columns never wrap, but for those named in `wrapping` (wrapping costs a third of drawing)."""
    from rich import box
    from rich.table import Table

    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
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
    console.print(title, soft_wrap=True)
    console.print(table)
    for note in (layout.cut_note(rows, row_names, "rows"), layout.cut_note(columns, column_names, columns_are)):
        if note:
            console.print(f"  {note}; --format json has them all", soft_wrap=True)


def _more(console: Console, shown: int, total: int, what: str) -> None:
    if total > shown:
        console.print(f"  {layout.GAP} {total - shown} more {what} not shown; --format json has them all")


def _verdict(report: Report) -> Any:
    from rich.text import Text

    return Text(verdict_line(report), style="bold green" if report.passed else "bold red")


def render_tables(report: Report, console: Console, quiet: bool = False) -> None:

    if quiet:
        console.print(_verdict(report), soft_wrap=True)
        return
    settings = report.settings
    rows, classes = report.rows, report.classes
    console.print(f"gradcheck: {rows} x {classes} logits, {settings.loss} ({settings.reduction}), {settings.dtype}")
    console.print(
        f"{settings.method} differences, eps {settings.eps:.3g}, atol {settings.atol:g}, rtol {settings.rtol:g}"
    )
    if not report.full:
        _render_summary(report, console)
        return

    assert report.probabilities is not None
    assert report.analytic_gradient is not None and report.numeric_gradient is not None
    shown_rows = min(rows, MAX_TABLE_ROWS)
    _matrix(console, "Softmax probabilities s", "row", [str(n) for n in range(shown_rows)],
            [f"s_{c}" for c in range(classes)], _cells(report.probabilities), "classes")
    _more(console, MAX_TABLE_ROWS, rows, "rows")

    names = ([f"s_{i}" for i in range(classes)], [f"z_{j}" for j in range(classes)])
    if report.jacobian is None:  # too wide to be worth building only to show a corner of it
        console.print(f"Softmax Jacobian: {classes} x {classes} per row, checked without building it "
                      "(-f json prints it)")
    else:
        for n in range(min(rows, MAX_JACOBIAN_ROWS)):
            _matrix(console, f"Softmax Jacobian of row {n}: J_ij = ds_i/dz_j = s_i (d_ij - s_j)", "", *names,
                    _cells(report.jacobian[n]), "columns", max_rows=MAX_JACOBIAN_CLASSES)
        _more(console, MAX_JACOBIAN_ROWS, rows, "Jacobians")

    loss = report.loss
    if isinstance(loss, np.ndarray):
        shown = ", ".join(_number(v) for v in loss[:MAX_TABLE_ROWS])
        console.print(f"\nLoss per row ({settings.reduction}): {shown}")
        _more(console, MAX_TABLE_ROWS, rows, "row losses")
    else:
        console.print(f"\nLoss ({settings.loss}, {settings.reduction}): {loss!r}")

    gradient = _table("\nGradient dL/dz", "row", "class", "analytic", "numeric", "abs error", "rel error")
    analytic, numeric = report.analytic_gradient, report.numeric_gradient
    entries = [(n, c) for n in range(min(rows, MAX_GRADIENT_ENTRIES)) for c in range(classes)][:MAX_GRADIENT_ENTRIES]
    for n, c in entries:
        a, b = analytic[n, c], numeric[n, c]
        error = abs(a - b)
        relative = error / max(abs(a), abs(b), np.finfo(np.float64).tiny)
        gradient.add_row(str(n), str(c), _number(a), _number(b), f"{error:.2e}", f"{relative:.2e}")
    console.print(gradient)
    _more(console, len(entries), rows * classes, "gradient entries")

    _render_checks(report, console)


def _render_summary(report: Report, console: Console) -> None:
    """A big input: no per-row tables, but the loss, every check, and the rows where each check is worst."""
    console.print(f"{report.rows} rows checked in full; per-row tables are left out above "
                  f"{FULL_LIMIT} logits (--full prints them, --format ndjson streams them)")
    loss = report.loss
    if loss is not None and not isinstance(loss, np.ndarray):
        console.print(f"Loss ({report.settings.loss}, {report.settings.reduction}): {loss!r}")
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
    for check in report.checks:
        if not check.passed:
            # Full digits here: the values often agree to the six shown in the tables.
            console.print(
                f"{check.name} fails worst at {where(check)}: {check.actual!r} vs reference {check.expected!r}",
                soft_wrap=True,
            )
    console.print(_verdict(report), soft_wrap=True)
