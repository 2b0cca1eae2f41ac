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
from gradcheck_cli.numerics.losses import loss_kind
from gradcheck_cli.render import layout
from gradcheck_cli.render.verdict import count, diagnosis_line, digits, verdict_line, where, worst_values
from gradcheck_cli.report import Report

if TYPE_CHECKING:
    from rich.console import Console

    from gradcheck_cli.terminal import Output

# Tables show at most this many samples (and gradient entries); JSON always carries everything.
MAX_TABLE_ROWS = 10
MAX_GRADIENT_ENTRIES = 24
MAX_JACOBIAN_ROWS = 3  # samples whose Jacobian is shown
MAX_JACOBIAN_CLASSES = 8  # rows s_i of one Jacobian shown before it is cut in the middle
_SOURCES = {"supplied": "supplied", "impl": "--impl"}  # where the user's values came from, as the tables say it


def write(report: Report, out: Output, color: str, quiet: bool) -> None:
    console = out.console(color)
    out.write(lambda: render_tables(report, console, quiet=quiet))


def _number(value: float) -> str:
    """Six significant digits; a negative zero (the Jacobian of a saturated row) is shown as 0, not -0."""
    return f"{value + 0.0:.6g}" if np.isfinite(value) else str(value)


def _say(console: Console, text: str, style: str = "") -> None:
    """A line of prose, wrapped at word boundaries to the console's width (never inside a number)."""
    from rich.text import Text

    wrapped = layout.wrap(text, console.width)
    if layout.plain(console) and all(map(layout.plain_text, wrapped.split("\n"))):
        console.file.write(wrapped + "\n")  # what rich prints without colour, without its rendering
        return
    console.print(Text(wrapped, style=style), soft_wrap=True)


def _show(console: Console, table: Any) -> None:
    """A table, as rich draws it; without colour, drawn by layout.plain_table when it can."""
    text = layout.plain_table(table, console.width) if layout.plain(console) else None
    if text is None:
        console.print(table)
    else:
        console.file.write(text)


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
    _show(console, table)
    for note in (layout.cut_note(rows, row_names, "rows"), layout.cut_note(columns, column_names, columns_are)):
        if note:
            _say(console, f"  {note}; --format json has them all")


def _more(console: Console, shown: int, total: int, singular: str, plural: str | None = None) -> None:
    if total > shown:
        _say(console, f"  {layout.GAP} {count(total - shown, 'more ' + singular, plural and 'more ' + plural)} "
                      "not shown; --format json has them all")


def _verdict(report: Report, console: Console) -> None:
    _say(console, verdict_line(report), "bold green" if report.passed else "bold red")


# LossKind.activation -> how the tables name its probabilities and write its Jacobian.
_ACTIVATIONS = {"softmax": ("Softmax", "J_ij = ds_i/dz_j = s_i (d_ij - s_j)"),
                "sigmoid": ("Sigmoid", "J_ij = ds_i/dz_j = d_ij s_i (1 - s_i)")}


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
    activation, jacobian_formula = _ACTIVATIONS[loss_kind(settings.loss).activation]
    _matrix(console, f"{activation} probabilities s", "row", [str(n) for n in range(shown_rows)],
            [f"s_{c}" for c in range(classes)], _cells(report.probabilities), "classes")
    _more(console, MAX_TABLE_ROWS, rows, "row")
    for source, values in report.users():  # the user's own, cell for cell under the reference's
        if "probabilities" in values:
            _matrix(console, f"Your probabilities ({_SOURCES[source]})", "row", [str(n) for n in range(shown_rows)],
                    [f"s_{c}" for c in range(classes)], _cells(values["probabilities"]), "classes")

    names = ([f"s_{i}" for i in range(classes)], [f"z_{j}" for j in range(classes)])
    if report.jacobian is None:  # too wide to be worth building only to show a corner of it
        _say(console, f"{activation} Jacobian: {classes} x {classes} per row, checked without building it "
                      "(-f json prints it)")
    else:
        for n in range(min(rows, MAX_JACOBIAN_ROWS)):
            _matrix(console, f"{activation} Jacobian of row {n}: {jacobian_formula}", "", *names,
                    _cells(report.jacobian[n]), "columns", max_rows=MAX_JACOBIAN_CLASSES)
        _more(console, MAX_JACOBIAN_ROWS, rows, "Jacobian")

    _render_loss(report, console)
    _render_lse(report, console)
    _render_gradient(report, console)

    _render_checks(report, console)


def _render_loss(report: Report, console: Console) -> None:
    """The loss, and the user's loss after it (per row, or one number)."""
    settings, loss = report.settings, report.loss
    if isinstance(loss, np.ndarray):
        shown = ", ".join(_number(v) for v in loss[:MAX_TABLE_ROWS])
        _say(console, f"\nLoss per row ({settings.reduction}): {shown}")
        for source, values in report.users():
            if "loss" in values:
                yours = ", ".join(_number(v) for v in np.atleast_1d(values["loss"])[:MAX_TABLE_ROWS])
                _say(console, f"Your loss per row ({_SOURCES[source]}): {yours}")
        _more(console, MAX_TABLE_ROWS, report.rows, "row loss", "row losses")
    elif loss is not None:
        _say(console, f"\nLoss ({settings.loss}, {settings.reduction}): {digits(loss)}")
        for source, values in report.users():
            if "loss" in values and np.ndim(values["loss"]) == 0:
                _say(console, f"Your loss ({_SOURCES[source]}): {digits(float(values['loss']))}")


def _render_lse(report: Report, console: Console) -> None:
    """Each row's log-sum-exp, and the user's under it: only when it matters to the run (--z-loss squares it, or
    the user supplied theirs), so the tables of every other run stay as short as they were (JSON always has it)."""
    yours = [(source, values["lse"]) for source, values in report.users() if "lse" in values]
    if report.lse is None or not (yours or report.settings.z_loss):
        return
    shown = ", ".join(_number(v) for v in report.lse[:MAX_TABLE_ROWS])
    _say(console, f"Log-sum-exp per row (lse): {shown}")
    for source, values in yours:
        theirs = ", ".join(_number(v) for v in values[:MAX_TABLE_ROWS])
        _say(console, f"Your lse per row ({_SOURCES[source]}): {theirs}")
    _more(console, MAX_TABLE_ROWS, report.rows, "row lse", "row lses")


def _render_gradient(report: Report, console: Console) -> None:
    """Each shown element of the gradient: the user's values first when there are any (against the reference,
    with the finite difference third), else gradcheck's analytic gradient against its finite differences."""
    analytic, numeric = report.analytic_gradient, report.numeric_gradient
    assert analytic is not None and numeric is not None
    users = [(source, values["gradient"]) for source, values in report.users() if "gradient" in values]
    if users:
        names = [f"yours ({_SOURCES[source]})" if len(users) > 1 else "yours" for source, _ in users]
        title = f"\nGradient dL/dz: yours ({', '.join(_SOURCES[source] for source, _ in users)}) vs the reference"
        gradient = _table(title, "row", "class", *names, "reference", "finite diff", "abs error", "rel error")
    else:
        gradient = _table("\nGradient dL/dz", "row", "class", "analytic", "numeric", "abs error", "rel error")
    rows, classes = report.rows, report.classes
    entries = [(n, c) for n in range(min(rows, MAX_GRADIENT_ENTRIES)) for c in range(classes)][:MAX_GRADIENT_ENTRIES]
    for n, c in entries:
        yours = [float(values[n, c]) for _, values in users]
        a, b = (yours[0], analytic[n, c]) if users else (analytic[n, c], numeric[n, c])
        with np.errstate(invalid="ignore", over="ignore"):
            error = abs(a - b)
            relative = error / max(abs(a), abs(b), np.finfo(np.float64).tiny)
        cells = [*(_number(v) for v in yours), _number(analytic[n, c]), _number(numeric[n, c])] if users else [
            _number(a), _number(b)]
        gradient.add_row(str(n), str(c), *cells, _error(error if np.isfinite(error) else None),
                         _error(relative if np.isfinite(relative) else None))
    _show(console, gradient)
    if users:
        _say(console, "abs and rel error: yours vs the reference (gradcheck's analytic gradient)")
    _more(console, len(entries), rows * classes, "gradient entry", "gradient entries")


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
    _show(console, worst)
    _render_yours_where_worst(report, console)
    _render_checks(report, console)


def _render_yours_where_worst(report: Report, console: Console) -> None:
    """A summary keeps no per-row arrays: each failing check of your values shows, instead, its worst elements
    (up to five, worst first) with your value beside the reference's."""
    for check in report.checks:
        if check.passed or not check.name.startswith(("supplied ", "impl ")) or not check.worst_elements:
            continue
        table = _table(f"Your values where {check.name} is worst", "element", "yours", "reference",
                       wrapping=("element",))
        for element in check.worst_elements:
            place = ", ".join(str(i) for i in element.position) or "its value"
            table.add_row(f"[{place}]", _number(element.actual), _number(element.expected))
        _show(console, table)


def _render_baselines(report: Report, console: Console) -> None:
    """The half-precision baseline verdicts' figures: your largest error and the plain same-dtype
    implementation's, and the root mean square of each in units in the last place (ulp), with their ratio."""
    from rich.text import Text

    figures = [(check, check.baseline) for check in report.checks if check.baseline is not None]
    if not figures:
        return
    table = _table("\nHalf-precision baselines", "check", "result", "your error", "baseline", "ratio", "your ulp",
                   "base ulp", wrapping=("check",))
    for check, baseline in figures:
        result = Text("pass", style="green") if check.passed else Text("FAIL", style="bold red")
        ratio = "-" if baseline.ratio is None else f"{baseline.ratio:.3g}"
        table.add_row(check.name.removesuffix(f" vs {baseline.dtype} baseline"), result, _error(baseline.error),
                      _error(baseline.baseline_error), ratio, _ulps(baseline.ulps), _ulps(baseline.baseline_ulps))
    table.columns[0].justify = "left"
    _show(console, table)
    dtype = figures[0][1].dtype
    _say(console, f"passes when your ulp <= 2 x the baseline's + 1; ulp: root mean square of each element's error "
                  f"in ulp of {dtype} at its scale; errors: the largest; baseline: gradcheck's plain {dtype} code, "
                  "rounded after every operation")


def _ulps(value: float | None) -> str:
    return "non-finite" if value is None else f"{value:.3g}"


def _render_checks(report: Report, console: Console) -> None:
    from rich.text import Text

    checks = _table("Checks", "check", "result", "max abs err", "max rel err", "worst element",
                    wrapping=("check", "worst element"))
    for check in report.checks:
        result = Text("pass", style="green") if check.passed else Text("FAIL", style="bold red")
        checks.add_row(check.name, result, _error(check.max_abs_error), _error(check.max_rel_error), where(check))
    checks.columns[0].justify = "left"
    checks.columns[-1].justify = "left"
    _show(console, checks)
    # The worst element is not where the largest error is when a smaller error has a tighter tolerance.
    _say(console, "worst element: most of its tolerance used (not always where max abs err is)")
    _render_baselines(report, console)
    for check in report.checks:
        if not check.passed:
            _say(console, worst_values(check))
            slip = diagnosis_line(report, check)
            if slip is not None:
                _say(console, slip)
    _verdict(report, console)
