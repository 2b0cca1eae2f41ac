"""Shared fixtures: a pinned, colourless 80-column environment and a CliRunner helper."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import settings

from gradcheck_cli.cli import main

# In CI (CI=true) hypothesis draws the same examples every run, so the gate is reproducible; a developer's
# run explores new ones (and keeps what fails in .hypothesis/). Long fuzzing is tests/fuzz/, by hand.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("dev")
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "forks: the test needs this process to fork (runs before the others)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `forks` run first, in their order. A test that imports torch or JAX (the framework and tensor
    tests, in CI) leaves their threads in this process, after which gradcheck rightly forks nothing (JAX warns at
    every fork): a test that must watch a forked --impl worker cannot run after it."""
    items.sort(key=lambda item: item.get_closest_marker("forks") is None)


@pytest.fixture(autouse=True)
def _plain_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test sees the same terminal: no colour, 80 columns, no GRADCHECK_* settings from outside."""
    for name in list(os.environ):
        if name.startswith("GRADCHECK_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.delenv("FORCE_COLOR", raising=False)


@dataclass
class Run:
    exit_code: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"exit {self.exit_code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


@pytest.fixture
def gradcheck() -> Callable[..., Run]:
    """Run the CLI in-process: gradcheck("check", "--logits", "1,2", input="...")."""

    def run(*args: str, input: str | bytes | None = None, env: dict[str, str] | None = None) -> Run:
        result = CliRunner().invoke(main, list(args), input=input, env=env, catch_exceptions=False)
        return Run(result.exit_code, result.stdout, result.stderr)

    return run


@pytest.fixture
def passing_json_report(gradcheck: Callable[..., Run], tmp_path) -> Callable[..., dict]:
    """Check a JSON input document (a golden case with the user's values) with these options: it must pass
    (exit 0); gives the JSON report. The golden-case tests of every loss read their numbers from it."""

    def run(document: dict, options: list[str]) -> dict:
        import json

        path = tmp_path / "case.json"
        path.write_text(json.dumps(document))
        result = gradcheck("check", "-i", str(path), *options, "-f", "json")
        assert result.exit_code == 0, result
        report: dict = json.loads(result.stdout)
        return report

    return run


# A user's module of numpy softmax cross-entropies, right and with planted slips, for the --impl tests.
PLANTED_SLIPS = textwrap.dedent("""
    import numpy as np

    def _correct(z, t):
        m = z.max(1, keepdims=True)
        ls = z - m - np.log(np.exp(z - m).sum(1, keepdims=True))
        return -(t * ls).sum() / len(z), (np.exp(ls) - t) / len(z)

    def one_element(z, t):  # one gradient element off by one part in 10^4
        loss, gradient = _correct(z, t)
        gradient[-1, -1] *= 1.0001
        return loss, gradient

    def loss_scaled(z, t):  # the loss 1% too large, the gradient right
        loss, gradient = _correct(z, t)
        return 1.01 * loss, gradient

    def rows(z, t, grad_output):  # reduction none, the gradient weighted by g
        m = z.max(1, keepdims=True)
        ls = z - m - np.log(np.exp(z - m).sum(1, keepdims=True))
        return -(t * ls).sum(1), (np.exp(ls) - t) * grad_output[:, None]

    def rows_slip(z, t, grad_output):
        loss, gradient = rows(z, t, grad_output)
        gradient[0, 1] *= 1.001
        return loss, gradient

    def in_float32(z, t):  # computed in float32: the check's grid z~ and steps of float32
        z, t = z.astype(np.float32), t.astype(np.float32)
        m = z.max(1, keepdims=True)
        ls = z - m - np.log(np.exp(z - m).sum(1, keepdims=True))
        return -(t * ls).sum() / np.float32(len(z)), (np.exp(ls) - t) / np.float32(len(z))

    def in_float32_slip(z, t):
        loss, gradient = in_float32(z, t)
        gradient[1, 2] *= np.float32(1.01)
        return loss, gradient
""")


@pytest.fixture
def planted_slips(tmp_path) -> Path:
    """PLANTED_SLIPS written as a module: its path, for `--impl PATH:FUNCTION`."""
    path = tmp_path / "planted_slips.py"
    path.write_text(PLANTED_SLIPS)
    return path
