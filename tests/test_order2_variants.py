"""--order 2 for the variants of issue 14: the z-loss, the logit transforms (--logit-scale, --softcap) and the focal
loss. Their Hessians against torch's (torch.autograd.functional.hessian, tests/fixtures/torch_hessian_golden.json
written by make_torch_golden.py with torch 2.13, run by hand) through the CLI and the API to 1e-12; the exact
changes the numeric side differences against re-evaluation; and planted wrong Hessians that must fail.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_losses_variants import assert_agrees, options_args

from gradcheck_cli.batch import Batch
from gradcheck_cli.checks import jacobian
from gradcheck_cli.numerics import differences
from gradcheck_cli.numerics.losses import loss_kind
from gradcheck_cli.numerics.losses.base import Loss, rounding_factor
from gradcheck_cli.numerics.transforms import LogitTransform
from gradcheck_cli.settings import Settings

GOLDEN = json.loads((Path(__file__).parent / "fixtures" / "torch_hessian_golden.json").read_text())
CASES = GOLDEN["hessian_cases"]
IDS = [f"hessian{i}-{c['options']['loss']}-{'-'.join(sorted(set(c['options']) - {'loss', 'temperature', 'reduction'}))}"
       for i, c in enumerate(CASES)]
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _settings(options: dict, **extra: object) -> Settings:
    fields = dict(options)
    if "weights" in fields:
        fields["weights"] = tuple(fields["weights"])
    return differences.resolve(Settings(order=2, **fields, **extra))  # type: ignore[arg-type]


def _built(case: dict, **extra: object) -> tuple[Loss, Settings, np.ndarray]:
    """The reference loss of a golden case as `check` builds it, its settings and its logits."""
    logits = np.array(case["logits"])
    settings = _settings(case["options"], **extra)
    labels = np.array(case["labels"])
    targets = np.eye(logits.shape[1])[np.clip(labels, 0, None)]
    loss = loss_kind(settings.loss).build(Batch(logits, labels, targets), settings, np.dtype(np.float64))
    return loss, settings, logits


class _Planted:
    """A loss whose analytic Hessian is given (torch's, or a wrong one): everything else is the loss's own."""

    def __init__(self, loss: Loss, hessian: np.ndarray) -> None:
        self._loss, self._hessian = loss, hessian

    def __getattr__(self, name: str) -> object:
        return getattr(self._loss, name)

    def hessian(self, logits: np.ndarray) -> np.ndarray:
        return self._hessian


def _hessian_check(loss: Loss, settings: Settings, logits: np.ndarray, analytic: np.ndarray):  # type: ignore[no-untyped-def]
    parts = loss.softmax(logits)
    rho = rounding_factor(loss.entering(logits), settings.temperature)
    planted = _Planted(loss, analytic)
    return jacobian.hessian_check(planted, loss, logits, logits, parts, parts, settings, rho)  # type: ignore[arg-type]


def test_the_fixture_covers_every_option():
    """Protects the coverage claimed: z-loss, softcap, logit scale alone and together, focal at gamma 0, 0.5, 2,
    with alpha and under the transforms, every reduction and a temperature other than 1."""
    seen = [case["options"] for case in CASES]
    for wanted in ({"z_loss"}, {"softcap"}, {"logit_scale"}, {"z_loss", "softcap", "logit_scale"}):
        assert any(o["loss"] == "cross_entropy" and wanted <= set(o) for o in seen), wanted
    assert {o["gamma"] for o in seen if o["loss"] == "focal"} == {0.0, 0.5, 2.0}
    assert any(o["loss"] == "focal" and {"alpha", "softcap", "logit_scale"} <= set(o) for o in seen)
    assert {o["reduction"] for o in seen} == {"mean", "sum", "none"} and {o["temperature"] for o in seen} > {1.0}


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_order_2_passes_and_matches_torch_through_the_cli(passing_json_report, case):
    """Protects each Hessian through the CLI: `check --order 2` exits 0 with torch's loss and gradient as the
    user's, and the analytic Hessian element the JSON reports (the worst one) is torch's to 1e-12 of itself
    plus 1e-12 of the largest (both float64: a few eps of the C terms each sums, far below that)."""
    document = {key: case[key] for key in ("logits", "labels")}
    document["loss"], document["gradient"] = case["loss"], case["gradient"]
    report = passing_json_report(document, [*options_args(case["options"]), "--order", "2"])
    checks = {check["name"]: check for check in report["checks"]}
    assert checks["hessian"]["passed"] and checks["supplied gradient"]["passed"], checks
    theirs = _reference(case)
    worst = checks["hessian"]["worst"]
    bound = 1e-12 * abs(theirs[tuple(worst["index"])]) + 1e-12 * np.abs(theirs).max()
    assert abs(worst["actual"] - theirs[tuple(worst["index"])]) <= bound, (worst, theirs[tuple(worst["index"])])


def _reference(case: dict) -> np.ndarray:
    """The Hessian to hold ours to 1e-12: torch's, or for the focal cases the 50-digit one beside it (torch's
    autograd cancels in the double backward of a confident class's softmax: the fixture records by how much,
    and test_torch_agrees_within_its_own_measured_error holds torch to that)."""
    return np.array(case.get("hessian_50_digits", case["hessian"]))


@pytest.mark.parametrize("case", [c for c in CASES if "torch_error" in c], ids=lambda c: str(c["options"]))
def test_torch_agrees_within_its_own_measured_error(case):
    """Protects the focal Hessian against torch itself where its own digits allow: ours is within 1e-12 plus
    torch's error against 50 digits (recorded by make_torch_golden.py, at most 1e-10 of the case's largest
    element; most cases 1e-15) of torch's, elementwise relative to the largest element."""
    loss, _, logits = _built(case)
    theirs = np.array(case["hessian"])
    off = np.abs(loss.hessian(logits) - theirs).max() / np.abs(theirs).max()
    assert off <= 1e-12 + case["torch_error"], off


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_every_hessian_element_matches_torch(case):
    """Protects every element of each Hessian (the loss's hessian(), N x C x C) against torch's, to the same
    1e-12; and torch's own Hessian passes gradcheck's check as the analytic side (the numeric side and its
    tolerances agree with an independent computation), while torch's with its largest element off by 1e-6 of
    itself fails. Why 1e-6: the allowance of an element is rtol (1e-10 for central) times max(|n|, S) plus
    the rounding u rho N; on these cases S and N stay within 1e3 of the largest element (caps >= 2, scales
    <= 3, gamma <= 2, logits <= 12 x 3), so an allowance of at most 1e-7 of it, ten times below the plant."""
    loss, settings, logits = _built(case)
    theirs = _reference(case)
    assert_agrees(loss.hessian(logits), theirs, "hessian")
    assert _hessian_check(loss, settings, logits, theirs).passed
    wrong = theirs.copy()
    largest = np.unravel_index(np.abs(wrong).argmax(), wrong.shape)
    wrong[largest] *= 1 + 1e-6
    check = _hessian_check(loss, settings, logits, wrong)
    assert not check.passed and check.worst_index == tuple(int(i) for i in largest), check


def _slips(loss: Loss, logits: np.ndarray) -> dict[str, np.ndarray]:
    """Wrong Hessians a person writes by hand for these losses (each misses a term of the product rule)."""
    from gradcheck_cli.numerics.losses.cross_entropy import CrossEntropy
    from gradcheck_cli.numerics.losses.focal import Focal
    from gradcheck_cli.numerics.losses.transformed import Transformed

    slips = {}
    if isinstance(loss, Transformed):
        y, transform = loss.transform.apply(logits), loss.transform
        inner = loss.inner.hessian(y)
        slope = transform.slope(logits)
        slips["g' once, not twice"] = inner * slope[:, :, None]
        if transform.cap is not None:
            slips["no g'' term"] = inner * slope[:, :, None] * slope[:, None, :]
    elif isinstance(loss, CrossEntropy) and loss.z_weights is not None:
        from dataclasses import replace

        plain = replace(loss, z_weights=None).hessian(logits)
        s = loss.softmax(logits).s
        slips["z-loss: 2 S lse J only, no s s^T"] = loss.hessian(logits) - (
            (2 * loss.z_weights)[:, None, None] * s[:, :, None] * s[:, None, :] * (loss.factor / loss.temperature))
        slips["z-loss left out"] = plain
    elif isinstance(loss, Focal):
        slips["focal bracket held constant"] = loss.hessian(logits) - _focal_curvature(loss, logits)
    return slips


def _focal_curvature(loss: Loss, logits: np.ndarray) -> np.ndarray:
    """The K r_j r_k term of the focal Hessian (what differentiating the bracket B adds)."""
    parts = loss.softmax(logits)
    _, _, r, _, curve = loss._hessian_parts(parts)  # type: ignore[attr-defined]
    return curve[:, None, None] * r[:, :, None] * r[:, None, :] * (loss.factor / loss.temperature)


@pytest.mark.parametrize("case", [c for c in CASES if c["options"]["loss"] == "cross_entropy"
                                  or c["options"]["gamma"] > 0][::2], ids=lambda c: str(c["options"]))
def test_the_published_kind_of_slip_fails(case):
    """Protects the other side: a Hessian missing one term of the product or chain rule (the z-loss's s s^T,
    soft-capping's g'' on the diagonal, the logit scale applied once, the focal bracket's own derivative)
    fails the check; each is far from right on these cases (asserted, so the test cannot pass vacuously)."""
    loss, settings, logits = _built(case)
    slips = _slips(loss, logits)
    assert slips, case["options"]
    right = loss.hessian(logits)
    for name, wrong in slips.items():
        if np.abs(wrong - right).max() <= 1e-6 * np.abs(right).max():
            continue  # this case makes the slip harmless (a logit scale near 1, a cap far above the logits)
        assert not _hessian_check(loss, settings, logits, wrong).passed, name


@pytest.mark.parametrize("options", [
    {"loss": "cross_entropy", "z_loss": 0.05},
    {"loss": "cross_entropy", "softcap": 3.0, "logit_scale": 2.0, "z_loss": 0.02},
    {"loss": "focal", "gamma": 0.5, "alpha": 0.25},
    {"loss": "focal", "gamma": 2.0, "softcap": 4.0, "logit_scale": 1.3},
])
def test_the_exact_changes_equal_re_evaluation(options):
    """Protects gradient_perturbation (what the Hessian's differences evaluate) against its definition,
    g(z + d e_j) - g(z) re-evaluated, at a large move d = 0.3 (rounding of the re-evaluation: a few eps of
    |g|, so 1e-12 of each element plus 1e-14 of the largest gradient element), and its complex step
    (Im of the change at i h, over h) against the analytic Hessian column to 1e-12."""
    rng = np.random.default_rng(5)
    logits, labels = rng.standard_normal((5, 4)) * 3, rng.integers(0, 4, 5)
    settings = _settings({"temperature": 0.7, "reduction": "sum", **options})
    loss = loss_kind(settings.loss).build(Batch(logits, labels, np.eye(4)[labels]), settings, np.dtype(np.float64))
    change = loss.gradient_perturbation(logits)
    base = loss.gradient(logits)
    hessian = loss.hessian(logits)
    for j in range(4):
        moved = logits.copy()
        moved[:, j] += 0.3
        np.testing.assert_allclose(change(j, np.asarray(0.3)), loss.gradient(moved) - base, rtol=1e-12,
                                   atol=1e-14 * np.abs(base).max())
        np.testing.assert_allclose(change(j, np.asarray(1e-20j)).imag / 1e-20, hessian[:, :, j], rtol=1e-12,
                                   atol=1e-14 * np.abs(hessian).max())


def test_the_slope_shift_is_the_change_of_the_slope():
    """Protects transforms.slope_shift, the exact g'(z + d) - g'(z) of soft-capping: it equals the difference
    where that is accurate (a large d: 1e-13 relative), its complex step is g'' (1e-13), and it is 0 without a
    cap."""
    z = np.linspace(-12.0, 12.0, 49)
    transform = LogitTransform(1.5, 4.0)
    np.testing.assert_allclose(transform.slope_shift(z, np.asarray(0.5)),
                               transform.slope(z + 0.5) - transform.slope(z), rtol=1e-13, atol=1e-16)
    np.testing.assert_allclose(transform.slope_shift(z, np.asarray(1e-20j)).imag / 1e-20, transform.bend(z),
                               rtol=1e-13, atol=1e-300)
    assert not LogitTransform(2.0).slope_shift(z, np.asarray(0.5)).any()


def test_focal_at_gamma_0_has_cross_entropys_hessian():
    """Protects the limit the issue names: gamma = 0 and no alpha is cross-entropy, Hessian included (to a few
    eps: the same J / T^2 by another product)."""
    rng = np.random.default_rng(2)
    logits, labels = rng.standard_normal((4, 5)) * 4, rng.integers(0, 5, 4)
    batch = Batch(logits, labels, np.eye(5)[labels])
    focal = loss_kind("focal").build(batch, _settings({"loss": "focal", "gamma": 0.0, "temperature": 1.3}),
                                     np.dtype(np.float64))
    plain = loss_kind("cross_entropy").build(batch, _settings({"temperature": 1.3}), np.dtype(np.float64))
    np.testing.assert_allclose(focal.hessian(logits), plain.hessian(logits), rtol=1e-14, atol=1e-17)


ROW_ARGS = ["-i", str(EXAMPLES / "variants.json")]


@pytest.mark.parametrize("args", [
    ["--logit-scale", "1.5", "--softcap", "5", "--z-loss", "0.01"],
    ["--loss", "focal", "--gamma", "0.5", "--alpha", "0.25", "--softcap", "3"],
])
def test_every_method_and_float32_pass_at_order_2(gradcheck, args):
    """Protects the Hessian's error analysis (truncation by Faa di Bruno and Leibniz, rounding per element):
    a correct computation passes with every method, in float32 too (a too-tight tolerance fails here)."""
    for extra in (["--method", "central"], ["--method", "forward"], ["--method", "five-point"],
                  ["--method", "richardson"], ["--method", "complex-step"], ["--dtype", "float32"],
                  ["--temperature", "0.2", "--method", "five-point"]):
        run = gradcheck("check", *ROW_ARGS, *args, *extra, "--order", "2", "-f", "json")
        assert run.exit_code == 0, (extra, run)
        assert any(check["name"] == "hessian" for check in json.loads(run.stdout)["checks"]), extra
