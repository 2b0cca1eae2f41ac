"""Turn a Report into strict JSON or into rich tables that stay readable at 80 columns."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from gradcheck_cli import layout
from gradcheck_cli.checks import CheckResult
from gradcheck_cli.report import Report
from gradcheck_cli.schema import SCHEMA_VERSION

if TYPE_CHECKING:
    from rich.console import Console

# Up to this many logits (rows x classes) the report carries every per-row array, in tables and JSON;
# above it, a summary (checks, loss, worst rows) unless --full. 20,000 logits with C = 10 is already
# 2,000 Jacobians, some 4 MB of JSON.
FULL_LIMIT = 20_000
# Tables show at most this many samples (and gradient entries); JSON always carries everything.
MAX_TABLE_ROWS = 10
MAX_GRADIENT_ENTRIES = 24
MAX_JACOBIAN_ROWS = 3  # samples whose Jacobian is shown
MAX_JACOBIAN_CLASSES = 8  # rows s_i of one Jacobian shown before it is cut in the middle


# --- JSON ---------------------------------------------------------------------------------------------------


def finite_or_none(values: Any) -> Any:
    """Nested lists of floats with every non-finite value as null, so the JSON stays strict."""
    array = np.asarray(values, dtype=np.float64)
    if np.isfinite(array).all():
        return array.tolist()
    cleaned = array.astype(object)
    cleaned[~np.isfinite(array)] = None
    return cleaned.tolist()


def check_to_dict(check: CheckResult) -> dict[str, Any]:
    index = list(check.worst_index)
    return {
        "name": check.name,
        "passed": check.passed,
        "max_abs_error": check.max_abs_error,
        "max_rel_error": check.max_rel_error,
        "worst": {
            "index": index,
            "row": index[0] if index else None,
            "column": index[-1] if index else None,
            "actual": finite_or_none(check.actual),
            "expected": finite_or_none(check.expected),
        },
    }


def report_to_dict(report: Report) -> dict[str, Any]:
    """The JSON report. The per-row arrays are there when report.full (`arrays` says which)."""
    settings = report.settings
    document: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "command": "check",
        "passed": report.passed,
        "settings": {
            "method": settings.method,
            "eps": settings.eps,
            "atol": settings.atol,
            "rtol": settings.rtol,
            "dtype": settings.dtype,
            "loss": settings.loss,
            "reduction": settings.reduction,
            "order": settings.order,
            "weights": None if settings.weights is None else list(settings.weights),
            "label_smoothing": settings.label_smoothing,
            "ignore_index": settings.ignore_index,
            "temperature": settings.temperature,
        },
        "shape": {"rows": report.rows, "classes": report.classes},
        "arrays": report.full,
        "loss": None if report.loss is None else finite_or_none(report.loss),
        "checks": [check_to_dict(check) for check in report.checks],
        "worst_rows": worst_rows(report),
        "notes": report.notes,
    }
    if report.full:
        document["probabilities"] = finite_or_none(report.probabilities)
        document["jacobian"] = finite_or_none(report.jacobian)
        document["gradient"] = {
            "analytic": finite_or_none(report.analytic_gradient),
            "numeric": finite_or_none(report.numeric_gradient),
        }
    return document


def worst_rows(report: Report) -> list[dict[str, Any]]:
    """For each check, the row of its worst element and the file line it came from (if any)."""
    rows = []
    for check in report.checks:
        if check.worst_index and check.name in ("gradient", "jacobian", "hessian"):
            row = check.worst_index[0]
            rows.append({"check": check.name, "row": row, "line": report.line_of(row), "passed": check.passed})
    return rows


def render_json(report: Report) -> str:
    import json  # here, not at the top: start-up pays for it only when JSON is used

    # allow_nan=False: a NaN that slipped past finite_or_none is a bug, and must not become invalid JSON.
    return json.dumps(report_to_dict(report), allow_nan=False)


# --- tables -------------------------------------------------------------------------------------------------


def _number(value: float) -> str:
    return f"{value:.6g}" if np.isfinite(value) else str(value)


def _error(value: float | None) -> str:
    return "non-finite" if value is None else f"{value:.2e}"


def _where(check: CheckResult) -> str:
    index = check.worst_index
    if check.name == "jacobian" and len(index) == 3:
        return f"row {index[0]}, ds_{index[1]}/dz_{index[2]}"
    if check.name == "hessian" and len(index) == 3:
        return f"row {index[0]}, d2L/dz_{index[1]}dz_{index[2]}"
    if len(index) == 2:
        return f"row {index[0]}, class {index[1]}"
    if not index:
        return "its value"
    if len(index) == 1:
        return f"row {index[0]}"
    return ", ".join(str(i) for i in index)


def verdict_line(report: Report) -> str:
    failed = [check for check in report.checks if not check.passed]
    if not failed:
        if [check.name for check in report.checks] == ["gradient", "jacobian"]:
            return "PASS: gradient and jacobian agree with finite differences (2 checks)"
        return f"PASS: all {len(report.checks)} checks agree ({', '.join(check.name for check in report.checks)})"
    first = failed[0]
    error = abs(first.actual - first.expected)
    size = f"abs error {error:.2e}" if np.isfinite(error) else "a value is not finite"
    tally = f"{len(failed)} of {len(report.checks)} checks failed"
    return f"FAIL: {first.name} disagrees at {_where(first)}, {size} ({tally})"


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
    for entry in worst_rows(report):
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
        checks.add_row(check.name, result, _error(check.max_abs_error), _error(check.max_rel_error), _where(check))
    checks.columns[0].justify = "left"
    checks.columns[-1].justify = "left"
    console.print(checks)
    for check in report.checks:
        if not check.passed:
            # Full digits here: the values often agree to the six shown in the tables.
            console.print(
                f"{check.name} fails worst at {_where(check)}: {check.actual!r} vs reference {check.expected!r}",
                soft_wrap=True,
            )
    console.print(_verdict(report), soft_wrap=True)


# --- GitHub Actions annotations -------------------------------------------------------------------------


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def github_error(source: str | None, title: str, message: str, line: int | None = None) -> str:
    """One `::error` workflow command, placed on the input file (and its line) when there is a file."""
    properties = []
    if source and source != "<stdin>":
        properties.append(f"file={_escape_property(source)}")
        if line is not None:
            properties.append(f"line={line}")
    properties.append(f"title={_escape_property(title)}")
    return f"::error {','.join(properties)}::{_escape_data(message)}"


def github_annotation(report: Report, check: CheckResult) -> str:
    """The annotation of a failing check, on the file line of its worst row."""
    message = (
        f"{check.name} disagrees at {_where(check)}: {check.actual!r} vs reference {check.expected!r} "
        f"(atol {report.settings.atol:g}, rtol {report.settings.rtol:g})"
    )
    row = check.worst_index[0] if check.worst_index else None
    line = report.line_of(row) if row is not None else None
    return github_error(report.source, f"gradcheck: {check.name} disagrees", message, line)


def render_github(report: Report) -> str:
    """An annotation per failing check, for the pull request, then the verdict line for the log."""
    lines = [github_annotation(report, check) for check in report.checks if not check.passed]
    return "\n".join([*lines, verdict_line(report)])
