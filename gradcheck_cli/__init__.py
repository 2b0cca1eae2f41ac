"""gradcheck: check softmax, cross-entropy and their gradients against finite differences.

The Python API, on the same pipeline as the command line (see the README, "Use from Python and pytest"):

    check(logits, labels=None, targets=None, **options) -> Report        # gradcheck check
    sweep(logits, labels=None, targets=None, **options) -> SweepReport   # gradcheck sweep
    explain(logits, labels=None, targets=None, **options) -> Explanation # gradcheck explain
    diagnose(logits, labels=None, targets=None, **options) -> list[Diagnosis]  # gradcheck diagnose
    assert_gradients_match(fn, logits, labels=None, targets=None, **options) -> Report
    gradients_report(fn, logits, labels=None, targets=None, **options) -> Report

Importing the package loads nothing heavy: each name is imported when it is first used (numpy then).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing's constant without importing typing (mypy reads any TYPE_CHECKING as true)
if TYPE_CHECKING:
    from typing import Any

    from gradcheck_cli.api import SweepReport, assert_gradients_match, check, gradients_report, sweep
    from gradcheck_cli.api.diagnosing import diagnose
    from gradcheck_cli.api.explaining import Explanation, explain
    from gradcheck_cli.errors import InputError
    from gradcheck_cli.report import CheckResult, Diagnosis, Element, Report
    from gradcheck_cli.settings import Settings

# Public name -> the module that defines it, imported on first use so that `import gradcheck_cli` stays cheap.
_LAZY_EXPORTS = {
    "check": "gradcheck_cli.api",
    "sweep": "gradcheck_cli.api",
    "diagnose": "gradcheck_cli.api",
    "Diagnosis": "gradcheck_cli.report",
    "assert_gradients_match": "gradcheck_cli.api",
    "gradients_report": "gradcheck_cli.api",
    "SweepReport": "gradcheck_cli.api",
    "explain": "gradcheck_cli.api",
    "Explanation": "gradcheck_cli.api",
    "Report": "gradcheck_cli.report",
    "CheckResult": "gradcheck_cli.report",
    "Element": "gradcheck_cli.report",
    "InputError": "gradcheck_cli.errors",
    "Settings": "gradcheck_cli.settings",
}
__all__ = ("CheckResult", "Diagnosis", "Element", "Explanation", "InputError", "Report", "Settings", "SweepReport",
           "assert_gradients_match", "check", "diagnose", "explain", "gradients_report", "sweep")


def __getattr__(name: str) -> Any:
    if name not in _LAZY_EXPORTS:
        raise AttributeError(f"module 'gradcheck_cli' has no attribute {name!r}")
    return getattr(__import__(_LAZY_EXPORTS[name], fromlist=[name]), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY_EXPORTS})
