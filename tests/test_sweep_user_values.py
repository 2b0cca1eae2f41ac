"""`gradcheck sweep` studies the user's values (issue 17 point 1), with check's perturbations (issue 13), and draws
the Taylor slopes (issue 15).

Protected here: a wrong gradient of the user's (in the input, --grad-file, --impl, or the API's arrays and
functions) exits 1 and a right one 0; the user's loss is held to check's verdict; the curve is the central
differences check takes, every element at once; formats sweep offers are written, the others refused.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gradcheck_cli import sweep

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
MY_SOFTMAX = EXAMPLES / "my_softmax.py"
Z = np.array([[1.1, 2.2, 0.2, -1.7], [1.0, 2.0, 3.0, 0.5], [3.0, -1.0, 0.5, 2.0]])
LABELS = [2, 1, 0]


def reference_gradient(z: np.ndarray, labels: list[int]) -> np.ndarray:
    """(s - y) / N, computed here from the definition (MATH.md), independently of gradcheck."""
    s = np.exp(z - z.max(axis=1, keepdims=True))
    s /= s.sum(axis=1, keepdims=True)
    return (s - np.eye(z.shape[1])[labels]) / z.shape[0]


def my_softmax_output(*bug: str) -> str:
    """What the README's pipe feeds sweep: examples/my_softmax.py's values for examples/batch.json."""
    run = subprocess.run([sys.executable, str(MY_SOFTMAX), str(EXAMPLES / "batch.json"), *bug],
                         capture_output=True, text=True, check=True)
    return run.stdout


@pytest.mark.parametrize("bug, code", [(["--bug", "forgot-1/N"], 1), ([], 0)], ids=["forgot-1/N", "correct"])
def test_the_readmes_pipe_of_user_values_exits_by_their_gradient(gradcheck, bug, code):
    """Protects point 1: `my_softmax.py ... --bug forgot-1/N | gradcheck sweep -i -` exited 0 (the gradient was
    dropped); the slip must exit 1 and the correct values 0."""
    run = gradcheck("sweep", "-i", "-", "-f", "json", input=my_softmax_output(*bug))
    assert run.exit_code == code, run
    document = json.loads(run.stdout)
    assert document["gradient"] == "supplied" and document["passed"] is (code == 0)
    assert {"supplied gradient", "supplied loss"} <= {check["name"] for check in document["checks"]}


@pytest.mark.parametrize("function, code", [("forgot_one_over_n", 1), ("softmax_cross_entropy", 0)])
def test_impl_is_swept_and_checked(gradcheck, function, code):
    """Protects point 1 for --impl: sweep had no --impl; the user's function's gradient is the one swept."""
    run = gradcheck("sweep", "-i", str(EXAMPLES / "batch.json"), "--impl", f"{MY_SOFTMAX}:{function}", "-f", "json")
    assert run.exit_code == code, run
    document = json.loads(run.stdout)
    assert document["gradient"] == "impl"
    failed = {check["name"] for check in document["checks"] if not check["passed"]}
    assert ("impl gradient" in failed) is (code == 1), document["checks"]


def test_a_wrong_gradient_keeps_its_error_at_every_step(tmp_path, gradcheck):
    """Protects the curve's numbers: a gradient 3 x (s - y) / N errs by 2 max|g| at every small step.

    At steps 1e-5 and below the central difference of a row loss (exact perturbation) is within truncation
    kappa h^2 D S <= (1/6) 1e-10 * 3 = 5e-11 of g relative to its largest element plus rounding of a few
    eps: so error / max|g| = |3 g - n| / max|g| is 2 within 1e-10.
    """
    gradient = 3.0 * reference_gradient(Z, LABELS)
    np.savetxt(tmp_path / "grad.csv", gradient, delimiter=",", fmt="%.17g")
    args = [arg for row in Z for arg in ("--logits", ",".join(map(repr, row.tolist())))]
    run = gradcheck("sweep", *args, "--labels", "2,1,0", "--grad-file", str(tmp_path / "grad.csv"), "-f", "json",
                    "--steps", "1e-5,1e-7,1e-9")
    assert run.exit_code == 1, run
    document = json.loads(run.stdout)
    largest = np.abs(reference_gradient(Z, LABELS)).max() * Z.shape[0]  # each row's own units: the 1/N out
    for point in document["steps"]:
        assert point["max_abs_error"] / largest == pytest.approx(2.0, abs=1e-10), point
    assert "your gradient looks WRONG" in document["verdict"]


def test_a_right_gradient_file_passes_and_a_wrong_loss_value_fails(tmp_path, gradcheck):
    """Protects 'the same verdict as check': the right gradient passes; a wrong --loss-value fails the sweep
    although the curve is fine (check's supplied-loss check), and the verdict names it."""
    np.savetxt(tmp_path / "grad.csv", reference_gradient(Z, LABELS), delimiter=",", fmt="%.17g")
    args = [arg for row in Z for arg in ("--logits", ",".join(map(repr, row.tolist())))]
    args += ["--labels", "2,1,0", "--grad-file", str(tmp_path / "grad.csv")]
    good = gradcheck("sweep", *args)
    assert good.exit_code == 0, good
    assert good.stdout.splitlines()[-1].startswith("your gradient looks correct"), good.stdout
    wrong = gradcheck("sweep", *args, "--loss-value", "1.0", "-f", "json")
    assert wrong.exit_code == 1, wrong
    document = json.loads(wrong.stdout)
    assert "check of your values fails: supplied loss" in document["verdict"], document["verdict"]


def test_each_step_differences_every_element_at_once(monkeypatch):
    """Protects issue 13: one exact perturbation per stencil offset and step (2 per step for central), never
    one evaluation per element, and the values are the central differences of the row losses: at a power-of-two
    step each equals (l(z + h e_j) - l(z - h e_j)) / 2h re-evaluated here, within its rounding 2 eps |l| / h."""
    from gradcheck_cli.numerics.losses.cross_entropy import CrossEntropy

    calls = []
    original = CrossEntropy.perturbation

    def counting(self, base, given=None):
        perturb = original(self, base, given)

        def counted(column, offsets):
            calls.append(np.shape(offsets))
            return perturb(column, offsets)

        return counted

    monkeypatch.setattr(CrossEntropy, "perturbation", counting)
    h = 2.0**-7
    report = sweep(Z, LABELS, steps=[h, 2.0**-20])
    assert len(calls) == 4 and all(shape == () for shape in calls), calls
    s = np.exp(Z - Z.max(axis=1, keepdims=True))
    s /= s.sum(axis=1, keepdims=True)

    def row_losses(z):
        return np.log(np.exp(z).sum(axis=1)) - z[np.arange(3), LABELS]

    numeric = np.stack([(row_losses(Z + h * e) - row_losses(Z - h * e)) / (2 * h) for e in np.eye(4)], axis=1)
    analytic = s - np.eye(4)[LABELS]
    expected = np.abs(analytic - numeric).max()
    rounding = 2 * np.finfo(float).eps * np.abs(row_losses(Z)).max() / h
    assert abs(report.points[0].max_abs_error - expected) <= rounding


def test_taylor_slopes_are_drawn_in_the_table_and_json(gradcheck):
    """Protects issue 15's 'draw them in sweep': a line per signed direction with its slope, and the slopes in
    JSON; a correct gradient's are within 0.1 of 2 (checks/taylor.py's analysis), forgot-1/N's fall to 1."""
    args = ["sweep", "-i", str(EXAMPLES / "batch.json"), "--impl"]
    good = json.loads(gradcheck(*args, f"{MY_SOFTMAX}:softmax_cross_entropy", "-f", "json").stdout)["taylor"]
    bad = json.loads(gradcheck(*args, f"{MY_SOFTMAX}:forgot_one_over_n", "-f", "json").stdout)["taylor"]
    assert len(good["directions"]) == 2 and len(good["steps"]) == 8
    assert all(abs(direction["slope"] - 2.0) <= 0.1 for direction in good["directions"]), good
    assert all(direction["slope"] < 1.9 for direction in bad["directions"]), bad
    table = gradcheck(*args, f"{MY_SOFTMAX}:forgot_one_over_n").stdout
    lines = [line for line in table.splitlines() if line.lstrip().startswith(("+v", "-v"))]
    assert len(lines) == 2 and all("slope" in line for line in lines), table
    assert "Taylor test of your loss with your gradient" in " ".join(table.split())


def test_github_annotates_each_failing_check_and_the_curve(gradcheck):
    """Protects point 3: -f github writes annotations (the user's failing checks and the curve), not a sentence."""
    run = gradcheck("sweep", "-i", str(EXAMPLES / "batch.json"), "--impl", f"{MY_SOFTMAX}:forgot_one_over_n",
                    "-f", "github")
    assert run.exit_code == 1, run
    lines = run.stdout.splitlines()
    assert any(line.startswith("::error ") and "impl gradient" in line for line in lines), run.stdout
    assert any(line.startswith("::error ") and "title=gradcheck sweep::your gradient looks WRONG" in line
               for line in lines), run.stdout
    assert lines[-1].startswith("default step ") and "looks WRONG" in lines[-1]


def test_a_non_finite_user_gradient_fails_with_strict_json(tmp_path, gradcheck):
    """A NaN in the user's gradient is an infinite error: exit 1, null in the JSON (never NaN), said plainly."""
    gradient = reference_gradient(Z[:1], [2])
    gradient[0, 1] = np.nan
    (tmp_path / "values.json").write_text(json.dumps(
        {"logits": Z[:1].tolist(), "labels": [2], "gradient": [[None if np.isnan(v) else v for v in gradient[0]]]}))
    run = gradcheck("sweep", "-i", str(tmp_path / "values.json"), "-f", "json")
    if run.exit_code == 2:  # the reader refuses a null in the gradient: then it says so in one line
        assert run.stderr.count("\n") == 1, run
        return
    assert run.exit_code == 1, run
    document = json.loads(run.stdout)
    assert document["steps"][0]["max_abs_error"] is None and "not finite" in document["verdict"]


def test_the_api_takes_arrays_and_functions():
    """sweep(gradient=...) and sweep(impl=callable) study the user's gradient as the command line does."""
    wrong = sweep(Z, LABELS, gradient=3.0 * reference_gradient(Z, LABELS))
    assert wrong.gradient == "supplied" and wrong.exit_code == 1
    right = sweep(Z, LABELS, gradient=reference_gradient(Z, LABELS))
    assert right.exit_code == 0, right.verdict

    def doubled(logits, targets):
        s = np.exp(logits - logits.max(axis=1, keepdims=True))
        s /= s.sum(axis=1, keepdims=True)
        loss = -np.mean(np.log((s * targets).sum(axis=1)))
        return loss, 2.0 * (s - targets) / logits.shape[0]

    report = sweep(Z, LABELS, impl=doubled)
    assert report.gradient == "impl" and report.exit_code == 1
    with pytest.raises(AssertionError, match="your gradient looks WRONG"):
        report.assert_ok()


def test_ndjson_is_refused_by_sweep(gradcheck):
    """Protects point 3's choice: sweep has no rows to stream, so -f ndjson is not offered (exit 2)."""
    run = gradcheck("sweep", "--logits", "1,2", "--labels", "0", "-f", "ndjson")
    assert run.exit_code == 2 and "ndjson" in run.stderr, run
    assert "ndjson" not in gradcheck("sweep", "--help").stdout


def test_a_loss_option_the_api_cannot_convert_is_refused_never_dropped():
    """sweep(z_loss=...) and explain(z_loss=...) either take the option (the derivation and the curve then change)
    or refuse it by name: a dropped option would study another loss and could pass."""
    from gradcheck_cli import InputError, explain
    from gradcheck_cli.api import keywords

    if "z_loss" not in keywords.SETTINGS_KEYWORDS:
        for function in (sweep, explain):
            with pytest.raises(InputError, match=r"z_loss= \(--z-loss\)"):
                function(Z, LABELS, z_loss=0.1)
        return
    assert explain(Z, LABELS, z_loss=0.1).loss != explain(Z, LABELS).loss
    assert sweep(Z, LABELS, z_loss=0.1).points[0].max_abs_error != sweep(Z, LABELS).points[0].max_abs_error


def test_a_mean_over_no_rows_is_refused_as_check_refuses_it(gradcheck):
    """Every row ignored: the mean divides by 0. sweep exited 3 (ZeroDivisionError); it says what check says."""
    words = ("--logits", "1,2", "--labels", "0", "--ignore-index", "0")
    run, checked = gradcheck("sweep", *words), gradcheck("check", *words)
    assert run.exit_code == checked.exit_code == 2, run
    assert run.stderr == checked.stderr and run.stderr.count("\n") == 1, run
