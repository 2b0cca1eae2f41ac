"""The command group: the commands (imported when they run or are listed) and how every run ends.

Every way a run can end maps onto the documented exit codes here, each with at most one line on stderr.
numpy and rich are imported inside the commands, so `--help`, `--version` and usage errors stay fast.
"""

from __future__ import annotations

import sys
from typing import Any, ClassVar

import click

from gradcheck_cli.errors import InputError
from gradcheck_cli.report import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE


class _InternalError(Exception):
    """A bug of ours, already reported on stderr (with the traceback under --debug)."""


class GradcheckGroup(click.Group):
    """Maps every way a run can end onto the documented exit codes, each with at most one line on stderr.

    The commands are imported when they are run or listed, so a check does not pay for the others.
    """

    lazy_commands: ClassVar[dict[str, tuple[str, str]]] = {
        "check": ("gradcheck_cli.commands.check", "check"),
        "completion": ("gradcheck_cli.commands.completion", "completion_command"),
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
        except _InternalError:
            code = EXIT_INTERNAL
        except Exception as error:  # noqa: BLE001 - the last line of defence (outside any command): one line
            _fail(f"internal error: {type(error).__name__}: {error} (re-run with --debug for the traceback)")
            code = EXIT_INTERNAL
        sys.exit(code if isinstance(code, int) else 0)

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


def _fail(message: str) -> None:
    click.echo(f"gradcheck: error: {' '.join(message.split())}", err=True)


def _set_debug(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    ctx.meta["gradcheck.debug"] = value
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
