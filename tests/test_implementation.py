"""Checking a user's own implementation: --impl, supplied values, and the classic slips they must catch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "my_softmax.py"
BATCH = str(ROOT / "examples" / "batch.json")


def impl(name: str) -> str:
    return f"{EXAMPLE}:{name}"


def checks_of(run) -> dict[str, dict]:
    return {check["name"]: check for check in json.loads(run.stdout)["checks"]}


def test_a_correct_implementation_passes_every_check(gradcheck):
    run = gradcheck("check", "-i", BATCH, "--impl", impl("softmax_cross_entropy"), "-f", "json")
    assert run.exit_code == 0, run
    assert set(checks_of(run)) == {"gradient", "jacobian", "impl loss", "impl gradient",
                                   "impl gradient vs its own loss", "impl determinism"}


@pytest.mark.parametrize(
    ("function", "loss", "failing"),
    [
        ("forgot_one_over_n", "cross_entropy", {"impl gradient", "impl gradient vs its own loss"}),
        ("mse_factor_two", "mse", {"impl gradient", "impl gradient vs its own loss"}),
        ("naive_softmax_cross_entropy", "cross_entropy",
         {"impl loss", "impl gradient", "impl gradient vs its own loss"}),
    ],
)
def test_each_classic_slip_fails_and_names_its_worst_element(gradcheck, function, loss, failing):
    run = gradcheck("check", "-i", BATCH, "--loss", loss, "--impl", impl(function), "-f", "json")
    assert run.exit_code == 1, run
    checks = checks_of(run)
    assert {name for name, check in checks.items() if not check["passed"]} == failing
    gradient = checks["impl gradient"]
    assert gradient["worst"]["row"] is not None and gradient["worst"]["column"] is not None


def test_the_slip_is_named_in_table_mode(gradcheck):
    run = gradcheck("check", "-i", BATCH, "--impl", impl("forgot_one_over_n"))
    assert run.exit_code == 1, run
    assert run.stdout.rstrip().splitlines()[-1].startswith("FAIL: impl gradient disagrees at row "), run.stdout


def test_overflow_in_a_naive_softmax_is_a_failed_check_and_strict_json(gradcheck):
    run = gradcheck("check", "--logits", "800,0,-3", "--labels", "0",
                    "--impl", impl("naive_softmax_cross_entropy"), "-f", "json")
    assert run.exit_code == 1, run
    assert "NaN" not in run.stdout and "Infinity" not in run.stdout
    assert checks_of(run)["impl loss"]["max_abs_error"] is None


def test_own_loss_check_catches_a_wrong_derivative_of_a_deliberately_different_loss(gradcheck, tmp_path):
    """The loss differs from ours on purpose (times 3), the gradient is consistent with it: only the
    reference checks fail. Then the gradient is wrong for its own loss: the own-loss check fails too."""
    (tmp_path / "scaled.py").write_text(
        "import numpy as np\n"
        "def _parts(z, t):\n"
        "    s = np.exp(z - z.max(1, keepdims=True)); s /= s.sum(1, keepdims=True)\n"
        "    return -(t * np.log(s)).sum() / len(z), (s - t) / len(z)\n"
        "def consistent(z, t):\n"
        "    loss, grad = _parts(z, t)\n"
        "    return 3 * loss, 3 * grad\n"
        "def inconsistent(z, t):\n"
        "    loss, grad = _parts(z, t)\n"
        "    return 3 * loss, grad\n"
    )
    consistent = gradcheck("check", "--logits", "1,2,3", "--labels", "1", "--impl", f"{tmp_path}/scaled.py:consistent",
                           "-f", "json")
    assert checks_of(consistent)["impl gradient vs its own loss"]["passed"] is True
    assert checks_of(consistent)["impl loss"]["passed"] is False
    inconsistent = gradcheck("check", "--logits", "1,2,3", "--labels", "1",
                             "--impl", f"{tmp_path}/scaled.py:inconsistent", "-f", "json")
    assert checks_of(inconsistent)["impl gradient vs its own loss"]["passed"] is False


def test_reduction_none_differences_every_row_at_once(gradcheck, tmp_path):
    (tmp_path / "rows.py").write_text(
        "import numpy as np\n"
        "def f(z, t):\n"
        "    m = z.max(1, keepdims=True); ls = z - m - np.log(np.exp(z - m).sum(1, keepdims=True))\n"
        "    return -(t * ls).sum(1), np.exp(ls) - t\n"
    )
    run = gradcheck("check", "-i", BATCH, "--reduction", "none", "--impl", f"{tmp_path}/rows.py:f", "-f", "json")
    assert run.exit_code == 0, run


def test_nondeterminism_fails(gradcheck, tmp_path):
    (tmp_path / "noisy.py").write_text(
        "import numpy as np\n"
        "rng = np.random.default_rng()\n"
        "def f(z, t):\n"
        "    s = np.exp(z - z.max(1, keepdims=True)); s /= s.sum(1, keepdims=True)\n"
        "    loss = -(t * np.log(s)).sum() / len(z)\n"
        "    return loss, (s - t) / len(z) + rng.normal(0, 1e-12, z.shape)\n"
    )
    run = gradcheck("check", "--logits", "1,2,3", "--labels", "1", "--impl", f"{tmp_path}/noisy.py:f", "-f", "json")
    assert run.exit_code == 1, run
    assert checks_of(run)["impl determinism"]["passed"] is False


def test_the_module_form_imports_from_the_current_directory(tmp_path, monkeypatch):
    (tmp_path / "mine.py").write_text(EXAMPLE.read_text())
    result = subprocess.run([sys.executable, "-m", "gradcheck_cli", "check", "--logits", "1,2,3", "--labels", "2",
                             "--impl", "mine:softmax_cross_entropy", "-q"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr


def test_the_users_prints_do_not_reach_stdout(gradcheck, tmp_path):
    (tmp_path / "chatty.py").write_text(
        "import numpy as np\n"
        "def f(z, t):\n"
        "    print('debugging!')\n"
        "    s = np.exp(z - z.max(1, keepdims=True)); s /= s.sum(1, keepdims=True)\n"
        "    return -(t * np.log(s)).sum() / len(z), (s - t) / len(z)\n"
    )
    run = gradcheck("check", "--logits", "1,2,3", "--labels", "1", "--impl", f"{tmp_path}/chatty.py:f", "-f", "json")
    assert run.exit_code == 0, run
    json.loads(run.stdout)
    assert "debugging!" in run.stderr


BAD_IMPLS = {
    "syntax.py": ("def f(:\n", "f", "cannot import"),
    "noattr.py": ("x = 1\n", "f", "has no attribute 'f'"),
    "notcallable.py": ("f = 3\n", "f", "is not callable"),
    "one.py": ("def f(z, t):\n    return 1.0\n", "f", "must return (loss, gradient)"),
    "shape.py": ("import numpy as np\ndef f(z, t):\n    return 1.0, np.zeros(3)\n", "f", "the gradient must be 1 x 3"),
    "vector_loss.py": ("import numpy as np\ndef f(z, t):\n    return np.zeros(2), np.zeros_like(z)\n", "f",
                       "the loss must be one number"),
    "strings.py": ("def f(z, t):\n    return 'a', 'b'\n", "f", "must be numbers"),
    "raises.py": ("def f(z, t):\n    raise ValueError('nope')\n", "f", "raised ValueError: nope"),
}


@pytest.mark.parametrize("name", list(BAD_IMPLS))
def test_a_broken_implementation_is_an_input_error(gradcheck, tmp_path, name):
    source, attribute, message = BAD_IMPLS[name]
    (tmp_path / name).write_text(source)
    run = gradcheck("check", "--logits", "1,2,3", "--labels", "1", "--impl", f"{tmp_path}/{name}:{attribute}")
    assert run.exit_code == 2, run
    assert len(run.stderr.splitlines()) == 1 and message in run.stderr, run
    assert run.stdout == ""


@pytest.mark.parametrize(("spec", "message"), [("nosuchmodule_xyz:f", "cannot import nosuchmodule_xyz"),
                                               ("nocolon", "expected MODULE:FUNCTION"),
                                               ("missing/file.py:f", "no such file")])
def test_bad_impl_specs(gradcheck, spec, message):
    run = gradcheck("check", "--logits", "1,2,3", "--labels", "1", "--impl", spec)
    assert run.exit_code == 2, run
    assert message in run.stderr, run


# --- supplied values ---------------------------------------------------------------------------------------


def dump(tmp_path, **values) -> str:
    document = {"logits": [[1.1, 2.2, 0.2, -1.7], [1.0, 2.0, 3.0, 0.5]], "labels": [2, 1], **values}
    path = tmp_path / "dump.json"
    path.write_text(json.dumps(document))
    return str(path)




def test_supplied_values_are_each_their_own_check(gradcheck, tmp_path):
    reference = json.loads(gradcheck("check", "-i", dump(tmp_path), "-f", "json").stdout)
    path = dump(tmp_path, probabilities=reference["probabilities"], jacobian=reference["jacobian"],
                loss=reference["loss"], gradient=reference["gradient"]["analytic"])
    run = gradcheck("check", "-i", path, "-f", "json")
    assert run.exit_code == 0, run
    assert {"supplied probabilities", "supplied jacobian", "supplied loss", "supplied gradient"} <= set(checks_of(run))


def test_a_wrong_supplied_gradient_fails_and_names_its_worst_element(gradcheck, tmp_path):
    reference = json.loads(gradcheck("check", "-i", dump(tmp_path), "-f", "json").stdout)
    gradient = reference["gradient"]["analytic"]
    gradient[1][2] = -gradient[1][2]  # the sign slip, on one element
    run = gradcheck("check", "-i", dump(tmp_path, gradient=gradient), "-f", "json")
    assert run.exit_code == 1, run
    worst = checks_of(run)["supplied gradient"]["worst"]
    assert (worst["row"], worst["column"]) == (1, 2)


def test_null_in_supplied_values_is_a_failed_check(gradcheck, tmp_path):
    run = gradcheck("check", "-i", dump(tmp_path, loss=None), "-f", "json")
    assert run.exit_code == 1, run
    assert checks_of(run)["supplied loss"]["passed"] is False


def test_csv_users_supply_a_gradient_file_and_a_loss_value(gradcheck, tmp_path):
    reference = json.loads(gradcheck("check", "-i", str(ROOT / "examples" / "batch.csv"), "-f", "json").stdout)
    grad_file = tmp_path / "grad.csv"
    grad_file.write_text("\n".join(",".join(repr(v) for v in row) for row in reference["gradient"]["analytic"]))
    run = gradcheck("check", "-i", str(ROOT / "examples" / "batch.csv"), "--grad-file", str(grad_file),
                    "--loss-value", repr(reference["loss"]), "-f", "json")
    assert run.exit_code == 0, run
    assert {"supplied gradient", "supplied loss"} <= set(checks_of(run))
    wrong = gradcheck("check", "-i", str(ROOT / "examples" / "batch.csv"), "--grad-file", str(grad_file),
                      "--loss-value", repr(reference["loss"] * 2))
    assert wrong.exit_code == 1 and "FAIL: supplied loss disagrees" in wrong.stdout, wrong


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"gradient": [[1, 2]]}, "the supplied gradient is 1 x 2; for 2 x 4 logits it must be 2 x 4"),
        ({"probabilities": [[0.1, 0.2, 0.3, "x"], [0, 0, 0, 0]]}, 'probabilities[0][3]: expected a number, got "x"'),
        ({"loss": [1, 2, 3]}, "3 loss values"),
        ({"jacobian": [[[1, 2], [3, 4]]]}, "the supplied jacobian is 1 x 2 x 2"),
    ],
)
def test_misshapen_supplied_values_are_input_errors(gradcheck, tmp_path, values, message):
    run = gradcheck("check", "-i", dump(tmp_path, **values))
    assert run.exit_code == 2, run
    assert message in run.stderr, run


def test_a_single_loss_for_reduction_none_is_an_input_error(gradcheck, tmp_path):
    run = gradcheck("check", "-i", dump(tmp_path, loss=1.0), "--reduction", "none")
    assert run.exit_code == 2 and "--reduction none gives one per row" in run.stderr, run


# --- loss option errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--weights", "1,2"], "--weights: 2 weights for 3 classes"),
        (["--weights", "1,-2,1"], "'--weights'"),
        (["--weights", "1,nan,1"], "'--weights'"),
        (["--label-smoothing", "1.5"], "must be <= 1"),
        (["--label-smoothing", "-0.1"], "must be >= 0"),
        (["--temperature", "0"], "must be > 0"),
        (["--temperature", "inf"], "not a finite number"),
        (["--loss", "hinge"], "'--loss'"),
        (["--loss", "mse", "--weights", "1,1,1"], "apply to cross_entropy, not mse"),
        (["--ignore-index", "x"], "'--ignore-index'"),
        (["--reduction", "mean", "--ignore-index", "1"], "the mean divides by the summed weights"),
    ],
)
def test_loss_option_errors(gradcheck, args, message):
    run = gradcheck("check", "--logits", "1,2,3", "--labels", "1", *args)
    assert run.exit_code == 2, run
    assert len(run.stderr.splitlines()) == 1 and message in run.stderr, run


def test_ignore_index_with_targets_is_refused(gradcheck):
    run = gradcheck("check", "--logits", "1,2,3", "--targets", "0,1,0", "--ignore-index", "1")
    assert run.exit_code == 2 and "applies to class labels" in run.stderr, run


def test_an_ignored_label_may_be_out_of_range(gradcheck):
    run = gradcheck("check", "--logits", "1,2,3", "--logits", "3,2,1", "--labels", "-100,0", "--ignore-index",
                    "-100", "-f", "json")
    assert run.exit_code == 0, run
    report = json.loads(run.stdout)
    assert report["gradient"]["analytic"][0] == [0.0, 0.0, 0.0]


# --- CI recipes ------------------------------------------------------------------------------------------------


def _bash(command: str, cwd: Path) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", command], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_the_readme_actions_step_gates_on_the_impl(tmp_path):
    import re
    import shutil

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    step = re.search(r"run: (gradcheck check [^\n]*--impl [^\n]*jq -e \.passed)", readme)
    assert step, "the README's Actions step for --impl"
    if shutil.which("jq") is None:
        pytest.skip("jq is not installed")
    assert _bash(step[1], ROOT).returncode == 0
    broken = _bash(step[1].replace("softmax_cross_entropy", "forgot_one_over_n"), ROOT)
    assert broken.returncode == 1, broken  # gradcheck's exit 1 survives the pipe under pipefail


def test_the_pre_commit_hook_runs_as_declared(tmp_path):
    """Run the hook's entry the way pre-commit does: the entry, then the hook's args, then the file names."""
    declared = (ROOT / ".pre-commit-hooks.yaml").read_text(encoding="utf-8")
    entry = next(line.split(":", 1)[1].strip() for line in declared.splitlines() if line.strip().startswith("entry:"))
    good = tmp_path / "good.json"
    good.write_text((ROOT / "examples" / "batch.json").read_text())
    bad = tmp_path / "bad.json"
    dumped = _bash(f"python {EXAMPLE} {good} --bug forgot-1/N", tmp_path)
    bad.write_text(dumped.stdout)
    assert _bash(f"{entry} --reduction mean {good.name}", tmp_path).returncode == 0
    failed = _bash(f"{entry} {good.name} {bad.name}", tmp_path)
    assert failed.returncode == 1, failed
    assert "bad.json: FAIL: supplied gradient disagrees" in failed.stdout
