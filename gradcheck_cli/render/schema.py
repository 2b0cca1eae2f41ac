"""The JSON Schema (draft 2020-12) of the report, shipped in the package as schema.json."""

from __future__ import annotations

from gradcheck_cli.report import SCHEMA_VERSION

SCHEMA_FILE = "schema.json"
__all__ = ("SCHEMA_FILE", "SCHEMA_VERSION", "schema_text")


def schema_text() -> str:
    """The schema exactly as shipped (it is also in the repository at gradcheck_cli/schema.json)."""
    from importlib.resources import files  # only `gradcheck schema` and the tests need it: keep start-up lean

    return files("gradcheck_cli").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
