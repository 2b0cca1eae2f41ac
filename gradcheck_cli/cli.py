"""The command group: the commands (imported when they run or are listed) and how every run ends.

Every way a run can end maps onto the documented exit codes here, each with at most one line on stderr.
numpy and rich are imported inside the commands, so `--help`, `--version` and usage errors stay fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

import click

from gradcheck_cli.errors import InputError
from gradcheck_cli.report import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE

# How the input layer says that neither --logits nor --input was given (inputs/gather.py).
NO_INPUT = "no logits:"
# Help summaries are a command's first sentence, whole: click's default cuts it at the line's end.
_UNLIMITED = 1_000
# New objects between two collections of the garbage collector's first generation (see _fewer_collections):
# more than a one-row check keeps (about 50,000), so that it runs without a collection.
GEN0_OBJECTS = 100_000


class _InternalError(Exception):
    """A bug of ours, already reported on stderr (with the traceback under --debug)."""


class _Stopped(BaseException):
    """SIGTERM or SIGHUP, raised where the run is, so it unwinds as Ctrl-C does: the read-ahead process is
    ended and the input closed on the way out. A BaseException, so no `except Exception` takes it for a bug."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal_number)
        self.exit_code = 128 + signal_number  # the shell's convention: 143 for SIGTERM, 129 for SIGHUP


class GradcheckGroup(click.Group):
    """Maps every way a run can end onto the documented exit codes, each with at most one line on stderr.

    The commands are imported when they are run or listed, so a check does not pay for the others.
    """

    lazy_commands: ClassVar[dict[str, tuple[str, str]]] = {
        "check": ("gradcheck_cli.commands.check", "check"),
        "completion": ("gradcheck_cli.commands.completion", "completion_command"),
        "diagnose": ("gradcheck_cli.commands.diagnose", "diagnose"),
        "explain": ("gradcheck_cli.commands.explain", "explain"),
        "schema": ("gradcheck_cli.commands.schema", "schema_command"),
        "sweep": ("gradcheck_cli.commands.sweep", "sweep"),
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy_commands and name not in self.commands:
            import importlib

            module, attribute = self.lazy_commands[name]
            self.add_command(getattr(importlib.import_module(module), attribute), name)
        return super().get_command(ctx, name)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        # Without arguments main reads sys.argv: it is the process's command line, and the process ends with it.
        ends_the_process = kwargs.get("args", args[0] if args else None) is None
        with _fewer_collections(restore=not ends_the_process), _signals_stop_the_run():
            code = self._exit_code(*args, **kwargs)
        sys.exit(code)

    def _exit_code(self, *args: Any, **kwargs: Any) -> int:
        try:
            code = super().main(*args, **kwargs)
        except click.exceptions.NoArgsIsHelpError as error:
            error.show()
            code = EXIT_USAGE
        except click.UsageError as error:
            _fail(f"{error.format_message()}{_usage_hint(error)}")
            code = EXIT_USAGE
        except InputError as error:
            _fail(f"{error}{_stdin_hint(str(error))}")
            code = EXIT_USAGE
        except (click.exceptions.Abort, KeyboardInterrupt):
            code = EXIT_INTERRUPTED
            _drop_pending_output()
        except _Stopped as stop:
            code = stop.exit_code
            _drop_pending_output()
        except click.ClickException as error:
            _fail(error.format_message())
            code = EXIT_USAGE
        except _InternalError:
            code = EXIT_INTERNAL
        except Exception as error:  # noqa: BLE001 - the last line of defence (outside any command): one line
            _fail(f"internal error: {type(error).__name__}: {error} (re-run with --debug for the traceback)")
            code = EXIT_INTERNAL
        return code if isinstance(code, int) else 0

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Each command with its whole first sentence, wrapped, where click would cut it at the line's end."""
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=_UNLIMITED)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; a bug of ours is one line, or its traceback under --debug (read from this run)."""
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, InputError, KeyboardInterrupt):
            raise
        except Exception as error:
            if ctx.meta.get("gradcheck.debug"):
                import traceback  # imported here: start-up pays for it only when it is needed

                traceback.print_exc()
            _fail(f"internal error: {type(error).__name__}: {error} (re-run with --debug for the traceback)")
            raise _InternalError from error


@contextmanager
def _signals_stop_the_run() -> Iterator[None]:
    """SIGTERM and SIGHUP (a CI step's timeout, a closed terminal) stop the run as Ctrl-C does, cleaning up.

    Once one has arrived, more are ignored, so the clean-up it starts is not cut short (SIGKILL still ends
    everything: the read-ahead process dies with this one, and a spooled stdin has no name to leave behind).
    """
    if TYPE_CHECKING:
        import signal
    else:  # signal.py's C core: the same functions and numbers, without signal.py's enum classes (1 ms a run)
        import _signal as signal

    process = os.getpid()

    def stop(number: int, frame: object) -> None:
        if os.getpid() != process:  # the read-ahead process, forked before it set its own handlers
            os._exit(128 + number)
        for each in stops:
            signal.signal(each, signal.SIG_IGN)
        raise _Stopped(number)

    stops = [signal.SIGTERM, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])]
    try:
        previous = [(number, signal.signal(number, stop)) for number in stops]
    except ValueError:  # not the main thread (a program calling main()): its own handlers stay
        yield
        return
    try:
        yield
    finally:
        for number, handler in previous:
            signal.signal(number, handler)


@contextmanager
def _fewer_collections(restore: bool) -> Iterator[None]:
    """The cyclic garbage collector's first generation collected every GEN0_OBJECTS new objects instead of 700.

    A run starts by creating some 50,000 objects that live until it ends (numpy's, rich's and gradcheck's
    modules, functions and classes); with the default, the collector walks them every 700 allocations and
    again in the older generations, for nothing: 1% of a one-row check's instructions (callgrind). Objects
    that no cycle holds are freed as before; the cycles a long run leaves wait for a collection at most
    GEN0_OBJECTS at a time (a few MB), however long the run. The default comes back afterwards for a program
    that called main (`restore`), not for a process about to end: it would collect all those objects first.

    A process about to end freezes them instead (gc.freeze): Python's shutdown would otherwise walk them in
    full collections, 45-50 ms of every run, a quarter of a one-row check, to free memory the system takes back
    anyway. What it frees by reference counts it still frees, every atexit handler runs and stdout is flushed;
    only cycles alive at the end are left to the system (nothing of ours waits on one: clean-ups run in
    `finally` blocks, and the temporary files have no name).
    """
    import gc

    previous = gc.get_threshold()
    gc.set_threshold(GEN0_OBJECTS, *previous[1:])
    try:
        yield
    finally:
        if restore:
            gc.set_threshold(*previous)
        else:
            gc.freeze()


def _drop_pending_output() -> None:
    """A stopped run writes nothing more: what stdout still holds goes to /dev/null, so leaving never waits on
    a reader that stopped reading (or fails on a terminal that hung up)."""
    try:
        descriptor = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (a test captures it)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, descriptor)
    os.close(devnull)


def _usage_hint(error: click.UsageError) -> str:
    """Where to look next; for an option of gradcheck itself given after the command, where it goes instead."""
    context = error.ctx
    if context is None:
        return ""
    parent = context.parent
    if isinstance(error, click.NoSuchOption) and parent is not None:
        own = next((param for param in parent.command.params if error.option_name in param.opts), None)
        if own is not None:
            # --version answers alone; --debug goes with the command it is for.
            example = " ".join([parent.command_path, error.option_name, *([] if own.name == "version" else
                                                                          [f"{context.info_name} ..."])])
            return (f" ({error.option_name} is an option of {parent.command_path} itself: it goes before the "
                    f"command, as in '{example}')")
    return f" (see '{context.command_path} --help')"


def _stdin_hint(message: str) -> str:
    """With no input given but data waiting on stdin (a pipe or a redirected file), the option that reads it.

    gradcheck reads stdin only for -i -, so that a stdin nobody writes to never blocks a run given its input as
    arguments; the hint says so instead of leaving `cat batch.csv | gradcheck check` at "no logits".
    """
    if not message.startswith(NO_INPUT):
        return ""
    import stat

    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (AttributeError, OSError, ValueError):  # no stdin, or not a real file (a test's)
        return ""
    if stat.S_ISFIFO(mode) or stat.S_ISREG(mode):
        kind = "a pipe" if stat.S_ISFIFO(mode) else "a file"
        return f"; stdin is {kind}, which gradcheck reads only when asked: add -i - to read it"
    return ""


def _fail(message: str) -> None:
    click.echo(f"gradcheck: error: {' '.join(message.split())}", err=True)


def _set_debug(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    ctx.meta["gradcheck.debug"] = value
    return value


# Every environment variable gradcheck reads: an option's envvar= (options.py, terminal.py), the terminal's,
# the temporary directory's, completion's and rich's. No auto_envvar_prefix: nothing undocumented (such as a
# GRADCHECK_CHECK_IMPL naming code to run) can set an option. tests/test_reliability_processes.py holds this
# list, and the README's, to what the code reads.
ENVIRONMENT = """\b
Environment (the command line wins; no other GRADCHECK_* is read):
  GRADCHECK_METHOD, GRADCHECK_EPS, GRADCHECK_ATOL, GRADCHECK_RTOL,
  GRADCHECK_DTYPE, GRADCHECK_FORMAT, GRADCHECK_COLOR, GRADCHECK_QUIET
                       the options of those names (see a command's --help)
  NO_COLOR, FORCE_COLOR, TERM
                       colour under --color auto
  COLUMNS              the width of tables
  TMPDIR, TEMP, TMP    where stdin or a pipe is copied to be read
  _GRADCHECK_COMPLETE  set by the shell completion scripts
  LINES, COLORTERM, TTY_COMPATIBLE, TTY_INTERACTIVE, JUPYTER_COLUMNS,
  JUPYTER_LINES        read by rich: at most a progress bar changes
"""


@click.group(
    cls=GradcheckGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=ENVIRONMENT,
)
@click.version_option(None, "-V", "--version", package_name="gradcheck", prog_name="gradcheck")
@click.option(
    "--debug",
    is_flag=True,
    is_eager=True,
    expose_value=False,
    callback=_set_debug,
    help="Show the full traceback of an internal error.",
)
def main() -> None:
    """Check softmax, cross-entropy and their gradients against finite differences.

    Exit codes: 0 every check agrees, 1 a check disagrees, 2 usage or input error, 3 internal error;
    130 Ctrl-C, 143 SIGTERM, 129 SIGHUP (the run stopped, after cleaning up).
    """
