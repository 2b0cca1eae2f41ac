"""Nothing gets through: fuzzed parsers, hostile and extreme inputs, internal errors, determinism."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradcheck_cli.errors import InputError
from gradcheck_cli.inputs import csv_format, json_format, jsonl_format, numbers, source

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
TOKEN = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers().map(str),
    st.sampled_from(["", " ", "nan", "-inf", "1_0", "0x10", "1e400", "\u0661", "+.5", "5.", "1e", "--1", "1,,2", "#"]),
    st.text(max_size=6),
)


@FUZZ
@given(st.lists(TOKEN, max_size=6), st.sampled_from([",", " ", ", ", ",,"]))
def test_args_rows_parse_to_exactly_what_they_say_or_refuse(tokens, separator):
    text = separator.join(tokens)
    try:
        row = numbers.parse_row(text, "--logits #1")
    except InputError as error:
        assert str(error).startswith("--logits #1")
        return
    words = [word for word in text.replace(",", " ").split() if word]
    assert row == [float(word) for word in words]
    assert all(np.isfinite(row))


def _whole(reader):
    """A format's reader on a whole text, as one block: its one piece of rows."""

    def read(text, name):
        (parsed,) = reader.pieces(iter([(1, text)]), name)
        return parsed

    return read


def _reads_finite_logits_or_refuses_in_one_line(read, text, name):
    """A parser either reads finite logits or refuses with one line that starts with the input's name."""
    try:
        parsed = read(text, name)
    except InputError as error:
        assert str(error).startswith(name) and "\n" not in str(error)
        return
    assert parsed.logits is not None and np.isfinite(parsed.logits).all()


@FUZZ
@given(st.lists(st.lists(TOKEN, min_size=1, max_size=4), min_size=1, max_size=5), st.booleans())
def test_csv_parses_or_refuses_with_a_location(cells, header):
    text = ("a,b,c,label\n" if header else "") + "\n".join(",".join(row) for row in cells)
    _reads_finite_logits_or_refuses_in_one_line(_whole(csv_format), text, "f.csv")


@FUZZ
@given(st.lists(st.lists(st.floats(-1e300, 1e300), min_size=3, max_size=3), min_size=1, max_size=6),
       st.lists(st.integers(0, 2), min_size=6, max_size=6))
def test_csv_fast_path_reads_exactly_what_the_exact_parser_reads(rows, labels):
    lines = [(n + 1, ",".join(repr(v) for v in row) + f",{labels[n]}") for n, row in enumerate(rows)]
    layout = csv_format.CsvLayout(["a", "b", "c", "label"], 4, 3)
    fast = csv_format.parse_csv_rows(lines, "f.csv", layout)
    exact = csv_format._parse_csv_rows_exactly(lines, "f.csv", layout)
    np.testing.assert_array_equal(fast[0], exact[0])
    np.testing.assert_array_equal(fast[1], exact[1])


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False), st.integers(), st.text(max_size=4)),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(
        ["logits", "labels", "targets", "loss", "gradient", "x"]), children, max_size=4),
    max_leaves=20,
)


@FUZZ
@given(JSON_VALUES)
def test_json_documents_parse_or_refuse(document):
    _reads_finite_logits_or_refuses_in_one_line(json_format.read_json, json.dumps(document), "f.json")


@FUZZ
@given(st.binary(max_size=200))
def test_arbitrary_bytes_on_stdin_never_crash(gradcheck, data):
    run = gradcheck("check", "-i", "-", "-f", "json", input=data)
    assert run.exit_code in (0, 1, 2), run
    if run.exit_code == 2:
        assert len(run.stderr.splitlines()) == 1 and run.stdout == ""
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize("text", [
    '{"logits": [1, Infinity], "labels": [0]}', '{"logits": [1, -Infinity], "labels": [0]}',
    '{"logits": [1, 2e999], "labels": [0]}', '{"logits": [1, 2], "labels": [0], "labels": [1]}',
    "[" * 50000, '"just a string"', "42", "null",
])
def test_hostile_json_is_refused(gradcheck, text):
    run = gradcheck("check", "-i", "-", "--input-format", "json", input=text)
    assert run.exit_code == 2, run
    assert len(run.stderr.splitlines()) == 1


def test_csv_conventions_bom_crlf_trailing_comma_comments(gradcheck):
    text = "\ufeff# dump\r\nz0,z1,z2,label\r\n\r\n1,2,3,0,\r\n# note\r\n3,2,1,2,\r\n"
    run = gradcheck("check", "-i", "-", "--input-format", "csv", "-f", "json", input=text.encode("utf-8"))
    assert run.exit_code == 0, run
    assert json.loads(run.stdout)["shape"] == {"rows": 2, "classes": 3}


@pytest.mark.parametrize(("logits", "label"), [
    ("1000,-1000,0", 1), ("5,5,5,5", 2), ("800,0,0", 0), ("-1000,-1000,1000", 0), ("3", 0),
])
def test_extreme_but_valid_logits_pass(gradcheck, logits, label):
    run = gradcheck("check", "--logits", logits, "--labels", str(label), "-f", "json", "--order", "2")
    assert run.exit_code == 0, run
    report = json.loads(run.stdout)
    assert np.isfinite(report["loss"]) and all(np.isfinite(report["gradient"]["analytic"][0]))


def test_one_class_is_a_trivial_pass(gradcheck):
    """C = 1: the softmax is 1, the loss 0, and the gradient and Jacobian are exactly 0."""
    report = json.loads(gradcheck("check", "--logits", "7.5", "--labels", "0", "-f", "json").stdout)
    assert report["probabilities"] == [[1.0]] and report["loss"] == 0.0
    assert report["gradient"]["analytic"] == [[0.0]] and report["jacobian"] == [[[0.0]]]


def test_ten_thousand_classes(gradcheck):
    row = ",".join(f"{v:.4f}" for v in np.random.default_rng(0).standard_normal(10_000))
    run = gradcheck("check", "--logits", row, "--labels", "9999", "-q")
    assert run.exit_code == 0, run


def test_an_internal_error_is_one_line_and_exit_3(gradcheck, monkeypatch):
    from gradcheck_cli.checks import runner

    def broken(*args, **kwargs):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(runner, "check_rows", broken)
    run = gradcheck("check", "--logits", "1,2", "--labels", "0")
    assert run.exit_code == 3, run
    assert run.stderr == ("gradcheck: error: internal error: ZeroDivisionError: boom "
                          "(re-run with --debug for the traceback)\n")
    debug = gradcheck("--debug", "check", "--logits", "1,2", "--labels", "0")
    assert debug.exit_code == 3 and "Traceback" in debug.stderr


def test_same_input_gives_byte_identical_json(gradcheck):
    args = ("check", "-i", str(__import__("pathlib").Path(__file__).parent.parent / "examples" / "batch.json"), "-f", "json", "--order", "2")
    first, second = gradcheck(*args), gradcheck(*args)
    assert first.stdout == second.stdout and first.exit_code == 0


def test_an_open_stdin_does_not_block_a_command_given_its_input_as_args():
    with subprocess.Popen([sys.executable, "-m", "gradcheck_cli", "check", "--logits", "1,2", "--labels", "0", "-q"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        assert process.stdout is not None
        stdout = process.stdout.read()  # stdin is never written to nor closed
        assert process.wait(timeout=60) == 0
        assert stdout.startswith(b"PASS")


def test_a_file_too_big_to_read_whole_is_refused_with_the_way_out(gradcheck, tmp_path, monkeypatch):
    monkeypatch.setattr(source, "MAX_IN_MEMORY_BYTES", 100)
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"logits": [[1.0, 2.0, 3.0]] * 20, "labels": [0] * 20}))
    run = gradcheck("check", "-i", str(path))
    assert run.exit_code == 2, run
    assert "to read whole" in run.stderr and "JSON Lines" in run.stderr


@FUZZ
@given(st.lists(TOKEN, max_size=6))
def test_labels_parse_to_exactly_what_they_say_or_refuse(tokens):
    text = ",".join(tokens)
    try:
        labels = numbers.parse_labels(text, "--labels")
    except InputError as error:
        assert str(error).startswith("--labels") and "\n" not in str(error)
        return
    words = [word for word in text.replace(",", " ").split() if word]
    # An integer is read exactly (not through a float, which would round 2**53 + 1).
    assert labels == [int(word) if word.lstrip("+-").isdigit() else int(float(word)) for word in words]
    assert all(float(word).is_integer() for word in words)


@FUZZ
@given(st.lists(JSON_VALUES, min_size=1, max_size=4))
def test_json_lines_parse_or_refuse_with_the_line(documents):
    text = "\n".join(json.dumps(document) for document in documents)
    _reads_finite_logits_or_refuses_in_one_line(_whole(jsonl_format), text, "f.jsonl")


@FUZZ
@given(st.lists(TOKEN, max_size=5))
def test_weights_parse_or_refuse(gradcheck, tokens):
    run = gradcheck("check", "--logits", "1,2,3", "--labels", "0", "--weights", ",".join(tokens), "-f", "json")
    assert run.exit_code in (0, 1, 2), run  # 1: weights so large that the loss overflows, a failed check
    if run.exit_code in (0, 1):
        weights = json.loads(run.stdout)["settings"]["weights"]
        assert weights == [float(word) for word in ",".join(tokens).replace(",", " ").split()]
    else:
        assert len(run.stderr.splitlines()) == 1 and "Traceback" not in run.stderr


@pytest.mark.parametrize("source", ["json", "jsonl", "args"])
def test_labels_beyond_int64_are_input_errors(gradcheck, tmp_path, source):
    huge = "99999999999999999999"
    if source == "json":
        run = gradcheck("check", "-i", "-", input=f'{{"logits": [1, 2, 3], "labels": [{huge}]}}')
    elif source == "jsonl":
        path = tmp_path / "x.jsonl"
        path.write_text(f'{{"logits": [1, 2, 3], "label": {huge}}}\n')
        run = gradcheck("check", "-i", str(path))
    else:
        run = gradcheck("check", "--logits", "1,2,3", "--labels", huge)
    assert run.exit_code == 2, run
    assert "far too large for a class index" in run.stderr


def test_a_loss_that_overflows_is_a_failed_check_not_a_crash(gradcheck):
    run = gradcheck("check", "--logits", "1,2,3", "--labels", "0", "--reduction", "sum",
                    "--weights", "1.7976931348623157e308,1e308,1e308", "-f", "json")
    assert run.exit_code == 1, run
    report = json.loads(run.stdout)
    assert report["loss"] is None
    assert {check["name"]: check["passed"] for check in report["checks"]}["loss"] is False


@pytest.mark.parametrize("logits", ["1.7e308,0", "1e10,0", "0,-2e9"])
def test_logits_beyond_float64_resolution_are_refused_not_mangled(gradcheck, logits):
    run = gradcheck("check", "--logits", logits, "--labels", "0")
    assert run.exit_code == 2, run
    assert "row 0: logit" in run.stderr and "is beyond ±1e+09" in run.stderr and "Warning" not in run.stderr


def test_logits_at_the_limit_still_check(gradcheck):
    run = gradcheck("check", "--logits", "1e9,-1e9,0", "--labels", "2", "-q")
    assert run.exit_code == 0, run


def test_the_logit_range_is_decided_at_its_bound_and_names_the_first_logit_beyond_it():
    """The range check decides the usual batch by its smallest and largest logit: a logit exactly at the bound is
    taken, the next float beyond it is refused (either sign), naming the first such logit in row-major order."""
    import numpy as np

    from gradcheck_cli.errors import InputError
    from gradcheck_cli.inputs.limits import LARGEST_LOGIT, check_logit_range

    def where(n: int) -> str:
        return f"row {n}"

    check_logit_range(np.array([[LARGEST_LOGIT, -LARGEST_LOGIT], [0.0, 1.0]]), where)
    check_logit_range(np.empty((0, 3)), where)
    beyond = np.nextafter(LARGEST_LOGIT, np.inf)
    logits = np.zeros((3, 4))
    logits[1, 2], logits[2, 0] = -beyond, beyond
    with pytest.raises(InputError, match=r"^row 1: logit -1000000000\.0000001 of class 2 is beyond"):
        check_logit_range(logits, where)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_finite_row_losses_whose_sum_overflows_are_a_failed_check_not_a_crash(gradcheck, reduction):
    """Each row's loss fits in float64 but their exact sum does not: it rounds to inf, the loss check fails."""
    run = gradcheck("check", "--logits", "0,0,0", "--logits", "0,0,0", "--labels", "0,0", "--reduction", reduction,
                    "--weights", "1.5e308,1,1", "-f", "json")
    assert run.exit_code == 1, run
    report = json.loads(run.stdout)
    assert report["loss"] is None
    assert {check["name"]: check["passed"] for check in report["checks"]}["loss"] is False


def test_an_exact_sum_beyond_float64_rounds_to_infinity():
    from gradcheck_cli.numerics.exact import exact_sum

    assert exact_sum(np.array([1.7e308, 1.7e308])) == np.inf
    assert exact_sum(np.array([-1.7e308, -1.7e308])) == -np.inf
    assert exact_sum(np.array([1.7e308, 1.7e308, -1.7e308])) == 1.7e308
