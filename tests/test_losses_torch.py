"""Every loss option against golden values from PyTorch (tests/fixtures/make_torch_golden.py), to 1e-12.

The cases were drawn at random by the fixture script, not tuned: reductions, class weights, label
smoothing, ignore_index (-100 and real classes), soft targets, temperature, and MSE on the softmax.
Each runs end to end through the CLI with torch's own loss and gradient supplied as the user's values.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

GOLDEN = json.loads((Path(__file__).parent / "fixtures" / "torch_golden.json").read_text())
CASES = GOLDEN["cases"]


def options_args(options: dict) -> list[str]:
    args = ["--reduction", options["reduction"], "--temperature", repr(options["temperature"]), "--loss", options["loss"]]
    if "weights" in options:
        args += ["--weights", ",".join(repr(w) for w in options["weights"])]
    if "label_smoothing" in options:
        args += ["--label-smoothing", repr(options["label_smoothing"])]
    if "ignore_index" in options:
        args += ["--ignore-index", str(options["ignore_index"])]
    return args


def assert_agrees(ours, theirs, what: str) -> None:
    ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    assert ours.shape == theirs.shape, what
    bound = 1e-12 * np.abs(theirs) + 1e-12 * max(float(np.max(np.abs(theirs))), 1e-300)
    worst = float(np.max(np.abs(ours - theirs) - bound))
    assert worst <= 0, f"{what}: off by {np.max(np.abs(ours - theirs)):.3e}"


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}-{c['options']['loss']}-{c['options']['reduction']}"
                                               for i, c in enumerate(CASES)])
def test_matches_torch(passing_json_report, case):
    document = {key: case[key] for key in ("logits", "labels", "targets") if key in case}
    document["loss"] = case["loss"]
    document["gradient"] = case["gradient"]
    document["probabilities"] = case["probabilities"]
    report = passing_json_report(document, options_args(case["options"]))
    assert_agrees(report["loss"], case["loss"], "loss")
    assert_agrees(report["gradient"]["analytic"], case["gradient"], "gradient")
    assert_agrees(report["probabilities"], case["probabilities"], "probabilities")
    names = {check["name"]: check["passed"] for check in report["checks"]}
    assert names["supplied loss"] and names["supplied gradient"] and names["supplied probabilities"], names


def test_the_fixture_covers_every_option():
    seen = {key for case in CASES for key in case["options"] if key not in ("reduction", "loss")}
    assert {"weights", "label_smoothing", "ignore_index", "temperature"} <= seen
    assert {case["options"]["reduction"] for case in CASES} == {"mean", "sum", "none"}
    assert any("targets" in case and "weights" in case["options"] and "label_smoothing" in case["options"]
               for case in CASES)
    assert any(case["options"].get("ignore_index") == -100 for case in CASES)
    assert any(case["options"]["loss"] == "mse" for case in CASES)
