"""Terminal conventions: stdout for results, stderr for diagnostics, colour rules, -q/-v, 80 columns, --version,
Ctrl-C, environment variables, one-line errors, and GitHub annotations."""

from __future__ import annotations

import importlib.metadata
import io
import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_reliability_processes import exec_after_fork

from gradcheck_cli.render.layout import pick
from gradcheck_cli.terminal import wants_color

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ["check", "--logits", "1.1,2.2,0.2,-1.7", "--labels", "2"]
# A gradient check that fails: forward differences cannot meet zero tolerances.
FAILING = [*EXAMPLE, "--method", "forward", "--atol", "0", "--rtol", "0"]
ANSI = re.compile(r"\x1b\[[0-9;]*m")
VERDICT = re.compile(r"^(PASS|FAIL): ")


def _env(**changes: str | None) -> dict[str, str]:
    """The test process's environment (already pinned by conftest) with these variables set or removed."""
    env = {key: value for key, value in os.environ.items() if key not in changes}
    env.update({key: value for key, value in changes.items() if value is not None})
    return env


# --- streams ----------------------------------------------------------------------------------------------


def test_verbose_writes_steps_and_timing_to_stderr_and_leaves_stdout_alone(gradcheck):
    plain = gradcheck(*EXAMPLE)
    verbose = gradcheck(*EXAMPLE, "-v")
    assert verbose.exit_code == 0, verbose
    assert verbose.stdout == plain.stdout
    assert plain.stderr == ""
    steps = verbose.stderr.splitlines()
    assert steps[0] == "gradcheck: reading the command line"
    assert re.fullmatch(r"gradcheck: read 1 x 4 logits from arguments \(\d+\.\d ms\)", steps[1]), steps
    assert re.fullmatch(r"gradcheck: computed and compared gradient, jacobian.* \(\d+\.\d ms\)", steps[2]), steps
    assert re.fullmatch(r"gradcheck: wrote the table report \(\d+\.\d ms\)", steps[3]), steps


def test_errors_leave_stdout_empty(gradcheck):
    run = gradcheck("check", "--logits", "1,x", "--labels", "0", "-v")
    assert run.exit_code == 2, run
    assert run.stdout == ""
    assert run.stderr.splitlines()[-1].startswith("gradcheck: error: --logits[0][1]: 'x' is not a number")


@pytest.mark.parametrize("args, code", [(EXAMPLE, 0), (FAILING, 1)], ids=["pass", "fail"])
def test_quiet_prints_only_the_verdict_line_and_keeps_the_exit_code(gradcheck, args, code):
    run = gradcheck(*args, "-q")
    assert run.exit_code == code, run
    lines = run.stdout.splitlines()
    assert len(lines) == 1 and VERDICT.match(lines[0]), run
    assert lines[0] == gradcheck(*args).stdout.splitlines()[-1]
    assert run.stderr == ""


def test_quiet_and_verbose_combine_stdout_verdict_stderr_steps(gradcheck):
    run = gradcheck(*EXAMPLE, "-q", "-v")
    assert len(run.stdout.splitlines()) == 1, run
    assert "gradcheck: wrote the table report" in run.stderr


def test_quiet_leaves_json_whole(gradcheck):
    run = gradcheck(*EXAMPLE, "-q", "-f", "json")
    assert json.loads(run.stdout)["passed"] is True


# --- colour -----------------------------------------------------------------------------------------------


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(
    "choice, tty, env, expected",
    [
        ("auto", True, {}, True),
        ("auto", False, {}, False),
        ("auto", True, {"NO_COLOR": "1"}, False),
        ("auto", True, {"NO_COLOR": ""}, True),  # no-color.org: only a non-empty value counts
        ("auto", True, {"TERM": "dumb"}, False),
        ("auto", False, {"FORCE_COLOR": "1"}, True),
        ("auto", False, {"FORCE_COLOR": "1", "NO_COLOR": "1"}, False),
        ("always", False, {"NO_COLOR": "1", "TERM": "dumb"}, True),
        ("never", True, {"FORCE_COLOR": "1"}, False),
    ],
)
def test_when_colour_is_on(monkeypatch, choice, tty, env, expected):
    for name in ("NO_COLOR", "FORCE_COLOR", "TERM"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert wants_color(choice, _Stream(tty)) is expected


@pytest.mark.parametrize("args, env", [
    ([], {}),  # CliRunner's stdout is not a terminal
    (["--color", "always", "--no-color"], {}),
    (["--color", "never"], {"FORCE_COLOR": "1"}),
])
def test_no_colour_codes_unless_asked(gradcheck, args, env):
    run = gradcheck(*FAILING, *args, env={"NO_COLOR": None, **env})
    assert not ANSI.search(run.stdout), run


def test_color_always_forces_colour_even_with_no_color_set(gradcheck):
    run = gradcheck(*FAILING, "--color", "always", env={"NO_COLOR": "1", "TERM": "dumb"})
    assert "\x1b[1;31mFAIL" in run.stdout, run
    assert ANSI.sub("", run.stdout) == gradcheck(*FAILING).stdout


@pytest.mark.parametrize("output_format", ["json", "github"])
def test_machine_formats_are_never_coloured(gradcheck, output_format):
    run = gradcheck(*FAILING, "-f", output_format, "--color", "always")
    assert run.exit_code == 1 and not ANSI.search(run.stdout), run


def _run_on_a_terminal(args: list[str], env: dict[str, str]) -> str:
    """Run gradcheck with stdout on a pseudo-terminal, as a person at a shell does; return what it printed."""
    leader, follower = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "gradcheck_cli", *args], stdout=follower,
                               stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env)
    os.close(follower)
    chunks = []
    while True:
        ready, _, _ = select.select([leader], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the follower side closed: the process is done
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    process.wait(timeout=30)
    return b"".join(chunks).decode()


@pytest.mark.parametrize("env, coloured", [
    ({"TERM": "xterm-256color"}, True),
    ({"TERM": "xterm-256color", "NO_COLOR": "1"}, False),
    ({"TERM": "dumb"}, False),
])
def test_colour_on_a_real_terminal_follows_no_color_and_term(env, coloured):
    output = _run_on_a_terminal(FAILING, _env(**{"NO_COLOR": None, **env}))
    assert "FAIL" in output
    assert bool(ANSI.search(output)) is coloured, output


# --- width --------------------------------------------------------------------------------------------------


def _batch(tmp_path: Path, rows: int, classes: int) -> str:
    import numpy as np

    generator = np.random.default_rng(rows * 1000 + classes)
    logits = generator.normal(scale=3, size=(rows, classes)).round(6).tolist()
    labels = generator.integers(0, classes, size=rows).tolist()
    path = tmp_path / f"batch_{rows}x{classes}.json"
    path.write_text(json.dumps({"logits": logits, "labels": labels}))
    return str(path)


@pytest.mark.parametrize("rows, classes", [(1, 4), (3, 7), (12, 50), (2, 400)])
def test_tables_fit_80_columns(gradcheck, tmp_path, rows, classes):
    run = gradcheck("check", "-i", _batch(tmp_path, rows, classes), "--method", "forward", "--atol", "0", "--rtol", "0")
    assert run.exit_code == 1, run
    # The verdict and the full-digit failure lines are sentences meant for grep; they may run longer.
    tables = [line for line in run.stdout.splitlines() if not VERDICT.match(line) and " fails worst at " not in line]
    too_wide = [line for line in tables if len(line) > 80]
    assert not too_wide, run


def test_every_check_of_a_full_run_fits_80_columns(gradcheck):
    """Hessian and --impl add checks with long names; the checks table wraps them rather than overflowing."""
    examples = ROOT / "examples"
    run = gradcheck("check", "-i", str(examples / "batch.json"), "--order", "2",
                    "--impl", f"{examples / 'my_softmax.py'}:forgot_one_over_n")
    assert run.exit_code == 1, run
    tables = [line for line in run.stdout.splitlines() if not VERDICT.match(line) and " fails worst at " not in line]
    assert max(len(line) for line in tables) <= 80, run
    assert "impl determinism" in run.stdout


def test_wide_tables_say_where_they_were_cut(gradcheck, tmp_path):
    run = gradcheck("check", "-i", _batch(tmp_path, 12, 50))
    assert run.exit_code == 0, run
    header = next(line for line in run.stdout.splitlines() if line.strip().startswith("row") and "s_0" in line)
    assert re.search(r"s_0 .* … .* s_49$", header.rstrip()), header
    cut = re.search(r"… (\d+) of 50 classes not shown: s_(\d+) to s_48; --format json has them all", run.stdout)
    assert cut and int(cut[1]) == 48 - int(cut[2]) + 1, run.stdout
    assert "… 2 more rows not shown" in run.stdout
    assert re.search(r"… \d+ of 50 rows not shown: s_\d+ to s_47", run.stdout), run.stdout
    assert re.search(r"… \d+ of 50 columns not shown: z_\d+ to z_48", run.stdout), run.stdout


def test_narrow_tables_are_not_cut(gradcheck):
    run = gradcheck(*EXAMPLE)
    assert "not shown" not in run.stdout and "…" not in run.stdout, run
    assert "0.0135993" in run.stdout  # s_3, the last class


@pytest.mark.parametrize("count, shown, expected", [
    (4, 6, [0, 1, 2, 3]),
    (10, 6, [0, 1, 2, 3, None, 8, 9]),
    (10, 2, [0, None, 9]),
    (3, 3, [0, 1, 2]),
])
def test_pick_keeps_the_first_and_last_indices(count, shown, expected):
    assert pick(count, shown) == expected


# --- version, environment, errors, Ctrl-C -------------------------------------------------------------------


def test_version_comes_from_the_package_metadata(gradcheck):
    run = gradcheck("--version")
    assert run.exit_code == 0
    assert run.stdout == f"gradcheck, version {importlib.metadata.version('gradcheck')}\n"


@pytest.mark.parametrize("variable, value, field, expected", [
    ("GRADCHECK_ATOL", "1e-3", "atol", 1e-3),
    ("GRADCHECK_RTOL", "0", "rtol", 0.0),
    ("GRADCHECK_EPS", "1e-4", "eps", 1e-4),
    ("GRADCHECK_METHOD", "forward", "method", "forward"),
])
def test_options_ci_sets_come_from_the_environment(gradcheck, variable, value, field, expected):
    run = gradcheck(*EXAMPLE, "-f", "json", env={variable: value})
    assert json.loads(run.stdout)["settings"][field] == expected, run


def test_the_command_line_beats_the_environment(gradcheck):
    run = gradcheck(*EXAMPLE, "-f", "json", "--atol", "1e-9", env={"GRADCHECK_ATOL": "1e-3"})
    assert json.loads(run.stdout)["settings"]["atol"] == 1e-9


def test_format_and_quiet_from_the_environment(gradcheck):
    assert json.loads(gradcheck(*EXAMPLE, env={"GRADCHECK_FORMAT": "json"}).stdout)["passed"] is True
    assert len(gradcheck(*EXAMPLE, env={"GRADCHECK_QUIET": "1"}).stdout.splitlines()) == 1


def test_a_bad_environment_value_is_a_usage_error(gradcheck):
    run = gradcheck(*EXAMPLE, env={"GRADCHECK_ATOL": "lots"})
    assert run.exit_code == 2, run
    assert run.stderr.count("\n") == 1 and "'lots' is not a number" in run.stderr, run


@pytest.mark.parametrize("variable", ["GRADCHECK_ATOL", "GRADCHECK_RTOL", "GRADCHECK_EPS", "GRADCHECK_METHOD",
                                      "GRADCHECK_FORMAT", "GRADCHECK_COLOR", "GRADCHECK_QUIET"])
def test_help_names_the_environment_variables(gradcheck, variable):
    assert variable in " ".join(gradcheck("check", "--help").stdout.split())


@pytest.mark.parametrize("args, fragment", [
    (["check", "--formt", "json"], "No such option '--formt'. (Did you mean one of: '--format'"),
    (["check", "--format", "yaml"], "'yaml' is not one of 'table', 'json', 'github'"),
    (["chekc"], "No such command 'chekc'"),
])
def test_usage_errors_are_one_line_with_the_fix(gradcheck, args, fragment):
    run = gradcheck(*args)
    assert run.exit_code == 2, run
    assert run.stdout == ""
    assert run.stderr.count("\n") == 1 and fragment in run.stderr, run
    assert "check --help'" in run.stderr or "(see 'main --help')" in run.stderr


def test_ctrl_c_exits_130_without_a_traceback():
    # SIGINT back to its default in the child: a test run started in the background has it ignored, and
    # Python then never turns it into KeyboardInterrupt.
    with exec_after_fork():
        process = subprocess.Popen([sys.executable, "-m", "gradcheck_cli", "check", "-i", "-", "-v"],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(),
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert process.stderr is not None
    # -v announces the read before it blocks on stdin, so the interrupt lands inside the command.
    assert process.stderr.readline() == b"gradcheck: reading -\n"
    time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert stdout == b""
    assert stderr.strip() == b"", stderr


# --- GitHub annotations -------------------------------------------------------------------------------------


def test_github_format_annotates_the_file_line_of_the_failing_row(gradcheck, tmp_path):
    path = tmp_path / "batch.csv"
    # Comments and blank lines make the file line differ from the row number.
    path.write_text("# logits\na,b,c,label\n\n1,2,3,0\n# the bad one\n0.5,-1,40,1\n")
    run = gradcheck("check", "-i", str(path), "-f", "github", "--method", "forward", "--eps", "0.5")
    assert run.exit_code == 1, run
    annotations = [line for line in run.stdout.splitlines() if line.startswith("::error ")]
    assert annotations, run
    for line in annotations:
        match = re.fullmatch(r"::error file=([^,]+),line=(\d+),title=gradcheck%3A (\w+) disagrees::(.*)", line)
        assert match, line
        assert match[1] == str(path).replace(":", "%3A")
        row = int(re.search(r"at row (\d+)", match[4])[1])
        assert int(match[2]) == {0: 4, 1: 6}[row]
    assert VERDICT.match(run.stdout.splitlines()[-1])


def test_github_format_without_a_file_has_no_file_property(gradcheck):
    run = gradcheck(*FAILING, "-f", "github")
    assert run.exit_code == 1
    lines = run.stdout.splitlines()
    assert lines[0].startswith("::error title=gradcheck%3A gradient disagrees::gradient disagrees at row 0, class "), run
    assert lines[-1].startswith("FAIL: ")


def test_github_format_for_json_input_names_the_file_only(gradcheck):
    path = str(ROOT / "examples" / "batch.json")
    run = gradcheck("check", "-i", path, "-f", "github", "--method", "forward", "--atol", "0", "--rtol", "0")
    assert run.stdout.startswith(f"::error file={path},title="), run


def test_github_format_when_everything_passes_is_the_verdict_alone(gradcheck):
    run = gradcheck(*EXAMPLE, "-f", "github")
    assert run.exit_code == 0
    assert run.stdout == "PASS: gradient and jacobian agree with finite differences (2 checks)\n"


def test_github_annotation_escapes_workflow_command_characters():
    from gradcheck_cli.render.github import _escape_data, _escape_property

    assert _escape_data("50% a\nb\r") == "50%25 a%0Ab%0D"
    assert _escape_property("C:\\x,y%") == "C%3A\\x%2Cy%25"


def test_the_readme_ci_job_steps_pass_under_pipefail(tmp_path):
    """The gradcheck steps of the README's GitHub Actions job, run as GitHub runs `shell: bash` steps."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    job = re.search(r"```yaml\n(jobs:.*?)```", readme, flags=re.S)
    assert job and "shell: bash" in job[1] and "jq -e .passed" in job[1]
    # Run from elsewhere (the job writes a report file), with the example paths made absolute.
    steps = [line.split("run: ", 1)[1].replace("examples/", f"{ROOT}/examples/") for line in job[1].splitlines()
             if line.strip().startswith(("run: gradcheck", "- run: gradcheck"))]
    assert len(steps) == 2, steps
    if "jq" in " ".join(steps) and shutil.which("jq") is None:
        pytest.skip("jq is not installed")
    env = _env(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", GRADCHECK_RTOL="1e-7")
    for step in steps:
        result = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step], cwd=tmp_path,
                                env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, (step, result.stdout, result.stderr)
    # And the gate closes: a failing check fails the same pipeline.
    failing = steps[1].replace("-f json", "-f json --method forward --atol 0 --rtol 0")
    result = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", failing], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, (failing, result.stdout, result.stderr)


# --- help ---------------------------------------------------------------------------------------------------


def _commands():
    import click

    from gradcheck_cli.cli import main

    context = click.Context(main)
    return [(name, main.get_command(context, name)) for name in main.list_commands(context)]


@pytest.mark.parametrize("name, command", _commands(), ids=[name for name, _ in _commands()])
def test_every_command_and_option_has_help_and_an_example(gradcheck, name, command):
    import click

    assert command.help and "Example:" in command.help, f"{name} needs help text with an Example: block"
    undocumented = [param.name for param in command.params if isinstance(param, click.Option) and not param.help]
    assert undocumented == [], f"options of {name} without help"
    run = gradcheck(name, "--help")
    assert run.exit_code == 0 and run.stdout.startswith(f"Usage: main {name}"), run
    assert max(len(line) for line in run.stdout.splitlines()) <= 80


# --- the same conventions in gradcheck sweep ---------------------------------------------------------------

SWEEP = ["sweep", "--logits", "1.1,2.2,0.2,-1.7", "--labels", "2"]
# Two large steps only: truncation error leaves a floor, so the sweep says the gradient looks wrong.
SWEEP_WRONG = ["sweep", "-i", str(ROOT / "examples" / "batch.csv"), "--steps", "1e-1,1e-2"]


@pytest.mark.parametrize("args, code", [(SWEEP, 0), (SWEEP_WRONG, 1)], ids=["correct", "wrong"])
def test_sweep_quiet_prints_only_its_verdict_line(gradcheck, args, code):
    run = gradcheck(*args, "-q")
    assert run.exit_code == code, run
    assert run.stdout.splitlines() == gradcheck(*args).stdout.splitlines()[-1:]


def test_sweep_github_format_annotates_the_input_file(gradcheck):
    run = gradcheck(*SWEEP_WRONG, "-f", "github")
    assert run.exit_code == 1, run
    first, last = run.stdout.splitlines()
    assert first.startswith(f"::error file={ROOT / 'examples' / 'batch.csv'},title=gradcheck sweep::looks WRONG")
    assert last.startswith("default step ") and "looks WRONG" in last


def test_sweep_table_rows_fit_80_columns(gradcheck):
    rows = [line for line in gradcheck(*SWEEP).stdout.splitlines() if re.match(r"\s*\de-\d\d ", line)]
    assert len(rows) == 13 and max(len(line) for line in rows) <= 80, rows


@pytest.mark.parametrize("classes", [1, 3, 7, 12, 40])
@pytest.mark.parametrize("names", ["short", "wide"])
def test_the_width_bound_never_undercuts_what_rich_measures(classes, names):
    """Tables that fit by the cheap bound skip rich's measuring; the bound must never say 'fits' wrongly."""
    from rich.console import Console

    from gradcheck_cli.render import layout

    console = Console(width=80)
    column_names = [f"s_{c}" if names == "short" else f"класс_{c}_名前" for c in range(classes)]
    row_names = [str(n) for n in range(3)]

    def cell(i, j):
        return f"{(i + 1) * (j - 3.5) / 7:.6g}"

    for shown in range(1, classes + 1):
        columns = layout.pick(classes, shown)
        rows = layout.pick(3, 3)
        grid = layout._grid("row", row_names, column_names, cell, rows, columns)
        table = layout._table(grid)
        natural = console.measure(table, options=console.options.update(max_width=10**6)).maximum
        assert layout._width_bound(grid) >= natural
