"""The plain path of the tables (render/layout.plain_table and the prose lines): without colour it writes what
rich writes, byte for byte, and a one-row check then draws nothing with rich (drawing is a fifth of start-up).

Each comparison runs the same command twice: once as shipped, once with the plain path switched off, so rich
draws everything; the two stdouts must be identical.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from gradcheck_cli.render import layout

ROW = ["--logits", "1.1,2.2,0.2,-1.7", "--labels", "2"]
WIDE_ROW = ["--logits", ",".join(f"{0.37 * k - 4:.3f}" for k in range(30)), "--labels", "7"]
CASES = {
    "one row": ROW,
    "three rows, none": ["--logits", "1,2,3", "--logits", "0,-1,5e-7", "--logits", "300,0,-300", "--labels", "0,2,1",
                         "--reduction", "none"],
    "cut columns": WIDE_ROW,
    "failing loss": [*ROW, "--loss-value", "0.5"],
    "z-loss (lse line)": [*ROW, "--z-loss", "1e-4"],
    "mse": [*ROW, "--loss", "mse"],
    "bce": ["--logits", "0.3,-2,4", "--targets", "1,0,1", "--loss", "bce"],
    "focal, float32": [*ROW, "--loss", "focal", "--dtype", "float32"],
    "quiet": [*ROW, "-q"],
}


def _both(gradcheck, monkeypatch, args: list[str], columns: str) -> tuple[str, str]:
    """stdout with the plain path, then with rich drawing everything."""
    monkeypatch.setenv("COLUMNS", columns)
    plain = gradcheck("check", *args)
    with monkeypatch.context() as patched:
        patched.setattr(layout, "plain", lambda console: False)
        drawn = gradcheck("check", *args)
    assert plain.exit_code == drawn.exit_code, (plain, drawn)
    return plain.stdout, drawn.stdout


@pytest.mark.parametrize("columns", ["80", "52", "31"])
@pytest.mark.parametrize("name", CASES)
def test_plain_tables_are_richs_bytes(gradcheck, monkeypatch, name: str, columns: str) -> None:
    """Protects the output's bytes: the plain path stands in for rich only where it writes the same text, at
    widths where tables fit, where a title is wider than its table, and where a table must be wrapped."""
    plain, drawn = _both(gradcheck, monkeypatch, CASES[name], columns)
    assert plain == drawn
    assert plain.strip()


def test_summary_tables_are_richs_bytes(gradcheck, monkeypatch, tmp_path) -> None:
    """Protects the summary of a big input (the Worst rows table with an empty line cell, the Checks table)."""
    path = tmp_path / "big.csv"
    rows = [",".join(f"{(7 * n + 3 * c) % 11 - 5:.2f}" for c in range(10)) + f",{n % 10}" for n in range(12_000)]
    path.write_text("\n".join(["z0,z1,z2,z3,z4,z5,z6,z7,z8,z9,label", *rows]) + "\n")
    plain, drawn = _both(gradcheck, monkeypatch, ["-i", str(path)], "80")
    assert plain == drawn
    assert "Worst rows" in plain


def test_one_row_check_draws_nothing_with_rich(gradcheck, monkeypatch) -> None:
    """Protects the start-up figure: without colour, a one-row check's tables and prose skip rich's renderer."""
    from rich.console import Console

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("rich drew something")

    monkeypatch.setattr(Console, "print", refuse)
    run = gradcheck("check", *ROW)
    assert run.exit_code == 0, run
    assert "PASS" in run.stdout


def test_colour_still_goes_to_rich(gradcheck) -> None:
    """Protects colour: with --color always the plain path stands aside (its text has no styles)."""
    run = gradcheck("check", *ROW, "--color", "always")
    assert run.exit_code == 0, run
    assert "\x1b[" in run.stdout


def _table(title: str | None, *rows: tuple[object, ...]) -> object:
    from rich import box
    from rich.table import Table

    table = Table(title=title, title_justify="left", title_style="none", box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("a", "b"):
        table.add_column(name, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    return table


def _rich(table: object, width: int) -> str:
    from rich.console import Console

    console = Console(width=width, color_system=None, no_color=True, markup=False, highlight=False, emoji=False,
                      record=True, file=open(__import__("os").devnull, "w"))  # noqa: SIM115 - closed below
    console.print(table)
    console.file.close()
    return console.export_text()


@pytest.mark.parametrize("cells", [("1", "2"), ("\u2026", "-3.5e-07"), ("", "x")])
@pytest.mark.parametrize("title", [None, "T", "\nA title", "\nA title wider than the whole table is"])
def test_plain_table_matches_rich(cells: tuple[str, str], title: str | None) -> None:
    """Protects plain_table itself: where it draws, it draws rich's text; where rich would wrap, it declines."""
    table = _table(title, cells, ("10", "200"))
    text = layout.plain_table(table, 80)  # type: ignore[arg-type]
    if title is not None and "wider" in title:  # rich wraps the title to the table's width
        assert text is None
    else:
        assert text == _rich(table, 80)
    narrow = layout.plain_table(table, 8)  # type: ignore[arg-type]
    assert narrow is None or narrow == _rich(table, 8)


@pytest.mark.parametrize("cell", ["\u5bbd", "a\tb", "a\x1bb", "two\nlines"])
def test_plain_table_declines_what_it_cannot_draw(cell: str) -> None:
    """Protects against a wrong drawing: wide characters, tabs, control codes and line breaks go to rich."""
    assert layout.plain_table(_table(None, (cell, "1")), 80) is None  # type: ignore[arg-type]


def _modules(code: str, cwd: object) -> set[str]:
    """The modules loaded in a fresh interpreter once `code` has run (it prints nothing on stderr itself)."""
    probe = f"import sys\n{code}\nsys.stderr.write(' '.join(sys.modules))\n"
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=cwd,
                         env={"NO_COLOR": "1", "COLUMNS": "80", "PATH": ""}, check=False)
    assert run.returncode == 0, run
    return set(run.stderr.split())


# What a one-row check may load beyond the import floor and gradcheck's own modules: locale (click's gettext
# looks up the language on its first message), signal for SIGTERM/SIGHUP, gc (built in: the collection
# threshold, cli._fewer_collections), and what `python -m` itself loads.
ALLOWED_EXTRA = {"locale", "_locale", "signal", "gc", "runpy", "importlib.util", "importlib._abc",
                 "importlib.machinery"}


def test_one_row_check_imports_nothing_beyond_the_floor(tmp_path) -> None:
    """Protects start-up: a one-row check with tables loads no module that importing numpy, click, rich.console
    and rich.table does not (no rich rendering helper, no json, no textwrap extras), but its own and the few
    named in ALLOWED_EXTRA. A new import on this path is start-up time every user pays."""
    floor = _modules("import numpy, click, rich.console, rich.table", tmp_path)
    check = _modules("import runpy\nsys.argv = ['gradcheck', 'check', '--logits', '1.1,2.2,0.2,-1.7', '--labels', '2']\n"
                     "try:\n    runpy.run_module('gradcheck_cli', run_name='__main__')\nexcept SystemExit as end:\n"
                     "    assert end.code == 0, end.code", tmp_path)
    extra = {name for name in check - floor if not name.startswith("gradcheck_cli")}
    assert extra <= ALLOWED_EXTRA, sorted(extra - ALLOWED_EXTRA)
