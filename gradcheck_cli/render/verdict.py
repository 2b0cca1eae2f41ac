"""Where a check is worst and what the run concluded, in the words every text format uses."""

from __future__ import annotations

import numpy as np

from gradcheck_cli.report import CheckResult, Report


def where(check: CheckResult) -> str:
    index = check.worst_index
    if check.name == "jacobian" and len(index) == 3:
        return f"row {index[0]}, ds_{index[1]}/dz_{index[2]}"
    if check.name == "hessian" and len(index) == 3:
        return f"row {index[0]}, d2L/dz_{index[1]}dz_{index[2]}"
    if len(index) == 2:
        return f"row {index[0]}, class {index[1]}"
    if not index:
        return "its value"
    if len(index) == 1:
        return f"row {index[0]}"
    return ", ".join(str(i) for i in index)


def verdict_line(report: Report) -> str:
    failed = [check for check in report.checks if not check.passed]
    if not failed:
        if [check.name for check in report.checks] == ["gradient", "jacobian"]:
            return "PASS: gradient and jacobian agree with finite differences (2 checks)"
        return f"PASS: all {len(report.checks)} checks agree ({', '.join(check.name for check in report.checks)})"
    first = failed[0]
    error = abs(first.actual - first.expected)
    size = f"abs error {error:.2e}" if np.isfinite(error) else "a value is not finite"
    tally = f"{len(failed)} of {len(report.checks)} checks failed"
    return f"FAIL: {first.name} disagrees at {where(first)}, {size} ({tally})"
