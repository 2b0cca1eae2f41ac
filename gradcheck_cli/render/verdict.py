"""Where a check is worst and what the run concluded, in the words every text format uses.

Every index a person reads counts from 0, as the tables, the JSON report and numpy do: "row 0, class 2" is
`gradient[0][2]` of the JSON, and the class of column s_2 in the tables.
"""

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


def digits(value: float) -> str:
    """Every digit of a value (Python's shortest repr, which reads back as the same float), and never -0.0:
    the sign of a zero says nothing about a softmax or its gradient, and "-0.0" reads as a small negative."""
    return repr(float(value) + 0.0)  # IEEE: -0.0 + 0.0 is +0.0, and every other value is unchanged


def count(number: int, singular: str, plural: str | None = None) -> str:
    """'1 row', '2 rows': a count with its noun in the right number."""
    return f"{number} {singular if number == 1 else plural or singular + 's'}"


def worst_values(check: CheckResult) -> str:
    """The failing element's two values in full (they often agree to the six digits the tables show), on a
    line of their own under where they are: two full-digit numbers fit 80 columns, a sentence with both not."""
    if check.name == "impl taylor":  # a slope, not an element
        return f"impl taylor: the lowest slope is {check.actual:.3f}; a gradient of your own loss gives 2"
    values = f"{digits(check.actual)} vs reference {digits(check.expected)}"
    return f"{check.name} fails worst at {where(check)}:\n  {values}"


# The verdict is one line wherever it is printed (tables, -q, --format github, the pre-commit hook, a log), so
# it is composed to fit this width, the narrowest terminal the tables are drawn for; only a check with a very
# long name and index runs longer, and the tables then wrap it.
VERDICT_WIDTH = 80


def verdict_line(report: Report) -> str:
    """PASS or FAIL, the first failing check, where and by how much; within VERDICT_WIDTH when it can be."""
    failed = [check for check in report.checks if not check.passed]
    names = [check.name for check in report.checks]
    if not failed:
        if names == ["gradient", "jacobian"]:
            return "PASS: gradient and jacobian agree with finite differences (2 checks)"
        return _listing(f"PASS: all {len(names)} checks agree", names)
    first = failed[0]
    error = abs(first.actual - first.expected)
    size = f" by {error:.2e}" if np.isfinite(error) else ": a value is not finite"
    line = f"FAIL: {first.name} disagrees at {where(first)}{size}"
    tally = f"{line} ({len(failed)} of {len(names)} failed)"  # the Checks table and -f json have the tally too
    return tally if len(tally) <= VERDICT_WIDTH else line


def _listing(head: str, names: list[str]) -> str:
    """'head (a, b, c)', or as many names as fit the width and 'and N more' (the Checks table lists them all)."""
    line = head
    for shown in range(len(names), 0, -1):
        rest = len(names) - shown
        line = f"{head} ({', '.join(names[:shown])}{f' and {rest} more' if rest else ''})"
        if len(line) <= VERDICT_WIDTH:
            break
    return line


def diagnosis_line(report: Report, check: CheckResult) -> str | None:
    """The slip that reproduces a failed check's values, in one sentence (or plainly that none does), for under
    its FAIL line; None when the check was not diagnosed (it is not of the user's values, or too big)."""
    for diagnosis in report.diagnoses:
        if diagnosis.check == check.name:
            return f"  diagnosis: {diagnosis.verdict}"
    return None
