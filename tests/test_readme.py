"""Every `gradcheck` command the README shows runs as written and exits as the README says.

A command exits 0 unless its line ends with the comment `# exits 1` (an example of a check that fails).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def readme_commands() -> list[str]:
    """Command lines in bash code blocks, and commands in table cells, that run gradcheck."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for line in block.splitlines():
            if re.match(r"(gradcheck |cat \S+ \| gradcheck |python examples/\S+ .*\| gradcheck )", line.strip()):
                commands.append(line.strip())
    for cell in re.findall(r"\| `((?:gradcheck|cat) [^`]*)` \|", README):
        commands.append(cell.replace("\\|", "|"))
    return commands


COMMANDS = readme_commands()


def test_the_readme_shows_commands():
    assert len(COMMANDS) >= 10


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_runs(command):
    needed = [tool for tool in ("jq",) if re.search(rf"\| *{tool}\b", command)]
    if any(shutil.which(tool) is None for tool in needed):
        pytest.skip(f"{needed} not installed")
    if "--framework torch" in command:
        pytest.importorskip("torch", reason="the README's --framework torch example needs torch (CI installs it)")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120, stdin=subprocess.DEVNULL)
    expected = 1 if command.endswith("# exits 1") else 0
    assert result.returncode == expected, f"{command}\n{result.stdout}\n{result.stderr}"
    assert result.stdout.strip(), command
