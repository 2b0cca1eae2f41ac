"""`gradcheck sweep`: the error of central differences over a range of steps, as a table and a chart.

The sweep itself is api/sweeping.py's (one implementation); this module parses the options and renders it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import click

from gradcheck_cli import options, terminal
from gradcheck_cli.commands.sectioned_help import SectionedCommand
from gradcheck_cli.settings import Settings

if TYPE_CHECKING:
    from rich.console import Console

    from gradcheck_cli.api.sweeping import SweepReport
    from gradcheck_cli.inputs.gather import InputRequest

CHART_WIDTH = 24


def _parse_steps(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, ...] | None:
    from gradcheck_cli.api.sweeping import sweep_steps
    from gradcheck_cli.errors import InputError

    try:
        return sweep_steps(value)
    except InputError as error:  # its message already names --steps: say only what is wrong
        raise click.BadParameter(str(error).split(": ", 1)[-1], ctx, param) from None


@click.command(cls=SectionedCommand)
@options.input_options
@options.supplied_options
@options.loss_options
@click.option("--steps", "eps_values", callback=_parse_steps, metavar="LIST",
              help="Steps to try, comma-separated. [default: 1e-1, 1e-2, ..., 1e-13]")
@options.output_options(("table", "json", "github"))
def sweep(eps_values: tuple[float, ...] | None, impl: str | None, impl_timeout: float, output_format: str,
          color: str, no_color: bool, **given: Any) -> int:
    """Sweep the finite-difference step and show the error of the gradient against it.

    The gradient is yours when you give one (in the input, --grad-file or --impl), gradcheck's own otherwise.
    A correct gradient's error falls with the step (truncation, h^2) to near machine precision; a wrong
    one stops at a floor that no step gets under. Your values are also checked as `gradcheck check` checks
    them. Exit 0 when all looks correct, 1 when it does not.

    Example:

        gradcheck sweep --logits 1.1,2.2,0.2,-1.7 --labels 2
    """
    from gradcheck_cli.api.sweeping import sweep_request
    from gradcheck_cli.inputs.gather import InputRequest

    # The options that say where the data (and your values) are: InputRequest's fields; the rest are Settings.
    request = InputRequest(**{key: given.pop(key) for key in InputRequest._fields if key in given})
    report = sweep_request(request, Settings(**given), eps_values, impl, impl_timeout)
    if output_format == "json":
        import json  # here, not at the top: start-up pays for it only when JSON is used

        document = json.dumps(report.to_dict(), allow_nan=False)
        terminal.output().write(lambda: click.echo(document))
    elif output_format == "github":
        text = _github(report, request)
        terminal.output().write(lambda: click.echo(text))
    else:
        console = terminal.make_console("never" if no_color else color)
        terminal.output().write(lambda: _table(report, request, impl, console))
    return report.exit_code


def _github(report: SweepReport, request: InputRequest) -> str:
    """Annotations for a pull request (each failing check of your values, then the curve's), the verdict last."""
    from gradcheck_cli.render.github import github_annotation, github_error

    lines = [] if report.checks is None else [
        github_annotation(report.checks, check) for check in report.checks.checks if not check.passed]
    if not report.curve_passed:
        lines.append(github_error(request.input_path, "gradcheck sweep", report.verdict))
    return "\n".join([*lines, f"default step {report.default_eps:.2g}; {report.verdict}"])


def _chart_bar(error: float, lowest: float, highest: float, width: int = CHART_WIDTH) -> str:
    """A bar whose length is the error's position on a log scale between the lowest and highest errors."""
    if not (error > 0 and math.isfinite(error)):
        return ""
    span = max(math.log10(highest) - math.log10(lowest), 1e-12)
    return "#" * max(1, round(width * (math.log10(error) - math.log10(lowest)) / span))


def _whose(report: SweepReport, request: InputRequest, impl: str | None) -> str:
    if report.gradient == "impl":
        return f"your gradient (--impl {impl})"
    if report.gradient == "supplied":
        return f"your gradient ({'--grad-file ' + request.gradient_path if request.gradient_path else 'the input'})"
    return "gradcheck's analytic gradient"


def _table(report: SweepReport, request: InputRequest, impl: str | None, console: Console) -> None:
    from gradcheck_cli.render.layout import wrap
    from gradcheck_cli.render.verdict import verdict_line

    def say(text: str) -> None:  # prose wrapped at word boundaries, never inside a number
        console.print(wrap(text, console.width), soft_wrap=True)

    if terminal.quiet():
        say(report.short_verdict)
        return
    points = report.points
    errors = [p.error_vs_largest for p in points if p.error_vs_largest > 0 and math.isfinite(p.error_vs_largest)]
    lowest, highest = (min(errors), max(errors)) if errors else (1.0, 1.0)
    closest = min(points, key=lambda point: abs(math.log10(point.eps / report.default_eps)))
    say(f"central differences of each row's loss, every element at once, each step rounded down to a power of two "
        f"as gradcheck check does, against {_whose(report, request, impl)}; error = max |gradient - numeric| / "
        "max |gradcheck's gradient|")
    console.print(f"{'step':>8}  {'max abs':>9}  {'max rel':>9}  {'error':>9}  chart (log scale)")
    for point in points:
        mark = "  <- default" if point is closest else ""
        bar = _chart_bar(point.error_vs_largest, lowest, highest)
        console.print(f"{point.eps:8.0e}  {point.max_abs_error:9.2e}  {point.max_rel_error:9.2e}  "
                      f"{point.error_vs_largest:9.2e}  {bar}{mark}", soft_wrap=True)
    say(f"<- default: the step nearest gradcheck check's default step, {report.default_eps:.2g}")
    if report.taylor is not None:
        _taylor_lines(report, say, console)
    if report.checks is not None:
        say(f"check of your values: {verdict_line(report.checks)}")
    say(report.short_verdict)


def _taylor_lines(report: SweepReport, say: Any, console: Console) -> None:
    """One line per signed random direction v: its fitted slope and its remainders at the largest and smallest t."""
    from gradcheck_cli.checks.taylor import PASSING_SLOPE

    taylor = report.taylor
    assert taylor is not None
    whose = "gradcheck's" if report.gradient == "reference" else "your"
    loss = "your loss" if report.gradient == "impl" else "gradcheck's loss"
    say(f"Taylor test of {loss} with {whose} gradient: |L(z + t v) - L(z) - t <g, v>| over t = "
        f"{taylor.steps[0]:.2g} to {taylor.steps[-1]:.2g}; slope 2 when g is the gradient of L, towards 1 when not "
        f"(a direction passes at >= {PASSING_SLOPE}; no slope: the remainders are at rounding level)")
    for number, (slope, remainders) in enumerate(zip(taylor.slopes, taylor.remainders, strict=True)):
        sign = "+" if number % 2 == 0 else "-"
        shown = "  none" if slope is None else f"{slope:6.2f}"
        console.print(f"  {sign}v{number // 2}  slope {shown}  remainder {remainders[0]:9.2e} -> {remainders[-1]:9.2e}",
                      soft_wrap=True)
