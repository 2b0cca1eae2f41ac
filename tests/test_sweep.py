"""`gradcheck sweep`: the V of a correct gradient, the floor of a wrong one, and the JSON shape."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gradcheck_cli.inputs.validate import one_hot
from gradcheck_cli.numerics import differences
from gradcheck_cli.numerics.losses.cross_entropy import cross_entropy

LOGITS = np.array([[1.1, 2.2, 0.2, -1.7], [3.0, -1.0, 0.5, 2.0]])
LABELS = np.array([2, 0])


def curve(analytic: np.ndarray) -> list[float]:
    loss = cross_entropy(one_hot(LABELS, 4))
    points = differences.sweep(analytic, loss.row_losses, LOGITS, differences.SWEEP_STEPS)
    return [point.error_vs_largest for point in points]


def test_a_correct_gradient_draws_a_v():
    loss = cross_entropy(one_hot(LABELS, 4))
    errors = curve(loss.row_gradients(LOGITS))
    bottom = int(np.argmin(errors))
    assert 0 < bottom < len(errors) - 1, errors
    assert errors[bottom] < 1e-9
    assert errors[0] > 100 * errors[bottom] and errors[-1] > 100 * errors[bottom]  # both arms rise
    points = differences.sweep(loss.row_gradients(LOGITS), loss.row_losses, LOGITS, differences.SWEEP_STEPS)
    assert differences.sweep_looks_correct(points)


def test_a_wrong_gradient_has_a_floor():
    loss = cross_entropy(one_hot(LABELS, 4))
    wrong = loss.row_gradients(LOGITS) * (1 + 1e-4)
    errors = curve(wrong)
    assert min(errors) > 1e-5
    points = differences.sweep(wrong, loss.row_losses, LOGITS, differences.SWEEP_STEPS)
    assert not differences.sweep_looks_correct(points)


def test_sweep_json_lists_every_step(gradcheck):
    run = gradcheck("sweep", "--logits", "1.1,2.2,0.2,-1.7", "--labels", "2", "-f", "json")
    assert run.exit_code == 0, run
    document = json.loads(run.stdout)
    assert [point["eps"] for point in document["steps"]] == list(differences.SWEEP_STEPS)
    assert set(document["steps"][0]) == {"eps", "max_abs_error", "max_rel_error"}
    assert document["passed"] is True and "looks correct" in document["verdict"]


def test_sweep_table_marks_the_default_step_and_ends_with_the_verdict(gradcheck):
    run = gradcheck("sweep", "--logits", "1.1,2.2,0.2,-1.7", "--labels", "2", "--steps", "1e-2,1e-5,1e-9")
    assert run.exit_code == 0, run
    lines = run.stdout.splitlines()
    assert any(line.startswith("   1e-05") and line.endswith("<- default") for line in lines), run.stdout
    assert "looks correct" in lines[-1]


@pytest.mark.parametrize("steps", ["0", "-1e-3", "abc", "nan", " , "])
def test_bad_steps_are_usage_errors(gradcheck, steps):
    run = gradcheck("sweep", "--logits", "1,2", "--labels", "0", "--steps", steps)
    assert run.exit_code == 2, run
    assert run.stderr.startswith("gradcheck: error: ") and "--steps" in run.stderr


def test_sweep_studies_the_loss_the_registry_builds(gradcheck):
    """--loss mse sweeps the squared error's own gradient: a V (exit 0), and its loss options are checked."""
    run = gradcheck("sweep", "--logits", "1.1,2.2,0.2,-1.7", "--targets", "0.1,0.2,0.6,0.1", "--loss", "mse",
                    "-f", "json")
    assert run.exit_code == 0 and json.loads(run.stdout)["passed"] is True, run
    refused = gradcheck("sweep", "--logits", "1,2", "--labels", "0", "--loss", "mse", "--label-smoothing", "0.1")
    assert refused.exit_code == 2 and "not mse" in refused.stderr, refused


def test_sweep_with_weights_sweeps_the_weighted_loss(gradcheck):
    """A weight of 3 on the row's label makes its loss 3 x cross-entropy: truncation errors triple, still a V."""
    args = ("sweep", "--logits", "1.1,2.2,0.2,-1.7", "--labels", "2", "--steps", "1e-1,1e-2,1e-5", "-f", "json")
    plain, weighted = gradcheck(*args), gradcheck(*args, "--weights", "1,1,3,1")
    assert plain.exit_code == weighted.exit_code == 0, weighted
    for one, three in zip(json.loads(plain.stdout)["steps"][:2], json.loads(weighted.stdout)["steps"][:2],
                          strict=True):  # the large steps, where truncation (proportional to the loss) dominates
        assert three["max_abs_error"] / one["max_abs_error"] == pytest.approx(3.0, rel=1e-6)
