"""Checking a user's own implementation: --impl, supplied values, and the classic slips they must catch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
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
                                   "impl gradient vs its own loss", "impl determinism", "impl taylor"}


@pytest.mark.parametrize(
    ("function", "loss", "failing"),
    [
        ("forgot_one_over_n", "cross_entropy", {"impl gradient", "impl gradient vs its own loss", "impl taylor"}),
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


def _refuse(token: str) -> None:
    raise AssertionError(f"{token} in strict JSON")


def test_overflow_in_a_naive_softmax_is_a_failed_check_and_strict_json(gradcheck):
    run = gradcheck("check", "--logits", "800,0,-3", "--labels", "0",
                    "--impl", impl("naive_softmax_cross_entropy"), "-f", "json")
    assert run.exit_code == 1, run
    json.loads(run.stdout, parse_constant=_refuse)  # strict JSON: no NaN or Infinity token (text may say NaN)
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


# --- what the function returns, and the precision it computes in ------------------------------------------------

FLOAT32_CE = """
import numpy as np

def float32(z, t):
    z = z.astype(np.float32)
    t = t.astype(np.float32)
    m = z.max(1, keepdims=True)
    ls = z - m - np.log(np.exp(z - m).sum(1, keepdims=True))
    n = np.float32(len(z))
    return -(t * ls).sum() / n, (np.exp(ls) * t.sum(1, keepdims=True) - t) / n

def cast_back(z, t):
    loss, gradient = float32(z, t)
    return float(loss), gradient.astype(np.float64)

def forgot_one_over_n(z, t):
    loss, gradient = float32(z, t)
    return loss, gradient * np.float32(len(z))

def wrong_sign(z, t):
    loss, gradient = float32(z, t)
    return loss, -gradient
"""


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("function", ["float32", "cast_back"])
def test_a_correct_float32_implementation_passes_its_own_loss_check(gradcheck, tmp_path, dtype, function):
    """Its float32 loss did not change at float64's step (difference 0), and the allowance used float64's epsilon:
    a correct float32 function always failed 'impl gradient vs its own loss'. Values cast back to float64 are
    recognised as float32 too."""
    (tmp_path / "mine.py").write_text(FLOAT32_CE)
    run = gradcheck("check", "-i", BATCH, "--dtype", dtype, "--impl", f"{tmp_path}/mine.py:{function}", "-f", "json")
    checks = checks_of(run)
    assert checks["impl gradient vs its own loss"]["passed"] is True, run
    assert "--impl returns float32 values" in json.loads(run.stdout)["notes"][0]
    if dtype == "float32":  # at float32's tolerances it agrees with the reference too
        assert run.exit_code == 0, run


@pytest.mark.parametrize("function", ["forgot_one_over_n", "wrong_sign"])
def test_a_float32_slip_still_fails_its_own_loss_check(gradcheck, tmp_path, function):
    (tmp_path / "mine.py").write_text(FLOAT32_CE)
    run = gradcheck("check", "-i", BATCH, "--dtype", "float32", "--impl", f"{tmp_path}/mine.py:{function}",
                    "-f", "json")
    assert run.exit_code == 1, run
    assert checks_of(run)["impl gradient vs its own loss"]["passed"] is False


TORCH_CE = """
import torch
import torch.nn.functional as F

def attached(z, t):
    z = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    loss = F.cross_entropy(z, torch.tensor(t))
    gradient, = torch.autograd.grad(loss, z, create_graph=True)
    return loss, gradient  # both still part of the autograd graph

def float32(z, t):
    z = torch.tensor(z, dtype=torch.float32, requires_grad=True)
    loss = F.cross_entropy(z, torch.tensor(t, dtype=torch.float32))
    loss.backward()
    return loss, z.grad

def bfloat16(z, t):
    z = torch.tensor(z, dtype=torch.bfloat16, requires_grad=True)
    loss = F.cross_entropy(z, torch.tensor(t, dtype=torch.bfloat16))
    loss.backward()
    return loss, z.grad
"""


def test_torch_tensors_that_still_require_grad_are_accepted(gradcheck, tmp_path):
    """A torch tensor that still required grad gave exit 3; it is detached, and its float64 values agree with the
    reference (torch's own cross_entropy, so to the reference's tolerance)."""
    pytest.importorskip("torch", reason="torch tensors are tested where torch is installed (CI installs it)")
    (tmp_path / "torch_ce.py").write_text(TORCH_CE)
    run = gradcheck("check", "-i", BATCH, "--impl", f"{tmp_path}/torch_ce.py:attached", "-f", "json")
    assert run.exit_code == 0, run
    assert checks_of(run)["impl gradient"]["max_rel_error"] < 1e-12


@pytest.mark.parametrize(("function", "name"), [("float32", "float32"), ("bfloat16", "bfloat16")])
def test_a_correct_low_precision_torch_implementation_passes_its_own_loss_check(gradcheck, tmp_path, function, name):
    """torch's float32 (and bfloat16) cross_entropy is differenced in its own precision: its own-loss check passes,
    and in float32 it agrees with the reference at --dtype float32."""
    pytest.importorskip("torch", reason="torch tensors are tested where torch is installed (CI installs it)")
    (tmp_path / "torch_ce.py").write_text(TORCH_CE)
    run = gradcheck("check", "-i", BATCH, "--dtype", "float32", "--impl", f"{tmp_path}/torch_ce.py:{function}",
                    "-f", "json")
    assert checks_of(run)["impl gradient vs its own loss"]["passed"] is True, run
    assert json.loads(run.stdout)["notes"][0].startswith(f"--impl returns {name} values")
    if name == "float32":
        assert run.exit_code == 0, run


def test_a_float32_function_that_overflows_fails_its_checks_without_a_warning(gradcheck, tmp_path):
    """A naive float32 softmax overflows at logit 800: an infinite loss and gradient are failed checks (exit 1), and
    the error bounds and differences built on them warn of nothing (a warning would be noise on stderr, and an
    error under pytest), nor is the function called at infinite logits."""
    (tmp_path / "naive.py").write_text(
        "import numpy as np\n"
        "def f(z, t):\n"
        "    assert np.isfinite(z).all(), 'called at infinite logits'\n"
        "    with np.errstate(all='ignore'):\n"
        "        e = np.exp(z.astype(np.float32))\n"
        "        return np.log(e.sum(1)) - (t * z).sum(1).astype(np.float32), e - t\n"
    )
    for reduction in ("none", "sum"):
        run = gradcheck("check", "--logits", "800,0,-3", "--logits", "1,2,3", "--labels", "0,1", "--reduction",
                        reduction, "--impl", f"{tmp_path}/naive.py:f", "-f", "json")
        if reduction == "sum":
            assert run.exit_code == 2 and "the loss must be one number" in run.stderr, run
            continue
        assert run.exit_code == 1 and run.stderr == "", run
        assert checks_of(run)["impl gradient vs its own loss"]["passed"] is False


RETURNED = {
    "complex": ("return np.zeros(1, complex)[0], (z + 0j) * 0",
                "the loss must be real numbers, got a complex128 0j: return the real part if you mean it"),
    "a complex gradient": ("return 0.0, (z + 0j) * 0",
                           ("the gradient must be real numbers, got a complex128 array (1 x 3): return the real part "
                            "if you mean it")),
    "a string": ("return '0.5', z", "the loss must be numbers, got str '0.5'"),
    "booleans": ("return 0.0, z > 0", "the gradient must be numbers, got a bool array (1 x 3)"),
    "None": ("return None, z", "the loss must be numbers, got NoneType None"),
}


@pytest.mark.parametrize("case", list(RETURNED))
def test_complex_or_non_numeric_values_are_refused_with_what_was_returned(gradcheck, tmp_path, case):
    """Complex and string values were silently cast (or the cast's warning was an internal error)."""
    body, message = RETURNED[case]
    (tmp_path / "odd.py").write_text(f"import numpy as np\ndef f(z, t):\n    {body}\n")
    run = gradcheck("check", "--logits", "1,2,3", "--labels", "1", "--impl", f"{tmp_path}/odd.py:f")
    assert run.exit_code == 2 and run.stdout == "", run
    assert run.stderr == f"gradcheck: error: --impl {tmp_path}/odd.py:f: {message}\n", run


def test_the_precision_is_read_from_the_returned_types_and_values():
    """Each type's machine epsilon; float64-typed values all exact in float32 (and not in float16) are float32."""
    from gradcheck_cli.checks.own_loss import detected_precision
    from gradcheck_cli.checks.returned import read_returned

    gradient = np.array([[0.1, -0.1]])
    for loss, expected in [(0.3, 2.0**-52), (np.float32(0.3), 2.0**-23), (np.float16(0.3), 2.0**-10),
                           (np.longdouble(0.3), 2.0**-52), (3, 2.0**-52), ([0.3], 2.0**-52)]:
        answer = read_returned((loss, gradient))
        assert answer.precision == expected, loss
        assert answer.loss.dtype == np.float64 and float(answer.loss.ravel()[0]) == float(np.asarray(loss).ravel()[0])
    cast = read_returned((float(np.float32(0.3)), gradient.astype(np.float32).astype(np.float64)))
    assert cast.precision == 2.0**-52 and detected_precision(cast) == 2.0**-23
    simple = read_returned((0.5, np.array([[0.25, -0.25]])))  # exact in float16 too: nothing to go by
    assert detected_precision(simple) == 2.0**-52


def test_the_stencil_is_exact_in_the_users_precision():
    """Every point z~ + o_k h differenced is representable in float32, so the user's cast moves it by exactly o_k h."""
    from gradcheck_cli.checks.own_loss import _Model
    from gradcheck_cli.numerics.losses.cross_entropy import cross_entropy
    from gradcheck_cli.settings import Settings

    rng = np.random.default_rng(7)
    logits = rng.normal(0, 1, (6, 5)) * np.array([[0.01], [1], [3], [100], [1e4], [1e6]])
    targets = np.eye(5)[rng.integers(0, 5, 6)]
    for method in ("central", "five-point", "richardson", "forward"):
        model = _Model(logits, cross_entropy(targets), Settings(method=method), method, 2.0**-23)
        point, h = model.exact_stencil(model.balanced_steps(np.array(1.0)))
        assert np.all(np.exp2(np.round(np.log2(h))) == h)  # powers of two
        assert np.all(np.abs(point - logits) <= 4 * 2.0**-23 * np.maximum(np.abs(logits), 2 * h))
        for offset in model.spec.offsets:
            moved = point + offset * h
            assert np.array_equal(moved.astype(np.float32).astype(np.float64), moved), (method, offset)
            assert np.array_equal(moved - point, offset * h)


def _numpy_implementation(dtype, temperature, weights, smoothing, reduction, labels, form):
    """A correct softmax cross-entropy in `dtype`, torch's semantics (weights, smoothing), computed two ways:
    log-softmax of shifted logits, or u - logsumexp(u) (which cancels at large logits)."""

    def function(z, t):
        z, t = z.astype(dtype), t.astype(dtype)
        rows, classes = z.shape
        w = np.ones(classes, dtype) if weights is None else np.asarray(weights, dtype)
        if labels is not None:
            a = (1 - smoothing) * w[labels][:, None] * t + (smoothing / classes) * w[None, :]
            divisor = w[labels].sum()
        else:
            a = w[None, :] * ((1 - smoothing) * t + smoothing / classes)
            divisor = dtype(rows)
        a = a.astype(dtype)
        u = z / dtype(temperature)
        m = u.max(1, keepdims=True)
        if form == "shifted":
            log_s = (u - m) - np.log(np.exp(u - m).sum(1, keepdims=True))
        else:
            log_s = u - (m + np.log(np.exp(u - m).sum(1, keepdims=True)))
        losses = -(a * log_s).sum(1)
        gradient = (np.exp(log_s) * a.sum(1, keepdims=True) - a) / dtype(temperature)
        if reduction == "mean":
            return losses.sum() / divisor, gradient / divisor
        return (losses.sum() if reduction == "sum" else losses), gradient

    return function


def _slipped(function, element, factor):
    def slipped(z, t):
        loss, gradient = function(z, t)
        gradient = gradient.copy()
        gradient.flat[element] *= factor
        return loss, gradient

    return slipped


def _own_loss_check(function, logits, labels, targets, settings):
    from gradcheck_cli.batch import Batch
    from gradcheck_cli.checks import runner
    from gradcheck_cli.checks.impl import Implementation
    from gradcheck_cli.inputs.gather import Input
    from gradcheck_cli.pipeline import mean_divisor

    batch = Batch(logits, labels, targets)
    with Implementation("random:f", function) as implementation:
        report = runner.run([batch], settings, mean_divisor(Input(None, None, 0, batch), settings), implementation)
    return next(check for check in report.checks if check.name == "impl gradient vs its own loss")


def test_own_loss_check_never_fails_a_correct_implementation_and_catches_gross_slips():
    """Random float32 and float64 numpy implementations over temperatures 0.05 to 20, logit scales 0.1 to 100,
    weights, smoothing, reductions and methods: the error bound of checks/own_loss.py never fails a correct one,
    and a gradient element doubled or of the wrong sign always fails. A fixed seed in CI, new ones elsewhere."""
    from gradcheck_cli.numerics import differences
    from gradcheck_cli.settings import Settings

    seed = 20261124 if os.environ.get("CI") else int.from_bytes(os.urandom(4), "little")
    rng = np.random.default_rng(seed)
    for case in range(40):
        rows, classes = int(rng.integers(1, 9)), int(rng.integers(2, 7))
        dtype = (np.float32, np.float64)[case % 2]
        labels = rng.integers(0, classes, rows) if rng.random() < 0.6 else None
        targets = np.eye(classes)[labels] if labels is not None else rng.dirichlet(np.ones(classes), rows)
        temperature = float(rng.choice([0.05, 0.1, 0.5, 1.0, 2.0, 20.0]))
        weights = tuple(rng.uniform(0.2, 3.0, classes)) if rng.random() < 0.3 else None
        smoothing = float(rng.choice([0.0, 0.1, 1.0]))
        reduction = str(rng.choice(["mean", "sum", "none"]))
        method = str(rng.choice(["central", "five-point", "richardson", "forward", "backward"]))
        logits = rng.normal(0, float(rng.choice([0.1, 1.0, 10.0, 100.0])), (rows, classes))
        settings = differences.resolve(Settings(method=method, reduction=reduction, weights=weights,
                                                label_smoothing=smoothing, temperature=temperature))
        form = str(rng.choice(["shifted", "logsumexp"]))
        function = _numpy_implementation(dtype, temperature, weights, smoothing, reduction, labels, form)
        where = f"seed {seed}, case {case}: {dtype.__name__} {form} {settings}"
        correct = _own_loss_check(function, logits, labels, targets, settings)
        assert correct.passed, f"{where}: {correct}"
        gradient = np.asarray(function(logits, targets)[1])
        largest = int(np.argmax(np.abs(gradient)))
        # What the differences resolve: rounding eps/h against truncation h^q balance at eps^(q/(q+1)) of the
        # row's weight over min(T, 1) (checks/own_loss.py). A slip is asserted where the element is 10 times
        # that, on one row (a scalar loss over many rows adds the rounding of its sum).
        order = differences.METHODS[method].order
        resolution = 10 * float(np.finfo(dtype).eps) ** (order / (order + 1)) / min(temperature, 1.0)
        if abs(gradient.flat[largest]) < resolution or (reduction != "none" and rows > 1):
            continue
        for factor in (2.0, -1.0):
            slipped = _own_loss_check(_slipped(function, largest, factor), logits, labels, targets, settings)
            assert not slipped.passed, f"{where}: gradient element {largest} times {factor} passed"


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
