"""`gradcheck check`: parse the options, run the one pipeline, render the report by name, exit with its code."""

from __future__ import annotations

from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import click

from gradcheck_cli import terminal
from gradcheck_cli.commands.sectioned_help import SectionedCommand
from gradcheck_cli.options import check_run_options, impl_calling, output_options
from gradcheck_cli.settings import Settings

if TYPE_CHECKING:
    from gradcheck_cli.batch import Batch
    from gradcheck_cli.report import RowChecks


@click.command(cls=SectionedCommand)
@check_run_options
@click.option("--full", is_flag=True,
              help="Every per-row array in tables and JSON, however big the input (default: up to 20,000 logits).")
@output_options()
def check(impl: str | None, impl_timeout: float, framework: str, device: str, full: bool, output_format: str,
          color: str, no_color: bool, **options: Any) -> int:
    """Check softmax, its Jacobian, the loss and its gradient against finite differences and your values.

    Big CSV and JSON Lines files are checked in chunks of rows, in bounded memory.

    Example:

        gradcheck check --logits 1.1,2.2,0.2,-1.7 --labels 2
    """
    from gradcheck_cli import pipeline
    from gradcheck_cli.checks import runner
    from gradcheck_cli.inputs.gather import InputRequest
    from gradcheck_cli.render import RENDERERS, renderer

    request = InputRequest(**{key: options.pop(key) for key in InputRequest._fields if key in options})
    settings = Settings(**options)
    spec, render, out = RENDERERS[output_format], renderer(output_format), terminal.output()
    keep = runner.Keep(spec.arrays, spec.jacobian_classes, limit=None if full else runner.FULL_LIMIT)
    terminal.note(f"reading {request.input_path or 'the command line'}")
    watch = terminal.Stopwatch()
    calling = impl_calling(impl, framework, device)
    with pipeline.open_check(request, settings, impl, impl_timeout=impl_timeout, calling=calling) as job:
        opened = job.input
        if opened.whole is not None:
            watch.lap(f"read {opened.whole.rows} x {opened.whole.classes} logits from {opened.name or 'arguments'}")
        else:
            watch.lap(f"opened {opened.name} ({opened.size} bytes): read in chunks while it is checked")
        streamed = render.rows_writer(out) if spec.streams_rows else nullcontext(None)
        with terminal.progress(opened.size, opened.format, opened.count_rows) as advance, streamed as rows_out:

            def on_rows(start: int, batch: Batch, part: RowChecks) -> None:
                if rows_out is not None:
                    rows_out(start, batch, part)
                advance(batch.rows)

            report = job.run(keep, on_rows)
    watch.lap(f"computed and compared {', '.join(check.name for check in report.checks)}")
    render.write(report, out, "never" if no_color else color, terminal.quiet())
    watch.lap(f"wrote the {output_format} report")
    return report.exit_code
