"""`gradcheck explain`: the derivation of one sample's softmax, Jacobian, loss and gradient, with its numbers.

The derivation is api/explaining.py's (plain data); this module parses the options and prints it.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from gradcheck_cli import options, terminal
from gradcheck_cli.commands.sectioned_help import SectionedCommand
from gradcheck_cli.settings import Settings

if TYPE_CHECKING:
    from gradcheck_cli.api.explaining import Explanation

# A run of this many blocks of the derivation is joined into one write unless it holds more characters than
# JOINED_CHARACTERS: few writes (some losses give a block per line, 100,000 at 50,257 classes), and never a
# copy of the whole text (15 MB there) or of a run of the long blocks a step gives (a few MB each).
WRITTEN_TOGETHER = 1024
JOINED_CHARACTERS = 1 << 20


@click.command(cls=SectionedCommand)
@options.input_options
@options.loss_options
@click.option("--row", type=click.IntRange(min=0), default=0, show_default=True,
              help="Which sample (0-based, as check's tables number rows).")
@options.output_options(("table", "json"))
def explain(row: int, output_format: str, color: str, no_color: bool, **given: Any) -> int:
    """Print the derivation of one sample's softmax, Jacobian, loss and gradient with its own numbers.

    Classes are numbered from 0, as in check's tables and JSON. -f json gives the numbers of each step and
    the lines; -q prints only the sample's loss and gradient.

    Example:

        gradcheck explain --logits 1.1,2.2,0.2,-1.7 --labels 2
    """
    from gradcheck_cli.api.explaining import explain_request
    from gradcheck_cli.inputs.gather import InputRequest

    # The options that say where the data (and your values) are: InputRequest's fields; the rest are Settings.
    request = InputRequest(**{key: given.pop(key) for key in InputRequest._fields if key in given})
    explained = explain_request(request, Settings(**given), row)
    if output_format == "json":
        import json  # here, not at the top: start-up pays for it only when JSON is used

        document = json.dumps(explained.to_dict(), allow_nan=False, ensure_ascii=False)
        terminal.output().write(lambda: click.echo(document))
    elif terminal.quiet():
        terminal.output().write(lambda: click.echo(explained.summary()))
    else:
        terminal.output().write(lambda: _print(explained, "never" if no_color else color))
    return 0


def _print(explained: Explanation, color: str) -> None:
    """The lines, the step headings ("1. Softmax: ...") in bold when in colour.

    Written as a few blocks of plain text, not line by line through rich: a wide row has C lines per step.
    """
    import re

    if not terminal.wants_color(color):
        _write_plain(explained.blocks)
        return
    text = explained.text + "\n"
    console = terminal.make_console(color)
    # re.split with a group alternates plain blocks and the headings ("1. Softmax: ...") between them.
    for place, piece in enumerate(re.split(r"(?m)^([0-9]\. [^\n]*)\n", text)):
        if place % 2:
            console.print(piece, style="bold", soft_wrap=True)
        else:
            sys.stdout.write(piece)


def _write_plain(blocks: list[str]) -> None:
    """The blocks, one line break after each: short ones joined a run at a time, long ones written as they are."""
    for start in range(0, len(blocks), WRITTEN_TOGETHER):
        run = blocks[start:start + WRITTEN_TOGETHER]
        if sum(map(len, run)) <= JOINED_CHARACTERS:
            sys.stdout.write("\n".join(run))
            sys.stdout.write("\n")
            continue
        for block in run:  # a run with long blocks: each written whole, no copy joins them
            sys.stdout.write(block)
            sys.stdout.write("\n")
