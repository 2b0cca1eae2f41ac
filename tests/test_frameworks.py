"""--impl as kernel authors write it: class labels with ignore_index -100, torch and JAX functions that return
only their loss (autograd gives the gradient), and the own-loss check along random directions on every element.

Planted kernel bugs must fail with the right worst element; expected values are computed here by hand
(s - y, MATH.md) or by torch itself, never by gradcheck's code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

NEEDS_TORCH = "torch functions are tested where torch is installed (CI installs torch 2.13 CPU)"
NEEDS_JAX = "JAX functions are tested where jax is installed (pip install jax; not a dependency)"

KERNELS = """
import numpy as np

def _parts(logits, labels):
    kept = labels != -100
    safe = np.where(kept, labels, 0)
    s = np.exp(logits - logits.max(1, keepdims=True))
    s /= s.sum(1, keepdims=True)
    one_hot = np.eye(logits.shape[1])[safe]
    n = kept.sum()
    losses = -np.log(s[np.arange(len(logits)), safe]) * kept
    return losses.sum() / n, (s - one_hot) * kept[:, None] / n, s, one_hot, n

def correct(logits, labels):
    loss, gradient, *_ = _parts(logits, labels)
    return loss, gradient

def ignored_rows_not_zeroed(logits, labels):
    loss, _, s, one_hot, n = _parts(logits, labels)
    return loss, (s - one_hot) / n

def missing_one_over_n(logits, labels):
    loss, gradient, _, _, n = _parts(logits, labels)
    return loss, gradient * n

def loss_only(logits, labels):
    return _parts(logits, labels)[0]
"""

ROWS = ("--logits", "1.1,2.2,0.2,-1.7", "--logits", "1,2,3,0.5", "--logits", "-2,0.5,0.1,4",
        "--logits", "0.3,-0.2,2.5,1")
LABELS = np.array([2, -100, 3, 0])
LOGITS = np.array([[1.1, 2.2, 0.2, -1.7], [1, 2, 3, 0.5], [-2, 0.5, 0.1, 4], [0.3, -0.2, 2.5, 1]])


def hand_gradient(logits: np.ndarray, labels: np.ndarray, ignore_index: int = -100) -> np.ndarray:
    """Mean cross-entropy over the rows not ignored: (s - y) / kept on them, 0 on ignored rows (MATH.md)."""
    kept = labels != ignore_index
    s = np.exp(logits - logits.max(1, keepdims=True))
    s /= s.sum(1, keepdims=True)
    s[np.arange(len(labels)), np.where(kept, labels, 0)] -= 1.0
    return s * kept[:, None] / kept.sum()


def checks_of(run) -> dict[str, dict]:
    return {check["name"]: check for check in json.loads(run.stdout)["checks"]}


def kernel(tmp_path: Path, name: str, source: str = KERNELS) -> str:
    path = tmp_path / "kernels.py"
    path.write_text(source)
    return f"{path}:{name}"


def test_a_labels_kernel_is_given_class_labels_and_minus_100_is_ignored_by_default(gradcheck, tmp_path):
    """f(logits, labels) gets integer labels, -100 where ignored, without --ignore-index (torch's default): it
    passes, and the report says how many rows were ignored."""
    run = gradcheck("check", *ROWS, "--labels", "2,-100,3,0", "--impl", kernel(tmp_path, "correct"), "-f", "json")
    assert run.exit_code == 0, run
    report = json.loads(run.stdout)
    assert "1 of 4 rows ignored: their label is -100, torch's default ignore_index" in report["notes"][0]
    assert report["settings"]["ignore_index"] == -100
    assert np.allclose(report["gradient"]["analytic"], hand_gradient(LOGITS, LABELS), rtol=1e-12, atol=1e-15)


def test_ignored_rows_with_a_gradient_fail_at_the_ignored_row(gradcheck, tmp_path):
    """A kernel that does not zero the gradient of ignored rows fails 'impl gradient' in the ignored row, where
    the reference is exactly 0 (computed here)."""
    run = gradcheck("check", *ROWS, "--labels", "2,-100,3,0", "--impl", kernel(tmp_path, "ignored_rows_not_zeroed"),
                    "-f", "json")
    assert run.exit_code == 1, run
    worst = checks_of(run)["impl gradient"]["worst"]
    assert worst["row"] == 1 and worst["expected"] == 0.0 and worst["actual"] != 0.0


def test_a_missing_one_over_n_fails_by_the_factor_n(gradcheck, tmp_path):
    """The gradient not divided by the 3 rows kept: every element is 3 times the hand-computed one."""
    run = gradcheck("check", *ROWS, "--labels", "2,-100,3,0", "--impl", kernel(tmp_path, "missing_one_over_n"),
                    "-f", "json")
    assert run.exit_code == 1, run
    worst = checks_of(run)["impl gradient"]["worst"]
    expected = hand_gradient(LOGITS, LABELS)[worst["row"], worst["column"]]
    assert worst["expected"] == pytest.approx(expected, rel=1e-12, abs=0)
    assert worst["actual"] == pytest.approx(3 * expected, rel=1e-12, abs=0)


@pytest.mark.parametrize(("name", "args", "message"), [
    ("loss_only", ("--labels", "2,-100,3,0"), "a function returning only its loss needs --framework torch or jax"),
    ("correct", ("--targets", "0.5,0.5,0,0", "--targets", "0,1,0,0", "--targets", "0,0,0,1", "--targets", "1,0,0,0"),
     "its second parameter takes class labels, but row 0's target is a distribution"),
])
def test_what_a_numpy_kernel_cannot_be_given_is_one_line_exit_2(gradcheck, tmp_path, name, args, message):
    run = gradcheck("check", *ROWS, *args, "--impl", kernel(tmp_path, name))
    assert run.exit_code == 2 and run.stdout == "", run
    assert len(run.stderr.splitlines()) == 1 and message in run.stderr, run


def test_framework_and_device_need_impl(gradcheck):
    run = gradcheck("check", "--logits", "1,2,3", "--labels", "1", "--framework", "torch")
    assert run.exit_code == 2 and "give --impl too" in run.stderr, run


def test_a_framework_that_is_not_installed_is_one_line_exit_2(gradcheck, tmp_path, monkeypatch):
    """torch and jax are never dependencies: asked for and missing, the check stops with what to install."""
    blocked = tmp_path / "blocked"  # on sys.path first: an import raises ImportError in a spawned worker too
    blocked.mkdir()
    monkeypatch.syspath_prepend(str(blocked))
    for name in ("torch", "jax"):
        (blocked / f"{name}.py").write_text("raise ImportError('not installed')\n")
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError, here and in a forked worker
        run = gradcheck("check", *ROWS, "--labels", "2,-100,3,0", "--impl", kernel(tmp_path, "correct"),
                        "--framework", name)
        assert run.exit_code == 2 and run.stdout == "", run
        assert len(run.stderr.splitlines()) == 1, run
        assert f"--framework {name}: {name} cannot be imported here" in run.stderr
        assert f"pip install {name}" in run.stderr, run


# --- every element of a big impl: the directional check --------------------------------------------------------

WIDE = """
import numpy as np

def _ce(z, t):
    m = z.max(1, keepdims=True)
    ls = z - m - np.log(np.exp(z - m).sum(1, keepdims=True))
    return -(t * ls).sum() / len(z), (np.exp(ls) * t.sum(1, keepdims=True) - t) / len(z)

def correct(z, t):
    return _ce(z, t)

def one_element(z, t):
    loss, gradient = _ce(z, t)
    gradient = gradient.copy()
    gradient[0, 98765] += 1e-6
    return loss, gradient
"""


def test_one_wrong_element_of_a_128k_row_is_found_by_the_directional_check(gradcheck, tmp_path):
    """1 x 131,072 logits: the own-loss check takes 2 calls per direction (not 2 per element), and the gradient
    correct but for one element (off by 1e-6, some 30 times that element) fails it, narrowed down to that
    element; its derivative inferred from the user's loss is the hand-computed one. The correct function passes."""
    rng = np.random.default_rng(11)
    logits = rng.normal(0, 2, (1, 131072))
    path = tmp_path / "wide.json"
    path.write_text(json.dumps({"logits": logits.tolist(), "labels": [4242]}))
    args = ("check", "-i", str(path), "--directions", "4", "-f", "json")
    run = gradcheck(*args, "--impl", kernel(tmp_path, "correct", WIDE))
    assert run.exit_code == 0, run
    assert any("4 random directions" in note for note in json.loads(run.stdout)["notes"]), run
    run = gradcheck(*args, "--impl", kernel(tmp_path, "one_element", WIDE))
    assert run.exit_code == 1, run
    own = checks_of(run)["impl gradient vs its own loss"]
    assert not own["passed"] and own["worst"]["index"] == [0, 98765], own
    expected = hand_gradient(logits, np.array([4242]))[0, 98765]
    assert own["worst"]["actual"] == pytest.approx(expected + 1e-6, rel=1e-12, abs=0)
    assert own["worst"]["expected"] == pytest.approx(expected, rel=1e-3)  # a difference of the user's loss


def test_the_scalar_loss_impl_of_1024_by_100_costs_2k_calls_not_2_per_element():
    """Issue 13: the scalar-loss impl was differenced per element (8,002 calls on 1024 x 100 before the 4,096
    limit). Every element is now checked with 2K + a few calls."""
    from gradcheck_cli.checks.impl import Implementation
    from gradcheck_cli.numerics import differences
    from gradcheck_cli.numerics.losses.cross_entropy import torch_cross_entropy
    from gradcheck_cli.settings import Settings

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
    try:
        from my_softmax import softmax_cross_entropy
    finally:
        sys.path.pop(0)
    rng = np.random.default_rng(5)
    logits, labels = rng.normal(0, 3, (1024, 100)), rng.integers(0, 100, 1024)
    reference = torch_cross_entropy(100, labels=labels)
    with Implementation("my_softmax:softmax_cross_entropy", softmax_cross_entropy) as implementation:
        checks = implementation.checks(logits, np.eye(100)[labels], reference,
                                       differences.resolve(Settings(directions=16)), [])
        own = next(check for check in checks if check.name == "impl gradient vs its own loss")
        assert own.passed and own.elements == 1024 * 100
        # two calls for the reference and determinism checks, one at the stencil's point, 2 per direction
        assert implementation.calls <= 3 + 2 * 16, implementation.calls


# --- torch ---------------------------------------------------------------------------------------------------------

TORCH_KERNELS = """
import torch
import torch.nn.functional as F

def cross_entropy(logits, labels):
    return F.cross_entropy(logits, labels)

def cross_entropy_none(logits, labels):
    return F.cross_entropy(logits, labels, reduction="none")

class _FirstOnly(torch.autograd.Function):
    # Liger-Kernel #968: the backward multiplies every row by grad_output[0]
    @staticmethod
    def forward(ctx, logits, labels):
        ctx.save_for_backward(logits, labels)
        return F.cross_entropy(logits, labels, reduction="none")

    @staticmethod
    def backward(ctx, grad_output):
        logits, labels = ctx.saved_tensors
        gradient = torch.softmax(logits, 1) - F.one_hot(labels, logits.shape[1]).to(logits.dtype)
        return gradient * grad_output[0], None

def first_only(logits, labels):
    return _FirstOnly.apply(logits, labels)
"""


def torch_kernel(tmp_path: Path, name: str) -> str:
    return kernel(tmp_path, name, TORCH_KERNELS)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_torch_cross_entropy_returning_only_its_loss_passes(gradcheck, tmp_path, dtype):
    """F.cross_entropy(logits, labels), loss only, on torch tensors in --dtype: autograd gives the gradient, and
    the -100 row is ignored as torch ignores it. Its gradient equals torch's own to 1e-12 in float64."""
    torch = pytest.importorskip("torch", reason=NEEDS_TORCH)
    run = gradcheck("check", *ROWS, "--labels", "2,-100,3,0", "--impl", torch_kernel(tmp_path, "cross_entropy"),
                    "--framework", "torch", "--dtype", dtype, "-f", "json")
    assert run.exit_code == 0, run
    if dtype == "float64":
        z = torch.tensor(LOGITS, requires_grad=True)
        torch.nn.functional.cross_entropy(z, torch.tensor(LABELS)).backward()
        assert np.allclose(json.loads(run.stdout)["gradient"]["analytic"], z.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_torch_backward_that_broadcasts_grad_output_0_fails(gradcheck, tmp_path):
    """A torch autograd Function whose backward uses grad_output[0] for every row: with the default random g
    (reduction none) it fails 'impl gradient' at a row other than 0, the expected value being torch's own
    backward of F.cross_entropy with that g. torch's F.cross_entropy passes the same check."""
    torch = pytest.importorskip("torch", reason=NEEDS_TORCH)
    labels = "2,1,3,0"
    args = ("check", *ROWS, "--labels", labels, "--reduction", "none", "--framework", "torch", "-f", "json")
    assert gradcheck(*args, "--impl", torch_kernel(tmp_path, "cross_entropy_none")).exit_code == 0
    run = gradcheck(*args, "--impl", torch_kernel(tmp_path, "first_only"))
    assert run.exit_code == 1, run
    worst = checks_of(run)["impl gradient"]["worst"]
    g = torch.tensor(np.random.default_rng(0).uniform(0.5, 2.0, 4))
    z = torch.tensor(LOGITS, requires_grad=True)
    torch.nn.functional.cross_entropy(z, torch.tensor([2, 1, 3, 0]), reduction="none").backward(g)
    assert worst["row"] != 0
    assert worst["expected"] == pytest.approx(float(z.grad[worst["row"], worst["column"]]), rel=1e-12, abs=0)


def test_a_torch_loss_not_attached_to_the_logits_is_one_line_exit_2(gradcheck, tmp_path):
    pytest.importorskip("torch", reason=NEEDS_TORCH)
    source = "import torch\ndef f(logits, labels):\n    return torch.tensor(1.0)\n"
    run = gradcheck("check", *ROWS, "--labels", "2,1,3,0", "--impl", kernel(tmp_path, "f", source),
                    "--framework", "torch")
    assert run.exit_code == 2 and "not attached to the logits' autograd graph" in run.stderr, run
    assert len(run.stderr.splitlines()) == 1, run


def test_a_device_torch_does_not_have_is_one_line_exit_2(gradcheck, tmp_path):
    pytest.importorskip("torch", reason=NEEDS_TORCH)
    run = gradcheck("check", *ROWS, "--labels", "2,1,3,0", "--impl", torch_kernel(tmp_path, "cross_entropy"),
                    "--framework", "torch", "--device", "nosuchdevice:7")
    assert run.exit_code == 2 and "--device nosuchdevice:7" in run.stderr, run
    assert len(run.stderr.splitlines()) == 1, run


# --- JAX -----------------------------------------------------------------------------------------------------------

JAX_KERNELS = """
import jax
import jax.numpy as jnp

def cross_entropy(logits, labels):
    log_s = jax.nn.log_softmax(logits, axis=1)
    kept = labels != -100
    picked = jnp.take_along_axis(log_s, jnp.where(kept, labels, 0)[:, None], axis=1)[:, 0]
    return -(picked * kept).sum() / kept.sum()
"""


def test_jax_cross_entropy_returning_only_its_loss_passes(gradcheck, tmp_path):
    """A JAX loss on jnp arrays (float64: gradcheck enables x64), its gradient from jax.vjp, equal to the hand one."""
    pytest.importorskip("jax", reason=NEEDS_JAX)
    run = gradcheck("check", *ROWS, "--labels", "2,-100,3,0", "--impl", kernel(tmp_path, "cross_entropy", JAX_KERNELS),
                    "--framework", "jax", "-f", "json")
    assert run.exit_code == 0, run
    assert checks_of(run)["impl gradient"]["max_rel_error"] < 1e-12


def test_a_numpy_impl_runs_after_jax_has_run_in_this_process(gradcheck, tmp_path):
    """Protects the worker's start (checks/worker_spawn.py): once JAX has run here, a fork warns that it may
    deadlock (an error under this suite's -W error) and was what made every --impl test after a JAX one fail;
    the worker is then a new interpreter, and the check passes with nothing said on stderr."""
    jnp = pytest.importorskip("jax.numpy", reason=NEEDS_JAX)
    assert float(jnp.ones(3).sum()) == 3.0  # JAX's runtime (and its at-fork warning) started in this process
    run = gradcheck("check", *ROWS, "--labels", "2,-100,3,0", "--impl", kernel(tmp_path, "correct"), "-f", "json")
    assert run.exit_code == 0 and run.stderr == "", run
    assert checks_of(run)["impl gradient"]["max_rel_error"] < 1e-12


# --- the half-precision baseline verdict for --impl ----------------------------------------------------------------

HALF_KERNELS = """
import numpy as np

def _cross_entropy(logits, labels, upcast):
    # a float16 kernel: numpy rounds each float16 operation to float16; the class sum is float32 (upcast) or a
    # running float16 sum (the bug)
    z = logits.astype(np.float32).astype(np.float16)
    shifted = z - z.max(axis=1, keepdims=True)
    exps = np.exp(shifted)
    if upcast:
        total = exps.astype(np.float32).sum(axis=1, keepdims=True).astype(np.float16)
    else:
        total = np.add.accumulate(exps, axis=1, dtype=np.float16)[:, -1:]
    rows = np.arange(len(labels))
    losses = np.log(total[:, 0]) - shifted[rows, labels]
    gradient = (exps / total - np.eye(z.shape[1], dtype=np.float16)[labels]) / np.float16(len(labels))
    return np.float16(losses.astype(np.float32).mean()), gradient

def upcast(logits, labels):
    return _cross_entropy(logits, labels, True)

def no_upcast(logits, labels):
    return _cross_entropy(logits, labels, False)
"""


@pytest.mark.parametrize(("name", "passes"), [("upcast", True), ("no_upcast", False)])
def test_a_half_precision_impl_gets_the_baseline_verdict(gradcheck, tmp_path, name, passes):
    """Protects the baseline verdict on --impl's values at --dtype float16 (impl._reference_checks): a kernel
    whose 2,000-class sum runs in float16 (no upcast) fails 'impl gradient vs float16 baseline', the same kernel
    with a float32 accumulator passes it and every other check. Before, --impl got only the dtype's tolerance."""
    rng = np.random.default_rng(7)
    logits, labels = rng.standard_normal((4, 2000)) * 3, rng.integers(0, 2000, 4)
    path = tmp_path / "batch.json"
    path.write_text(json.dumps({"logits": logits.tolist(), "labels": labels.tolist()}))
    run = gradcheck("check", "-i", str(path), "--dtype", "float16", "--impl", kernel(tmp_path, name, HALF_KERNELS),
                    "-f", "json")
    assert run.exit_code == (0 if passes else 1), run
    checks = checks_of(run)
    assert {"impl loss vs float16 baseline", "impl gradient vs float16 baseline"} <= set(checks), list(checks)
    assert checks["impl gradient vs float16 baseline"]["passed"] is passes
    if passes:
        assert all(check["passed"] for check in checks.values()), checks
