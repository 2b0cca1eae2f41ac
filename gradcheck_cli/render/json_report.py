"""The JSON report: one strict JSON document (no NaN or Infinity tokens), valid against schema.json."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gradcheck_cli.report import Report

if TYPE_CHECKING:
    from gradcheck_cli.terminal import Output


def render_json(report: Report) -> str:
    import json  # here, not at the top: start-up pays for it only when JSON is used

    # allow_nan=False: a NaN that slipped past finite_or_none is a bug, and must not become invalid JSON.
    return json.dumps(report.to_dict(), allow_nan=False)


def write(report: Report, out: Output, color: str, quiet: bool) -> None:
    out.echo(render_json(report))
