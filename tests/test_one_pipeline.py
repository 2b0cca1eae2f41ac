"""One pipeline: how an input is read (whole or in chunks) and how it is written never changes the result.

`gradcheck check` used to have two code paths, files read whole and CSV / JSON Lines streamed in chunks, and
they drifted. These tests hold every input form, every output format, whole or streamed and with or without
--full to one answer, and pin the three bugs the drift caused (each its own test below).
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

FORMATS = ("table", "json", "ndjson", "github")
ROWS, CLASSES, SEED = 13, 4, 20240607
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def force_streaming(monkeypatch):
    """Make every file big enough to stream, in chunks of 64 bytes of text; return the module patched.

    The constants live in gradcheck_cli.inputs.source after the restructure and in gradcheck_cli.stream before.
    """
    for name in ("gradcheck_cli.inputs.source", "gradcheck_cli.stream"):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name is None or not name.startswith(error.name):
                raise  # the module exists but something it imports does not: a real error
            continue
        monkeypatch.setattr(module, "STREAM_ABOVE_BYTES", 0)
        monkeypatch.setattr(module, "CHUNK_BYTES", 64)
        return module
    raise AssertionError("neither gradcheck_cli.inputs.source nor gradcheck_cli.stream exists")


# --- one random batch, written in every input form ---------------------------------------------------------


def batch():
    """13 rows x 4 classes at logit scale ~3, labels with some 1s (for --ignore-index 1), soft targets."""
    rng = np.random.default_rng(SEED)
    logits = rng.standard_normal((ROWS, CLASSES)) * 3
    labels = rng.integers(0, CLASSES, ROWS)
    labels[[2, 7]] = 1
    targets = rng.random((ROWS, CLASSES))
    targets /= targets.sum(axis=1, keepdims=True)
    return logits, labels, targets


def numbers(row):
    return ",".join(repr(float(v)) for v in row)


def reference_values(logits, labels):
    """Softmax, the mean cross-entropy and its gradient, by the textbook formulas (what a user would supply)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    one_hot = np.eye(CLASSES)[labels]
    loss = float(np.mean(-np.log(probabilities[np.arange(ROWS), labels])))
    return probabilities, (probabilities - one_hot) / ROWS, loss


def write_inputs(directory: Path) -> dict[str, tuple[list[str], str | None]]:
    """Every file form of the one batch: {form: (the arguments after 'check', the text of --input)}."""
    logits, labels, targets = batch()
    header = ",".join(f"z{c}" for c in range(CLASSES))
    rows = [numbers(row) for row in logits]

    def write(name, text):
        (directory / name).write_text(text)
        return str(directory / name)

    labelled = [f"{row},{label}" for row, label in zip(rows, labels, strict=True)]
    labelled.insert(5, "")  # a blank line and a comment: row n is not line n + 2
    labelled.insert(9, "# a comment")
    csv_label = write("batch.csv", "# one random batch\n" + header + ",label\n" + "\n".join(labelled) + "\n")
    csv_logits = write("logits.csv", header + "\n" + "\n".join(rows) + "\n")
    labels_file = write("labels.txt", "".join(f"{label}\n" for label in labels))
    targets_file = write("targets.csv", ",".join(f"t{c}" for c in range(CLASSES)) + "\n"
                         + "".join(numbers(row) + "\n" for row in targets))
    probabilities, gradient, loss = reference_values(logits, labels)
    off = gradient.copy()
    off[3, 1] += 1e-3

    def json_file(name, **keys):
        document = {"logits": logits.tolist(), **{key: np.asarray(v).tolist() for key, v in keys.items()}}
        return write(name, json.dumps(document, indent=1) + "\n")

    files = {
        "csv-label": [csv_label],
        "csv+labels-file": [csv_logits, "--labels-file", labels_file],
        "csv+targets-file": [csv_logits, "--targets-file", targets_file],
        "json-labels": [json_file("labels.json", labels=labels)],
        "json-targets": [json_file("targets.json", targets=targets)],
        "json-supplied-right": [json_file("right.json", labels=labels, probabilities=probabilities,
                                          gradient=gradient, loss=loss)],
        "json-supplied-off": [json_file("off.json", labels=labels, probabilities=probabilities,
                                        gradient=off, loss=loss)],
        "jsonl": [write("batch.jsonl", "".join(json.dumps({"logits": row.tolist(), "label": int(label)}) + "\n"
                                               for row, label in zip(logits, labels, strict=True)))],
    }
    forms: dict[str, tuple[list[str], str | None]] = {
        "args": ([f"--logits={row}" for row in rows] + ["--labels", ",".join(map(str, labels))], None),
    }
    for form, (path, *side) in files.items():
        forms[form] = (["-i", path, *side], None)
        forms[f"stdin-{form}"] = (["-i", "-", *side], Path(path).read_text())
    return forms


FORMS = ["args", "csv-label", "csv+labels-file", "csv+targets-file", "json-labels", "json-targets",
         "json-supplied-right", "json-supplied-off", "jsonl"]
FORMS += [f"stdin-{form}" for form in FORMS if form != "args"]
TARGET_FORMS = {form for form in FORMS if "targets" in form}
SUPPLIED_FORMS = {form for form in FORMS if "supplied" in form}

OPTION_SETS = {
    "default": [],
    "sum-five-point": ["--reduction", "sum", "--method", "five-point"],
    "none": ["--reduction", "none"],
    "weights-ignore": ["--weights", "0.5,1,2,0.25", "--ignore-index", "1"],
    "smooth-T-float32": ["--label-smoothing", "0.2", "--temperature", "1.7", "--dtype", "float32"],
    "mse": ["--loss", "mse"],
}


STREAMABLE_FORMS = {"csv-label", "jsonl", "stdin-csv-label", "stdin-jsonl"}


def matrix_cases():
    """Every form with every option set, except where an option set adds nothing but time (~0.35 s a case).

    Supplied values are right for the default settings only: any other set just fails them, as one extra set
    (float32, smoothing, temperature) shows. Reading stdin instead of the file changes how the text is read,
    not the arithmetic, so the stdin forms that are never streamed get two sets; the streamable ones get all
    (with weights or an ignored label a streamed mean reads its input twice, and stdin only once).
    """
    for form in FORMS:
        for name, options in OPTION_SETS.items():
            if name == "weights-ignore" and form in TARGET_FORMS:
                continue  # class weights apply to labels; --ignore-index is for labels only
            if form in SUPPLIED_FORMS and name not in ("default", "smooth-T-float32"):
                continue  # (and a supplied loss of one number does not fit --reduction none: exit 2, by design)
            if form in SUPPLIED_FORMS and form.startswith("stdin-") and name != "default":
                continue
            if form.startswith("stdin-") and form not in STREAMABLE_FORMS and name not in ("default", "none"):
                continue
            yield pytest.param(form, options, id=f"{form}-{name}")


# --- comparing runs ----------------------------------------------------------------------------------------


def verdict_line(stdout):
    lines = [line for line in stdout.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def check_summary(check):
    """What must not depend on the path: name, result, the worst element and its values, the largest errors."""
    worst = check["worst"]
    return {"name": check["name"], "passed": check["passed"], "worst.index": worst["index"],
            "worst.actual": worst["actual"], "worst.expected": worst["expected"],
            "max_abs_error": check["max_abs_error"], "max_rel_error": check["max_rel_error"]}


def summary(document):
    """With --reduction none the loss is one value per row: a per-row array like the others (see arrays)."""
    per_row = document["settings"]["reduction"] == "none"
    return {"passed": document["passed"], "shape": document["shape"], "settings": document["settings"],
            "loss": None if per_row else document["loss"],
            "checks": [check_summary(check) for check in document["checks"]]}


def arrays(document):
    """The per-row arrays a document carries (none when `arrays` is false)."""
    if not document["arrays"]:
        return {}
    kept = {"probabilities": document["probabilities"], "gradient.analytic": document["gradient"]["analytic"],
            "gradient.numeric": document["gradient"]["numeric"]}
    if "jacobian" in document:
        kept["jacobian"] = document["jacobian"]
    if document["settings"]["reduction"] == "none":
        kept["loss"] = document["loss"]  # one per row, kept with the other per-row arrays
    return kept


def run_matrix(gradcheck, monkeypatch, arguments, stdin):
    """Every format x whole/streamed x --full: {(format, 'whole'|'streamed', 'full'|'default'): Run}."""
    runs = {}
    for how in ("whole", "streamed"):
        with monkeypatch.context() as patch:
            if how == "streamed":
                force_streaming(patch)
            for full in ("default", "full"):
                for output in FORMATS:
                    extra = ["--full"] if full == "full" else []
                    runs[output, how, full] = gradcheck("check", *arguments, *extra, "-f", output, input=stdin)
    return runs


def parse_json_run(key, run):
    """The report document of a json or ndjson run, and the ndjson row records (None for json)."""
    lines = run.stdout.splitlines()
    if key[0] == "json":
        assert len(lines) == 1, f"{key}: -f json prints one line\n{run}"
        return json.loads(lines[0]), None
    assert lines, f"{key}: -f ndjson printed nothing\n{run}"
    return json.loads(lines[-1]), [json.loads(line) for line in lines[:-1]]


@pytest.mark.parametrize(("form", "options"), list(matrix_cases()))
def test_every_format_whole_or_streamed_full_or_not_gives_one_answer(gradcheck, monkeypatch, tmp_path, form, options):
    """Same exit code, verdict, checks (worst element, errors), loss and arrays, whatever the path and format."""
    arguments, stdin = write_inputs(tmp_path)[form]
    runs = run_matrix(gradcheck, monkeypatch, [*arguments, *options], stdin)
    reference_key = ("json", "whole", "default")
    reference = runs[reference_key]
    assert reference.exit_code in (0, 1), f"the reference run {reference_key} failed\n{reference}"
    if not options:  # the anchors: the matrix must agree on the right answer, not on any answer
        expected = 1 if form.endswith("supplied-off") else 0
        assert reference.exit_code == expected, reference
        if expected:
            failed = [check["name"] for check in json.loads(reference.stdout)["checks"] if not check["passed"]]
            assert failed == ["supplied gradient"], reference
    reference_document, _ = parse_json_run(reference_key, reference)
    reference_summary, reference_arrays = summary(reference_document), arrays(reference_document)
    assert set(reference_arrays) >= {"probabilities", "gradient.analytic", "gradient.numeric"}, "13 x 4 is small"

    problems = []
    verdicts, row_records = {}, {}
    for key, run in runs.items():
        label = "/".join(key)
        if run.exit_code != reference.exit_code:
            problems.append(f"{label}: exit {run.exit_code}, json whole exits {reference.exit_code}; "
                            f"stderr {run.stderr.strip()!r}")
            continue
        if key[0] in ("table", "github"):
            verdicts[label] = verdict_line(run.stdout)
            continue
        document, rows = parse_json_run(key, run)
        if document["passed"] != (run.exit_code == 0):
            problems.append(f"{label}: passed is {document['passed']} but the exit code is {run.exit_code}")
        mine = summary(document)
        for field, value in mine.items():
            if value != reference_summary[field]:
                problems.append(f"{label}: {field} differs from json whole:\n  {value}\n  {reference_summary[field]}")
        for name, values in arrays(document).items():
            if values != reference_arrays[name]:
                problems.append(f"{label}: array {name} differs from json whole")
        if rows is not None:
            row_records[label] = rows
            if [row["row"] for row in rows] != list(range(ROWS)):
                problems.append(f"{label}: ndjson rows are {[row['row'] for row in rows]}, expected 0 to {ROWS - 1}")
                continue
            by_row = {"probabilities": [row["probabilities"] for row in rows],
                      "gradient.analytic": [row["gradient"]["analytic"] for row in rows],
                      "gradient.numeric": [row["gradient"]["numeric"] for row in rows]}
            if "--reduction" in options and "none" in options:
                by_row["loss"] = [row["loss"] for row in rows]
            for name, values in by_row.items():
                expected = reference_document["loss"] if name == "loss" else reference_arrays[name]
                if values != expected:
                    problems.append(f"{label}: ndjson row {name} differ from json whole's arrays")

    if len({json.dumps(rows) for rows in row_records.values()}) > 1:
        problems.append("the ndjson row records differ between runs: " + ", ".join(row_records))
    for label, line in verdicts.items():
        if not re.match(r"(PASS|FAIL)\b", line):
            problems.append(f"{label}: the last line is not a verdict: {line!r}")
        elif line.startswith("PASS") != (reference.exit_code == 0):
            problems.append(f"{label}: verdict {line!r} but the exit code is {reference.exit_code}")
    if len(set(verdicts.values())) > 1:
        problems.append("the verdict lines differ:\n" + "\n".join(f"  {k}: {v}" for k, v in verdicts.items()))
    assert not problems, "\n".join(problems)


# --- bug 1: a .json file went down the JSON Lines path -----------------------------------------------------


def test_ndjson_of_a_json_file_is_one_line_per_row_then_the_report(gradcheck):
    """`check -i examples/batch.json -f ndjson` exits 0 with rows then the report (it exited 2, 'malformed JSON')."""
    run = gradcheck("check", "-i", str(EXAMPLES / "batch.json"), "-f", "ndjson")
    assert run.exit_code == 0, run
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    rows, report = lines[:-1], lines[-1]
    assert [row["row"] for row in rows] == [0, 1, 2]
    for row in rows:
        assert set(row) == {"row", "line", "loss", "probabilities", "lse", "gradient", "max_abs_error"}, row
        assert set(row["gradient"]) == {"analytic", "numeric"}
    assert report["command"] == "check" and report["passed"] is True
    whole = json.loads(gradcheck("check", "-i", str(EXAMPLES / "batch.json"), "-f", "json").stdout)
    assert [row["probabilities"] for row in rows] == whole["probabilities"]
    assert [row["gradient"]["analytic"] for row in rows] == whole["gradient"]["analytic"]
    assert [row["gradient"]["numeric"] for row in rows] == whole["gradient"]["numeric"]
    assert [check_summary(check) for check in report["checks"]] == [check_summary(c) for c in whole["checks"]]


@pytest.mark.parametrize("output", FORMATS)
@pytest.mark.parametrize("layout", ["pretty", "one-line"])
def test_a_json_file_above_the_streaming_threshold_is_read_as_json(gradcheck, monkeypatch, tmp_path, layout, output):
    """Past the streaming threshold a .json file is still one JSON document, not JSON Lines, in every format."""
    logits, labels, _ = batch()
    document = {"logits": logits.tolist(), "labels": labels.tolist()}
    path = tmp_path / "big.json"
    path.write_text(json.dumps(document, indent=1 if layout == "pretty" else None) + "\n")
    whole = gradcheck("check", "-i", str(path), "-f", "json")
    assert whole.exit_code == 0, whole
    force_streaming(monkeypatch)
    run = gradcheck("check", "-i", str(path), "-f", output)
    assert run.exit_code == 0, run
    if output in ("json", "ndjson"):
        report = json.loads(run.stdout.splitlines()[-1])
        assert summary(report) == summary(json.loads(whole.stdout))
        assert len(run.stdout.splitlines()) == (ROWS + 1 if output == "ndjson" else 1)
    else:
        assert verdict_line(run.stdout).startswith("PASS"), run


MALFORMED = '{\n "logits": [[1.5, 2, 3],\n            [0, 1, 2]],\n "labels": [0, 2],\n}\n'


@pytest.mark.parametrize("output", FORMATS)
@pytest.mark.parametrize("how", ["whole", "streamed"])
def test_a_malformed_json_file_is_named_with_one_line_and_column(gradcheck, monkeypatch, tmp_path, how, output):
    """The error says `bad.json:LINE:COL: malformed JSON` once: never a second location (it said bad.json:1:1:2:)."""
    with pytest.raises(json.JSONDecodeError) as error:
        json.loads(MALFORMED)
    line, column = error.value.lineno, error.value.colno  # where the JSON parser says the mistake is
    path = tmp_path / "bad.json"
    path.write_text(MALFORMED)
    if how == "streamed":
        force_streaming(monkeypatch)
    run = gradcheck("check", "-i", str(path), "-f", output)
    assert run.exit_code == 2, run
    assert run.stdout == "", run
    assert re.fullmatch(rf"gradcheck: error: {re.escape(str(path))}:{line}:{column}: malformed JSON\b[^\n]*\n",
                        run.stderr), run


# --- bug 2: a loss that overflows passed in ndjson ---------------------------------------------------------


@pytest.mark.parametrize("output", FORMATS)
@pytest.mark.parametrize("how", ["whole", "streamed"])
@pytest.mark.parametrize("full", [False, True], ids=["default", "full"])
def test_a_loss_that_is_not_finite_fails_in_every_format(gradcheck, monkeypatch, tmp_path, how, full, output):
    """--weights 1e308 with --reduction sum overflows the loss: a failed 'loss' check, exit 1 (ndjson exited 0)."""
    path = tmp_path / "ov.csv"
    path.write_text("a,b,c,label\n1,2,30,0\n1,2,30,0\n")
    if how == "streamed":
        force_streaming(monkeypatch)
    run = gradcheck("check", "-i", str(path), "--weights", "1e308,1,1", "--reduction", "sum", "-f", output,
                    *(["--full"] if full else []))
    assert run.exit_code == 1, run
    if output in ("json", "ndjson"):
        report = json.loads(run.stdout.splitlines()[-1])
        assert report["passed"] is False
        loss = [check for check in report["checks"] if check["name"] == "loss"]
        assert len(loss) == 1 and loss[0]["passed"] is False, report["checks"]
        assert loss[0]["max_abs_error"] is None and report["loss"] is None  # not finite: null in strict JSON
    else:
        assert re.match(r"FAIL\b.*\bloss\b", verdict_line(run.stdout)), run


# --- bug 3: sweep took -f ndjson and printed a table --------------------------------------------------------


def test_sweep_refuses_ndjson_with_one_line_on_stderr(gradcheck):
    """sweep has no rows to stream: -f ndjson is a usage error (exit 2), said in one line, nothing on stdout."""
    run = gradcheck("sweep", "--logits", "1,2,3", "--labels", "0", "-f", "ndjson")
    assert run.exit_code == 2, run
    assert run.stdout == "", run
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gradcheck: error:"), run
    assert "Invalid value for '-f' / '--format'" in lines[0] and "ndjson" in lines[0], run


@pytest.mark.parametrize("output", ["table", "json", "github"])
def test_sweep_still_writes_table_json_and_github(gradcheck, output):
    """The formats sweep keeps still work: exit 0 for a correct gradient's V."""
    run = gradcheck("sweep", "--logits", "1,2,3", "--labels", "0", "-f", output)
    assert run.exit_code == 0, run
    if output == "json":
        report = json.loads(run.stdout)
        assert report["command"] == "sweep" and report["passed"] is True
    else:
        assert "looks correct" in verdict_line(run.stdout), run


def test_a_chunked_input_is_counted_once(tmp_path, monkeypatch):
    """--full on a chunked file with --reduction mean asks for the row count twice (the mean's divisor, and the
    rows --full must be able to keep): the file's bytes are read for it once."""
    from gradcheck_cli import pipeline
    from gradcheck_cli.checks.runner import Keep
    from gradcheck_cli.inputs import gather, source
    from gradcheck_cli.settings import Settings

    path = tmp_path / "rows.csv"
    path.write_text("z0,z1,z2,label\n" + "".join(f"{n % 7}.5,{n % 3}.25,-1,{n % 3}\n" for n in range(400)))
    counts = []
    real = source.count_rows
    monkeypatch.setattr(source, "count_rows", lambda opened: counts.append(1) or real(opened))
    request = gather.InputRequest(input_path=str(path), input_format="csv")
    with pipeline.open_check(request, Settings(), chunk_bytes=2048) as job:
        assert job.input.whole is None  # read in chunks
        report = job.run(Keep(arrays=True, limit=None))
    assert report.rows == 400 and report.passed
    assert len(counts) == 1
