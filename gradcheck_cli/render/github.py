"""GitHub Actions annotations: an ::error on the input file's line for each failing check, then the verdict."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gradcheck_cli.render.verdict import digits, verdict_line, where
from gradcheck_cli.report import CheckResult, Report

if TYPE_CHECKING:
    from gradcheck_cli.terminal import Output


def write(report: Report, out: Output, color: str, quiet: bool) -> None:
    out.echo(render_github(report))


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def github_error(source: str | None, title: str, message: str, line: int | None = None) -> str:
    """One `::error` workflow command, placed on the input file (and its line) when there is a file."""
    properties = []
    if source and source != "<stdin>":
        properties.append(f"file={_escape_property(source)}")
        if line is not None:
            properties.append(f"line={line}")
    properties.append(f"title={_escape_property(title)}")
    return f"::error {','.join(properties)}::{_escape_data(message)}"


def github_annotation(report: Report, check: CheckResult) -> str:
    """The annotation of a failing check, on the file line of its worst row."""
    message = (
        f"{check.name} disagrees at {where(check)}: {digits(check.actual)} vs reference {digits(check.expected)} "
        f"(atol {report.settings.atol:g}, rtol {report.settings.rtol:g})"
    )
    row = check.worst_index[0] if check.worst_index else None
    line = report.line_of(row) if row is not None else None
    return github_error(report.source, f"gradcheck: {check.name} disagrees", message, line)


def render_github(report: Report) -> str:
    """An annotation per failing check, for the pull request, then the verdict line for the log."""
    lines = [github_annotation(report, check) for check in report.checks if not check.passed]
    return "\n".join([*lines, verdict_line(report)])
