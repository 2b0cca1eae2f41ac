"""Fit matrices into the terminal: keep the first and last rows and columns, and mark the cut with '…'."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

GAP = "…"
# Below this many columns a table says nothing; narrower terminals get it wrapped instead.
MIN_COLUMNS = 2
UNLIMITED = 1_000_000


def pick(count: int, shown: int) -> list[int | None]:
    """Indices to show when only `shown` of `count` fit: the first ones, None for the cut, the last ones.

    The end stays visible because the last class is often the interesting one (an 'other' class, a padding
    token); two thirds of the room go to the start, where readers look first.
    """
    if count <= shown:
        return list(range(count))
    tail = max(1, shown // 3)
    return [*range(shown - tail), None, *range(count - tail, count)]


def matrix_table(
    console: Console,
    corner: str,
    row_names: Sequence[str],
    column_names: Sequence[str],
    cell: Callable[[int, int], str],
    max_rows: int | None = None,
) -> tuple[Table, list[int | None], list[int | None]]:
    """The widest table of these rows and columns that fits the console, cut in the middle where needed.

    Returns the table and the row and column picks, so the caller can say what was left out.
    """
    rows = pick(len(row_names), max_rows or len(row_names))
    count = len(column_names)
    # A number takes about 12 characters: no point trying more columns than could possibly fit.
    shown = max(MIN_COLUMNS, min(count, console.width // 8))
    while True:
        columns = pick(count, shown)
        table = _table(corner, row_names, column_names, cell, rows, columns)
        if shown <= MIN_COLUMNS or _width_bound(corner, row_names, column_names, cell, rows, columns) <= console.width:
            return table, rows, columns
        # Measured without the console's limit (which would clamp the answer to the width we test against).
        natural = console.measure(table, options=console.options.update(max_width=UNLIMITED)).maximum
        if natural <= console.width:
            return table, rows, columns
        shown -= 1


def _width_bound(
    corner: str,
    row_names: Sequence[str],
    column_names: Sequence[str],
    cell: Callable[[int, int], str],
    rows: list[int | None],
    columns: list[int | None],
) -> int:
    """At least the width _table's table takes: its one-line cells, plus 3 per column for padding and rules.

    Asking rich to measure a table costs as much as drawing it; most tables fit with room to spare.
    """
    from rich.cells import cell_len

    shown = [i for i in rows if i is not None]
    widths = [max(cell_len(corner), *(cell_len(row_names[i]) for i in shown), 1)]
    for j in columns:
        if j is not None:
            widths.append(max(cell_len(column_names[j]), 1, *(cell_len(cell(i, j)) for i in shown)))
    return sum(widths) + 3 * len(columns) + 6


def _table(
    corner: str,
    row_names: Sequence[str],
    column_names: Sequence[str],
    cell: Callable[[int, int], str],
    rows: list[int | None],
    columns: list[int | None],
) -> Table:
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column(corner, justify="right", no_wrap=True)
    for j in columns:
        table.add_column(GAP if j is None else column_names[j], justify="right", no_wrap=True)
    for i in rows:
        if i is None:
            table.add_row(GAP, *(GAP for _ in columns))
        else:
            table.add_row(row_names[i], *(GAP if j is None else cell(i, j) for j in columns))
    return table


def cut_note(picked: list[int | None], names: Sequence[str], what: str) -> str | None:
    """'… 42 of 50 columns not shown: s_4 to s_45', or None when nothing was cut."""
    if None not in picked:
        return None
    gap = picked.index(None)
    before, after = picked[gap - 1], picked[gap + 1]
    assert before is not None and after is not None
    return f"{GAP} {after - before - 1} of {len(names)} {what} not shown: {names[before + 1]} to {names[after - 1]}"
