"""What a person reads (issue 17): 80 columns, one numbering, the step used, click's conventions, the quick start,
and the small items of point 10.

Every run here is at the autouse fixture's COLUMNS=80 with colour off unless a test asks for it. Tests marked
`pending` protect a behaviour whose code lives in a module another engineer owns (named in each reason); they
are strict xfails, so they fail loudly (XPASS) once that change lands, and the marker is then removed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gradcheck_cli.render.layout import wrap
from gradcheck_cli.render.verdict import count, digits

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
EXAMPLES = ROOT / "examples"
FIRST = ["--logits", "1.1,2.2,0.2,-1.7", "--labels", "2"]
# A check that fails: forward differences cannot meet zero tolerances.
FAILING = ["check", *FIRST, "--method", "forward", "--atol", "0", "--rtol", "0"]
IMPL_FAILING = ["check", "-i", str(EXAMPLES / "batch.json"), "--impl", f"{EXAMPLES / 'my_softmax.py'}:forgot_one_over_n"]
SGR = re.compile(r"\x1b\[([0-9;]*)m")
WIDTH = 80


def pending(owner_change: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=f"needs {owner_change} (another engineer's module)")


def _rows_file(tmp_path: Path, rows: int, classes: int, name: str = "batch.json") -> str:
    import numpy as np

    generator = np.random.default_rng(rows * 7919 + classes)
    logits = generator.normal(scale=3, size=(rows, classes)).round(6).tolist()
    labels = generator.integers(0, classes, size=rows).tolist()
    path = tmp_path / name
    path.write_text(json.dumps({"logits": logits, "labels": labels}))
    return str(path)


def _too_wide(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if len(line) > WIDTH]


# --- point 6: everything fits 80 columns, wrapped between words ---------------------------------------------


@pytest.mark.parametrize("words, code", [
    (IMPL_FAILING, 1),
    ([*IMPL_FAILING, "-q"], 1),
    (["check", "-i", str(EXAMPLES / "batch.json"), "--order", "2", "--method", "forward", "--atol", "0", "--rtol",
      "0"], 1),
    (["check", "--logits", "1,2,3", "--logits", "3,2,1", "--labels", "0,2", "--reduction", "none"], 0),
    (["sweep", *FIRST], 0),
    (["sweep", *FIRST, "-q"], 0),
    (["sweep", "-i", str(EXAMPLES / "batch.csv"), "--steps", "1e-1,1e-2"], 1),
    (["--help"], 0),
    (["check", "--help"], 0),
    (["sweep", "--help"], 0),
], ids=["impl", "impl -q", "hessian", "row losses", "sweep", "sweep -q", "sweep wrong", "help", "check help",
        "sweep help"])
def test_no_line_a_person_reads_is_wider_than_80_columns(gradcheck, words, code):
    """Protects point 6: verdicts, notes, the failing values, sweep's lines and help wrap to 80 columns (the FAIL
    verdict was 90 characters, sweep's 147)."""
    run = gradcheck(*words)
    assert run.exit_code == code, run
    assert run.stdout.strip(), run
    assert not _too_wide(run.stdout), run


def test_the_summary_and_row_losses_of_big_inputs_fit_too(gradcheck, tmp_path):
    """Protects point 6 for the lines only big inputs print: the summary line and ten row losses on one line."""
    run = gradcheck("check", "-i", _rows_file(tmp_path, 2001, 10), "--reduction", "none")
    assert run.exit_code == 0, run
    assert "checked in full" in run.stdout and not _too_wide(run.stdout), run
    rows = gradcheck("check", "-i", _rows_file(tmp_path, 12, 3, "rows.json"), "--reduction", "none")
    assert "Loss per row (none):" in rows.stdout and not _too_wide(rows.stdout), rows


def test_wrapping_never_splits_a_number(gradcheck):
    """Protects 'never inside a number': every value of the failing checks, in full digits as JSON has them,
    and the verdict's error, stand whole on one line of the table output."""
    run = gradcheck(*IMPL_FAILING)
    report = json.loads(gradcheck(*IMPL_FAILING, "-f", "json").stdout)
    # the failing checks of elements (impl taylor's worst is a fitted slope, shown to three digits)
    failing = [check for check in report["checks"] if not check["passed"] and check["worst"]["index"]]
    numbers = [digits(check["worst"][side]) for check in failing for side in ("actual", "expected")]
    assert len(numbers) == 4, report["checks"]
    first = failing[0]["worst"]
    numbers.append(f"{abs(first['actual'] - first['expected']):.2e}")
    lines = run.stdout.splitlines()
    for number in numbers:
        assert any(number in line for line in lines), (number, run.stdout)


@pytest.mark.parametrize("width", [20, 33, 47, 80])
def test_wrap_breaks_only_between_words_and_keeps_every_word(width):
    """Protects layout.wrap itself: lines within the width, continuation lines indented, every word (numbers
    with signs and exponents, paths with hyphens) whole and in order."""
    text = ("impl gradient vs its own loss fails worst at row 12, class 3: -0.9090762606921994 vs reference "
            "-0.303025420231279 in examples/my-softmax.py at step 3.814697265625e-06")
    lines = wrap(text, width).split("\n")
    assert all(len(line) <= width or len(line.split()) == 1 for line in lines), lines  # a word alone may overhang
    assert all(line.startswith("  ") and not line.startswith("   ") for line in lines[1:]), lines
    assert " ".join(" ".join(lines).split()) == text


def test_a_wrapped_verdict_is_coloured_on_each_of_its_lines(gradcheck):
    """Protects the colour of a wrapped verdict: at 40 columns both lines of FAIL are red, none of the text lost."""
    run = gradcheck(*IMPL_FAILING, "-q", "--color", "always", env={"COLUMNS": "40"})
    assert run.exit_code == 1, run
    lines = run.stdout.rstrip("\n").split("\n")
    assert len(lines) >= 2, run
    assert all(line.startswith("\x1b[1;31m") for line in lines), run.stdout
    plain = " ".join(SGR.sub("", run.stdout).split())
    assert plain.startswith("FAIL: impl gradient disagrees at row 0, class 1 by "), plain


# --- point 7: one numbering ---------------------------------------------------------------------------------


def test_tables_json_and_the_verdict_count_rows_and_classes_from_0(gradcheck):
    """Protects one numbering across outputs: the verdict's 'row r, class c' is JSON's worst.index [r, c], the
    tables' first entry is row 0 class 0, and a 4-class row has s_0 to s_3."""
    table, document = gradcheck(*FAILING), json.loads(gradcheck(*FAILING, "-f", "json").stdout)
    gradient = next(check for check in document["checks"] if check["name"] == "gradient")
    row, column = gradient["worst"]["index"]
    assert table.stdout.rstrip().splitlines()[-1].startswith(f"FAIL: gradient disagrees at row {row}, class {column}")
    assert re.search(r"^\s+0\s+0\s+0\.223636\s", table.stdout, flags=re.M), table.stdout
    header = next(line for line in table.stdout.splitlines() if "s_0" in line)
    assert header.split() == ["row", "s_0", "s_1", "s_2", "s_3"], header


def _csv_with_a_bad_cell(tmp_path: Path) -> str:
    path = tmp_path / "f.csv"
    path.write_text("a,b,label\n1,2,0\n3,x,1\n")
    return str(path)


def _json_with_a_bad_value(tmp_path: Path) -> str:
    path = tmp_path / "f.json"
    path.write_text('{"logits": [[1, 2], [1, "a"]], "labels": [0, 1]}')
    return str(path)


@pytest.mark.parametrize("words, message", [
    (["--logits", "1,x,3", "--labels", "0"], "--logits[0][1]: 'x' is not a number"),
    (["--logits", "1,2", "--logits", "1,2,x", "--labels", "0,1"], "--logits[1][2]: 'x' is not a number"),
    (["--logits", "1,2", "--logits", "1,2,3", "--labels", "0,1"], "--logits[1]: ragged logits"),
    (["--logits", "1,2", "--logits", "3,4", "--labels", "0,x"], "--labels[1]: 'x' is not an integer class index"),
    (["--logits", "1,2,3", "--targets", "1,0,x"], "--targets[0][2]: 'x' is not a number"),
    (["--logits", "1,2", "--logits", "3,4", "--labels", "0,1", "--loss-value", "0.5,x", "--reduction", "none"],
     "--loss-value[1]: 'x' is not a number"),
    (["-i", "{json}"], "f.json: logits[1][1]: expected a number"),
    (["-i", "{csv}"], "f.csv:3:3: 'x' is not a number"),
], ids=["logit", "second row", "ragged", "label", "target", "loss value", "json path", "csv line:column"])
def test_error_positions_are_indices_from_0_and_file_places_from_1(gradcheck, tmp_path, words, message):
    """Protects point 7 in errors: a position in a list is an index from 0 (`--labels[1]` is the second label,
    as JSON's `labels[1]`); a place in a file is line:column from 1, as editors count (it said 'value 1')."""
    files = {"{json}": _json_with_a_bad_value(tmp_path), "{csv}": _csv_with_a_bad_cell(tmp_path)}
    run = gradcheck("check", *(files.get(word, word) for word in words))
    assert run.exit_code == 2 and run.stdout == "", run
    (line,) = run.stderr.splitlines()
    assert line.startswith("gradcheck: error: ") and message in line, run


@pytest.mark.parametrize("words, message", [
    (["--logits", "1,2,3", "--logits", "3,2,1", "--labels", "0,3"], "--labels[1]: label 3 is out of range"),
    (["--logits", "1,2,3", "--targets", "1.5,-0.5,0"], "--targets[0]: target -0.5 for class 1 is negative"),
], ids=["label range", "negative target"])
def test_positions_checked_after_parsing_are_indices_too(gradcheck, words, message):
    """Protects point 7 for the checks gather.py locates (they say '--labels, value 2' and '--targets #1')."""
    run = gradcheck("check", *words)
    assert run.exit_code == 2 and message in run.stderr, run


def test_explain_numbers_classes_as_check_does(gradcheck):
    """Protects point 7 in explain: check's 'class 2' is explain's s_2 (it was s_3)."""
    run = gradcheck("explain", *FIRST)
    assert run.exit_code == 0, run
    assert "s_0 = " in run.stdout and "s_4" not in run.stdout, run.stdout


# --- point 8: the step used ---------------------------------------------------------------------------------


# Hand derivations of the step used, 2^floor(log2 h): the default h is T eta, eta = eps_mach^(1/p+1) with
# eps_mach = 2^-52: central 2^(-52/3) = 2^-17.33 -> 2^-18; T = 0.5 -> 2^-18.33 -> 2^-19; T = 3 -> log2 3 - 17.33
# = -15.75 -> 2^-16; forward 2^-26 exactly; five-point 2^(-52/5) = 2^-10.4 -> 2^-11; --eps 1e-5 -> log2 = -16.61
# -> 2^-17; complex-step 1e-20 -> -66.44 -> 2^-67.
@pytest.mark.parametrize("options, exponent", [
    ([], -18), (["--temperature", "0.5"], -19), (["--temperature", "3"], -16), (["--method", "forward"], -26),
    (["--method", "five-point"], -11), (["--eps", "1e-5"], -17), (["--method", "complex-step"], -67),
])
def test_tables_show_the_step_used_a_power_of_two(gradcheck, options, exponent):
    """Protects point 8 in tables: 'step h = 2^-18 = 3.81e-06', not the 6.06e-06 it is rounded down from."""
    run = gradcheck("check", *FIRST, *options)
    assert run.exit_code == 0, run
    assert f", step h = 2^{exponent} = {2.0**exponent:.3g}, " in run.stdout.splitlines()[1], run.stdout


@pytest.mark.parametrize("eps, exponent", [(None, -26), ("1e-8", -27)])
def test_the_step_shown_is_the_step_the_differences_took(gradcheck, eps, exponent):
    """Protects that the step shown is the one used, measured from the differences themselves.

    A forward difference of the exact perturbation is g_j + (h/2) L''_jj + (h^2/6) L'''_jjj + rounding, and for
    one row of the mean cross-entropy L''_jj = s_j (1 - s_j), |L'''_jjj| = |L''_jj (1 - 2 s_j)|. So
    h_est = 2 (numeric - analytic) / (s_j (1 - s_j)) is h (1 + (h/3)(1 - 2 s_j)) plus 2 rounding / L''_jj:
    the first is 3e-9 relative at h = 2^-26; the rounding of both gradients, a few eps_mach |g_j| ~ 1e-15
    (the perturbation is evaluated relative to the change), is 5e-15 / 0.22 ~ 2e-14 absolute, 1.5e-6 of h.
    1e-5 relative holds with a margin of 6 and tells 2^-27 (7.45e-9) from the nominal 1e-8 it came from.
    """
    import numpy as np

    options = [] if eps is None else ["--eps", eps]
    table = gradcheck("check", *FIRST, "--method", "forward", *options)
    assert f"step h = 2^{exponent} = " in table.stdout, table.stdout
    document = json.loads(gradcheck("check", *FIRST, "--method", "forward", *options, "-f", "json").stdout)
    s = np.array(document["probabilities"][0])
    analytic, numeric = (np.array(document["gradient"][key][0]) for key in ("analytic", "numeric"))
    j = int(np.argmax(s * (1 - s)))
    measured = 2 * (numeric[j] - analytic[j]) / (s[j] * (1 - s[j]))
    assert measured == pytest.approx(2.0**exponent, rel=1e-5)


def test_the_json_report_gives_the_step_used(gradcheck):
    """Protects point 8 in JSON: 2^-18 = 3.814697265625e-06 for the default central step, as settings.eps
    (rounded by differences.resolve) or as an added settings.step."""
    settings = json.loads(gradcheck("check", *FIRST, "-f", "json").stdout)["settings"]
    assert settings.get("step", settings["eps"]) == 2.0**-18


def test_colour_marks_only_the_result_and_the_headings(gradcheck):
    """Protects the README's colour sentence: green pass and PASS, red FAIL and the FAIL verdict, bold table
    headings; no number and no title is styled (rich made titles italic)."""
    for words in (FAILING, ["check", *FIRST]):
        run = gradcheck(*words, "--color", "always")
        spans = re.findall(r"\x1b\[([0-9;]+)m([^\x1b]*)", run.stdout)
        assert spans, run
        headings = {"row", "class", "analytic", "numeric", "abs error", "rel error", "check", "result",
                    "max abs err", "max rel err", "worst element", "", *(f"{a}_{k}" for a in "sz" for k in range(4))}
        for code, text in spans:
            if code == "0":
                continue
            if code == "1":
                assert text.strip() in headings, (code, text)
            elif code == "32":
                assert text.strip() == "pass", (code, text)
            elif code == "1;31":
                assert text.strip() == "FAIL" or text.startswith(("FAIL: ", "  ")), (code, text)
            else:
                assert code == "1;32" and text.startswith("PASS: "), (code, text)


# --- point 9: click's conventions ---------------------------------------------------------------------------


def test_dash_capital_v_is_version(gradcheck):
    """Protects `-V`, as ruff and pytest take it."""
    short, long = gradcheck("-V"), gradcheck("--version")
    assert short.exit_code == 0 and short.stdout == long.stdout and "gradcheck, version " in short.stdout, short


@pytest.mark.parametrize("command, option, example", [
    ("check", "--debug", " --debug check ...')"),
    ("sweep", "--debug", " --debug sweep ...')"),
    ("check", "-V", " -V')"),
])
def test_an_option_of_gradcheck_after_the_command_says_where_it_goes(gradcheck, command, option, example):
    """Protects the hint for `gradcheck check --debug` (it said only 'No such option')."""
    run = gradcheck(command, option, *FIRST)
    assert run.exit_code == 2 and run.stdout == "", run
    (line,) = run.stderr.splitlines()
    assert f"No such option '{option}'" in line and "it goes before the command, as in '" in line, run
    assert line.endswith(example), run  # the program's name, then the option, then the command


def _cli(stdin: object, *words: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gradcheck_cli", *words], stdin=stdin, capture_output=True,
                          text=True, timeout=60, cwd=ROOT)


def test_no_input_and_data_on_stdin_hints_dash_i_dash(tmp_path):
    """Protects the hint for `cat file | gradcheck check` (it said only 'no logits'); a terminal or /dev/null
    on stdin gets no hint, and the hinted command works."""
    csv = (EXAMPLES / "batch.csv").read_text()
    piped = subprocess.run([sys.executable, "-m", "gradcheck_cli", "check"], input=csv, capture_output=True,
                           text=True, timeout=60, cwd=ROOT)
    assert piped.returncode == 2 and piped.stdout == "", piped
    assert piped.stderr.strip().endswith("stdin is a pipe, which gradcheck reads only when asked: add -i - to read "
                                         "it"), piped.stderr
    with (EXAMPLES / "batch.csv").open() as redirected:
        assert "stdin is a file" in _cli(redirected, "check").stderr
    quiet = _cli(subprocess.DEVNULL, "check")
    assert quiet.returncode == 2 and "no logits" in quiet.stderr and "-i -" not in quiet.stderr, quiet
    followed = subprocess.run([sys.executable, "-m", "gradcheck_cli", "check", "-i", "-", "-q"], input=csv,
                              capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert followed.returncode == 0 and followed.stdout.startswith("PASS"), followed


def test_top_level_help_shows_each_command_summary_whole(gradcheck):
    """Protects full command summaries: click cut them at the line's end ('Check softmax, its Jacobian, the
    loss and its gradient...')."""
    import click

    from gradcheck_cli.cli import main

    run = gradcheck("--help")
    assert run.exit_code == 0 and not _too_wide(run.stdout), run
    commands = run.stdout.split("Commands:")[1].split("Environment")[0]
    assert "..." not in commands, commands
    context = click.Context(main)
    for name in main.list_commands(context):
        command = main.get_command(context, name)
        assert command is not None
        summary = " ".join((command.help or "").split("\n\n")[0].split())
        assert summary.endswith(".") and summary in " ".join(commands.split()), (name, commands)


SECTION_TITLES = ["Input:", "Your values or code to check:", "Loss:", "Differences and tolerances:", "Output:"]


def _sections(help_text: str) -> list[str]:
    return [line for line in help_text.splitlines() if line.endswith(":") and not line.startswith(" ")]


def test_sweep_help_groups_its_options(gradcheck):
    """Protects grouped --help: input, loss, differences and tolerances, output, in that order, one table."""
    run = gradcheck("sweep", "--help")
    assert run.exit_code == 0, run
    # Your values or code: sweep studies your gradient as check checks it (issue 17 point 1).
    assert _sections(run.stdout) == ["Input:", "Your values or code to check:", "Loss:", "Differences and tolerances:",
                                     "Output:"], run.stdout
    differences = run.stdout.split("Differences and tolerances:")[1].split("Output:")[0]
    assert "--steps LIST" in differences
    _assert_aligned(run.stdout)


def _assert_aligned(help_text: str) -> None:
    """Every option's help starts in the same column, whichever section it is in."""
    starts = {match.start(1) for line in help_text.splitlines() if (match := re.match(r"  -\S.*?\s{2,}(\S)", line))}
    assert len(starts) == 1, starts


@pytest.mark.parametrize("module, name", [("check", "check"), ("sweep", "sweep")])
def test_every_option_of_check_and_sweep_has_a_section(module, name):
    """Protects the sections from drift: an option added to check or sweep must be given a section (it would
    land under 'Other options'); check's own grouped help is built here from its options."""
    import importlib

    import click

    from gradcheck_cli.cli import main
    from gradcheck_cli.commands.sectioned_help import SectionedCommand

    command = getattr(importlib.import_module(f"gradcheck_cli.commands.{module}"), name)
    sectioned = SectionedCommand(name, params=command.params, callback=command.callback, help=command.help)
    context = click.Context(sectioned, info_name=name, parent=click.Context(main, info_name="gradcheck"))
    text = sectioned.get_help(context)
    assert "Other options" not in text, text
    assert _sections(text) == SECTION_TITLES, text  # sweep takes your values too (issue 17 point 1)
    _assert_aligned(text)


def test_check_help_groups_its_options(gradcheck):
    """Protects point 9's grouped `check --help` (it was one flat list of about 30 options)."""
    assert _sections(gradcheck("check", "--help").stdout) == SECTION_TITLES


# --- point 10: the small items ------------------------------------------------------------------------------


@pytest.mark.parametrize("text, message", [
    ('{"logits": [1, 2,], "labels": [0]}', "1:18: malformed JSON: a trailing comma before ']' (JSON allows none)"),
    ('{"logits": [1, 2], "labels": [0],}', "1:34: malformed JSON: a trailing comma before '}' (JSON allows none)"),
    ('{"logits": [1, 2],\n  "labels": [0],\n}', "3:1: malformed JSON: a trailing comma before '}'"),
    ('{"logits": [1, 2] "labels": [0]}', "1:19: malformed JSON: expected ',' or a closing ']' or '}' after a value"),
    ("{'logits': [1, 2]}", "1:2: malformed JSON: a string in single quotes; JSON takes double quotes"),
    ('{logits: [1, 2]}', "1:2: malformed JSON: expected a key in double quotes, found 'logits'"),
    ('{"logits": [1, nan]}', "1:16: malformed JSON: expected a value (a number, "),
    ('{"logits": [1, 2', "1:17: malformed JSON: the text ends too soon"),
    ('{"logits" [1, 2]}', "1:11: malformed JSON: expected ':' after the key, found '['"),
], ids=["array comma", "object comma", "comma on its own line", "missing comma", "single quotes", "bare key",
        "nan", "cut short", "missing colon"])
def test_json_syntax_errors_are_said_in_plain_words(gradcheck, tmp_path, text, message):
    """Protects point 10: a trailing comma is named as one, not 'Expecting property name enclosed in double
    quotes'; each error is one line with the file's line and column."""
    path = tmp_path / "bad.json"
    path.write_text(text)
    run = gradcheck("check", "-i", str(path))
    assert run.exit_code == 2 and run.stdout == "", run
    (line,) = run.stderr.splitlines()
    assert line.startswith(f"gradcheck: error: {path}:") and message in line and "Expecting" not in line, run


NEGATIVE_ZERO = re.compile(r"(?<![\w.])-0(\.0+)?(?![\w.])")


def test_no_negative_zero_in_tables(gradcheck):
    """Protects point 10: a saturated row's Jacobian (-s_i s_j = -0.0) and a zero row loss showed '-0'."""
    run = gradcheck("check", "-i", str(EXAMPLES / "batch.json"))
    assert run.exit_code == 0, run
    assert "Softmax Jacobian of row 2" in run.stdout and not NEGATIVE_ZERO.search(run.stdout), run.stdout
    losses = gradcheck("check", "--logits", "1000,0", "--labels", "0", "--reduction", "none")
    assert "Loss per row (none): 0" in losses.stdout and not NEGATIVE_ZERO.search(losses.stdout), losses.stdout
    assert (digits(-0.0), digits(-1e-300), digits(0.1)) == ("0.0", "-1e-300", "0.1")


def test_no_negative_zero_in_json(gradcheck):
    """Protects point 10's `"loss": -0.0` (a row loss of -log 1)."""
    run = gradcheck("check", "--logits", "1000,0", "--labels", "0", "--reduction", "none", "-f", "json")
    assert json.loads(run.stdout)["loss"] == [0.0] and "-0.0" not in run.stdout, run.stdout


def test_a_passing_check_never_shows_a_non_finite_error(gradcheck, tmp_path):
    """Protects point 10: impl determinism passes on a function that returns NaN twice, and its errors are 0,
    not 'non-finite'."""
    module = tmp_path / "nan_loss.py"
    module.write_text("import numpy as np\n\ndef f(logits, targets):\n"
                      "    return float('nan'), np.full(logits.shape, np.nan)\n")
    run = gradcheck("check", *FIRST, "--impl", f"{module}:f")
    assert run.exit_code == 1, run
    row = next(line for line in run.stdout.splitlines() if line.strip().startswith("impl determinism"))
    assert "pass" in row and "non-finite" not in row, row


def test_counts_agree_with_their_nouns(gradcheck, tmp_path):
    """Protects point 10's '1 rows': one more row, one row checked in full."""
    assert (count(1, "row"), count(2, "row"), count(1, "row loss", "row losses")) == ("1 row", "2 rows", "1 row loss")
    eleven = gradcheck("check", "-i", _rows_file(tmp_path, 11, 3))
    assert "… 1 more row not shown" in eleven.stdout and "1 more rows" not in eleven.stdout, eleven.stdout
    one = gradcheck("check", "-i", _rows_file(tmp_path, 1, 20001, "wide.json"))
    assert one.exit_code == 0 and "1 row checked in full" in one.stdout, one


def test_errors_count_rows_in_the_right_number(gradcheck):
    """Protects point 10's '2 labels for 1 rows of logits'."""
    run = gradcheck("check", "--logits", "1,2,3", "--labels", "0,1")
    assert "2 labels for 1 row of logits" in run.stderr, run


def test_the_checks_table_says_what_its_worst_element_is(gradcheck):
    """Protects point 10: 'worst element' is the one using most of its tolerance, which need not be where 'max
    abs err' is (impl gradient: worst at class 1, largest error at class 2); the table now says so."""
    run = gradcheck(*IMPL_FAILING)
    assert "worst element: most of its tolerance used (not always where max abs err is)" in run.stdout, run


# --- point 4 and the README ---------------------------------------------------------------------------------


def _section(title: str) -> str:
    return README.split(f"\n## {title}\n")[1].split("\n## ")[0]


def test_the_quick_start_checks_user_code_and_shows_its_failure_as_printed(gradcheck):
    """Protects point 4: the quick start runs an --impl check that fails beside the bare run, says what the bare
    run proves, and the FAIL lines it shows are exactly the last lines the command prints."""
    quick = _section("Quick start")
    assert "gradcheck check --logits 1.1,2.2,0.2,-1.7 --labels 2\n" in quick
    assert "nothing about\nyour code" in quick
    command = next(line for line in quick.splitlines() if "--impl" in line and line.endswith("# exits 1"))
    shown = re.search(r"```\n(impl gradient fails.*?)```", quick, flags=re.S)
    assert shown, quick
    words = command.split("#")[0].split()[1:]
    run = gradcheck(*words)
    assert run.exit_code == 1, run
    expected = shown[1].rstrip("\n").splitlines()
    assert run.stdout.rstrip("\n").splitlines()[-len(expected):] == expected, run.stdout


def test_readme_table_commands_can_be_copied_into_a_shell():
    """Protects point 10: a command in a table cell had `\\|` (Markdown's escape), which a shell does not take."""
    cells = re.findall(r"\| `((?:gradcheck|cat|python) [^`]*)` \|", README)
    assert cells and not [cell for cell in cells if "\\|" in cell], cells


def test_readme_installs_atheris_before_the_fuzz_command_and_names_no_unseen_sources():
    """Protects point 10: the fuzz command needs atheris, which the README now installs first; and 'the
    sources' (documents the reader does not have) is gone."""
    development = _section("Development")
    install = development.index("python -m pip install atheris")
    assert install < development.index("python tests/fuzz/fuzz_parsers.py"), development
    assert "the sources" not in README
