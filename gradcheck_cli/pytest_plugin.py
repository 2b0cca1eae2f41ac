"""The pytest plugin, registered as the `pytest11` entry point `gradcheck`: active wherever gradcheck is installed.

- `gradcheck_cli.assert_gradients_match(fn, logits, labels=None, targets=None, **options)` (importable with or
  without pytest) fails a test with an AssertionError whose message pytest prints as its own `E` lines: each
  failing check, how many elements mismatch and the worst five, never the whole arrays; its own frames are
  hidden from the traceback, which ends at the test's line.
- The fixture `gradcheck_report` is the same check returning the Report, for a test that wants to look at it;
  when such a test fails, pytest's failure output gets a `gradcheck report` section for every failed Report.
- pytest's own `--junitxml` carries those failures like any other.

Importing it costs nothing: gradcheck (and numpy) load when a test first uses them.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from gradcheck_cli.report import Report

# The Reports a test made through the fixture, kept on its item for the failure output.
_REPORTS = pytest.StashKey["list[Report]"]()


@pytest.fixture
def gradcheck_report(request: pytest.FixtureRequest) -> Callable[..., Report]:
    """gradcheck_report(fn, logits, labels=None, targets=None, **options) -> Report.

    The check assert_gradients_match makes (fn(logits, targets) -> (loss, gradient) against the reference, with
    the default tolerances of the logits' dtype), returning the Report instead of raising: `.passed`,
    `.checks`, `.to_dict()`, `.assert_ok()`.
    """
    from gradcheck_cli.api import gradients_report

    made = request.node.stash.setdefault(_REPORTS, [])

    def report(fn: Callable[..., Any], logits: Any, labels: Any = None, targets: Any = None, **options: Any) -> Report:
        result = gradients_report(fn, logits, labels, targets, **options)
        made.append(result)
        return result

    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """A failed test shows what each failed Report of its own found, in a section of its failure output."""
    report = yield
    if report.failed and call.when == "call":
        for made in item.stash.get(_REPORTS, []):
            if not made.passed:
                report.sections.append(("gradcheck report", made.failure_message()))
    return report
