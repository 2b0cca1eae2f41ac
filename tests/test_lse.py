"""The per-row log-sum-exp (issue 14): reported in JSON (`lse`, the softmax losses, when arrays are kept) and,
supplied by the user (JSON, JSON Lines, tensor files), checked as `supplied lse`.

The oracle is independent of gradcheck's code: Python's decimal module at 50 digits, from the float64 logits,
computes u = (C tanh(A z / C)) / T and log sum_j exp(u_j) with no shift and no cancellation, then rounds once.

Error analysis for the 1e-12 bound: gradcheck computes u in float64 (A z, z / C, tanh, C x, / T: a few
roundings, each relative, so |du_j| <= 8 eps |u_j| with eps = 2^-53) and lse = max(u) + log(sum exp(u - max)),
whose rounding is absolute in the row's extent E = max|u| + log C + 1 (the shift, the exps summed C at a time,
the log, the add): |d lse| <= (8 + 2 C) eps E. For the rows here (C <= 6, E < 40) that is under 1e-13; the
tests hold every value to 1e-12 E, so a computation off by 1e-12 of its scale or more fails.
"""

from __future__ import annotations

import io
import json
from decimal import Decimal, localcontext

import jsonschema
import numpy as np
import pytest
from test_schema import closed  # the schema with every object closed, as test_schema holds reports to it

from gradcheck_cli import pipeline
from gradcheck_cli.checks import kept as kept_module
from gradcheck_cli.checks import runner
from gradcheck_cli.errors import InputError
from gradcheck_cli.inputs import jsonl_format
from gradcheck_cli.inputs.gather import InputRequest
from gradcheck_cli.render import json_report
from gradcheck_cli.render.schema import schema_text
from gradcheck_cli.settings import Settings

LOGITS = np.array([[1.1, 2.2, 0.2, -1.7, 0.5], [30.0, -12.5, 4.25, 0.0, 29.0], [-3.0, -3.0, -3.0, -3.0, -2.0]])
TEACHER = np.array([[0.3, -1.0, 2.0, 0.1, 0.0], [5.0, 4.0, -2.0, 1.0, 0.5], [0.0, 0.0, 1.0, -1.0, 2.0]])
LABELS = [1, 0, 4]


def exact_lse(logits: np.ndarray, temperature: float = 1.0, softcap: float | None = None,
              scale: float = 1.0) -> np.ndarray:
    """log sum_j exp(u_j), u = C tanh(A z / C) / T, in 50-digit decimal arithmetic from the float64 logits."""
    with localcontext() as context:
        context.prec = 50
        values = []
        for row in logits.tolist():
            u = []
            for z in row:
                x = Decimal(scale) * Decimal(z)
                if softcap is not None:
                    c = Decimal(softcap)
                    e = (2 * x / c).exp()
                    x = c * (e - 1) / (e + 1)  # C tanh(x / C)
                u.append(x / Decimal(temperature))
            values.append(float(sum(v.exp() for v in u).ln()))
        return np.array(values)


def extent(logits: np.ndarray, temperature: float, softcap: float | None, scale: float) -> np.ndarray:
    """max |u| + log C + 1 per row: the scale of lse's absolute rounding (module docstring)."""
    u = scale * logits if softcap is None else softcap * np.tanh(scale * logits / softcap)
    return np.abs(u / temperature).max(axis=1) + np.log(logits.shape[1]) + 1.0


def rows_args(flag: str, matrix: np.ndarray) -> list[str]:
    return [part for row in matrix for part in (flag, ",".join(repr(float(v)) for v in row))]


def json_of(gradcheck, *args: str, input: str | None = None) -> dict:
    run = gradcheck("check", *args, "-f", "json", input=input)
    assert run.exit_code in (0, 1), run
    return json.loads(run.stdout)


# (CLI options, T, softcap C, logit scale A)
CASES = {
    "cross_entropy T": (["--labels", "1,0,4", "--temperature", "2.5"], 2.5, None, 1.0),
    "softcap and T": (["--labels", "1,0,4", "--softcap", "7", "--temperature", "0.75"], 0.75, 7.0, 1.0),
    "logit scale, softcap, z-loss": (["--labels", "1,0,4", "--logit-scale", "1.5", "--softcap", "20", "--z-loss",
                                      "1e-3"], 1.0, 20.0, 1.5),
    "soft targets and T": (["--targets", "0.2,0.2,0.2,0.2,0.2", "--targets", "1,0,0,0,0", "--targets",
                            "0,0,0.5,0.5,0", "--temperature", "3"], 3.0, None, 1.0),
    "kl T": (["--loss", "kl", "--temperature", "2", *rows_args("--teacher-logits", TEACHER)], 2.0, None, 1.0),
    "jsd": (["--loss", "jsd", "--beta", "0.3", "--temperature", "1.5", *rows_args("--teacher-logits", TEACHER)],
            1.5, None, 1.0),
}


@pytest.mark.parametrize("case", list(CASES))
def test_json_lse_is_the_log_sum_exp_of_the_logits_entering_the_softmax(gradcheck, case):
    """JSON's `lse` is log sum exp(u) with u = (C tanh(A z / C)) / T, the student's for kl and jsd, to 1e-12 of
    its scale against 50-digit arithmetic: protects where it is taken (after the transforms and T, never of the
    raw logits or a teacher's)."""
    options, temperature, softcap, scale = CASES[case]
    document = json_of(gradcheck, *rows_args("--logits", LOGITS), *options)
    assert document["passed"], document["checks"]
    expected = exact_lse(LOGITS, temperature, softcap, scale)
    np.testing.assert_array_less(np.abs(np.array(document["lse"]) - expected),
                                 1e-12 * extent(LOGITS, temperature, softcap, scale))


def test_float32_lse_is_the_float64_reference_at_the_rounded_logits(gradcheck):
    """--dtype float32: lse is float64 (the reference's), taken at the logits rounded to float32, as every other
    reference of the run: protects against reporting the float32 analytic softmax's (1e-7 off)."""
    document = json_of(gradcheck, *rows_args("--logits", LOGITS), "--labels", "1,0,4", "--dtype", "float32",
                       "--temperature", "1.3")
    rounded = LOGITS.astype(np.float32).astype(np.float64)
    np.testing.assert_array_less(np.abs(np.array(document["lse"]) - exact_lse(rounded, 1.3)),
                                 1e-12 * extent(rounded, 1.3, None, 1.0))


def test_no_lse_for_bce_or_a_summary(gradcheck):
    """bce has no softmax, so no lse; a summary (arrays not kept) has none either; both still validate."""
    bce = json_of(gradcheck, "--loss", "bce", *rows_args("--logits", LOGITS), *rows_args("--targets", LOGITS > 0))
    assert "lse" not in bce
    request = InputRequest(logits_args=tuple(",".join(map(repr, row)) for row in LOGITS.tolist()), labels_arg="1,0,4")
    summary = pipeline.check(request, Settings(), keep=runner.Keep(arrays=False))
    assert summary.lse is None and "lse" not in summary.to_dict()


def _supplied_json(lse: np.ndarray) -> str:
    return json.dumps({"logits": LOGITS.tolist(), "labels": LABELS, "lse": lse.tolist()})


def _supplied_jsonl(lse: np.ndarray) -> str:
    return "".join(json.dumps({"logits": row, "label": label, "lse": value}) + "\n"
                   for row, label, value in zip(LOGITS.tolist(), LABELS, lse.tolist(), strict=True))


def _supplied_npz(lse: np.ndarray, tmp_path) -> str:
    path = tmp_path / "values.npz"
    np.savez(path, logits=LOGITS, labels=np.array(LABELS), lse=lse)
    return str(path)


def _run_supplied(gradcheck, how: str, lse: np.ndarray, tmp_path, *options: str):
    if how == "npz":
        return gradcheck("check", "-i", _supplied_npz(lse, tmp_path), *options)
    text = _supplied_json(lse) if how == "json" else _supplied_jsonl(lse)
    return gradcheck("check", "-i", "-", *options, input=text)


@pytest.mark.parametrize("how", ["json", "jsonl", "npz"])
def test_a_correct_supplied_lse_passes(gradcheck, how, tmp_path):
    """A supplied lse that is the exact value (rounded to float64) passes through every reader: a correct
    computation never fails."""
    run = _run_supplied(gradcheck, how, exact_lse(LOGITS, 1.7), tmp_path, "--temperature", "1.7", "-f", "json")
    assert run.exit_code == 0, run
    document = json.loads(run.stdout)
    assert [check["name"] for check in document["checks"]] == ["gradient", "jacobian", "supplied lse"]
    assert document["supplied"]["lse"] == exact_lse(LOGITS, 1.7).tolist()


@pytest.mark.parametrize("how", ["json", "jsonl", "npz"])
def test_a_supplied_lse_off_by_1e_8_relative_fails_naming_its_row(gradcheck, how, tmp_path):
    """One row's lse off by 1e-8 of itself (far above the rounding, far below what a table shows) fails the
    `supplied lse` check at that row, exit 1: a wrong computation never passes."""
    lse = exact_lse(LOGITS)
    lse[2] *= 1 + 1e-8
    run = _run_supplied(gradcheck, how, lse, tmp_path, "-f", "json")
    assert run.exit_code == 1, run
    failed = [check for check in json.loads(run.stdout)["checks"] if not check["passed"]]
    assert [(check["name"], check["worst"]["row"]) for check in failed] == [("supplied lse", 2)]
    text = _run_supplied(gradcheck, how, lse, tmp_path)
    assert text.exit_code == 1 and "supplied lse disagrees at row 2" in text.stdout, text


def test_tables_show_the_lse_beside_the_loss_when_supplied(gradcheck):
    """The tables show each row's lse and the user's under it when they supplied one (or --z-loss squares it),
    within 80 columns; other runs' tables are unchanged."""
    lse = exact_lse(LOGITS)
    run = gradcheck("check", "-i", "-", input=_supplied_json(lse))
    assert run.exit_code == 0, run
    shown = ", ".join(f"{v:.6g}" for v in lse)
    assert f"Log-sum-exp per row (lse): {shown}\nYour lse per row (supplied): {shown}\n" in run.stdout
    assert max(map(len, run.stdout.splitlines())) <= 80
    plain = gradcheck("check", *rows_args("--logits", LOGITS), "--labels", "1,0,4")
    assert "lse" not in plain.stdout


@pytest.mark.parametrize(("text", "message"), [
    (json.dumps({"logits": LOGITS.tolist(), "labels": LABELS, "lse": [1.0, 2.0]}),
     'gradcheck: error: "lse" in <stdin>: the supplied lse is 2; for 3 x 5 logits it must be 3 values, one per row'),
    (json.dumps({"logits": LOGITS.tolist(), "labels": LABELS, "lse": [[1.0], [2.0], [3.0]]}),
     "gradcheck: error: <stdin>: lse: expected a flat list of N numbers, one per row, got 3 rows of them"),
    (json.dumps({"logits": LOGITS.tolist(), "labels": LABELS, "lse": [1.0, "x", 3.0]}),
     "gradcheck: error: <stdin>: lse[1]: expected a number, got \"x\""),
    ('{"logits": [1, 2], "label": 0, "lse": 2.3}\n{"logits": [1, 3], "label": 1}\n',
     'gradcheck: error: <stdin>:2: has no "lse" and the first line has one; give it in every line or in none'),
    ('{"logits": [1, 2], "label": 0, "lse": "2.3"}\n{"logits": [1, 3], "label": 1, "lse": 3.1}\n',
     "gradcheck: error: <stdin>:1: lse: expected a number (this row's log-sum-exp), got \"2.3\""),
])
def test_a_bad_supplied_lse_is_an_input_error(gradcheck, text, message):
    """Every bad lse: exit 2 and one line saying what and where."""
    run = gradcheck("check", "-i", "-", input=text)
    assert (run.exit_code, run.stdout, run.stderr) == (2, "", message + "\n"), run


def test_a_supplied_lse_with_bce_is_an_input_error(gradcheck, tmp_path):
    """bce has no softmax: a supplied lse is refused (exit 2), never silently ignored."""
    path = tmp_path / "bce.npz"
    np.savez(path, logits=LOGITS, targets=(LOGITS > 0).astype(float), lse=exact_lse(LOGITS))
    run = gradcheck("check", "--loss", "bce", "-i", str(path))
    assert run.exit_code == 2 and run.stderr.count("\n") == 1 and "lse" in run.stderr, run


def test_a_tensor_lse_of_the_wrong_shape_is_an_input_error(gradcheck, tmp_path):
    """A tensor file's lse must be N values: exit 2 naming the key and the shape expected."""
    path = tmp_path / "wrong.npz"
    np.savez(path, logits=LOGITS, labels=np.array(LABELS), lse=exact_lse(LOGITS)[None])
    run = gradcheck("check", "-i", str(path))
    assert run.exit_code == 2, run
    assert run.stderr == (f"gradcheck: error: {path}: lse: lse of shape 1 x 3 for 3 rows of logits; expected 3 rows "
                          "of one value (a vector of N)\n")


def test_json_lines_fast_and_strict_readers_give_the_same_lse(monkeypatch):
    """The one-json.loads fast path and the line-by-line reader give the same supplied lse (null: NaN only on
    the strict one, which fails its check)."""
    text = _supplied_jsonl(exact_lse(LOGITS))
    blocks = [(1, text)]
    fast = list(jsonl_format.pieces(iter(blocks), "x.jsonl"))
    monkeypatch.setattr(jsonl_format, "_plain_block", lambda *args: None)
    strict = list(jsonl_format.pieces(iter(blocks), "x.jsonl"))
    assert len(fast) == len(strict) == 1
    np.testing.assert_array_equal(fast[0].supplied["lse"][0], strict[0].supplied["lse"][0])
    np.testing.assert_array_equal(fast[0].supplied["lse"][0], exact_lse(LOGITS))


def test_a_streamed_json_lines_file_checks_every_chunk_lse(tmp_path):
    """A JSON Lines file read in many chunks checks each chunk's lse and reports them all, in row order: the
    wrong row is found whichever chunk holds it."""
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((60, 5)) * 3
    lse = exact_lse(logits)
    lse[47] += 1e-7
    path = tmp_path / "many.jsonl"
    path.write_text("".join(json.dumps({"logits": row, "label": 0, "lse": v}) + "\n"
                            for row, v in zip(logits.tolist(), lse.tolist(), strict=True)))
    with pipeline.open_check(InputRequest(input_path=str(path)), Settings(), chunk_bytes=600) as job:
        report = job.run()
    failed = [(check.name, check.worst_index) for check in report.checks if not check.passed]
    assert failed == [("supplied lse", (47,))]
    assert report.lse is not None and report.lse.shape == (60,)
    np.testing.assert_array_less(np.abs(report.lse - exact_lse(logits)), 1e-12 * extent(logits, 1.0, None, 1.0))


def test_reports_with_lse_validate_against_the_closed_schema(gradcheck):
    """Both lse fields (the reference's and the supplied one) are described by schema.json: a report carrying
    them validates against the schema with every object closed."""
    schema = closed(json.loads(schema_text()))
    run = gradcheck("check", "-i", "-", "-f", "json", input=_supplied_json(exact_lse(LOGITS) + 1.0))
    document = json.loads(run.stdout)
    assert run.exit_code == 1 and "lse" in document and "lse" in document["supplied"], run
    jsonschema.validate(document, schema, cls=jsonschema.Draft202012Validator)


@pytest.mark.parametrize("block", [json_report.BLOCK_NUMBERS, 2, 1])
@pytest.mark.parametrize("spill", [False, True])
def test_the_streamed_json_is_byte_for_byte_to_dict(block, spill, tmp_path, monkeypatch):
    """The JSON written block by block, with the lse and a supplied lse, in memory or spilled to temporary
    files, is byte for byte json.dumps(report.to_dict()): the two writers place and spell lse the same."""
    monkeypatch.setattr(json_report, "BLOCK_NUMBERS", block)
    if spill:
        monkeypatch.setattr(runner, "SPILL_BYTES", 64)
    path = tmp_path / "in.json"
    path.write_text(_supplied_json(exact_lse(LOGITS) * (1 + 1e-9)))
    report = pipeline.check(InputRequest(input_path=str(path)), Settings(reduction="none", z_loss=1e-2),
                            keep=runner.Keep(limit=None))
    assert isinstance(report.lse, np.memmap) == spill
    stream = io.StringIO()
    json_report.write_pieces(stream, json_report.json_pieces(report))
    assert stream.getvalue() == json.dumps(report.to_dict(), allow_nan=False) + "\n"
    assert "lse" in report.to_dict() and "lse" in report.to_dict()["supplied"]


def test_full_refuses_counting_the_lse_too(monkeypatch, tmp_path):
    """--full's refusal counts every kept number, the lse with them: 3 C + 2 per row without the Jacobian."""
    needed = 10 * 8 * (3 * 4 + 2)  # 10 rows of 4 classes, in float64
    kept = kept_module.Kept(spill_bytes=0, reserve=0)
    monkeypatch.setattr("shutil.disk_usage", lambda directory: type("Usage", (), {"free": needed})())
    kept.refuse_beyond(10, 4, jacobian=False)  # exactly fits
    monkeypatch.setattr("shutil.disk_usage", lambda directory: type("Usage", (), {"free": needed - 1})())
    with pytest.raises(InputError, match="GB of numbers"):
        kept.refuse_beyond(10, 4, jacobian=False)  # one byte short: the lse's 8 bytes a row were counted


def test_the_python_api_checks_a_supplied_lse():
    """check(..., lse=) is the `lse` key of a JSON input: one per row (a bare number for one row of logits),
    passing when right and failing when off by 1e-8 relative."""
    import gradcheck_cli

    z = np.array([[1.0, 2.0, 0.5], [0.3, 0.1, 2.0]])
    right = np.log(np.exp(z).sum(axis=1))
    assert gradcheck_cli.check(z, labels=[1, 2], lse=right).passed
    assert not gradcheck_cli.check(z, labels=[1, 2], lse=right * (1 + 1e-8)).passed
    assert gradcheck_cli.check(z[0], labels=[1], lse=float(right[0])).passed
