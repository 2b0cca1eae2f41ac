"""The JSON Schema (draft 2020-12) of the report, shipped in the package as schema.json."""

from __future__ import annotations

SCHEMA_FILE = "schema.json"
# Every JSON document gradcheck prints carries this; see schema.json's description for when it changes.
SCHEMA_VERSION = 1


def schema_text() -> str:
    """The schema exactly as shipped (it is also in the repository at gradcheck_cli/schema.json)."""
    from importlib.resources import files  # only `gradcheck schema` and the tests need it: keep start-up lean

    return files("gradcheck_cli").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
