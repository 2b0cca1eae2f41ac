"""`gradcheck diagnose`: which known slip reproduces your values, with every hypothesis tried and its residual."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from gradcheck_cli import terminal
from gradcheck_cli.commands.sectioned_help import SectionedCommand
from gradcheck_cli.options import check_run_options, impl_calling, output_options
from gradcheck_cli.settings import Settings

if TYPE_CHECKING:
    from rich.console import Console

    from gradcheck_cli.report import Diagnosis, Report

_YOURS = ("supplied ", "impl ")  # the checks of the user's values start so


@click.command(cls=SectionedCommand)
@check_run_options
@output_options(("table", "json"))
def diagnose(impl: str | None, impl_timeout: float, framework: str, device: str, output_format: str, color: str,
             no_color: bool, **options: Any) -> int:
    """Name the slip: which known mistake or convention reproduces your values (supplied or --impl).

    Every hypothesis of the catalogue is tried on each failed check of your values, with its residual.
    Exit 0 when your values agree, 1 when they do not (named or not), 2 on bad input.

    Example:

        gradcheck diagnose -i examples/batch.json --impl examples/my_softmax.py:forgot_one_over_n
    """
    from gradcheck_cli import pipeline
    from gradcheck_cli.checks.runner import Keep
    from gradcheck_cli.errors import InputError
    from gradcheck_cli.inputs.gather import InputRequest

    request = InputRequest(**{key: options.pop(key) for key in InputRequest._fields if key in options})
    report = pipeline.check(request, Settings(**options), impl, keep=Keep(arrays=False), impl_timeout=impl_timeout,
                            calling=impl_calling(impl, framework, device))
    if not any(check.name.startswith(_YOURS) for check in report.checks):
        raise InputError("nothing of yours to diagnose: give your values (--grad-file, --probabilities-file, "
                         "--loss-value, or those keys in the input file) or --impl MODULE:FUNCTION")
    out = terminal.output()
    if output_format == "json":
        import json

        def emit() -> None:
            sys.stdout.write(json.dumps(report.diagnose_dict(), allow_nan=False) + "\n")

        out.write(emit)
    else:
        console = out.console("never" if no_color else color)
        out.write(lambda: _tables(report, console, terminal.quiet()))
    return report.exit_code


def _tables(report: Report, console: Console, quiet: bool) -> None:
    from rich.text import Text

    from gradcheck_cli.render.layout import wrap
    from gradcheck_cli.render.verdict import verdict_line

    def say(text: str, style: str = "") -> None:
        console.print(Text(wrap(text, console.width), style=style), soft_wrap=True)

    if not quiet:
        for check in report.checks:
            if check.name.startswith(_YOURS):
                say(f"{check.name}: {'pass' if check.passed else 'FAIL'}")
        if not report.diagnoses and report.passed:
            say("your values agree with the reference: nothing to diagnose")
        for diagnosis in report.diagnoses:
            _hypotheses(diagnosis, console, say)
        for note in report.notes:
            say(f"note: {note}")
    say(verdict_line(report), "bold green" if report.passed else "bold red")


def _hypotheses(diagnosis: Diagnosis, console: Console, say: Any) -> None:
    """One failed check: its verdict sentence, then every hypothesis tried (best first) with its residual."""
    from rich import box
    from rich.table import Table

    say(f"\n{diagnosis.check}: {diagnosis.verdict}")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title_style="none")
    for column in ("hypothesis", "result", "residual", "rows explained"):
        table.add_column(column, justify="left" if column == "hypothesis" else "right", no_wrap=True)
    for finding in diagnosis.findings:
        result = "match" if finding.matched else "partial" if finding.partial else "no"
        residual = "non-finite" if finding.residual is None else f"{finding.residual:.2e}"
        table.add_row(finding.id, result, residual, f"{finding.rows_explained} of {finding.rows}")
    console.print(table)
