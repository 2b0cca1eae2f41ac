"""`gradcheck schema`: the JSON Schema of the report."""

from __future__ import annotations

import click

from gradcheck_cli.render.schema import schema_text


@click.command("schema")
def schema_command() -> None:
    """Print the JSON Schema of the `--format json` report.

    Example:

        gradcheck schema > gradcheck-report.schema.json
    """
    click.echo(schema_text(), nl=False)
