"""The command line: parse options, then inputs -> report -> render -> exit code. Nothing else lives here.

numpy and rich are imported inside the commands, not at the top, so `--help`, `--version` and usage
errors answer without paying for them.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any

import click

from gradcheck_cli import terminal
from gradcheck_cli.completion import completion_command
from gradcheck_cli.errors import InputError
from gradcheck_cli.explain import explain as explain_command
from gradcheck_cli.options import (
    check_options,
    emit_report,
    input_options,
    loss_options,
    output_options,
    supplied_options,
)
from gradcheck_cli.schema import schema_command
from gradcheck_cli.sweep import sweep as sweep_command

EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 2, 3, 130
_debug = False


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


# The options that say where the data is (load_batch's parameters); the rest describe the check (Settings).
_INPUT_KEYS = ("logits_args", "labels_arg", "targets_args", "input_path", "input_format", "labels_path",
               "targets_path", "gradient_path", "probabilities_path", "loss_value")


@main.command()
@input_options
@supplied_options
@check_options
@loss_options
@output_options
def check(impl: str | None, output_format: str, color: str, no_color: bool, **options: Any) -> int:
    """Check softmax, its Jacobian, the loss and its gradient against finite differences and your values.

    Example:

        gradcheck check --logits 1.1,2.2,0.2,-1.7 --labels 2
    """
    from gradcheck_cli.implementation import Implementation
    from gradcheck_cli.inputs import load_batch
    from gradcheck_cli.report import Settings, run_check

    inputs = {key: options.pop(key) for key in _INPUT_KEYS}
    terminal.note(f"reading {inputs['input_path'] or 'the command line'}")
    watch = terminal.Stopwatch()
    batch = load_batch(**inputs, ignore_index=options["ignore_index"])
    watch.lap(f"read {batch.logits.shape[0]} x {batch.logits.shape[1]} logits from {batch.source or 'arguments'}")
    implementation = Implementation.load(impl) if impl is not None else None
    report = run_check(batch, Settings(**options), implementation)
    watch.lap(f"computed and compared {', '.join(check.name for check in report.checks)}")
    emit_report(report, output_format, "never" if no_color else color)
    watch.lap(f"wrote the {output_format} report")
    return report.exit_code


main.add_command(schema_command)
main.add_command(completion_command)
main.add_command(sweep_command)
main.add_command(explain_command)
