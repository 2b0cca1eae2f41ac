"""The command line: parse options, then inputs -> report -> render -> exit code. Nothing else lives here.

numpy and rich are imported inside the commands, not at the top, so `--help`, `--version` and usage
errors answer without paying for them.
"""

from __future__ import annotations

import math
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

import click

from gradcheck_cli import registry, terminal
from gradcheck_cli.completion import completion_command
from gradcheck_cli.errors import InputError
from gradcheck_cli.schema import schema_command
from gradcheck_cli.terminal import make_console

EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 2, 3, 130
_debug = False


class FiniteFloat(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click
    """A finite float above (or at) a lower bound; 'nan', 'inf' and '1e999' are refused by name."""

    name = "float"

    def __init__(self, minimum: float, inclusive: bool) -> None:
        self.minimum, self.inclusive = minimum, inclusive

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        try:
            number = float(value)
        except ValueError:
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if number < self.minimum or (number == self.minimum and not self.inclusive):
            bound = ">=" if self.inclusive else ">"
            self.fail(f"{value} is out of range; it must be {bound} {self.minimum:g}", param, ctx)
        return number


POSITIVE = FiniteFloat(0.0, inclusive=False)
NON_NEGATIVE = FiniteFloat(0.0, inclusive=True)
# A path that shells complete as a file name; inputs.py reads it and words every error itself.
INPUT_FILE = click.Path(readable=False, allow_dash=True)


class GradcheckGroup(click.Group):
    """Maps every way a run can end onto the documented exit codes, each with at most one line on stderr."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except click.exceptions.NoArgsIsHelpError as error:
            error.show()
            code = EXIT_USAGE
        except click.UsageError as error:
            hint = f" (see '{error.ctx.command_path} --help')" if error.ctx else ""
            _fail(f"{error.format_message()}{hint}")
            code = EXIT_USAGE
        except InputError as error:
            _fail(str(error))
            code = EXIT_USAGE
        except (click.exceptions.Abort, KeyboardInterrupt):
            code = EXIT_INTERRUPTED
        except click.ClickException as error:
            _fail(error.format_message())
            code = EXIT_USAGE
        except Exception as error:  # noqa: BLE001 - the last line of defence: one line, exit 3
            if _debug:
                traceback.print_exc()
            _fail(f"internal error: {type(error).__name__}: {error} (re-run with --debug for the traceback)")
            code = EXIT_INTERNAL
        sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str) -> None:
    click.echo(f"gradcheck: error: {' '.join(message.split())}", err=True)


def _set_debug(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    global _debug
    _debug = value
    return value


@click.group(
    cls=GradcheckGroup,
    # auto_envvar_prefix: every option can also come from GRADCHECK_<COMMAND>_<OPTION>; the ones CI sets
    # repeatedly have short names of their own (see _env), shown in --help.
    context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "GRADCHECK"},
)
@click.version_option(package_name="gradcheck", prog_name="gradcheck")
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

    Exit codes: 0 every check agrees, 1 a check disagrees, 2 usage or input error, 3 internal error.
    """


def _env(name: str) -> dict[str, Any]:
    """The environment variable an option CI sets repeatedly can come from, shown in --help."""
    return {"envvar": f"GRADCHECK_{name}", "show_envvar": True}


def _compose(*decorators: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def apply(function: Any) -> Any:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


input_options = _compose(
    click.option("--logits", "logits_args", multiple=True, metavar="ROW",
                 help="One sample's logits, numbers separated by commas and/or spaces. Repeat for more samples."),
    click.option("--labels", "labels_arg", metavar="LIST",
                 help="One class index per sample, comma-separated (0-based)."),
    click.option("--targets", "targets_args", multiple=True, metavar="ROW",
                 help="One sample's target distribution (one-hot or soft), instead of --labels. Repeatable."),
    click.option("-i", "--input", "input_path", type=INPUT_FILE, metavar="PATH",
                 help="Read logits (and labels or targets) from a CSV or JSON file; '-' reads stdin."),
    click.option("--input-format", type=click.Choice(["auto", "csv", "json"]), default="auto", show_default=True,
                 help="Format of --input; auto goes by the extension, then by the first character."),
    click.option("--labels-file", "labels_path", type=INPUT_FILE, metavar="PATH",
                 help="A file of class indices, one per line, for the rows of --input."),
    click.option("--targets-file", "targets_path", type=INPUT_FILE, metavar="PATH",
                 help="A CSV of target distributions, one row per sample, for the rows of --input."),
)

check_options = _compose(
    click.option("--method", type=click.Choice(registry.METHOD_NAMES), default="central", show_default=True,
                 **_env("METHOD"), help="Finite-difference formula (see the README for each one's accuracy)."),
    click.option("--eps", type=POSITIVE, default=None, **_env("EPS"),
                 help="Step h, rounded down to a power of two. [default: per method, e.g. 6.1e-6 central]"),
    click.option("--atol", type=NON_NEGATIVE, default=None, **_env("ATOL"),
                 help="Absolute tolerance (numpy.isclose). [default: per method and dtype, 1e-10 central]"),
    click.option("--rtol", type=NON_NEGATIVE, default=None, **_env("RTOL"),
                 help="Relative tolerance (numpy.isclose). [default: per method and dtype, 1e-7 central]"),
    click.option("--dtype", type=click.Choice(registry.DTYPES), default="float64", show_default=True,
                 **_env("DTYPE"), help="Precision of the analytic quantities; the reference is always float64."),
    click.option("--order", type=click.IntRange(1, 2), default=1, show_default=True,
                 help="2 also checks the Hessian of the loss against differences of the gradient."),
    click.option("--reduction", type=click.Choice(registry.REDUCTIONS), default="mean", show_default=True,
                 help="How row losses combine; 'none' reports each row's loss and gradient."),
)

output_options = _compose(
    click.option("-f", "--format", "output_format", type=click.Choice(["table", "json", "github"]),
                 default="table", show_default=True, **_env("FORMAT"),
                 help="Rich tables for people, one JSON object for programs, or GitHub Actions annotations."),
    click.option("--color", type=click.Choice(["auto", "always", "never"]), default="auto", show_default=True,
                 **_env("COLOR"),
                 help="Colour in table mode; auto means a terminal, NO_COLOR unset and TERM not dumb."),
    click.option("--no-color", is_flag=True, help="Same as --color never."),
    terminal.quiet_option,
    terminal.verbose_option,
)


def write_stdout(emit: Callable[[], None]) -> None:
    """Write results; if the reader went away (`| head`), stop quietly: the exit code still says the verdict."""
    try:
        emit()
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def emit_report(report: Any, output_format: str, color: str) -> None:
    """Write a report to stdout in the chosen format; -q leaves only the verdict line in the text formats."""
    from gradcheck_cli import render

    if output_format == "json":
        write_stdout(lambda: click.echo(render.render_json(report)))
    elif output_format == "github":
        write_stdout(lambda: click.echo(render.render_github(report)))
    else:
        console = make_console(color)
        write_stdout(lambda: render.render_tables(report, console, quiet=terminal.quiet()))


@main.command()
@input_options
@check_options
@output_options
def check(
    logits_args: tuple[str, ...],
    labels_arg: str | None,
    targets_args: tuple[str, ...],
    input_path: str | None,
    input_format: str,
    labels_path: str | None,
    targets_path: str | None,
    method: str,
    eps: float | None,
    atol: float | None,
    rtol: float | None,
    dtype: str,
    order: int,
    reduction: str,
    output_format: str,
    color: str,
    no_color: bool,
) -> int:
    """Check the softmax Jacobian and the cross-entropy gradient against finite differences.

    Example:

        gradcheck check --logits 1.1,2.2,0.2,-1.7 --labels 2
    """
    from gradcheck_cli.inputs import load_batch
    from gradcheck_cli.report import Settings, run_check

    terminal.note(f"reading {input_path or 'the command line'}")
    watch = terminal.Stopwatch()
    batch = load_batch(
        logits_args=logits_args,
        labels_arg=labels_arg,
        targets_args=targets_args,
        input_path=input_path,
        input_format=input_format,
        labels_path=labels_path,
        targets_path=targets_path,
    )
    watch.lap(f"read {batch.logits.shape[0]} x {batch.logits.shape[1]} logits from {batch.source or 'arguments'}")
    settings = Settings(method=method, eps=eps, atol=atol, rtol=rtol, dtype=dtype, order=order, reduction=reduction)
    report = run_check(batch, settings)
    watch.lap(f"computed and compared {', '.join(check.name for check in report.checks)}")
    emit_report(report, output_format, "never" if no_color else color)
    watch.lap(f"wrote the {output_format} report")
    return report.exit_code


main.add_command(schema_command)
main.add_command(completion_command)
