"""--grad-output: the upstream gradient g, the reference sum_n g_n grad l_n, and the checks held to it.

The reference values here are computed independently of gradcheck's code: the softmax cross-entropy gradient
by hand (s - y, MATH.md), times g_n, in numpy float64.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

LOGITS = np.array([[1.1, 2.2, 0.2, -1.7], [1.0, 2.0, 3.0, 0.5], [-2.0, 0.5, 0.1, 4.0]])
LABELS = [2, 1, 3]


def row_gradients(logits: np.ndarray, labels: list[int]) -> np.ndarray:
    """grad l_n = s_n - y_n for each row (hand derivation, MATH.md)."""
    s = np.exp(logits - logits.max(1, keepdims=True))
    s /= s.sum(1, keepdims=True)
    return s - np.eye(logits.shape[1])[labels]


def checks_of(run) -> dict[str, dict]:
    return {check["name"]: check for check in json.loads(run.stdout)["checks"]}


def supplied(tmp_path: Path, gradient: np.ndarray) -> str:
    path = tmp_path / "dump.json"
    path.write_text(json.dumps({"logits": LOGITS.tolist(), "labels": LABELS, "gradient": gradient.tolist()}))
    return str(path)


def test_the_upstream_gradient_is_ones_random_from_the_seed_or_the_values_given():
    """ones by default; random is uniform in [0.5, 2), the same for the same seed and different for another;
    a file's values as given, their count checked against the reduction."""
    from gradcheck_cli.errors import InputError
    from gradcheck_cli.numerics.losses.base import upstream_gradient
    from gradcheck_cli.settings import Settings

    none = Settings(reduction="none")
    assert np.array_equal(upstream_gradient(none, 3), np.ones(3))
    assert upstream_gradient(Settings(), 3).shape == ()
    drawn = upstream_gradient(none._replace(grad_output="random", seed=7), 1000)
    assert np.array_equal(drawn, np.random.default_rng(7).uniform(0.5, 2.0, 1000))
    assert drawn.min() >= 0.5 and drawn.max() < 2.0 and np.unique(drawn).size == 1000
    assert not np.array_equal(drawn, upstream_gradient(none._replace(grad_output="random", seed=8), 1000))
    assert np.array_equal(upstream_gradient(none._replace(grad_output=(0.5, 1.5, 2.0)), 3), [0.5, 1.5, 2.0])
    with pytest.raises(InputError, match="--grad-output: 3 values; --reduction none takes one per row"):
        upstream_gradient(none._replace(grad_output=(0.5, 1.5, 2.0)), 4)


def test_a_supplied_gradient_is_checked_against_sum_of_g_n_grad_l_n(gradcheck, tmp_path):
    """With --grad-output FILE the reference gradient of reduction none is g_n (s_n - y_n): that gradient passes,
    the unweighted one fails, its worst element off by the factor g_n, with the hand-computed expected value."""
    g = np.array([0.5, 1.5, 2.0])
    (tmp_path / "g.txt").write_text("0.5, 1.5\n2.0\n")
    weighted = row_gradients(LOGITS, LABELS) * g[:, None]
    run = gradcheck("check", "-i", supplied(tmp_path, weighted), "--reduction", "none",
                    "--grad-output", str(tmp_path / "g.txt"), "-f", "json")
    assert run.exit_code == 0, run
    assert checks_of(run)["supplied gradient"]["max_rel_error"] < 1e-12
    plain = supplied(tmp_path, row_gradients(LOGITS, LABELS))
    run = gradcheck("check", "-i", plain, "--reduction", "none", "--grad-output", str(tmp_path / "g.txt"), "-f", "json")
    assert run.exit_code == 1, run
    worst = checks_of(run)["supplied gradient"]["worst"]
    row, column = worst["row"], worst["column"]
    assert worst["expected"] == pytest.approx(weighted[row, column], rel=1e-12, abs=0)
    assert worst["actual"] == pytest.approx(weighted[row, column] / g[row], rel=1e-12, abs=0)


def test_a_scalar_upstream_gradient_multiplies_the_whole_gradient(gradcheck, tmp_path):
    """--reduction sum with g = 0.25: the supplied 0.25 sum_n grad l_n passes; a file of two numbers is exit 2."""
    (tmp_path / "g.txt").write_text("0.25")
    gradient = 0.25 * row_gradients(LOGITS, LABELS)
    run = gradcheck("check", "-i", supplied(tmp_path, gradient), "--reduction", "sum", "--grad-output",
                    str(tmp_path / "g.txt"), "-f", "json")
    assert run.exit_code == 0, run
    (tmp_path / "two.txt").write_text("1 2")
    run = gradcheck("check", "-i", supplied(tmp_path, gradient), "--reduction", "sum", "--grad-output",
                    str(tmp_path / "two.txt"))
    assert run.exit_code == 2 and run.stdout == "", run
    assert run.stderr == "gradcheck: error: --grad-output: 2 values; --reduction sum takes one number\n", run


@pytest.mark.parametrize(("content", "message"), [
    (None, "No such file or directory"),
    ("1, x", "'x' is not a number"),
    ("1 nan", "'nan' is not a finite number"),
    ("", "expected finite numbers"),
])
def test_a_bad_grad_output_file_is_one_line_exit_2(gradcheck, tmp_path, content, message):
    path = tmp_path / "g.txt"
    if content is not None:
        path.write_text(content)
    run = gradcheck("check", "--logits", "1,2,3", "--labels", "1", "--grad-output", str(path))
    assert run.exit_code == 2 and run.stdout == "", run
    assert len(run.stderr.splitlines()) == 1 and message in run.stderr, run


BROADCAST = """
import numpy as np

def _rows(z, labels):
    s = np.exp(z - z.max(1, keepdims=True))
    s /= s.sum(1, keepdims=True)
    return -np.log(s[np.arange(len(z)), labels]), s - np.eye(z.shape[1])[labels]

def correct(logits, labels, grad_output):
    losses, gradient = _rows(logits, labels)
    return losses, gradient * grad_output[:, None]

def first_only(logits, labels, grad_output):
    # Liger-Kernel #968: grad_output loaded as a scalar, its first element used for every row
    losses, gradient = _rows(logits, labels)
    return losses, gradient * grad_output[0]
"""


def test_a_backward_that_broadcasts_grad_output_0_fails_by_default(gradcheck, tmp_path):
    """--reduction none with --impl draws a random g by default (seed in the report): a backward that multiplies
    every row by g_0 fails 'impl gradient', at a row other than 0, with expected g_n grad l_n computed here; the
    correct one passes. With --grad-output ones the bug is invisible, which is why the default is random."""
    (tmp_path / "kernel.py").write_text(BROADCAST)
    args = ("check", "--logits", "1.1,2.2,0.2,-1.7", "--logits", "1,2,3,0.5", "--logits", "-2,0.5,0.1,4",
            "--labels", "2,1,3", "--reduction", "none", "-f", "json")
    run = gradcheck(*args, "--impl", f"{tmp_path}/kernel.py:correct")
    assert run.exit_code == 0, run
    report = json.loads(run.stdout)
    assert report["settings"]["grad_output"] == "random" and report["settings"]["seed"] == 0
    run = gradcheck(*args, "--impl", f"{tmp_path}/kernel.py:first_only")
    assert run.exit_code == 1, run
    worst = checks_of(run)["impl gradient"]["worst"]
    g = np.random.default_rng(0).uniform(0.5, 2.0, 3)
    expected = row_gradients(LOGITS, LABELS) * g[:, None]
    assert worst["row"] != 0
    assert worst["expected"] == pytest.approx(expected[worst["row"], worst["column"]], rel=1e-12, abs=0)
    assert worst["actual"] == pytest.approx(expected[worst["row"], worst["column"]] * g[0] / g[worst["row"]], rel=1e-12)
    seeded = gradcheck(*args, "--impl", f"{tmp_path}/kernel.py:first_only", "--seed", "5")
    assert json.loads(seeded.stdout)["settings"]["seed"] == 5 and seeded.exit_code == 1, seeded
    ones = gradcheck(*args, "--impl", f"{tmp_path}/kernel.py:first_only", "--grad-output", "ones")
    assert ones.exit_code == 0, ones


def test_a_function_that_takes_no_grad_output_is_checked_against_the_plain_sum(gradcheck, tmp_path):
    """A (loss, gradient) function with no grad_output parameter cannot have used g: its gradient is held to
    the plain sum (g = 1) and a note says so, rather than failing a correct function."""
    (tmp_path / "rows.py").write_text(
        "import numpy as np\n"
        "def f(z, t):\n"
        "    m = z.max(1, keepdims=True); ls = z - m - np.log(np.exp(z - m).sum(1, keepdims=True))\n"
        "    return -(t * ls).sum(1), np.exp(ls) - t\n"
    )
    run = gradcheck("check", "--logits", "1,2,3", "--logits", "3,1,0", "--labels", "0,2", "--reduction", "none",
                    "--impl", f"{tmp_path}/rows.py:f", "-f", "json")
    assert run.exit_code == 0, run
    assert any("takes no grad_output parameter" in note for note in json.loads(run.stdout)["notes"]), run
