"""The sources' worked examples, end to end through the CLI."""

from __future__ import annotations

import json

import pytest


@pytest.mark.parametrize(
    ("logits", "expected"),
    [
        ("1.1,2.2,0.2,-1.7", [0.224, 0.672, 0.091, 0.013]),
        ("1,2,3", [0.090, 0.245, 0.665]),
    ],
)
def test_source_examples_probabilities(gradcheck, logits, expected):
    run = gradcheck("check", "--logits", logits, "--labels", "0", "--format", "json")
    assert run.exit_code == 0, run
    report = json.loads(run.stdout)
    assert report["probabilities"][0] == pytest.approx(expected, abs=1e-3)
    assert report["passed"] is True


def test_first_example_prints_probabilities_with_three_digits(gradcheck):
    run = gradcheck("check", "--logits", "1.1,2.2,0.2,-1.7", "--labels", "2")
    assert run.exit_code == 0, run
    for shown in ("0.223636", "0.671841", "0.0909237", "0.0135993"):
        assert shown in run.stdout, run
    assert run.stdout.rstrip().splitlines()[-1].startswith("PASS"), run
