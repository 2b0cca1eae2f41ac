"""`gradcheck-hook`, the pre-commit hook: which files it checks, the line that names each one, its options, its
help and version, and the README's recipe run for real (a commit in a fresh git repository, and
`pre-commit try-repo` of this repository).

The dumps are checked against values computed here with numpy, independently of gradcheck: softmax by
exp(z - max) / sum, the gradient of the summed cross-entropy s - y. Their verdicts do not hinge on rounding:
a right dump agrees to about 1e-16 (tolerance 1e-7 and up), a wrong one is off by a factor of 2 (its gradient
is the sum's where the mean's is wanted, N = 2).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from gradcheck_cli import hook
from gradcheck_cli.cli import main as gradcheck_main

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
LOGITS = [[1.1, 2.2, 0.2, -1.7], [1.0, 2.0, 3.0, 0.5]]
LABELS = [2, 1]


def dump(path: Path, reduction: str = "mean") -> Path:
    """A JSON dump with the gradient of the cross-entropy under `reduction`, computed here."""
    logits = np.array(LOGITS)
    exps = np.exp(logits - logits.max(axis=1, keepdims=True))
    gradient = exps / exps.sum(axis=1, keepdims=True) - np.eye(4)[LABELS]
    if reduction == "mean":
        gradient /= len(LABELS)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"logits": LOGITS, "labels": LABELS, "gradient": gradient.tolist()}))
    return path


def run_hook(capsys, *args: str) -> tuple[int, str, str]:
    code = hook.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def lines_by_file(stdout: str) -> dict[str, str]:
    """The hook's result lines, unwrapped (a continuation starts with spaces), by the file each names."""
    lines: list[str] = []
    for line in stdout.splitlines():
        if line.startswith(" ") and lines:
            lines[-1] += " " + line.strip()
        else:
            lines.append(line)
    return dict(line.split(": ", 1) for line in lines)


def check_verdict(gradcheck, *args: str) -> str:
    """What `gradcheck check ... -q` says, in one line."""
    run = gradcheck("check", *args, "-q")
    return " ".join(run.stdout.split())


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- which files, and the line naming each ------------------------------------------------------------------


def test_each_file_is_named_with_the_verdict_check_gives_it(workdir, capsys, gradcheck):
    """Protects: PASS and FAIL lines name their file, and say exactly what `gradcheck check -q` says of it."""
    right, wrong = "dumps/batch.gradcheck.json", "gradcheck/mine.json"
    dump(workdir / right)
    dump(workdir / wrong, reduction="sum")
    code, out, err = run_hook(capsys, right, wrong)
    assert code == 1, (out, err)
    assert err == ""
    assert lines_by_file(out) == {right: check_verdict(gradcheck, "-i", right),
                                  wrong: check_verdict(gradcheck, "-i", wrong)}
    assert lines_by_file(out)[right].startswith("PASS: ")
    assert lines_by_file(out)[wrong].startswith("FAIL: supplied gradient disagrees at ")


def test_options_apply_to_every_file(workdir, capsys):
    """Protects: the hook's args reach check for each file (a sum's gradient passes only with --reduction sum)."""
    files = [str(dump(workdir / name, reduction="sum").relative_to(workdir)) for name in ("a.gradcheck.json", "gradcheck/b.json")]
    assert run_hook(capsys, *files)[0] == 1
    code, out, _ = run_hook(capsys, "--reduction", "sum", *files)
    assert code == 0, out
    assert [text.split(":")[0] for text in lines_by_file(out).values()] == ["PASS", "PASS"]


def test_package_json_is_never_an_error(workdir, capsys):
    """Protects: outside the naming convention, JSON that is not a gradcheck input is skipped, named, exit 0."""
    (workdir / "package.json").write_text('{"name": "web", "version": "1.0.0"}')
    (workdir / "tsconfig.json").write_text('// comments make it JSONC\n{"compilerOptions": {}}')
    (workdir / "list.json").write_text("[1, 2, 3]")
    (workdir / "events.jsonl").write_text('\n{"event": "x"}\n')
    code, out, err = run_hook(capsys, "package.json", "tsconfig.json", "list.json", "events.jsonl")
    assert code == 0, err
    assert err == ""
    assert lines_by_file(out) == {
        "package.json": 'skipped, not a gradcheck input (a JSON object without "logits")',
        "tsconfig.json": "skipped, not a gradcheck input (not JSON)",
        "list.json": "skipped, not a gradcheck input (JSON that is not an object)",
        "events.jsonl": 'skipped, not a gradcheck input (a JSON object without "logits")',
    }


def test_a_named_input_is_checked_whatever_it_holds(workdir, capsys):
    """Protects: a file that follows the convention is an input, so a broken one is an error naming it (exit 2);
    outside the convention, JSON with "logits" is checked too."""
    (workdir / "gradcheck").mkdir()
    (workdir / "gradcheck" / "package.json").write_text('{"name": "web"}')
    (workdir / "rows.jsonl").write_text('{"logits": [1, 2, 3], "labels": 0}\n')
    code, out, err = run_hook(capsys, "gradcheck/package.json", "rows.jsonl")
    assert code == 2
    assert list(lines_by_file(out)) == ["rows.jsonl"]
    assert lines_by_file(out)["rows.jsonl"].startswith("PASS")
    assert err.count("\n") == 1
    assert err.startswith("gradcheck-hook: error: gradcheck/package.json: unknown key 'name'"), err


def test_the_exit_code_is_the_worst_files(workdir, capsys):
    """Protects: an error (2) outranks a disagreement (1), which outranks agreement (0), in any order."""
    dump(workdir / "ok.gradcheck.json")
    dump(workdir / "bad.gradcheck.json", reduction="sum")
    assert run_hook(capsys, "ok.gradcheck.json", "ok.gradcheck.json")[0] == 0
    assert run_hook(capsys, "bad.gradcheck.json", "ok.gradcheck.json")[0] == 1
    assert run_hook(capsys, "missing.gradcheck.json", "bad.gradcheck.json", "ok.gradcheck.json")[0] == 2
    assert run_hook(capsys, "ok.gradcheck.json", "missing.gradcheck.json")[0] == 2


@pytest.mark.parametrize("signalled", [130, 143])
def test_a_check_ended_by_a_signal_ends_the_hook(workdir, capsys, monkeypatch, signalled):
    """Protects: Ctrl-C (130) or SIGTERM (143) during one file's check stops the hook with that code; the next
    file is not checked."""
    checked = []

    def ended(path, options, debug):
        checked.append(path)
        return signalled, "", ""

    monkeypatch.setattr(hook, "_run_check", ended)
    assert run_hook(capsys, "a.gradcheck.json", "b.gradcheck.json") == (
        signalled, "", "gradcheck-hook: error: a.gradcheck.json: interrupted\n")
    assert checked == ["a.gradcheck.json"]


def test_an_option_value_is_not_a_file(workdir, capsys):
    """Protects: `--labels-file labels.csv` keeps its value (an existing .csv once read as a file to check),
    and a word after `--` is a file even if it looks like an option."""
    (workdir / "logits.gradcheck.csv").write_text("1.1,2.2,0.2,-1.7\n1,2,3,0.5\n")
    (workdir / "labels.csv").write_text("2\n1\n")
    code, out, err = run_hook(capsys, "--labels-file", "labels.csv", "logits.gradcheck.csv")
    assert code == 0, err
    assert list(lines_by_file(out)) == ["logits.gradcheck.csv"]
    assert hook.split_arguments(["--atol=1e-6", "-q", "--rtol", "-1", "a.csv", "--", "--odd.csv"], _check()) == (
        ["--atol=1e-6", "-q", "--rtol", "-1"], ["a.csv", "--odd.csv"])


def test_check_output_on_stderr_is_passed_on(workdir, capsys):
    """Protects: what check writes to stderr besides its error line (-v steps) still reaches the user."""
    dump(workdir / "a.gradcheck.json")
    code, out, err = run_hook(capsys, "-v", "a.gradcheck.json")
    assert code == 0
    assert "gradcheck: reading a.gradcheck.json" in err
    assert list(lines_by_file(out)) == ["a.gradcheck.json"]


@pytest.mark.parametrize("args, message", [
    (["--formt", "json", "a.json", "b.json"], "No such option '--formt'."),
    (["--atol", "-1", "a.json"], "Invalid value for '--atol'"),
    (["-f", "json", "a.json"], "-f is not a hook option: the hook writes one line per file"),
    (["--format=json", "a.json"], "--format is not a hook option"),
    (["-fjson", "a.json"], "-f is not a hook option"),
    (["-i", "a.json", "b.json"], "-i is not a hook option: the files to check follow the options"),
    (["--reduction", "sum"], "no files to check"),
    ([], "no files to check"),
], ids=["unknown option", "bad value", "-f", "--format=", "-fjson", "-i", "options only", "nothing"])
def test_bad_options_are_one_line_before_any_file(workdir, capsys, args, message):
    """Protects: a bad option is exit 2 with one line, once, not one error per file and no file checked."""
    code, out, err = run_hook(capsys, *args)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("gradcheck-hook: error: "), err
    assert message in err


def test_result_lines_wrap_at_spaces_to_the_terminal(workdir, capsys, monkeypatch):
    """Protects: at 80 columns a long line wraps at word boundaries only (a number or a path stays whole);
    at 300 it is one line."""
    long_path = "gradcheck/" + "a-very-long-folder-name/" * 4 + "b.json"
    dump(workdir / long_path, reduction="sum")
    _, out, _ = run_hook(capsys, long_path)
    text = f"{long_path}: {lines_by_file(out)[long_path]}"
    lines = out.splitlines()
    assert len(lines) > 1
    assert lines[0] == long_path + ":"  # too long for 80 columns, so alone on its line, and whole
    assert all(len(line) <= 80 for line in lines[1:]), out
    assert " ".join(line.strip() for line in lines) == text  # every break was at a space
    monkeypatch.setenv("COLUMNS", "300")
    assert run_hook(capsys, long_path)[1] == text + "\n"


# --- --help, --version, the naming convention -----------------------------------------------------------


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_says_what_the_hook_does(capsys, flag):
    """Protects: `gradcheck-hook --help` prints its usage (it once printed nothing and exited 0)."""
    code, out, err = run_hook(capsys, flag)
    assert code == 0
    assert err == ""
    assert out.startswith("Usage: gradcheck-hook [OPTIONS] [CHECK OPTIONS]... FILES...\n")
    for words in ("gradcheck check --help", "*.gradcheck.json", "folder named gradcheck", "package.json",
                  "-V, --version", "Example:"):
        assert words in out


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version_like_the_main_command(capsys, flag):
    """Protects: `gradcheck-hook --version` says the installed version in the main command's words."""
    version = importlib.metadata.version("gradcheck")
    assert run_hook(capsys, flag) == (0, f"gradcheck-hook, version {version}\n", "")
    with pytest.raises(SystemExit):
        gradcheck_main(["--version"], prog_name="gradcheck")
    assert capsys.readouterr().out == f"gradcheck, version {version}\n"


@pytest.mark.parametrize("path, is_input", [
    ("a.gradcheck.json", True), ("dumps/a.gradcheck.jsonl", True), ("x/a.gradcheck.ndjson", True),
    ("a.gradcheck.csv", True), ("gradcheck/a.json", True), ("deep/gradcheck/sub/a.csv", True),
    ("package.json", False), ("dumps/a.json", False), ("gradcheck.json", False), ("mygradcheck/a.json", False),
    ("gradcheck/labels.txt", False), ("a.gradcheck.json.bak", False), ("a.gradcheck.yaml", False),
])
def test_input_names(path, is_input):
    """Protects: the naming convention picks gradcheck inputs and nothing else (package.json never)."""
    assert bool(hook.INPUT_NAMES.search(path)) is is_input


def test_the_hook_files_and_the_readme_snippet_use_the_convention():
    """Protects: .pre-commit-hooks.yaml's default `files:` and the README's snippet are hook.INPUT_NAMES."""
    yaml = pytest.importorskip("yaml", reason="PyYAML comes with pre-commit, in the test extra")
    (hooks,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert hooks["files"] == hook.INPUT_NAMES.pattern
    assert hooks["entry"] == "gradcheck-hook"
    (snippet,) = yaml.safe_load(readme_snippet())["repos"][0]["hooks"]
    assert snippet["files"] == hook.INPUT_NAMES.pattern
    assert {key: snippet[key] for key in ("id", "entry", "require_serial")} == {
        key: hooks[key] for key in ("id", "entry", "require_serial")}


def _check():
    from gradcheck_cli.commands.check import check

    return check


# --- the README's recipe, for real ----------------------------------------------------------------------


def readme_snippet() -> str:
    """The .pre-commit-config.yaml the README's "In CI and pre-commit" section gives."""
    section = README[README.index("### In CI and pre-commit"):]
    return re.search(r"```yaml\n(repos:\n.*?)```", section, flags=re.S)[1]


def readme_try_repo() -> str:
    section = README[README.index("### In CI and pre-commit"):]
    return re.search(r"^pre-commit try-repo .*$", section, flags=re.M)[0]


def _environment(pre_commit_home: str) -> dict[str, str]:
    """This Python's commands first on PATH, git configured only here, pre-commit's cache in a temp folder."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed: the pre-commit tests drive real git repositories")
    pytest.importorskip("pre_commit", reason="pre-commit (in the test extra) is not installed")
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "gradcheck-hook").exists():
        pytest.skip(f"gradcheck-hook is not installed beside {sys.executable} (pip install -e .)")
    env = {name: value for name, value in os.environ.items() if not name.startswith(("GIT_", "PRE_COMMIT"))}
    return {**env, "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}", "PRE_COMMIT_HOME": pre_commit_home,
            "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}


def _run(argv: list[str] | str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, shell=isinstance(argv, str),
                          stdin=subprocess.DEVNULL)


def _project(folder: Path, env: dict[str, str]) -> Path:
    """A git repository with a right dump, a wrong one and a package.json, all staged."""
    folder.mkdir()
    _run(["git", "init", "-q"], folder, env).check_returncode()
    dump(folder / "dumps" / "batch.gradcheck.json")
    dump(folder / "gradcheck" / "mine.json", reduction="sum")
    (folder / "package.json").write_text('{"name": "web", "version": "1.0.0"}')
    _run(["git", "add", "-A"], folder, env).check_returncode()
    return folder


def _assert_names_each_dump(output: str) -> None:
    assert "dumps/batch.gradcheck.json: PASS" in output, output
    assert "gradcheck/mine.json: FAIL: supplied gradient disagrees" in output, output
    assert "package.json" not in output, output


def test_readme_snippet_in_a_real_commit(tmp_path):
    """Protects: the README's snippet works as written: `pre-commit install`, then a commit with a wrong dump
    is stopped with each dump named, package.json is left alone, and the fixed dump commits."""
    with tempfile.TemporaryDirectory() as pre_commit_home:
        env = _environment(pre_commit_home)
        project = _project(tmp_path / "project", env)
        (project / ".pre-commit-config.yaml").write_text(readme_snippet())
        _run(["git", "add", ".pre-commit-config.yaml"], project, env).check_returncode()
        _run([sys.executable, "-m", "pre_commit", "install"], project, env).check_returncode()
        stopped = _run(["git", "commit", "-m", "dumps"], project, env)
        assert stopped.returncode == 1, stopped
        _assert_names_each_dump(stopped.stdout + stopped.stderr)
        dump(project / "gradcheck" / "mine.json")
        _run(["git", "add", "-A"], project, env).check_returncode()
        committed = _run(["git", "commit", "-m", "dumps"], project, env)
        assert committed.returncode == 0, committed
        assert re.search(r"^gradcheck\.+Passed$", committed.stdout + committed.stderr, flags=re.M), committed
        assert _run(["git", "log", "--format=%s"], project, env).stdout == "dumps\n"


def test_try_repo_of_this_repository(tmp_path):
    """Protects: this repository works as a pre-commit hook repository: the README's `pre-commit try-repo`
    line, run as written beside a copy of this work tree, installs gradcheck in pre-commit's own environment,
    checks only the dumps its default `files:` names, and names each with its verdict.

    The copy is this work tree committed to a fresh repository, so the test sees uncommitted changes (as
    try-repo's own shadow copy would) without touching this repository's git state.
    """
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the hook repository is copied from `git ls-files`")
    with tempfile.TemporaryDirectory() as pre_commit_home:
        env = _environment(pre_commit_home)
        clone = tmp_path / "gradcheck"
        listed = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], ROOT, env)
        for name in filter(None, listed.stdout.split("\0")):
            if (ROOT / name).is_file():
                (clone / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, clone / name)
        for step in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-q", "-m", "snapshot"]):
            _run(step, clone, env).check_returncode()
        project = _project(tmp_path / "project", env)
        tried = _run(readme_try_repo(), project, env)
        assert tried.returncode == 1, tried
        _assert_names_each_dump(tried.stdout + tried.stderr)
