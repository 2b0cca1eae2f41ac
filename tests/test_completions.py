"""Shell completion: the committed scripts are what the installed gradcheck prints, and real shells complete
commands, options, choices and file names with them.

bash is driven interactively through a pseudo-terminal (TAB pressed as a person would) and never skips; zsh
the same way and fish through `complete -C`, skipped when those shells are not installed (.ci/run installs
them, so CI runs all of them).
"""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gradcheck_cli.cli import main
from gradcheck_cli.commands.completion import FILE_NAMES, SHELLS, completion_script

ROOT = Path(__file__).resolve().parent.parent
COMPLETIONS = ROOT / "completions"
MARK = "@@"
CONTROL = re.compile(r"\x1b\[[?0-9;]*[A-Za-z@]|\r")


@pytest.mark.parametrize("shell", SHELLS)
def test_committed_script_is_fresh(shell):
    committed = (COMPLETIONS / FILE_NAMES[shell]).read_text(encoding="utf-8")
    assert committed == completion_script(shell, main), (
        f"completions/{FILE_NAMES[shell]} is stale: run `gradcheck completion {shell} > "
        f"completions/{FILE_NAMES[shell]}`"
    )


@pytest.mark.parametrize("shell", SHELLS)
def test_completion_command_prints_what_click_generates(gradcheck, shell):
    run = gradcheck("completion", shell)
    assert run.exit_code == 0, run
    assert run.stdout == completion_script(shell, main)
    assert f"_GRADCHECK_COMPLETE={shell}_complete" in run.stdout


def test_completion_refuses_an_unknown_shell(gradcheck):
    run = gradcheck("completion", "tcsh")
    assert run.exit_code == 2
    assert "'tcsh' is not one of 'bash', 'zsh', 'fish'" in run.stderr


def test_the_completion_protocol_answers_choices_and_files(tmp_path):
    """What every script asks: the completions for a command line, as click's bash protocol returns them."""
    env = {**_shell_env(_gradcheck_bin(tmp_path)), "COMP_WORDS": "gradcheck check --method ", "COMP_CWORD": "3",
           "_GRADCHECK_COMPLETE": "bash_complete"}
    output = subprocess.run(["gradcheck"], env=env, capture_output=True, text=True, timeout=60).stdout
    assert output.split() == [f"plain,{name}" for name in ("central", "forward", "backward", "five-point", "richardson", "complex-step")]
    env.update(COMP_WORDS="gradcheck check --input ", COMP_CWORD="3")
    assert subprocess.run(["gradcheck"], env=env, capture_output=True, text=True, timeout=60).stdout == "file,\n"


# --- interactive shells -------------------------------------------------------------------------------------


def _gradcheck_bin(tmp_path: Path) -> Path:
    """A directory with a `gradcheck` command: the installed entry point, or a shim running this Python's."""
    installed = Path(sys.executable).parent / "gradcheck"
    if installed.exists():
        return installed.parent
    shim = tmp_path / "bin" / "gradcheck"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m gradcheck_cli "$@"\n')
    shim.chmod(0o755)
    return shim.parent


def _shell_env(bin_dir: Path, home: Path | None = None) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith(("BASH", "ZDOTDIR", "INPUTRC"))}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", TERM="dumb", PS1="$ ", PROMPT="$ ", INPUTRC="/dev/null")
    if home is not None:
        env["HOME"] = str(home)
    return env


class Terminal:
    """A shell on a pseudo-terminal: type into it, and read what it prints."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.leader, follower = pty.openpty()
        self.process = subprocess.Popen(argv, stdin=follower, stdout=follower, stderr=follower, env=env, cwd=cwd,
                                        start_new_session=True)
        os.close(follower)
        self.output = ""

    def type(self, keys: str) -> None:
        os.write(self.leader, keys.encode())

    def read_until(self, pattern: str, timeout: float = 30) -> re.Match[str] | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.output, flags=re.M)
            if match:
                return match
            ready, _, _ = select.select([self.leader], [], [], 0.1)
            if ready:
                try:
                    # Without carriage returns and the control sequences (bracketed paste, cursor moves) a TERM adds.
                    self.output += CONTROL.sub("", os.read(self.leader, 65536).decode(errors="replace"))
                except OSError:
                    break
        return re.search(pattern, self.output, flags=re.M)

    def complete(self, line: str) -> str:
        """Type `line`, press TAB, and return the command line the shell completed it to.

        After the TAB, Ctrl-A goes to the start of the line and `echo @@ ` turns it into a command that prints
        the completed line; the shell's own echo of what was typed never starts a line with the mark.
        """
        self.output = ""
        # The line editor reads keys in order, so the keys after TAB wait until the completion is in.
        self.type(f"{line}\t\x01echo {MARK} \r")
        match = self.read_until(rf"^{MARK} (.*?)\s*$")
        assert match, f"no completed line in the shell's output: {self.output!r}"
        return match[1]

    def close(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)
        os.close(self.leader)


# (what is typed before TAB, what the shell must complete it to)
CASES = [
    ("gradcheck ch", "gradcheck check"),
    ("gradcheck check --format j", "gradcheck check --format json"),
    ("gradcheck check --format gi", "gradcheck check --format github"),
    ("gradcheck check --method ce", "gradcheck check --method central"),
    ("gradcheck check --method fo", "gradcheck check --method forward"),
    ("gradcheck check --reduction no", "gradcheck check --reduction none"),
    ("gradcheck check --targets-f", "gradcheck check --targets-file"),
    ("gradcheck check -i bat", "gradcheck check -i batch.csv"),
    ("gradcheck check --labels-file lab", "gradcheck check --labels-file labels.txt"),
    ("gradcheck completion z", "gradcheck completion zsh"),
]


def _workdir(tmp_path: Path) -> Path:
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "batch.csv").write_text("1,2,3\n")
    (workdir / "labels.txt").write_text("0\n")
    return workdir


def _interactive(tmp_path: Path, argv: list[str], setup: str) -> Terminal:
    """An interactive shell in a fresh home and a directory with two input files, with `setup` run."""
    home = tmp_path / "home"
    home.mkdir()
    terminal = Terminal(argv, _shell_env(_gradcheck_bin(tmp_path), home), _workdir(tmp_path))
    terminal.type(f"{setup}; echo READY\r")
    assert terminal.read_until(r"^READY"), terminal.output
    return terminal


# How each shell starts clean and loads the committed script.
INTERACTIVE = {
    "bash": (["--norc", "--noprofile", "-i"], "source {script}"),
    "zsh": (["-f", "-i"], "bindkey -e; autoload -U compinit; compinit -u -D; source {script}"),
}


@pytest.fixture(params=INTERACTIVE)
def shell(request, tmp_path):
    path = shutil.which(request.param)
    if path is None:
        assert request.param != "bash", "bash is required for the completion tests"
        pytest.skip(f"{request.param} is not installed")
    flags, setup = INTERACTIVE[request.param]
    terminal = _interactive(tmp_path, [path, *flags], setup.format(script=COMPLETIONS / FILE_NAMES[request.param]))
    yield terminal
    terminal.close()


@pytest.mark.parametrize("typed, completed", CASES, ids=[typed for typed, _ in CASES])
def test_shell_completes(shell, typed, completed):
    assert shell.complete(typed) == completed


@pytest.mark.parametrize("typed, expected", [
    ("gradcheck check --format j", ["json"]),
    ("gradcheck check --method ", ["central", "forward", "backward", "five-point", "richardson", "complex-step"]),
    ("gradcheck check --targets-f", ["--targets-file"]),
    ("gradcheck check -i bat", ["batch.csv"]),
])
def test_fish_completes(tmp_path, typed, expected):
    fish = shutil.which("fish")
    if fish is None:
        pytest.skip("fish is not installed")
    home = tmp_path / "home"
    home.mkdir()
    script = COMPLETIONS / FILE_NAMES["fish"]
    result = subprocess.run([fish, "--no-config", "-c", f"source {script}; complete -C '{typed}'"],
                            env=_shell_env(_gradcheck_bin(tmp_path), home), cwd=_workdir(tmp_path),
                            capture_output=True, text=True, timeout=60)
    candidates = [line.split("\t")[0] for line in result.stdout.splitlines()]
    assert sorted(candidates) == sorted(expected), result
