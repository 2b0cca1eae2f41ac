"""Fit what a person reads into the terminal: matrices keep their first and last rows and columns and mark the
cut with '…'; lines of prose wrap at word boundaries."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.table import Column, Table

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
        grid = _grid(corner, row_names, column_names, cell, rows, columns)
        table = _table(grid)
        if shown <= MIN_COLUMNS or _width_bound(grid) <= console.width:
            return table, rows, columns
        # Measured without the console's limit (which would clamp the answer to the width we test against).
        natural = console.measure(table, options=console.options.update(max_width=UNLIMITED)).maximum
        if natural <= console.width:
            return table, rows, columns
        shown -= 1


def _grid(
    corner: str,
    row_names: Sequence[str],
    column_names: Sequence[str],
    cell: Callable[[int, int], str],
    rows: list[int | None],
    columns: list[int | None],
) -> list[list[str]]:
    """The picked rows and columns as text, each cell formatted once: the header, then a line per row."""
    header = [corner, *(GAP if j is None else column_names[j] for j in columns)]
    body = [
        [GAP] * len(header) if i is None else [row_names[i], *(GAP if j is None else cell(i, j) for j in columns)]
        for i in rows
    ]
    return [header, *body]


def _width_bound(grid: list[list[str]]) -> int:
    """At least the width _table takes for this grid: the widest one-line cell of each column, plus 3 a column
    for padding and rules.

    Asking rich to measure a table costs as much as drawing it; most tables fit with room to spare.
    """
    from rich.cells import cell_len

    return sum(max(cell_len(text) for text in column) for column in zip(*grid, strict=True)) + 3 * len(grid[0]) + 3


def _table(grid: list[list[str]]) -> Table:
    from rich import box
    from rich.table import Table

    header, *body = grid
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for name in header:
        table.add_column(name, justify="right", no_wrap=True)
    for line in body:
        table.add_row(*line)
    return table


def cut_note(picked: list[int | None], names: Sequence[str], what: str) -> str | None:
    """'… 42 of 50 columns not shown: s_4 to s_45', or None when nothing was cut."""
    if None not in picked:
        return None
    gap = picked.index(None)
    before, after = picked[gap - 1], picked[gap + 1]
    assert before is not None and after is not None
    return f"{GAP} {after - before - 1} of {len(names)} {what} not shown: {names[before + 1]} to {names[after - 1]}"


def wrap(text: str, width: int) -> str:
    """Prose in lines of at most `width` columns, broken only between words, continuation lines indented two
    more than the first: a number, a path or a check name is never split (a word wider than the whole width,
    which no number is, keeps its own line). Each line of `text` is wrapped on its own."""
    import textwrap  # already loaded by rich; imported here so that the module costs nothing at start-up

    lines = []
    for line in text.split("\n"):
        indent = " " * (len(line) - len(line.lstrip(" "))) + "  "
        lines += textwrap.wrap(line, max(width, 20), subsequent_indent=indent, break_long_words=False,
                               break_on_hyphens=False) or [""]
    return "\n".join(lines)


# --- the plain path: what rich would print, without rich's rendering -------------------------------------
# Drawing a small table with rich costs more than the check it reports (a one-row run's tables: about a
# tenth of a second on a loaded 2-core machine, a fifth of the start-up). Without colour, a table of
# one-line cells that fits the width is a fixed layout, written here byte for byte as rich writes it
# (tests/test_startup_plain.py compares both); anything else (colour, wide or unusual characters,
# wrapping, another box) returns None and goes to rich.


def plain(console: Console) -> bool:
    """Whether this console writes no styles at all, so the plain path may stand in for rich."""
    return console.no_color and console.color_system is None


def plain_text(text: str) -> bool:
    """Text that rich prints as it is, one column a character: printable ASCII, or the cut mark."""
    return text.replace(GAP, "").isascii() and text.isprintable()


def plain_table(table: Table, width: int) -> str | None:
    """A SIMPLE_HEAD table with pad_edge off (as _table and tables._table build them) as rich prints it
    without colour, or None when rich must draw it (it would wrap, or has what this path does not draw)."""
    from rich import box

    if not _drawn_plainly(table, box.SIMPLE_HEAD):
        return None
    columns = [[_cell_text(column.header), *map(_cell_text, column._cells)] for column in table.columns]
    if any(text is None or not plain_text(text) for texts in columns for text in texts):
        return None
    widths = [max(map(len, texts)) for texts in columns]  # type: ignore[arg-type]
    inner = sum(widths) + 3 * (len(widths) - 1)  # between the edges: cells, a space each side, rules
    title = _cell_text(table.title) if table.title else ""
    if title is None or inner + 2 > width:
        return None
    title_lines = title.split("\n") if title else []
    if any(not plain_text(line) or len(line) > inner + 2 for line in title_lines):
        return None  # rich would wrap it
    rows = [[_justified(texts[k] or "", size, column) for texts, size, column in
             zip(columns, widths, table.columns, strict=True)] for k in range(len(columns[0]))]
    lines = [line.ljust(inner + 2) for line in title_lines]
    lines += [" " * (inner + 2), " " + "   ".join(rows[0]) + " ", " " + "\u2500" * inner + " "]
    lines += [" " + "   ".join(row) + " " for row in rows[1:]]
    lines.append(" " * (inner + 2))
    return "\n".join(lines) + "\n"


def _drawn_plainly(table: Table, simple_head: object) -> bool:
    """The table's settings are the ones this path draws (anything else goes to rich)."""
    return (table.box is simple_head and not table.pad_edge and table.show_header and table.show_edge
            and not table.show_footer and not table.show_lines and not table.leading and not table.expand
            and table.width is None and table.min_width is None and table.caption is None
            and table.padding == (0, 1, 0, 1) and not table.collapse_padding and bool(table.columns)
            and all(_plain_column(column) for column in table.columns))


def _plain_column(column: Column) -> bool:
    return (column.justify in ("left", "right") and column.width is None and column.min_width is None
            and column.max_width is None and column.ratio is None and column.vertical == "top")


def _cell_text(cell: RenderableType) -> str | None:
    """A cell's characters when it is plain text (a str, or a Text whose styles show nothing without colour)."""
    from rich.text import Text

    if isinstance(cell, str):
        return cell
    if isinstance(cell, Text) and cell.justify is None and cell.overflow is None and cell.end == "\n":
        return cell.plain
    return None


def _justified(text: str, size: int, column: Column) -> str:
    return text.ljust(size) if column.justify == "left" else text.rjust(size)
