"""The JSON report: one strict JSON document (no NaN or Infinity tokens), valid against schema.json."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from gradcheck_cli.render.schema import SCHEMA_VERSION
from gradcheck_cli.render.verdict import worst_rows
from gradcheck_cli.report import CheckResult, Report

if TYPE_CHECKING:
    from gradcheck_cli.terminal import Output


def finite_or_none(values: Any) -> Any:
    """Nested lists of floats with every non-finite value as null, so the JSON stays strict."""
    array = np.asarray(values, dtype=np.float64)
    if np.isfinite(array).all():
        return array.tolist()
    cleaned = array.astype(object)
    cleaned[~np.isfinite(array)] = None
    return cleaned.tolist()


def check_to_dict(check: CheckResult) -> dict[str, Any]:
    index = list(check.worst_index)
    return {
        "name": check.name,
        "passed": check.passed,
        "max_abs_error": check.max_abs_error,
        "max_rel_error": check.max_rel_error,
        "worst": {
            "index": index,
            "row": index[0] if index else None,
            "column": index[-1] if index else None,
            "actual": finite_or_none(check.actual),
            "expected": finite_or_none(check.expected),
        },
    }


def report_to_dict(report: Report) -> dict[str, Any]:
    """The JSON report. The per-row arrays are there when report.full (`arrays` says which)."""
    settings = report.settings
    document: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "command": "check",
        "passed": report.passed,
        "settings": {
            "method": settings.method,
            "eps": settings.eps,
            "atol": settings.atol,
            "rtol": settings.rtol,
            "dtype": settings.dtype,
            "loss": settings.loss,
            "reduction": settings.reduction,
            "order": settings.order,
            "weights": None if settings.weights is None else list(settings.weights),
            "label_smoothing": settings.label_smoothing,
            "ignore_index": settings.ignore_index,
            "temperature": settings.temperature,
        },
        "shape": {"rows": report.rows, "classes": report.classes},
        "arrays": report.full,
        "loss": None if report.loss is None else finite_or_none(report.loss),
        "checks": [check_to_dict(check) for check in report.checks],
        "worst_rows": worst_rows(report),
        "notes": report.notes,
    }
    if report.full:
        document["probabilities"] = finite_or_none(report.probabilities)
        document["jacobian"] = finite_or_none(report.jacobian)
        document["gradient"] = {
            "analytic": finite_or_none(report.analytic_gradient),
            "numeric": finite_or_none(report.numeric_gradient),
        }
    return document


def render_json(report: Report) -> str:
    import json  # here, not at the top: start-up pays for it only when JSON is used

    # allow_nan=False: a NaN that slipped past finite_or_none is a bug, and must not become invalid JSON.
    return json.dumps(report_to_dict(report), allow_nan=False)


def write(report: Report, out: Output, color: str, quiet: bool) -> None:
    out.echo(render_json(report))
