"""Each input form and option of `gradcheck check` does what its help says."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FIRST = ("--logits", "1.1,2.2,0.2,-1.7")


def strict_json(text: str) -> dict:
    """Parse as a strict JSON reader would: NaN, Infinity and -Infinity tokens are errors."""

    def refuse(token: str) -> float:
        raise AssertionError(f"non-strict JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def report_of(gradcheck, *args: str, input: str | None = None, exit_code: int = 0) -> dict:
    run = gradcheck("check", *args, "--format", "json", input=input)
    assert run.exit_code == exit_code, run
    assert run.stderr == "", run
    return strict_json(run.stdout)


# --- input forms ------------------------------------------------------------------------------------------

BATCH_LOGITS = [[1.1, 2.2, 0.2, -1.7], [1.0, 2.0, 3.0, 0.5], [1000.0, 0.0, -1000.0, 3.0]]


@pytest.mark.parametrize(
    "args",
    [
        ["-i", str(EXAMPLES / "batch.json")],
        ["-i", str(EXAMPLES / "batch.csv")],
        ["-i", str(EXAMPLES / "logits.csv"), "--labels-file", str(EXAMPLES / "labels.txt")],
        ["-i", str(EXAMPLES / "logits.csv"), "--labels", "2,1,0"],
        ["--logits", "1.1 2.2 0.2 -1.7", "--logits", "1, 2, 3, 0.5", "--logits", "1000,0,-1000,3", "--labels", "2,1,0"],
    ],
    ids=["json", "csv-label-column", "csv-plus-labels-file", "csv-plus-labels", "args"],
)
def test_every_input_form_gives_the_same_batch(gradcheck, args):
    report = report_of(gradcheck, *args)
    assert report["shape"] == {"rows": 3, "classes": 4}
    by_args = report_of(gradcheck, *(a for row in BATCH_LOGITS for a in ("--logits", ",".join(map(str, row)))),
                        "--labels", "2,1,0")
    assert report["probabilities"] == by_args["probabilities"]
    assert report["gradient"] == by_args["gradient"]


@pytest.mark.parametrize("name", ["batch.json", "batch.csv"])
def test_stdin_is_read_with_dash_and_its_format_sniffed(gradcheck, name):
    from_file = report_of(gradcheck, "-i", str(EXAMPLES / name))
    from_stdin = report_of(gradcheck, "-i", "-", input=(EXAMPLES / name).read_text())
    assert from_stdin == from_file


def test_input_format_overrides_the_extension(gradcheck, tmp_path):
    path = tmp_path / "dump.txt"
    path.write_text((EXAMPLES / "single.json").read_text())
    assert report_of(gradcheck, "-i", str(path), "--input-format", "json")["shape"] == {"rows": 1, "classes": 4}
    run = gradcheck("check", "-i", str(path), "--input-format", "csv")
    assert run.exit_code == 2 and "dump.txt" in run.stderr, run


def test_targets_from_json_args_and_file_agree(gradcheck):
    from_json = report_of(gradcheck, "-i", str(EXAMPLES / "soft-targets.json"))
    from_args = report_of(gradcheck, "--logits", "1.1,2.2,0.2,-1.7", "--logits", "1,2,3,0.5",
                          "--targets", "0.1 0.7 0.2 0", "--targets", "0,0,1,0")
    assert from_json == from_args
    with_file = report_of(gradcheck, "-i", str(EXAMPLES / "logits.csv"), "--targets-file", str(EXAMPLES / "targets.csv"))
    assert with_file["shape"] == {"rows": 3, "classes": 4}


def test_one_hot_targets_equal_labels(gradcheck):
    assert report_of(gradcheck, *FIRST, "--targets", "0,0,1,0") == report_of(gradcheck, *FIRST, "--labels", "2")


def test_soft_targets_gradient_is_s_times_sum_minus_y(gradcheck):
    """Targets that do not sum to 1 keep the general formula s * sum(y) - y."""
    report = report_of(gradcheck, "--logits", "1,2,3", "--targets", "0.5,0.5,1")
    s = np.array(report["probabilities"][0])
    np.testing.assert_allclose(report["gradient"]["analytic"][0], s * 2.0 - np.array([0.5, 0.5, 1.0]), rtol=1e-13)


def test_a_single_sample_is_a_batch_of_one(gradcheck):
    report = report_of(gradcheck, *FIRST, "--labels", "2")
    assert np.shape(report["probabilities"]) == (1, 4)
    assert np.shape(report["jacobian"]) == (1, 4, 4)
    assert np.shape(report["gradient"]["analytic"]) == (1, 4)
    assert np.shape(report["gradient"]["numeric"]) == (1, 4)


# --- the JSON contract ----------------------------------------------------------------------------------


def test_json_report_has_the_documented_fields(gradcheck):
    run = gradcheck("check", *FIRST, "--labels", "2", "-f", "json")
    report = strict_json(run.stdout)
    assert run.stdout.count("\n") == 1, "one JSON document on one line"
    assert report["schema_version"] == 1
    assert report["passed"] is True
    assert set(report["settings"]) >= {"method", "eps", "atol", "rtol", "dtype", "loss", "reduction"}
    assert report["settings"]["dtype"] == "float64" and report["settings"]["loss"] == "cross_entropy"
    assert [check["name"] for check in report["checks"]] == ["gradient", "jacobian"]
    for check in report["checks"]:
        assert set(check) >= {"name", "passed", "max_abs_error", "max_rel_error", "worst"}
        assert check["worst"]["row"] == 0


def test_json_numbers_round_trip(gradcheck):
    run = gradcheck("check", *FIRST, "--labels", "2", "-f", "json")
    from gradcheck_cli.numerics import softmax as core

    probabilities = core.softmax(np.array([[1.1, 2.2, 0.2, -1.7]]))
    assert strict_json(run.stdout)["probabilities"] == probabilities.tolist()


# --- methods, steps and tolerances -------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["central", "forward", "backward"])
def test_each_method_passes_a_correct_gradient(gradcheck, method):
    report = report_of(gradcheck, *FIRST, "--labels", "2", "--method", method)
    assert report["settings"]["method"] == method
    assert report["passed"]


def test_one_sided_methods_use_a_larger_default_step_and_looser_tolerance(gradcheck):
    central = report_of(gradcheck, *FIRST, "--labels", "2")["settings"]
    forward = report_of(gradcheck, *FIRST, "--labels", "2", "--method", "forward")["settings"]
    assert central["eps"] == pytest.approx(np.finfo(np.float64).eps ** (1 / 3))
    assert forward["eps"] == pytest.approx(np.finfo(np.float64).eps ** 0.5)
    assert forward["rtol"] > central["rtol"]


def test_eps_is_used(gradcheck):
    """A step of 0.5 is far too coarse: the differences are visibly wrong, so the check fails."""
    report = report_of(gradcheck, *FIRST, "--labels", "2", "--eps", "0.5", exit_code=1)
    assert report["settings"]["eps"] == 0.5
    assert report["passed"] is False


def test_zero_tolerances_fail_and_name_the_worst_element_in_tables(gradcheck):
    run = gradcheck("check", *FIRST, "--labels", "2", "--atol", "0", "--rtol", "0")
    assert run.exit_code == 1, run
    verdict = run.stdout.rstrip().splitlines()[-1]
    assert verdict.startswith("FAIL: gradient disagrees at row 0, class "), run
    lines = run.stdout.splitlines()
    at = next(k for k, line in enumerate(lines) if line.startswith("gradient fails worst at row 0"))
    detail = lines[at + 1]  # the two full-digit values, on a line of their own (80 columns)
    actual, expected = (float(value) for value in detail.split(" vs reference "))
    assert actual != expected, detail


def test_tolerances_come_from_the_environment(gradcheck):
    run = gradcheck("check", *FIRST, "--labels", "2", "-f", "json", env={"GRADCHECK_ATOL": "0", "GRADCHECK_RTOL": "0"})
    assert run.exit_code == 1, run
    assert strict_json(run.stdout)["settings"]["rtol"] == 0.0


def test_a_failing_json_check_locates_its_worst_element(gradcheck):
    report = report_of(gradcheck, *FIRST, "--labels", "2", "--atol", "0", "--rtol", "0", exit_code=1)
    gradient = next(check for check in report["checks"] if check["name"] == "gradient")
    row, column = gradient["worst"]["row"], gradient["worst"]["column"]
    assert gradient["worst"]["actual"] == report["gradient"]["analytic"][row][column]
    assert gradient["worst"]["expected"] == report["gradient"]["numeric"][row][column]


# --- reductions ------------------------------------------------------------------------------------------------


def test_reductions_scale_loss_and_gradient(gradcheck):
    args = ("--logits", "1,2,3", "--logits", "3,1,-2", "--labels", "0,2")
    mean = report_of(gradcheck, *args)
    total = report_of(gradcheck, *args, "--reduction", "sum")
    rows = report_of(gradcheck, *args, "--reduction", "none")
    assert total["loss"] == pytest.approx(2 * mean["loss"], rel=1e-15)
    assert sum(rows["loss"]) == pytest.approx(total["loss"], rel=1e-15)
    np.testing.assert_allclose(total["gradient"]["analytic"], np.array(mean["gradient"]["analytic"]) * 2, rtol=1e-15)
    assert rows["gradient"]["analytic"] == total["gradient"]["analytic"]
    for report in (mean, total, rows):
        assert report["passed"]


# --- table output --------------------------------------------------------------------------------------------


def test_tables_fit_80_columns_and_end_with_the_verdict(gradcheck):
    run = gradcheck("check", "-i", str(EXAMPLES / "batch.csv"))
    assert run.exit_code == 0, run
    assert max(len(line) for line in run.stdout.splitlines()) <= 80, run
    for heading in ("Softmax probabilities", "Softmax Jacobian of row 0", "Loss", "Gradient", "Checks"):
        assert heading in run.stdout
    assert run.stdout.rstrip().splitlines()[-1].startswith("PASS: gradient and jacobian agree")


def test_no_colour_unless_asked(gradcheck):
    plain = gradcheck("check", *FIRST, "--labels", "2")
    assert "\x1b[" not in plain.stdout
    forced = gradcheck("check", *FIRST, "--labels", "2", "--color", "always", env={"NO_COLOR": ""})
    assert "\x1b[" in forced.stdout, forced
    refused = gradcheck("check", *FIRST, "--labels", "2", "--color", "always", "--no-color")
    assert "\x1b[" not in refused.stdout


# --- the process as a whole ---------------------------------------------------------------------------------


def _run_module(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gradcheck_cli", *args], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL, **kwargs)


def test_python_dash_m_runs_the_cli():
    result = _run_module("check", *FIRST, "--labels", "2", "-f", "json")
    assert result.returncode == 0, result.stderr
    assert strict_json(result.stdout)["passed"] is True
    assert _run_module("check", "--logits", "x", "--labels", "0").returncode == 2


def test_a_closed_pipe_ends_quietly():
    command = [sys.executable, "-m", "gradcheck_cli", "check", "-i", str(EXAMPLES / "batch.csv")]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL) as process:
        assert process.stdout is not None and process.stderr is not None
        process.stdout.read(10)
        process.stdout.close()
        stderr = process.stderr.read().decode()
        assert process.wait(timeout=60) == 0, stderr
    assert stderr == ""


def test_after_a_closed_pipe_nothing_more_is_formatted(monkeypatch):
    """`-f ndjson | head`: once the reader is gone, rows are no longer formatted (the check still finishes)."""
    from gradcheck_cli import terminal

    monkeypatch.setattr(terminal.os, "open", lambda *args: 0)
    monkeypatch.setattr(terminal.os, "dup2", lambda *args: None)
    calls = []

    def emit():
        calls.append(len(calls))
        raise BrokenPipeError

    out = terminal.Output()
    out.write(emit)
    out.write(emit)
    assert calls == [0]
    terminal.Output().write(emit)  # the next run (in the same process) has a reader again
    assert calls == [0, 1]
