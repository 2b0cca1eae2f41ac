"""The CLI's numbers against an independent implementation in 50-digit decimal arithmetic, to 1e-12."""

from __future__ import annotations

import json
from decimal import Decimal, getcontext

import numpy as np
import pytest

getcontext().prec = 50


def reference(logits: list[list[float]], labels: list[int]) -> dict:
    """Softmax, Jacobian, mean cross-entropy and its gradient, straight from the definitions."""
    n_rows = len(logits)
    probabilities, jacobians, gradients, total = [], [], [], Decimal(0)
    for row, label in zip(logits, labels, strict=True):
        exps = [Decimal(z).exp() for z in row]
        norm = sum(exps)
        s = [e / norm for e in exps]
        probabilities.append(s)
        jacobians.append([[s[i] * ((1 if i == j else 0) - s[j]) for j in range(len(s))] for i in range(len(s))])
        total += -s[label].ln()
        gradients.append([(s[c] - (1 if c == label else 0)) / n_rows for c in range(len(s))])
    return {
        "probabilities": probabilities,
        "jacobian": jacobians,
        "loss": total / n_rows,
        "gradient": gradients,
    }


def assert_close(actual, expected, rtol=1e-12):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(np.vectorize(float)(np.asarray(expected, dtype=object)), dtype=np.float64)
    assert actual.shape == expected.shape
    scale = np.maximum(np.abs(expected), 1e-300)
    worst = float(np.max(np.abs(actual - expected) / scale))
    assert worst <= rtol, f"worst relative error {worst:.3e}"


@pytest.mark.parametrize("scale", [1.0, 10.0, 30.0])
def test_report_matches_decimal_reference(gradcheck, scale):
    rng = np.random.default_rng(int(scale))
    logits = (rng.standard_normal((5, 6)) * scale).tolist()
    labels = rng.integers(0, 6, size=5).tolist()
    args = [arg for row in logits for arg in ("--logits", ",".join(repr(z) for z in row))]
    run = gradcheck("check", *args, "--labels", ",".join(map(str, labels)), "--format", "json")
    assert run.exit_code == 0, run
    report = json.loads(run.stdout)
    expected = reference(logits, labels)
    assert_close(report["probabilities"], expected["probabilities"])
    assert_close(report["jacobian"], expected["jacobian"])
    assert_close(report["loss"], expected["loss"])
    assert_close(report["gradient"]["analytic"], expected["gradient"])


def test_huge_logits_are_ordinary(gradcheck):
    """1000 and -1000 are ordinary logits: no overflow, and the same numbers as (1, 0, -1) scaled."""
    run = gradcheck("check", "--logits", "1000,0,-1000", "--labels", "1", "--format", "json")
    assert run.exit_code == 0, run
    report = json.loads(run.stdout)
    expected = reference([[1000.0, 0.0, -1000.0]], [1])
    assert report["probabilities"][0][0] == 1.0
    assert report["probabilities"][0][2] == 0.0
    assert report["loss"] == pytest.approx(float(expected["loss"]), rel=1e-12)
    assert_close(report["gradient"]["analytic"][0][:2], expected["gradient"][0][:2])


def test_confident_row_keeps_every_digit_of_its_gradient_and_jacobian(gradcheck):
    """At s_y = 1 - 8.5e-18, 1 - s_y by subtraction is 0; the gradient and J_yy must still be exact."""
    run = gradcheck("check", "--logits", "40,0,0", "--labels", "0", "--format", "json")
    assert run.exit_code == 0, run
    report = json.loads(run.stdout)
    expected = reference([[40.0, 0.0, 0.0]], [0])
    assert report["gradient"]["analytic"][0][0] != 0.0
    assert_close(report["gradient"]["analytic"], expected["gradient"])
    assert_close(report["jacobian"], expected["jacobian"])
