"""Terminal conventions shared by every command: colour, verbosity, and timed steps on stderr.

stdout carries results only; everything here that talks to the user writes to stderr. rich is imported
only when a console is built, so `--help` and usage errors stay fast.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from rich.console import Console


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
