"""`gradcheck sweep`: the error of central differences over a range of steps, as a table and a chart."""

from __future__ import annotations

import math
from typing import Any

import click

from gradcheck_cli import options, terminal
from gradcheck_cli.commands.sectioned_help import SectionedCommand
from gradcheck_cli.render.schema import SCHEMA_VERSION
from gradcheck_cli.settings import Settings


def _parse_steps(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    steps = []
    for token in value.replace(",", " ").split():
        try:
            step = float(token)
        except ValueError:
            raise click.BadParameter(f"{token!r} is not a number", ctx, param) from None
        if not (math.isfinite(step) and step > 0):
            raise click.BadParameter(f"{token!r} is not a positive finite step", ctx, param)
        steps.append(step)
    if not steps:
        raise click.BadParameter("no steps given", ctx, param)
    return tuple(sorted(set(steps), reverse=True))


def _chart_bar(error: float, lowest: float, highest: float, width: int = 24) -> str:
    """A bar whose length is the error's position on a log scale between the lowest and highest errors."""
    if not (error > 0 and math.isfinite(error)):
        return ""
    span = max(math.log10(highest) - math.log10(lowest), 1e-12)
    return "#" * max(1, round(width * (math.log10(error) - math.log10(lowest)) / span))


@click.command(cls=SectionedCommand)
@options.input_options
@options.loss_options
@click.option("--steps", "eps_values", callback=_parse_steps, metavar="LIST",
              help="Steps to try, comma-separated. [default: 1e-1, 1e-2, ..., 1e-13]")
@options.output_options(("table", "json", "github"))
def sweep(eps_values: tuple[float, ...] | None, output_format: str, color: str, no_color: bool, loss: str,
          weights: tuple[float, ...] | None, label_smoothing: float, ignore_index: int | None, temperature: float,
          **inputs: Any) -> int:
    """Sweep the finite-difference step and show the error of the gradient against it.

    A correct gradient gives a V: truncation error on the right (large steps), rounding error on the left
    (small steps), dipping near machine precision in between. A wrong gradient gives a floor that no step
    gets under. Exit 0 when the curve looks correct, 1 when it does not.

    Example:

        gradcheck sweep --logits 1.1,2.2,0.2,-1.7 --labels 2
    """
    import json  # here, not at the top: start-up pays for it only when JSON is used

    import numpy as np

    from gradcheck_cli import pipeline
    from gradcheck_cli.inputs.gather import InputRequest
    from gradcheck_cli.numerics import differences
    from gradcheck_cli.numerics.losses import loss_kind

    settings = Settings(loss=loss, weights=weights, label_smoothing=label_smoothing, ignore_index=ignore_index,
                        temperature=temperature)
    batch = pipeline.load_whole(InputRequest(**inputs), settings)
    loss_of_rows = loss_kind(loss).build(batch, settings, np.dtype(np.float64))
    steps = eps_values or differences.SWEEP_STEPS
    analytic = loss_of_rows.row_gradients(batch.logits)
    points = differences.sweep(analytic, loss_of_rows.row_losses, batch.logits, steps)
    correct = differences.sweep_looks_correct(points)
    default = differences.default_eps("central")
    best = min(points, key=lambda point: point.error_vs_largest)
    verdict = (
        f"looks correct: the error falls to {best.error_vs_largest:.1e} of the largest gradient element "
        f"at step {best.eps:g} (a V reaching near machine precision)"
        if correct
        else f"looks WRONG: no step gets the error under {best.error_vs_largest:.1e} of the largest gradient "
        f"element (a floor, not a V)"
    )
    last_line = f"default step {default:.2g}; {verdict}"  # one line for the -f github log
    # The verdict a person reads last (and alone under -q): short enough for one line of 80 columns.
    short_verdict = (
        f"looks correct: a V whose error falls to {best.error_vs_largest:.1e} at step {best.eps:.0e}" if correct
        else f"looks WRONG: a floor, not a V: no step gets the error under {best.error_vs_largest:.1e}"
    )
    if output_format == "json":
        document = {
            "schema_version": SCHEMA_VERSION,
            "command": "sweep",
            "passed": correct,
            "default_eps": default,
            "steps": [
                {"eps": p.eps, "max_abs_error": p.max_abs_error, "max_rel_error": p.max_rel_error}
                for p in points
            ],
            "verdict": verdict,
        }
        terminal.output().write(lambda: click.echo(json.dumps(document, allow_nan=False)))
    elif output_format == "github":
        from gradcheck_cli.render.github import github_error

        # Annotations for a pull request (the input file, no one row to blame), then the verdict line.
        annotation = [] if correct else [github_error(batch.source, "gradcheck sweep", verdict)]
        terminal.output().write(lambda: click.echo("\n".join([*annotation, last_line])))
    else:
        from gradcheck_cli.render.layout import wrap

        console = terminal.make_console("never" if no_color else color)
        errors = [p.error_vs_largest for p in points if p.error_vs_largest > 0]
        lowest, highest = (min(errors), max(errors)) if errors else (1.0, 1.0)
        closest = min(points, key=lambda point: abs(math.log10(point.eps / default)))

        def say(text: str) -> None:  # prose wrapped at word boundaries, never inside a number
            console.print(wrap(text, console.width), soft_wrap=True)

        def emit() -> None:
            if terminal.quiet():
                say(short_verdict)
                return
            say(f"central differences of {batch.logits.shape[0]} x {batch.logits.shape[1]} logits, each step "
                "rounded down to a power of two as gradcheck check does; error = max |analytic - numeric| / "
                "max |analytic|")
            console.print(f"{'step':>8}  {'max abs':>9}  {'max rel':>9}  {'error':>9}  chart (log scale)")
            for point in points:
                mark = "  <- default" if point is closest else ""
                bar = _chart_bar(point.error_vs_largest, lowest, highest)
                console.print(f"{point.eps:8.0e}  {point.max_abs_error:9.2e}  {point.max_rel_error:9.2e}  "
                              f"{point.error_vs_largest:9.2e}  {bar}{mark}", soft_wrap=True)
            say(f"<- default: the step nearest gradcheck check's default step, {default:.2g}")
            say(short_verdict)

        terminal.output().write(emit)
    return 0 if correct else 1
