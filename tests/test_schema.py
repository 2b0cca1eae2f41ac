"""The JSON contract: the shipped schema is valid draft 2020-12, every real report validates against it, every
field a report carries is described in it and documented in the README, and schema_version follows its rules."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from gradcheck_cli.render.schema import SCHEMA_VERSION, schema_text

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SCHEMA = json.loads(schema_text())
README = (ROOT / "README.md").read_text(encoding="utf-8")

# The field paths schema_version 1 promised, per kind of document. Removing or renaming any of them must bump
# schema_version (and start new lists here); adding fields keeps the version.
VERSION_1_FIELDS = {
    "check": {
        "schema_version", "command", "passed", "settings", "settings.method", "settings.eps", "settings.atol",
        "settings.rtol", "settings.dtype", "settings.order", "settings.weights", "settings.label_smoothing",
        "settings.ignore_index", "settings.temperature", "settings.loss", "settings.reduction", "notes", "shape",
        "shape.rows", "shape.classes", "probabilities", "jacobian", "loss", "gradient", "gradient.analytic",
        "gradient.numeric", "checks", "checks[].name", "checks[].passed", "checks[].max_abs_error",
        "checks[].max_rel_error", "checks[].worst", "checks[].worst.index", "checks[].worst.row",
        "checks[].worst.column", "checks[].worst.actual", "checks[].worst.expected", "arrays", "worst_rows",
        "worst_rows[].check", "worst_rows[].row", "worst_rows[].line", "worst_rows[].passed",
    },
    "sweep": {
        "schema_version", "command", "passed", "default_eps", "steps", "steps[].eps", "steps[].max_abs_error",
        "steps[].max_rel_error", "verdict",
    },
    "row": {
        "row", "line", "loss", "probabilities", "gradient", "gradient.analytic", "gradient.numeric", "max_abs_error",
    },
    "diagnose": {
        "schema_version", "command", "passed", "shape", "shape.rows", "shape.classes", "checks", "checks[].name",
        "checks[].passed", "diagnoses", "diagnoses[].check", "diagnoses[].verdict", "diagnoses[].findings",
        "diagnoses[].findings[].id", "diagnoses[].findings[].check", "diagnoses[].findings[].description",
        "diagnoses[].findings[].residual", "diagnoses[].findings[].explains_rows", "diagnoses[].findings[].matched",
        "notes",
    },
}
# Each kind of JSON document: its definition in the schema, and the README table that documents it.
KINDS = {
    "check": ("check_report", "`gradcheck check -f json`"),
    "sweep": ("sweep_report", "`gradcheck sweep -f json`"),
    "row": ("row_record", "`gradcheck check -f ndjson` row records"),
    "diagnose": ("diagnose_report", "`gradcheck diagnose -f json`"),
}


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = SCHEMA["$defs"][node["$ref"].split("/")[-1]]
    return node


def _report(kind: str) -> dict[str, Any]:
    return SCHEMA["$defs"][KINDS[kind][0]]


def _kind(document: dict[str, Any]) -> str:
    """Reports name their command; ndjson row records are the documents without one."""
    return str(document.get("command", "row"))


def schema_fields(node: dict[str, Any], prefix: str = "") -> set[str]:
    """Every field path a report schema describes: 'settings.method', 'checks[].worst.row', ..."""
    node = _resolve(node)
    fields = set()
    if node.get("type") == "array" and "properties" in _resolve(node.get("items", {})):
        return schema_fields(node["items"], f"{prefix}[]")
    for name, child in node.get("properties", {}).items():
        path = f"{prefix}.{name}" if prefix else name
        fields.add(path)
        fields |= schema_fields(child, path)
    return fields


def closed(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with additionalProperties false on every object, so an undescribed field fails validation.

    The shipped schema stays open, because readers should ignore fields they do not know; the tests hold the
    output to the closed one, so that every field that lands is described (and so documented) first.
    """
    schema = copy.deepcopy(schema)

    def close(node: Any) -> None:
        if isinstance(node, dict):
            if "properties" in node:
                node.setdefault("additionalProperties", False)
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(schema)
    return schema


# One closed validator per kind, so a mistake is reported field by field rather than as "matches no oneOf".
def _validator(kind: str) -> jsonschema.Draft202012Validator:
    schema = {key: value for key, value in closed(SCHEMA).items() if key != "oneOf"}
    return jsonschema.Draft202012Validator({**schema, "$ref": f"#/$defs/{KINDS[kind][0]}"})


VALIDATORS = {kind: _validator(kind) for kind in KINDS}


def assert_valid(document: Any) -> None:
    jsonschema.validate(document, SCHEMA, cls=jsonschema.Draft202012Validator)
    validator = VALIDATORS[_kind(document)]
    errors = sorted(validator.iter_errors(document), key=lambda error: list(error.absolute_path))
    messages = [f"{'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}" for error in errors[:5]]
    assert not errors, (
        "the output does not match gradcheck_cli/schema.json; describe new fields there (and in the README's "
        "JSON fields tables):\n" + "\n".join(messages)
    )


def test_the_schema_is_valid_draft_2020_12():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_the_command_prints_the_shipped_file(gradcheck):
    run = gradcheck("schema")
    assert run.exit_code == 0, run
    assert run.stdout == (ROOT / "gradcheck_cli" / "schema.json").read_text(encoding="utf-8")
    assert json.loads(run.stdout) == SCHEMA


def test_schema_version_matches_the_reports():
    assert SCHEMA["$defs"]["schema_version"]["const"] == SCHEMA_VERSION
    for kind in ("check", "sweep"):
        assert _report(kind)["properties"]["schema_version"]["$ref"] == "#/$defs/schema_version"


def test_every_json_command_has_a_report_schema():
    assert [branch["$ref"] for branch in SCHEMA["oneOf"]] == [f"#/$defs/{name}" for name, _ in KINDS.values()]


@pytest.mark.parametrize("kind", KINDS)
def test_no_promised_field_disappears_without_a_version_bump(kind):
    missing = VERSION_1_FIELDS[kind] - schema_fields(_report(kind))
    assert SCHEMA_VERSION != 1 or not missing, (
        f"{sorted(missing)} left the {kind} documents: removing or renaming a field bumps schema_version"
    )


@pytest.mark.parametrize("kind", KINDS)
def test_every_field_has_a_description(kind):
    def undescribed(node: dict[str, Any], path: str) -> list[str]:
        found = []
        for name, child in _resolve(node).get("properties", {}).items():
            if "description" not in child:
                found.append(f"{path}{name}")
            found += undescribed(child, f"{path}{name}.")
            items = _resolve(child).get("items")
            if isinstance(items, dict):
                found += undescribed(items, f"{path}{name}[].")
        return found

    assert undescribed(_report(kind), "") == []


@pytest.mark.parametrize("kind", KINDS)
def test_the_readme_documents_every_field(kind):
    section = README.split("### JSON fields", 1)[-1].split("\n## ", 1)[0]
    heading = KINDS[kind][1]
    assert f"**{heading}**" in section, f"README's JSON fields need a table headed **{heading}**"
    table = section.split(f"**{heading}**", 1)[1].split("\n\n**", 1)[0]
    documented = set(re.findall(r"^\| `([^`]+)` \|", table, flags=re.M))
    assert schema_fields(_report(kind)) - documented == set(), f"README's {heading} table misses these"


def test_the_closed_schema_rejects_an_undescribed_field(gradcheck):
    report = json.loads(gradcheck("check", "--logits", "1,2", "--labels", "0", "-f", "json").stdout)
    report["settings"]["surprise"] = 1
    with pytest.raises(AssertionError, match="settings: Additional properties are not allowed"):
        assert_valid(report)


def test_the_open_schema_lets_readers_ignore_new_fields(gradcheck):
    report = json.loads(gradcheck("check", "--logits", "1,2", "--labels", "0", "-f", "json").stdout)
    report["a_field_from_a_later_version"] = {"x": 1}
    jsonschema.validate(report, SCHEMA, cls=jsonschema.Draft202012Validator)


ONE = ["--logits", "1.1,2.2,0.2,-1.7", "--labels", "2"]
BATCH = ["-i", str(EXAMPLES / "batch.csv")]
REPORTS = {
    "labels": ONE,
    "targets": ["--logits", "1,2,3", "--targets", "0.2,0.3,0.5"],
    "csv file": BATCH,
    "json file": ["-i", str(EXAMPLES / "batch.json")],
    "labels file": ["-i", str(EXAMPLES / "logits.csv"), "--labels-file", str(EXAMPLES / "labels.txt")],
    "targets file": ["-i", str(EXAMPLES / "logits.csv"), "--targets-file", str(EXAMPLES / "targets.csv")],
    "forward": [*BATCH, "--method", "forward"],
    "backward": [*BATCH, "--method", "backward"],
    "eps": [*BATCH, "--eps", "1e-4"],
    "sum": [*BATCH, "--reduction", "sum"],
    "none": [*BATCH, "--reduction", "none"],
    "failing": [*BATCH, "--atol", "0", "--rtol", "0", "--method", "forward"],
    "quiet verbose": [*ONE, "-q", "-v"],
    "one class": ["--logits", "3", "--labels", "0"],
    "five-point": [*BATCH, "--method", "five-point"],
    "richardson": [*BATCH, "--method", "richardson"],
    "complex-step": [*BATCH, "--method", "complex-step"],
    "float32": [*BATCH, "--dtype", "float32"],
    "hessian": [*BATCH, "--order", "2"],
    "hessian failing": [*BATCH, "--order", "2", "--atol", "0", "--rtol", "0", "--method", "forward"],
    "weights": [*BATCH, "--weights", "1,2,0.5,1"],
    "label smoothing": [*BATCH, "--label-smoothing", "0.1"],
    "ignore index": [*BATCH, "--ignore-index", "1"],
    "temperature": [*BATCH, "--temperature", "2"],
    "mse": [*BATCH, "--loss", "mse"],
    "supplied loss": [*ONE, "--loss-value", "1.9"],
    "supplied row losses": [*BATCH, "--reduction", "none", "--loss-value", "1,2,3"],
    "impl": ["-i", str(EXAMPLES / "batch.json"), "--impl", f"{EXAMPLES / 'my_softmax.py'}:softmax_cross_entropy"],
    "impl slip": ["-i", str(EXAMPLES / "batch.json"), "--impl", f"{EXAMPLES / 'my_softmax.py'}:forgot_one_over_n"],
    "impl overflow": ["--logits", "800,0,-3", "--labels", "0",
                      "--impl", f"{EXAMPLES / 'my_softmax.py'}:naive_softmax_cross_entropy"],
}
SWEEPS = {
    "default": ONE,
    "file": BATCH,
    "steps": [*ONE, "--steps", "1e-2,1e-4,1e-6"],
    "looks wrong": [*BATCH, "--steps", "1e-1,1e-2"],
}
RUNS = [("check", args) for args in REPORTS.values()] + [("sweep", args) for args in SWEEPS.values()]
IDS = [f"check {name}" for name in REPORTS] + [f"sweep {name}" for name in SWEEPS]


@pytest.mark.parametrize("command, args", RUNS, ids=IDS)
def test_real_reports_validate(gradcheck, command, args):
    run = gradcheck(command, *args, "--format", "json")
    assert run.exit_code in (0, 1), run
    report = json.loads(run.stdout)
    assert_valid(report)
    assert report["passed"] is (run.exit_code == 0)


def test_reports_with_supplied_values_validate(gradcheck, tmp_path):
    """The user's own probabilities and gradient, from a JSON input and from CSV files, each its own check."""
    supplied = {"logits": [[1.0, 2.0, 3.0]], "labels": [2], "probabilities": [[0.09, 0.245, 0.665]],
                "gradient": [[0.09, 0.245, -0.335]]}
    (tmp_path / "supplied.json").write_text(json.dumps(supplied))
    (tmp_path / "grad.csv").write_text("0.09,0.245,-0.335\n")
    (tmp_path / "probabilities.csv").write_text("0.0900306,0.244728,0.665241\n")
    for args in (["-i", str(tmp_path / "supplied.json")],
                 ["--logits", "1,2,3", "--labels", "2", "--grad-file", str(tmp_path / "grad.csv"),
                  "--probabilities-file", str(tmp_path / "probabilities.csv")]):
        run = gradcheck("check", *args, "-f", "json")
        assert run.exit_code == 1, run
        report = json.loads(run.stdout)
        assert_valid(report)
        assert {"supplied gradient", "supplied probabilities"} <= {check["name"] for check in report["checks"]}


def _write_batch(path: Path, rows: int, classes: int) -> None:
    import numpy as np

    generator = np.random.default_rng(rows + classes)
    logits = generator.normal(size=(rows, classes)).round(6)
    labels = generator.integers(0, classes, size=rows)
    header = ",".join(f"z{c}" for c in range(classes)) + ",label\n"
    path.write_text(header + "".join(",".join(map(str, row)) + f",{label}\n" for row, label in zip(logits.tolist(), labels, strict=True)))


@pytest.mark.parametrize("args", [
    ONE,
    BATCH,
    [*BATCH, "--order", "2", "--reduction", "sum"],
    [*BATCH, "--method", "forward", "--atol", "0", "--rtol", "0"],
], ids=["arguments", "csv", "hessian sum", "failing"])
def test_ndjson_lines_validate(gradcheck, args):
    run = gradcheck("check", *args, "-f", "ndjson")
    assert run.exit_code in (0, 1), run
    documents = [json.loads(line) for line in run.stdout.splitlines()]
    assert [_kind(document) for document in documents] == ["row"] * (len(documents) - 1) + ["check"]
    for document in documents:
        assert_valid(document)


@pytest.mark.parametrize("extra, arrays", [([], False), (["--full"], True)], ids=["summary", "full"])
def test_summaries_of_big_inputs_validate(gradcheck, tmp_path, extra, arrays):
    """Above 20,000 logits the report is a summary (no per-row arrays) unless --full."""
    path = tmp_path / "big.csv"
    _write_batch(path, rows=10_001, classes=2)
    run = gradcheck("check", "-i", str(path), "-f", "json", *extra)
    assert run.exit_code == 0, run
    report = json.loads(run.stdout)
    assert report["arrays"] is arrays and ("probabilities" in report) is arrays
    if arrays:
        # Every row has the same schema; validating 10,001 of them takes jsonschema seconds, so check the
        # lengths here and validate the first rows.
        for key in ("probabilities", "jacobian"):
            assert len(report[key]) == 10_001
            report[key] = report[key][:3]
        for key in ("analytic", "numeric"):
            assert len(report["gradient"][key]) == 10_001
            report["gradient"][key] = report["gradient"][key][:3]
    assert_valid(report)


def test_json_lines_input_validates(gradcheck, tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"logits": [1, 2, 3], "label": 0}\n{"logits": [0.5, -1, 2], "label": 2}\n')
    for output_format in ("json", "ndjson"):
        run = gradcheck("check", "-i", str(path), "-f", output_format)
        assert run.exit_code == 0, run
        for line in run.stdout.splitlines():
            assert_valid(json.loads(line))


def test_reports_from_stdin_validate(gradcheck):
    run = gradcheck("check", "-i", "-", "-f", "json", input=(EXAMPLES / "batch.json").read_text())
    assert_valid(json.loads(run.stdout))


def test_a_non_finite_value_is_null_and_still_valid():
    """The schema's null for non-finite numbers, exercised directly: the CLI refuses non-finite input."""
    import numpy as np

    from gradcheck_cli.batch import Batch
    from gradcheck_cli.pipeline import check_batch as run_check
    from gradcheck_cli.settings import Settings

    batch = Batch(logits=np.array([[1.0, 2.0]]), labels=np.array([0]), targets=np.array([[1.0, 0.0]]))
    report = run_check(batch, Settings())
    report.analytic_gradient[0, 1] = np.nan
    document = report.to_dict()
    assert document["gradient"]["analytic"][0][1] is None
    assert_valid(document)
