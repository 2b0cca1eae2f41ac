"""Every bad input gets exit 2, nothing on stdout, and one line on stderr that says what and where."""

from __future__ import annotations

import pytest

L = ("--logits", "1,2,3")


def _files(tmp_path):
    """Write the input files the error table refers to; return a name -> path map."""
    contents = {
        "truncated.json": '{"logits": [1, 2',
        "trailing.json": '{"logits": [1, 2], "labels": [0]} extra',
        "array.json": "[1, 2, 3]",
        "string.json": '{"logits": [1, "two"], "labels": [0]}',
        "nan.json": '{"logits": [1, NaN], "labels": [0]}',
        "overflow.json": '{"logits": [1, 1e400], "labels": [0]}',
        "duplicate.json": '{"logits": [1, 2], "logits": [3, 4], "labels": [0]}',
        "unknown.json": '{"logit": [1, 2], "labels": [0]}',
        "nologits.json": '{"labels": [0]}',
        "ragged.json": '{"logits": [[1, 2], [1]], "labels": [0, 0]}',
        "float_label.json": '{"logits": [1, 2], "labels": [0.5]}',
        "bool_label.json": '{"logits": [1, 2], "labels": [true]}',
        "deep.json": "[" * 100000 + "]" * 100000,
        "empty.csv": "",
        "blank.csv": "\n\n# only a comment\n",
        "header_only.csv": "a,b,label\n",
        "bad_cell.csv": "a,b,label\n1,2,0\n1,x,0\n",
        "empty_cell.csv": "a,b,label\n1,,0\n",
        "ragged.csv": "1,2,3\n1,2\n",
        "bad_label.csv": "a,b,label\n1,2,one\n",
        "labels.txt": "0\n1\n",
        "bad_labels.txt": "0\nzero\n",
        "targets.csv": "0.5,0.5,0\n",
        "narrow_targets.csv": "0.5,0.5\n",
    }
    paths = {}
    for name, text in contents.items():
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        paths[name] = str(path)
    binary = tmp_path / "junk.csv"
    binary.write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\x00")
    paths["junk.csv"] = str(binary)
    latin = tmp_path / "latin1.csv"
    latin.write_bytes("1,2,caf\xe9\n".encode("latin-1"))
    paths["latin1.csv"] = str(latin)
    paths["dir"] = str(tmp_path)
    paths["missing"] = str(tmp_path / "missing.json")
    return paths


# (test id, arguments with {file} placeholders, stdin, fragments the one stderr line must contain)
CASES = [
    ("non-numeric logit", [*("--logits", "1,x,3"), "--labels", "0"], None, ["--logits[0][1]", "'x' is not a number"]),
    ("underscore number", [*("--logits", "1_0,2"), "--labels", "0"], None, ["'1_0' is not a number"]),
    ("nan logit", [*("--logits", "1,nan"), "--labels", "0"], None, ["'nan' is not finite"]),
    ("inf logit", [*("--logits", "-inf,1"), "--labels", "0"], None, ["'-inf' is not finite"]),
    ("overflowing logit", [*("--logits", "1e400,1"), "--labels", "0"], None, ["'1e400' overflows float64"]),
    ("empty logits row", [*("--logits", " , "), "--labels", "0"], None, ["--logits[0]: no numbers"]),
    ("ragged rows", ["--logits", "1,2", "--logits", "1,2,3", "--labels", "0,0"], None, ["--logits[1]", "ragged"]),
    ("non-integer label", [*L, "--labels", "1.5"], None, ["--labels[0]", "'1.5' is not an integer"]),
    ("word label", [*L, "--labels", "two"], None, ["'two' is not an integer"]),
    ("label out of range", [*L, "--labels", "3"], None, ["--labels[0]", "label 3 is out of range", "0 to 2"]),
    ("negative label", [*L, "--labels", "-1"], None, ["label -1 is out of range"]),
    ("too many labels", [*L, "--labels", "0,1"], None, ["2 labels for 1 row of logits"]),
    ("too few labels", [*L, "--logits", "1,2,3", "--labels", "0"], None, ["1 labels for 2 rows of logits"]),
    ("targets too wide", [*L, "--targets", "0.5,0.5,0,0"], None, ["targets have 4 classes, the logits have 3"]),
    ("negative target", [*L, "--targets", "1.5,-0.5,0"], None, ["--targets[0]", "-0.5 for class 1 is negative"]),
    ("nan target", [*L, "--targets", "nan,0,1"], None, ["--targets[0][0]", "not finite"]),
    ("target rows mismatch", [*L, "--targets", "1,0,0", "--targets", "0,1,0"], None, ["2 target rows for 1 row of logits"]),
    ("labels and targets", [*L, "--labels", "0", "--targets", "1,0,0"], None, ["both --labels and --targets"]),
    ("neither labels nor targets", [*L], None, ["no labels or targets"]),
    ("no logits at all", ["--labels", "0"], None, ["no logits"]),
    ("logits twice", [*L, "-i", "{labels.txt}", "--labels", "0"], None, ["either with --logits or with --input"]),
    ("empty stdin", ["-i", "-", "--labels", "0"], "", ["<stdin>: empty input"]),
    ("whitespace stdin", ["-i", "-", "--labels", "0"], "  \n\n", ["<stdin>: empty input"]),
    ("missing file", ["-i", "{missing}"], None, ["missing.json: no such file"]),
    ("directory", ["-i", "{dir}"], None, ["is a directory"]),
    ("empty file", ["-i", "{empty.csv}", "--labels", "0"], None, ["empty.csv: empty input"]),
    ("only comments", ["-i", "{blank.csv}", "--labels", "0"], None, ["blank.csv: no data rows"]),
    ("header only", ["-i", "{header_only.csv}"], None, ["header_only.csv: a header but no data rows"]),
    ("binary junk", ["-i", "{junk.csv}", "--labels", "0"], None, ["junk.csv: binary data"]),
    ("not utf-8", ["-i", "{latin1.csv}", "--labels", "0"], None, ["latin1.csv: not UTF-8 text", "offset 7"]),
    ("truncated json", ["-i", "{truncated.json}"], None, ["truncated.json:1:17: malformed JSON"]),
    ("data after json", ["-i", "{trailing.json}"], None, ["trailing.json:1:35: unexpected data after the JSON"]),
    ("json not an object", ["-i", "{array.json}"], None, ["array.json: expected a JSON object"]),
    ("json string logit", ["-i", "{string.json}"], None, ['string.json: logits[1]: expected a number, got "two"']),
    ("json NaN token", ["-i", "{nan.json}"], None, ["nan.json: NaN is not allowed"]),
    ("json overflow", ["-i", "{overflow.json}"], None, ["overflow.json: the number 1e400 overflows float64"]),
    ("json duplicate key", ["-i", "{duplicate.json}"], None, ["duplicate.json: duplicate key 'logits'"]),
    ("json unknown key", ["-i", "{unknown.json}"], None, ["unknown.json: unknown key 'logit'"]),
    ("json without logits", ["-i", "{nologits.json}"], None, ['nologits.json: no "logits" key']),
    ("json ragged", ["-i", "{ragged.json}"], None, ["ragged.json: logits[1]: ragged logits"]),
    ("json fractional label", ["-i", "{float_label.json}"], None, ["float_label.json: labels[0]: expected an integer"]),
    ("json boolean label", ["-i", "{bool_label.json}"], None, ["bool_label.json: labels[0]: expected an integer"]),
    ("json nested too deep", ["-i", "{deep.json}"], None, ["deep.json: JSON nested too deeply"]),
    ("csv bad cell", ["-i", "{bad_cell.csv}"], None, ["bad_cell.csv:3:3: 'x' is not a number"]),
    ("csv empty cell", ["-i", "{empty_cell.csv}"], None, ["empty_cell.csv:2:3: empty value"]),
    ("csv ragged", ["-i", "{ragged.csv}", "--labels", "0,0"], None, ["ragged.csv:2: ragged row: 2 values, the first row has 3"]),
    ("csv bad label", ["-i", "{bad_label.csv}"], None, ["bad_label.csv:2:5: 'one' is not an integer"]),
    ("labels file bad", [*L, "--logits", "1,2,3", "--labels-file", "{bad_labels.txt}"], None, ["bad_labels.txt:2: 'zero'"]),
    ("targets file narrow", [*L, "--targets-file", "{narrow_targets.csv}"], None, ["targets have 2 classes"]),
    ("json input-format on csv", ["-i", "{targets.csv}", "--input-format", "json", "--labels", "0"], None, ["targets.csv:1:4: unexpected data after the JSON value"]),
    ("eps zero", [*L, "--labels", "0", "--eps", "0"], None, ["'--eps'", "must be > 0"]),
    ("eps negative", [*L, "--labels", "0", "--eps", "-1e-6"], None, ["'--eps'", "must be > 0"]),
    ("eps nan", [*L, "--labels", "0", "--eps", "nan"], None, ["'--eps'", "not a finite number"]),
    ("eps word", [*L, "--labels", "0", "--eps", "small"], None, ["'--eps'", "'small' is not a number"]),
    ("negative atol", [*L, "--labels", "0", "--atol", "-1"], None, ["'--atol'", "must be >= 0"]),
    ("negative rtol", [*L, "--labels", "0", "--rtol", "-0.1"], None, ["'--rtol'", "must be >= 0"]),
    ("unknown method", [*L, "--labels", "0", "--method", "sideways"], None, ["'--method'", "'sideways' is not one of"]),
    ("unknown format", [*L, "--labels", "0", "--format", "xml"], None, ["'--format'"]),
    ("unknown reduction", [*L, "--labels", "0", "--reduction", "max"], None, ["'--reduction'"]),
    ("unknown option", [*L, "--labels", "0", "--bogus"], None, ["No such option '--bogus'"]),
    ("missing option value", [*L, "--labels"], None, ["'--labels' requires an argument"]),
]


@pytest.mark.parametrize(("args", "stdin", "fragments"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line(gradcheck, tmp_path, args, stdin, fragments):
    paths = _files(tmp_path)
    args = [paths[a[1:-1]] if a.startswith("{") else a for a in args]
    run = gradcheck("check", *args, input=stdin)
    assert run.exit_code == 2, run
    assert run.stdout == "", run
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run
    assert lines[0].startswith("gradcheck: error: "), run
    for fragment in fragments:
        assert fragment in lines[0], run
    assert "Traceback" not in run.stderr


def test_unknown_command_is_a_usage_error(gradcheck):
    run = gradcheck("chekc")
    assert run.exit_code == 2, run
    assert run.stderr.count("\n") == 1 and "No such command 'chekc'" in run.stderr, run
