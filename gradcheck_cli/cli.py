"""The command line: parse options, then inputs -> report -> render -> exit code. Nothing else lives here.

numpy and rich are imported inside the commands, not at the top, so `--help`, `--version` and usage
errors answer without paying for them.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any, ClassVar

import click

from gradcheck_cli import terminal
from gradcheck_cli.errors import InputError
from gradcheck_cli.options import (
    check_options,
    emit_report,
    expect_reader,
    input_options,
    loss_options,
    output_options,
    supplied_options,
    write_stdout,
)

EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 2, 3, 130
WIDE_JACOBIAN = 50
_debug = False


class GradcheckGroup(click.Group):
    """Maps every way a run can end onto the documented exit codes, each with at most one line on stderr.

    The commands other than `check` are imported when they are run or listed, so a check does not pay for them.
    """

    lazy_commands: ClassVar[dict[str, tuple[str, str]]] = {
        "completion": ("gradcheck_cli.completion", "completion_command"),
        "explain": ("gradcheck_cli.explain", "explain"),
        "schema": ("gradcheck_cli.schema", "schema_command"),
        "sweep": ("gradcheck_cli.sweep", "sweep"),
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
        expect_reader()
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
                import traceback  # imported here: start-up pays for it only when it is needed

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
@click.option("--full", is_flag=True,
              help="Every per-row array in tables and JSON, however big the input (default: up to 20,000 logits).")
@output_options
def check(impl: str | None, full: bool, output_format: str, color: str, no_color: bool, **options: Any) -> int:
    """Check softmax, its Jacobian, the loss and its gradient against finite differences and your values.

    Big CSV and JSON Lines files are checked in chunks of rows, in bounded memory.

    Example:

        gradcheck check --logits 1.1,2.2,0.2,-1.7 --labels 2
    """
    from gradcheck_cli.report import Settings

    inputs = {key: options.pop(key) for key in _INPUT_KEYS}
    settings = Settings(**options)
    terminal.note(f"reading {inputs['input_path'] or 'the command line'}")
    watch = terminal.Stopwatch()
    alone = inputs["input_path"] is not None and not impl and not any(
        inputs[key] for key in _INPUT_KEYS if key not in ("input_path", "input_format"))
    with contextlib.ExitStack() as stack:
        if alone and not full:
            from gradcheck_cli import stream

            source = stack.enter_context(stream.open_source(inputs["input_path"], inputs["input_format"]))
            big = source.size > stream.STREAM_ABOVE_BYTES or output_format == "ndjson"
            if source.format in ("csv", "jsonl") and big:
                report = _check_streamed(source, settings, output_format)
                watch.lap(f"read {report.rows} x {report.classes} logits in chunks from {source.name}")
            else:
                inputs["input_path"], inputs["input_name"] = source.path, source.name
                report = _check_in_memory(inputs, settings, impl, full, output_format, watch)
        else:
            report = _check_in_memory(inputs, settings, impl, full, output_format, watch)
    watch.lap(f"computed and compared {', '.join(check.name for check in report.checks)}")
    emit_report(report, output_format, "never" if no_color else color)
    watch.lap(f"wrote the {output_format} report")
    return report.exit_code


def _check_streamed(source: Any, settings: Any, output_format: str) -> Any:
    from gradcheck_cli import stream

    def rows_out(start: int, batch: Any, part: Any, lines: Any) -> None:
        write_stdout(lambda: stream.write_ndjson_rows(sys.stdout, start, batch, part, lines))

    return stream.check_source(source, settings, rows_out if output_format == "ndjson" else None)


def _check_in_memory(
    inputs: dict[str, Any], settings: Any, impl: str | None, full: bool, output_format: str, watch: Any
) -> Any:
    import numpy as np

    from gradcheck_cli.inputs import load_batch
    from gradcheck_cli.render import FULL_LIMIT
    from gradcheck_cli.report import run_check

    batch = load_batch(**inputs, ignore_index=settings.ignore_index)
    watch.lap(f"read {batch.logits.shape[0]} x {batch.logits.shape[1]} logits from {batch.source or 'arguments'}")
    implementation = None
    if impl is not None:
        from gradcheck_cli.implementation import Implementation  # importlib machinery only when asked

        implementation = Implementation.load(impl)
    keep = full or batch.logits.size <= FULL_LIMIT
    # Tables show a corner of a wide Jacobian at most: past 50 classes they say so instead of building it.
    jacobian = output_format == "json" or batch.logits.shape[1] <= WIDE_JACOBIAN
    report = run_check(batch, settings, implementation, keep_arrays=keep and output_format != "ndjson",
                       keep_jacobian=jacobian)
    if output_format == "ndjson":
        lines = None if batch.row_lines is None else np.asarray(batch.row_lines)
        from gradcheck_cli import stream
        from gradcheck_cli.report import check_rows

        part = check_rows(batch, report.settings)
        write_stdout(lambda: stream.write_ndjson_rows(sys.stdout, 0, batch, part, lines))
    return report

