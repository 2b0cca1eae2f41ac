"""Terminal conventions shared by every command: the stdout writer, colour, verbosity, progress, timed steps.

stdout carries results only; everything here that talks to the user writes to stderr. rich is imported
only when a console or a progress bar is built, so `--help` and usage errors stay fast.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from rich.console import Console


class Output:
    """stdout for one run. If its reader goes away (`| head`), stop quietly: the exit code still says the verdict."""

    def __init__(self) -> None:
        self.reader_gone = False

    def write(self, emit: Callable[[], None]) -> None:
        if self.reader_gone:  # nobody reads: do not spend time formatting (ndjson rows cost more than checking)
            return
        try:
            emit()
            sys.stdout.flush()
        except BrokenPipeError:
            self.reader_gone = True
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())

    def echo(self, text: str) -> None:
        self.write(lambda: click.echo(text))

    def console(self, choice: str) -> Console:
        return make_console(choice)


def output() -> Output:
    """This run's stdout writer (one per command line run; several runs may share a process, as tests do)."""
    context = click.get_current_context(silent=True)
    if context is None:
        return Output()
    writer: Output = context.meta.setdefault("gradcheck.output", Output())
    return writer


def wants_color(choice: str, stream: object = None) -> bool:
    """Whether to colour: an explicit --color wins; auto means a terminal, no NO_COLOR, and TERM is not dumb.

    FORCE_COLOR (set by some CI systems that show colour) turns auto on even off a terminal, unless
    NO_COLOR is also set: a request for no colour beats a request for colour.
    """
    if choice in ("always", "never"):
        return choice == "always"
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    if os.environ.get("TERM") == "dumb":
        return False
    stream = sys.stdout if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def make_console(choice: str) -> Console:
    """One rich Console for the run's results; data is never styled by accident (markup and highlighting off)."""
    from rich.console import Console

    color = wants_color(choice)
    console = Console(
        color_system="standard" if color else None,
        force_terminal=color,
        no_color=not color,
        markup=False,
        highlight=False,
        emoji=False,
    )
    # rich exits 1 on a closed pipe, which here would mean "a check disagrees"; let write_stdout decide.
    console.on_broken_pipe = _raise_broken_pipe  # type: ignore[method-assign]
    return console


def _raise_broken_pipe() -> None:
    raise BrokenPipeError


# --- verbosity ------------------------------------------------------------------------------------------
# -q acts on stdout (only the verdict line), -v on stderr (steps and timing): they combine, they do not cancel.


def _remember(key: str) -> Any:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        ctx.meta[key] = value

    return callback


quiet_option = click.option(
    "-q", "--quiet", is_flag=True, expose_value=False, callback=_remember("gradcheck.quiet"),
    envvar="GRADCHECK_QUIET", show_envvar=True,
    help="Print only the verdict line on stdout; the exit code says the rest.",
)
verbose_option = click.option(
    "-v", "--verbose", count=True, expose_value=False, callback=_remember("gradcheck.verbose"),
    help="Report each step and its time on stderr.",
)


def _setting(key: str) -> Any:
    context = click.get_current_context(silent=True)
    return None if context is None else context.meta.get(key)


def quiet() -> bool:
    return bool(_setting("gradcheck.quiet"))


def verbose() -> int:
    return int(_setting("gradcheck.verbose") or 0)


def note(message: str) -> None:
    """A diagnostic for -v: one line on stderr, never on stdout."""
    if verbose():
        click.echo(f"gradcheck: {message}", err=True)


class Stopwatch:
    """Times the steps of a command; under -v each finished step is one stderr line with its time."""

    def __init__(self) -> None:
        self._last = time.perf_counter()

    def lap(self, done: str) -> None:
        now = time.perf_counter()
        note(f"{done} ({(now - self._last) * 1000:.1f} ms)")
        self._last = now


# About what a chunked check gets through in a second on a 2-core machine (benchmarks/performance.py: a
# 92 MB CSV in 2.5 s; JSON Lines parses line by line, 25 MB in 3.5 s).
BYTES_PER_SECOND = {"csv": 32 << 20, "jsonl": 6 << 20}


@contextmanager
def progress(size: int, input_format: str | None, count_rows: Callable[[], int]) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr, only when stderr is a terminal and the file should take a second or more."""
    if size < BYTES_PER_SECOND.get(input_format or "", size + 1) or not sys.stderr.isatty():
        yield lambda rows: None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("checking rows", total=count_rows())
        yield lambda rows: bar.advance(task, rows)
