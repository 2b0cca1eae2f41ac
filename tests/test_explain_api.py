# ruff: noqa: RUF001  # the derivation writes real minus signs, as tests/test_explain.py reads them
"""explain() in the Python API (issue 16), and `gradcheck explain`'s -f json, -q, --no-color and 0-based classes
(issue 17 points 7 and 9), in time and memory O(C) (issue 13).

The numbers are checked against the definitions (MATH.md) computed here with numpy, to 1e-12 in float64: each is
a handful of operations on values of size <= 10, so its rounding is a few eps (1e-15), far inside that.
"""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gradcheck_cli import Explanation, InputError, explain
from gradcheck_cli.batch import Batch
from gradcheck_cli.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
Z = [1.1, 2.2, 0.2, -1.7]
FIRST = ["--logits", "1.1,2.2,0.2,-1.7", "--labels", "2"]
SGR = re.compile(r"\x1b\[[0-9;]*m")


def test_the_numbers_of_each_step_are_the_definitions():
    """Protects explain()'s plain data: s = e^z / sum e^z, J_ij = s_i (delta_ij - s_j), L = -log s_y, dL/dz = s - y."""
    explained = explain([Z], labels=[2])
    assert isinstance(explained, Explanation)
    z = np.array(Z)
    s = np.exp(z) / np.exp(z).sum()
    jacobian = np.diag(s) - np.outer(s, s)
    np.testing.assert_allclose(explained.probabilities, s, rtol=0, atol=1e-12)
    np.testing.assert_allclose(explained.jacobian_rows, jacobian, rtol=0, atol=1e-12)  # 4 classes: every row
    np.testing.assert_allclose(explained.jacobian_diagonal, np.diag(jacobian), rtol=0, atol=1e-12)
    assert explained.loss == pytest.approx(-np.log(s[2]), abs=1e-12)
    np.testing.assert_allclose(explained.gradient, s - np.eye(4)[2], rtol=0, atol=1e-12)
    assert explained.maximum == 2.2 and explained.classes == 4


def test_a_wide_row_keeps_two_jacobian_rows_and_the_temperature_divides_z():
    """Past 6 classes two rows of J are kept (O(C)); with T the derivation is of softmax(z / T)."""
    z = np.linspace(-3.0, 4.0, 9)
    explained = explain(z, labels=[1], temperature=2.0)
    u = z / 2.0
    s = np.exp(u - u.max()) / np.exp(u - u.max()).sum()
    assert explained.jacobian_rows.shape == (2, 9)
    np.testing.assert_allclose(explained.jacobian_rows, (np.diag(s) - np.outer(s, s))[:2], rtol=0, atol=1e-12)
    np.testing.assert_allclose(explained.gradient, s - np.eye(9)[1], rtol=0, atol=1e-12)  # by z / T
    assert explained.lines[1].startswith("(--temperature 2:")


def test_the_api_and_the_command_print_the_same_lines_and_json(gradcheck):
    """explain() is the command's derivation: the same lines as stdout, the same document as -f json."""
    run = gradcheck("explain", "--logits", "1,2,3", "--logits", "3,1,0", "--labels", "0,2", "--row", "1")
    assert run.exit_code == 0, run
    explained = explain([[1, 2, 3], [3, 1, 0]], labels=[0, 2], row=1)
    assert run.stdout.splitlines() == explained.lines
    as_json = gradcheck("explain", "--logits", "1,2,3", "--logits", "3,1,0", "--labels", "0,2", "--row", "1",
                        "-f", "json")
    assert as_json.exit_code == 0, as_json
    assert json.loads(as_json.stdout) == json.loads(json.dumps(explained.to_dict()))


def test_json_has_the_numbers_and_the_lines(gradcheck):
    """Protects point 9's -f json: the numbers of each step (0-based, as check's JSON) and the lines."""
    run = gradcheck("explain", *FIRST, "-f", "json")
    assert run.exit_code == 0 and run.stderr == "", run
    document = json.loads(run.stdout)
    assert document["command"] == "explain" and document["row"] == 0
    z = np.array(Z)
    s = np.exp(z) / np.exp(z).sum()
    np.testing.assert_allclose(document["probabilities"], s, rtol=0, atol=1e-12)
    np.testing.assert_allclose(document["gradient"], s - np.eye(4)[2], rtol=0, atol=1e-12)
    assert document["loss"] == pytest.approx(-np.log(s[2]), abs=1e-12)
    assert "   s_2 = 0.135 / 1.49 = 0.0909" in document["lines"]


def test_quiet_prints_the_loss_and_gradient_on_one_line(gradcheck):
    """Protects point 9's -q: one line, the sample's loss and gradient (classes from 0)."""
    run = gradcheck("explain", *FIRST, "-q")
    assert run.exit_code == 0, run
    assert run.stdout == "sample 0: L = 2.40; ∂L/∂z = (0.224, 0.672, −0.909, 0.0136)\n"


def test_no_color_wins_over_color_always(gradcheck):
    """Protects point 9's --no-color: the headings are bold with --color always, plain with --no-color."""
    coloured = gradcheck("explain", *FIRST, "--color", "always")
    assert SGR.search(coloured.stdout), coloured
    plain = gradcheck("explain", *FIRST, "--color", "always", "--no-color")
    assert not SGR.search(plain.stdout) and plain.stdout == SGR.sub("", coloured.stdout)


def test_classes_are_numbered_as_check_numbers_them(gradcheck):
    """Protects point 7: check's 'class 2' (the label here) is explain's s_2 and dL/dz_2."""
    run = gradcheck("explain", *FIRST)
    assert "classes numbered 0 to 3" in run.stdout
    assert "   ∂L/∂z_2 = 0.0909 − 1.00 = −0.909" in run.stdout.splitlines()
    assert "s_4" not in run.stdout and "z_4" not in run.stdout


@pytest.mark.parametrize("row, message", [(2, "--row 2: the input has 1 row (0 to 0)"),
                                          (-1, "Invalid value for '--row': -1 is not in the range x>=0.")])
def test_a_bad_row_is_refused_in_the_command_lines_words(gradcheck, row, message):
    run = gradcheck("explain", "--logits", "1,2", "--labels", "0", "--row", str(row))
    assert run.exit_code == 2 and message in run.stderr, run
    with pytest.raises(InputError) as raised:
        explain([1, 2], labels=[0], row=row)
    assert str(raised.value) == message


def test_every_option_is_a_keyword_with_its_default():
    """Each option of `gradcheck explain` is a keyword of explain() with the same default (the output options
    have none: the Explanation is the API's output)."""
    from gradcheck_cli.commands.explain import explain as command

    options = {max(p.opts, key=len).lstrip("-").replace("-", "_"): p.default for p in command.params}
    options = {k: v for k, v in options.items() if k not in {"format", "color", "no_color", "quiet", "verbose"}}
    parameters = inspect.signature(explain).parameters
    assert set(options) == set(parameters)
    for name, parameter in parameters.items():
        if isinstance(options[name], str | int | float):  # click's 'unset' sentinel is no default
            assert parameter.default == options[name], name


def test_explain_of_50257_classes_stays_in_o_of_c_memory(tmp_path):
    """Protects issue 13's explain row: 8 x 50,257 took 19.4 GB (the C x C Jacobian). Two rows of 50,257 (the
    row count only adds input): the peak, the child's own VmHWM, must stay within 300 MB, where one C x C matrix
    is 20 GB (the interpreter, numpy, the parse and the 15 MB of printed text take about 150 MB). Not getrusage:
    Linux keeps ru_maxrss across exec, so the child would report this pytest process's size (422 MB in CI,
    where earlier tests had imported torch)."""
    rng = np.random.default_rng(5)
    path = tmp_path / "n2_c50257.json"
    path.write_text(json.dumps({"logits": rng.normal(scale=3, size=(2, 50_257)).round(4).tolist(),
                                "labels": rng.integers(0, 50_257, size=2).tolist()}))
    script = ("import sys\nfrom gradcheck_cli.cli import main\n"
              "try:\n    main(['explain', '-i', sys.argv[1], '--row', '1'])\nexcept SystemExit as done:\n"
              "    code = done.code\n"
              "peak = next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM:'))\n"
              "print(code, peak, file=sys.stderr)\n")
    run = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=False)
    code, peak_kb = run.stderr.split()[-2:]
    assert code == "0", run.stderr
    assert int(peak_kb) < 300 * 1024, f"peak {int(peak_kb) / 1024:.0f} MB"
    assert run.stdout.count("\n") > 4 * 50_257  # every class's lines were printed (s, diagonal, 2 rows, gradient)


@pytest.mark.parametrize(("settings", "teacher"), [
    (Settings(softcap=1.7, temperature=2.0, reduction="sum"), None),
    (Settings(logit_scale=0.6, softcap=3.0, temperature=0.5, reduction="sum"), None),
    (Settings(loss="kl", temperature=2.0, reduction="sum"), np.array([[0.2, 1.0, -1.0, 0.5]])),
    (Settings(loss="jsd", beta=0.3, temperature=3.0, reduction="sum"), np.array([[0.2, 1.0, -1.0, 0.5]])),
])
def test_explain_at_a_temperature_derives_the_checked_loss(settings, teacher):
    """explain builds at T = 1 on z / T: the teacher's logits must be divided by T and a soft cap c become c / T,
    or the derivation shows another loss than check's (the teacher at T = 1, tanh of z / T capped at c)."""
    from gradcheck_cli.api.explaining import explain_batch
    from gradcheck_cli.numerics.losses import accepted_kind

    logits = np.array([[1.5, -0.3, 2.2, 0.1]])
    batch = (Batch(logits, np.array([2]), np.eye(4)[[2]]) if teacher is None
             else Batch(logits, None, np.zeros((1, 4)), teacher_logits=teacher))
    explained = explain_batch(batch, settings)
    checked = accepted_kind(settings).build(batch, settings, np.dtype(np.float64))
    np.testing.assert_allclose(explained.gradient / settings.temperature, checked.row_gradients(logits)[0],
                               rtol=1e-12, atol=1e-15)
    assert explained.loss == pytest.approx(float(checked.row_losses(logits)[0]), rel=1e-12)
