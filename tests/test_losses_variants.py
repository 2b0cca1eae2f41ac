# ruff: noqa: RUF001  (the explain lines asserted are written with real minus signs, primes and Greek letters)
"""Cross-entropy's variants (z-loss, soft-capping, logit scale, lse), binary cross-entropy with logits and the focal
loss: torch's golden values to 1e-12 through the CLI, the published slips planted in an --impl, and the refusals.

The golden cases are tests/fixtures/torch_golden.json's "variant_cases" (make_torch_golden.py, torch 2.13, random
options not tuned to pass); the distillation cases there are tests/test_distillation.py's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

GOLDEN = json.loads((Path(__file__).parent / "fixtures" / "torch_golden.json").read_text())
OURS = ("cross_entropy", "bce", "focal")
CASES = [case for case in GOLDEN["variant_cases"] if case["options"]["loss"] in OURS]
FLAGS = {"temperature": "--temperature", "reduction": "--reduction", "loss": "--loss", "z_loss": "--z-loss",
         "softcap": "--softcap", "logit_scale": "--logit-scale", "gamma": "--gamma", "alpha": "--alpha",
         "ignore_index": "--ignore-index", "label_smoothing": "--label-smoothing"}
LISTS = {"weights": "--weights", "pos_weight": "--pos-weight"}


def options_args(options: dict) -> list[str]:
    args = []
    for key, value in options.items():
        if key in LISTS:
            args += [LISTS[key], ",".join(repr(v) for v in value)]
        else:
            args += [FLAGS[key], value if isinstance(value, str) else repr(value)]
    return args


def assert_agrees(ours, theirs, what: str) -> None:
    """To 1e-12 of each element plus 1e-12 of the largest (as tests/test_losses_torch.py)."""
    ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    assert ours.shape == theirs.shape, what
    bound = 1e-12 * np.abs(theirs) + 1e-12 * max(float(np.max(np.abs(theirs))), 1e-300)
    assert float(np.max(np.abs(ours - theirs) - bound)) <= 0, f"{what}: off by {np.max(np.abs(ours - theirs)):.3e}"


@pytest.mark.parametrize("case", CASES, ids=[f"variant{i}-{c['options']['loss']}-{c['options']['reduction']}"
                                               for i, c in enumerate(CASES)])
def test_matches_torch(passing_json_report, case):
    """Protects every variant's loss and gradient (torch's, to 1e-12) and that torch's own values pass as the
    user's: a wrong formula, divisor or order of the transforms fails here."""
    document = {key: case[key] for key in ("logits", "labels", "targets") if key in case}
    document["loss"], document["gradient"] = case["loss"], case["gradient"]
    report = passing_json_report(document, options_args(case["options"]))
    assert_agrees(report["loss"], case["loss"], "loss")
    assert_agrees(report["gradient"]["analytic"], case["gradient"], "gradient")
    names = {check["name"]: check["passed"] for check in report["checks"]}
    assert names["supplied loss"] and names["supplied gradient"], names


@pytest.mark.parametrize("case", CASES[::4], ids=[f"variant{4 * i}" for i in range(len(CASES[::4]))])
def test_torchs_gradient_off_by_1e_8_fails(gradcheck, tmp_path, case):
    """Protects the other side of the tolerances: torch's gradient with its largest element moved by 1e-8 of
    itself (far above any float64 rounding, far below a visible slip) is refused, in every variant."""
    gradient = np.array(case["gradient"])
    gradient[np.unravel_index(np.abs(gradient).argmax(), gradient.shape)] *= 1 + 1e-8
    document = {key: case[key] for key in ("logits", "labels", "targets") if key in case}
    path = tmp_path / "case.json"
    path.write_text(json.dumps({**document, "gradient": gradient.tolist()}))
    run = gradcheck("check", "-i", str(path), *options_args(case["options"]), "-f", "json")
    assert run.exit_code == 1, run


def test_the_fixture_covers_every_option():
    """Protects the coverage the golden test claims: every option of these losses appears in some case."""
    seen = {key for case in CASES for key in case["options"]}
    assert {"z_loss", "softcap", "logit_scale", "pos_weight", "weights", "gamma", "alpha", "ignore_index"} <= seen
    assert any({"z_loss", "softcap", "logit_scale"} <= set(case["options"]) for case in CASES)


# --- the published slips, planted in an --impl (examples/variant_slips.py) ------------------------------------

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CE = ["-i", str(EXAMPLES / "variants.json"), "--logit-scale", "1.5", "--softcap", "5", "--z-loss", "0.01"]
BCE = ["-i", str(EXAMPLES / "multilabel.json"), "--loss", "bce", "--pos-weight", "3,0.5,2,1"]
FOCAL = ["-i", str(EXAMPLES / "variants.json"), "--loss", "focal", "--gamma", "2"]
WRONG_LOSS = {"impl loss", "impl gradient"}  # a wrong formula consistently differentiated
WRONG_BACKWARD = {"impl gradient", "impl gradient vs its own loss"}  # a right loss, a wrong derivative


def _example(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location("variant_slips", EXAMPLES / "variant_slips.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


@pytest.mark.parametrize(
    ("slip", "args", "right", "failing", "worst"),
    [
        ("softcap_z_tanh", CE, "capped_cross_entropy", WRONG_LOSS, (2, 0)),  # unsloth-zoo PR #593
        ("softcap_never_applied", CE, "capped_cross_entropy", WRONG_LOSS, (2, 3)),  # ml-cross-entropy #48
        ("padded_lanes_with_mass", CE, "capped_cross_entropy", WRONG_LOSS, (2, 3)),  # unsloth PR #10616
        ("logit_scale_in_backward", CE, "capped_cross_entropy", WRONG_BACKWARD, (1, 0)),  # Fast-LLM #228
        ("z_loss_missing_two", CE, "capped_cross_entropy", WRONG_BACKWARD, (2, 3)),  # Liger-Kernel PR #239
        ("bce_stable_form_sign", BCE, "bce_with_logits", WRONG_LOSS, (0, 2)),  # pytorch PR #2221
        ("focal_missing_minus_one", FOCAL, "focal", WRONG_BACKWARD, (1, 1)),  # torchvision #8519
    ],
)
def test_each_published_slip_fails_naming_its_worst_element(gradcheck, slip, args, right, failing, worst):
    """Protects the oracle's purpose: each slip that reached a real project exits 1, with exactly the checks its
    kind of slip breaks failing, and names as the impl gradient's worst element one the slip really moved (its
    relative error there, from the example's own correct version, is far above any tolerance). The element is
    pinned: it is the one that uses most of its tolerance, which moves only if the slip or the tolerances do."""
    run = gradcheck("check", *args, "--impl", f"{EXAMPLES / 'variant_slips.py'}:{slip}", "-f", "json")
    assert run.exit_code == 1, run
    checks = {check["name"]: check for check in json.loads(run.stdout)["checks"]}
    assert {name for name, check in checks.items() if not check["passed"]} == failing, run.stdout
    named = tuple(checks["impl gradient"]["worst"]["index"])
    assert named == worst, checks["impl gradient"]["worst"]
    document = json.loads(Path(args[1]).read_text())
    logits = np.array(document["logits"])
    targets = np.array(document["targets"]) if "targets" in document else np.eye(logits.shape[1])[document["labels"]]
    theirs, correct = _example(slip)(logits, targets)[1][named], _example(right)(logits, targets)[1][named]
    assert abs(theirs - correct) > 1e-3 * abs(correct), (theirs, correct)


@pytest.mark.parametrize(("function", "args"), [("capped_cross_entropy", CE), ("bce_with_logits", BCE),
                                                ("focal", FOCAL)])
def test_a_correct_implementation_of_each_passes(gradcheck, function, args):
    """Protects against false alarms: the correct numpy versions pass every check, BCE with a logit of -120."""
    run = gradcheck("check", *args, "--impl", f"{EXAMPLES / 'variant_slips.py'}:{function}", "-f", "json")
    assert run.exit_code == 0, run
    assert all(check["passed"] for check in json.loads(run.stdout)["checks"])


TORCH_IMPL = '''
import torch
import torch.nn.functional as F


def _run(logits, targets, loss_of):
    z = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    loss = loss_of(z, torch.tensor(targets, dtype=torch.float64))
    (gradient,) = torch.autograd.grad(loss, z)
    return float(loss.detach()), gradient.numpy()


def capped(logits, targets):
    def loss_of(z, t):
        y = 5.0 * torch.tanh(1.5 * z / 5.0)
        return F.cross_entropy(y, t.argmax(dim=1)) + 0.01 * (torch.logsumexp(y, dim=1) ** 2).mean()
    return _run(logits, targets, loss_of)


def bce(logits, targets):
    weight = torch.tensor([3.0, 0.5, 2.0, 1.0], dtype=torch.float64)
    return _run(logits, targets, lambda z, t: F.binary_cross_entropy_with_logits(z, t, pos_weight=weight))


def focal(logits, targets):
    def loss_of(z, t):
        log_s = (F.log_softmax(z, dim=1) * t).sum(dim=1)
        return (-((1 - log_s.exp()) ** 2) * log_s).mean()
    return _run(logits, targets, loss_of)
'''


@pytest.mark.parametrize(("function", "args"), [("capped", CE), ("bce", BCE), ("focal", FOCAL)])
def test_a_torch_implementation_of_each_passes(gradcheck, tmp_path, function, args):
    """Protects torch-exactness end to end: torch's own functions (autograd gradients) pass as the user's code."""
    pytest.importorskip("torch", reason="torch is not a dependency; this test runs where it is installed")
    (tmp_path / "torch_variants.py").write_text(TORCH_IMPL)
    run = gradcheck("check", *args, "--impl", f"{tmp_path / 'torch_variants.py'}:{function}", "-f", "json")
    assert run.exit_code == 0, run


# --- lse, --order 2, float32, streaming, refusals --------------------------------------------------------------


def test_a_supplied_lse_is_checked_against_the_logits_entering_the_softmax():
    """Protects lse as a checkable quantity: the reference is log sum exp of the transformed logits / T (what
    the z-loss squares), a right value passes and one off by 1e-9 fails (checks.rows.supplied_checks)."""
    from gradcheck_cli.batch import Batch
    from gradcheck_cli.checks.rows import supplied_checks
    from gradcheck_cli.numerics import differences
    from gradcheck_cli.numerics.losses import loss_kind
    from gradcheck_cli.settings import Settings

    logits = np.array([[2.5, -1.0, 7.5], [9.0, 8.2, -2.0]])
    settings = differences.resolve(Settings(softcap=5.0, logit_scale=1.5, temperature=2.0, z_loss=0.1))
    y = 5.0 * np.tanh(1.5 * logits / 5.0) / 2.0
    by_hand = np.log(np.exp(y).sum(axis=1))  # no overflow at these sizes: the textbook form is exact enough
    for offset, passes in ((0.0, True), (1e-9, False)):
        batch = Batch(logits, np.array([0, 2]), np.eye(3)[[0, 2]], supplied={"lse": by_hand + offset})
        loss = loss_kind("cross_entropy").build(batch, settings, np.dtype(np.float64))
        (check,) = supplied_checks(batch, settings, logits, loss.softmax(logits), loss)
        assert check.name == "supplied lse" and check.passed is passes, check


def test_bce_hessian_is_checked_and_diagonal(gradcheck):
    """Protects --order 2 for bce: the diagonal Hessian (P + Q) sigma (1 - sigma) / T^2 against differences of
    the gradient, off-diagonal elements exactly 0 on both sides."""
    run = gradcheck("check", *BCE, "--order", "2", "--temperature", "0.7", "-f", "json")
    assert run.exit_code == 0, run
    assert {check["name"] for check in json.loads(run.stdout)["checks"]} >= {"gradient", "jacobian", "hessian"}


@pytest.mark.parametrize("args", [CE, BCE, [*FOCAL, "--softcap", "3", "--alpha", "0.25"]])
def test_float32_and_every_method_pass(gradcheck, args):
    """Protects the error analysis of each variant: float32 and the most demanding methods pass on a correct
    reference (a too-tight tolerance would fail here)."""
    for method in ("complex-step", "richardson", "forward"):
        run = gradcheck("check", *args, "--dtype", "float32", "--method", method, "-f", "json")
        assert run.exit_code == 0, (method, run)


def test_streamed_in_chunks_gives_the_whole_inputs_verdict_and_numbers(gradcheck, tmp_path, monkeypatch):
    """Protects chunked reading: BCE's mean over N x C and the z-loss's divisor (rows kept, summed over chunks)
    give the same loss and gradient streamed as read whole."""
    rng = np.random.default_rng(7)
    logits, labels = rng.standard_normal((11, 4)) * 4, rng.integers(0, 4, 11)
    labels[[3, 8]] = -100
    lines = [json.dumps({"logits": row.tolist(), "label": int(k)}) for row, k in zip(logits, labels, strict=True)]
    targets = rng.choice([0.0, 1.0, 0.4], size=(11, 4))
    binary = [json.dumps({"logits": row.tolist(), "targets": t.tolist()}) for row, t in zip(logits, targets,
                                                                                           strict=True)]
    runs = {}
    for name, text, args in (("ce", lines, ["--z-loss", "0.05", "--softcap", "4", "--ignore-index", "-100"]),
                             ("bce", binary, ["--loss", "bce", "--weights", "1,2,0.5,1"])):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("\n".join(text) + "\n")
        runs[name, "whole"] = gradcheck("check", "-i", str(path), *args, "-f", "json")
    from test_one_pipeline import force_streaming

    force_streaming(monkeypatch)
    for name, args in (("ce", ["--z-loss", "0.05", "--softcap", "4", "--ignore-index", "-100"]),
                       ("bce", ["--loss", "bce", "--weights", "1,2,0.5,1"])):
        streamed = gradcheck("check", "-i", str(tmp_path / f"{name}.jsonl"), *args, "-f", "json")
        whole = runs[name, "whole"]
        assert streamed.exit_code == whole.exit_code == 0, (streamed, whole)
        ours, theirs = json.loads(streamed.stdout), json.loads(whole.stdout)
        assert ours["loss"] == theirs["loss"]
        assert ours["gradient"]["analytic"] == theirs["gradient"]["analytic"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--targets", "0.2,0.3,0.5", "--loss", "focal"], "--loss focal takes class labels"),
        (["--targets", "1,0,1.5", "--loss", "bce"], "target 1.5 for class 2 is above 1"),
        (["--targets", "1,0,1", "--loss", "bce", "--pos-weight", "1,2"], "--pos-weight: 2 values for 3 classes"),
        (["--labels", "0", "--loss", "mse", "--z-loss", "0.1"], "--z-loss apply to cross_entropy, not mse"),
        (["--labels", "0", "--loss", "cross_entropy", "--pos-weight", "1,2,3"], "--pos-weight apply to bce, not"),
        (["--labels", "0", "--gamma", "2"], "--gamma apply to focal, not cross_entropy"),
        (["--labels", "0", "--softcap", "-1"], "-1 is out of range"),
    ],
)
def test_bad_input_exits_2_with_one_line(gradcheck, args, message):
    """Protects the refusals: each says what and where on one line of stderr, nothing on stdout."""
    run = gradcheck("check", "--logits", "1,2,3", *args)
    assert run.exit_code == 2 and message in run.stderr and run.stdout == "", run
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr


# --- the core math, against independent computations --------------------------------------------------------


def test_focal_with_gamma_zero_is_cross_entropy():
    """Protects the issue's identity: gamma = 0 and no alpha is cross-entropy, loss and gradient, to rounding."""
    from gradcheck_cli.numerics.losses.cross_entropy import torch_cross_entropy
    from gradcheck_cli.numerics.losses.focal import Focal

    rng = np.random.default_rng(3)
    logits, labels = rng.standard_normal((6, 5)) * 8, rng.integers(0, 5, 6)
    focal = Focal("mean", 6.0, 1.7, labels=labels, gamma=0.0, alpha=1.0, method="central")
    plain = torch_cross_entropy(5, labels=labels, temperature=1.7)
    np.testing.assert_allclose(focal.row_losses(logits), plain.row_losses(logits), rtol=4e-16, atol=0)
    np.testing.assert_allclose(focal.gradient(logits), plain.gradient(logits), rtol=4e-16, atol=1e-300)


def test_the_soft_cap_shift_is_the_exact_change_of_the_capped_logit():
    """Protects the finite differences of the transformed losses: transforms.shift(z, d) is g(z + d) - g(z) to
    a few ulps of the change itself (against 60-digit decimal arithmetic), also where the cap saturates and a
    float64 subtraction g(z + d) - g(z) would lose every digit."""
    from decimal import Decimal, localcontext

    from gradcheck_cli.numerics.transforms import LogitTransform

    def capped(x: Decimal) -> Decimal:  # 5 tanh(1.5 x / 5), tanh(w) = (e^2w - 1) / (e^2w + 1)
        double = (Decimal(3) * x / Decimal(5)).exp()
        return Decimal(5) * (double - 1) / (double + 1)

    z = [-40.0, -3.0, 0.0, 0.7, 6.0, 12.0]
    d = 2.0**-17
    with localcontext() as context:
        context.prec = 60
        exact = np.array([float(capped(Decimal(v) + Decimal(d)) - capped(Decimal(v))) for v in z])
    shift = LogitTransform(1.5, 5.0).shift(np.array(z), np.asarray(d))
    # a handful of roundings (tanh, cosh, two products, a division), each of 2^-53 relative: 16 ulps is ample
    assert np.all(np.abs(shift - exact) <= 16 * 2.0**-53 * np.abs(exact)), (shift, exact)
    np.testing.assert_allclose(LogitTransform(1.5, 5.0).slope(np.array(z)), 1.5 / np.cosh(0.3 * np.array(z)) ** 2,
                               rtol=1e-15)


def test_bce_stays_finite_and_exact_at_minus_120_with_pos_weight():
    """Protects pytorch #13773's case: logit -120, target 1, pos_weight 3: loss 3 * 120 (softplus(120) = 120 to
    rounding) and gradient -3 (sigma(-120) is e^-120, not a NaN from log 0)."""
    from gradcheck_cli.batch import Batch
    from gradcheck_cli.numerics.losses import loss_kind
    from gradcheck_cli.settings import Settings

    batch = Batch(np.array([[-120.0, 0.0]]), None, np.array([[1.0, 0.0]]))
    loss = loss_kind("bce").build(batch, Settings(loss="bce", pos_weight=(3.0, 1.0), reduction="sum"),
                                  np.dtype(np.float64))
    logits = batch.logits
    assert loss.row_losses(logits)[0] == pytest.approx(3 * (120 + np.exp(-120.0)) + np.log(2), rel=1e-15)
    np.testing.assert_allclose(loss.gradient(logits)[0], [-3 / (1 + np.exp(-120.0)), 0.5], rtol=1e-15)


# --- sweep and explain take every variant ------------------------------------------------------------------


@pytest.mark.parametrize("args", [CE, BCE, [*FOCAL, "--alpha", "0.25"]])
def test_sweep_of_each_variant_looks_correct(gradcheck, args):
    """Protects `sweep` for the variants: the reference's own V reaches near machine precision (exit 0)."""
    run = gradcheck("sweep", *args)
    assert run.exit_code == 0, run


@pytest.mark.parametrize(
    ("args", "lines"),
    [
        (["--labels", "0", "--z-loss", "0.1"], ["5. z-loss: + S·lse²", "∂(S·lse²)/∂z_j = 2·S·lse·s_j"]),
        (["--labels", "0", "--softcap", "2", "--logit-scale", "1.5"],
         ["0. Logit transforms before the softmax: y = A·z, A = 1.50, then y ← C·tanh(y/C), C = 2.00",
          "g′(z_j) = A·(1 − tanh²(A·z_j/C))"]),
        (["--labels", "0", "--loss", "focal", "--gamma", "2"], ["3. Focal loss: L = −α(1 − s_y)^γ log s_y"]),
        (["--targets", "1,0,0.5", "--loss", "bce"], ["∂L/∂z_0 = 0.00×0.731 − 1.00×0.269 = −0.269"]),
    ],
)
def test_explain_writes_the_chain_rule_of_each_variant(gradcheck, args, lines):
    """Protects `explain` for the variants: the z-loss's 2 S lse s, the transform's A (1 - tanh^2), the focal
    loss and BCE's per-class sigmoid, with the row's numbers (z = 1, 2, 3)."""
    run = gradcheck("explain", "--logits", "1,2,3", *args)
    assert run.exit_code == 0, run
    for line in lines:
        assert line in run.stdout, run.stdout


def test_bce_reports_the_diagonal_jacobian_of_its_sigmoid(gradcheck):
    """The JSON Jacobian of --loss bce is diag(s (1 - s)) / T of its sigmoid probabilities, kept whole or in
    blocks (it was the softmax's diag(s) - s s^T of those probabilities: numbers of another function)."""
    from gradcheck_cli.checks.kept import jacobian_blocks

    run = gradcheck("check", "-i", str(EXAMPLES / "multilabel.json"), "--loss", "bce", "--temperature",
                    "2", "-f", "json")
    report = json.loads(run.stdout)
    s = np.array(report["probabilities"])
    expected = np.stack([np.diag(row * (1 - row)) for row in s]) / 2
    np.testing.assert_allclose(np.array(report["jacobian"]), expected, rtol=1e-15, atol=1e-17)
    blocks = np.concatenate([block.ravel() for block in jacobian_blocks(s, 1 - s, np.float64(2), 3, coupled=False)])
    np.testing.assert_allclose(blocks, expected.ravel(), rtol=1e-15, atol=1e-17)


def test_bce_is_shown_as_sigmoids_in_tables_and_explain(gradcheck):
    """bce's probabilities are sigmoids: the tables name them so, and explain derives the sigmoid and its diagonal
    Jacobian with the numbers check reports (it showed a softmax of the row, another function's numbers)."""
    path = str(EXAMPLES / "multilabel.json")
    tables = gradcheck("check", "-i", path, "--loss", "bce").stdout
    assert "Sigmoid probabilities s" in tables and "Softmax" not in tables
    report = json.loads(gradcheck("check", "-i", path, "--loss", "bce", "-f", "json").stdout)
    explained = json.loads(gradcheck("explain", "-i", path, "--loss", "bce", "-f", "json").stdout)
    np.testing.assert_allclose(explained["probabilities"], report["probabilities"][0], rtol=1e-15)
    text = gradcheck("explain", "-i", path, "--loss", "bce").stdout
    assert "1. Sigmoid" in text and "Softmax" not in text
