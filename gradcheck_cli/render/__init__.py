"""The output-format registry: each format is one module here and one line below.

A format module offers write(report, out, color, quiet); one that streams rows also offers rows_writer(out), a
context manager giving what the runner calls with each checked batch. Kept free of numpy and rich, so the
command line builds its --format choice from RENDERERS at start-up.
"""

# No `from __future__ import annotations`: typing.NamedTuple compiles each string annotation (start-up time).
import importlib
from types import ModuleType
from typing import NamedTuple


class Renderer(NamedTuple):
    module: str
    help: str
    arrays: bool  # shows the per-row arrays (kept for inputs up to the runner's limit, or with --full)
    jacobian_classes: int | None  # keeps the N x C x C Jacobian up to this many classes (None: any)
    streams_rows: bool = False  # writes each batch's rows as they are checked


# Tables show a corner of a wide Jacobian at most: past 50 classes they say so instead of building it.
RENDERERS = {
    "table": Renderer("gradcheck_cli.render.tables", "tables for people", arrays=True, jacobian_classes=50),
    "json": Renderer("gradcheck_cli.render.json_report", "one JSON object for programs", arrays=True,
                     jacobian_classes=None),
    "github": Renderer("gradcheck_cli.render.github", "GitHub Actions annotations", arrays=False, jacobian_classes=0),
    "ndjson": Renderer("gradcheck_cli.render.ndjson_rows", "one JSON line per sample, then the report", arrays=False,
                       jacobian_classes=0, streams_rows=True),
}
FORMAT_NAMES = tuple(RENDERERS)


def renderer(name: str) -> ModuleType:
    return importlib.import_module(RENDERERS[name].module)
