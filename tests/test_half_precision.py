"""--dtype bfloat16 and float16: rounding to the formats, gradcheck's plain same-dtype baseline, and the two
verdicts on a user's half-precision values (the dtype's tolerance, and the baseline verdict).

torch tests use torch only as an independent oracle (its casts and its own F.cross_entropy); they skip
without it, and CI installs it."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from gradcheck_cli.api import check
from gradcheck_cli.checks.precision import FLOOR, SLACK, baseline_check, precision_notes
from gradcheck_cli.numerics.baselines import plain_baseline
from gradcheck_cli.numerics.losses.cross_entropy import CrossEntropy
from gradcheck_cli.numerics.precision import FORMATS, round_to, rounded_sum, spacing
from gradcheck_cli.settings import DTYPES, Settings

SCHEMA = json.loads((Path(__file__).parent.parent / "gradcheck_cli" / "schema.json").read_text(encoding="utf-8"))
TORCH_REASON = "torch is the independent oracle here (pip install torch==2.13.0; .ci/run installs it)"


# --- rounding --------------------------------------------------------------------------------------------------

# Hand-derived: bfloat16 keeps 8 significant bits, float16 11; ties go to the even neighbour.
HAND_ROUNDED = [
    ("bfloat16", 1 + 2**-8, 1.0),  # a tie between 1 and 1 + 2^-7: the even one, 1
    ("bfloat16", 1 + 3 * 2**-8, 1 + 2**-6),  # a tie between 1 + 2^-7 and 1 + 2^-6: the even one
    ("bfloat16", 1 + 2**-8 + 2**-20, 1 + 2**-7),  # above the tie (exact in float32, so no double rounding)
    ("bfloat16", (2 - 2**-7) * 2.0**127, (2 - 2**-7) * 2.0**127),  # the largest finite value
    ("bfloat16", (2 - 2**-8) * 2.0**127, np.inf),  # its tie with 2^128: even, which overflows
    ("bfloat16", 2.0**-133, 2.0**-133),  # the smallest subnormal
    ("bfloat16", 3 * 2.0**-134, 2.0**-132),  # a subnormal tie: to the even multiple of 2^-133
    ("bfloat16", -3.0, -3.0),
    ("float16", 65504.0, 65504.0),
    ("float16", 65520.0, np.inf),  # the tie above the largest finite float16
    ("float16", 1 + 2**-11, 1.0),
    ("float16", 2.0**-24, 2.0**-24),
    ("float16", 0.1, 0.0999755859375),  # 1638 / 2^14
]


@pytest.mark.parametrize(("dtype", "value", "rounded"), HAND_ROUNDED)
def test_round_to_matches_hand_rounding(dtype: str, value: float, rounded: float) -> None:
    """Protects round_to: nearest-even at the format's spacing, subnormals and overflow included."""
    assert round_to(np.array([value]), dtype)[0] == rounded


def test_round_to_matches_torch_casts() -> None:
    """Protects round_to against torch's own casts, bit for bit, over 100,000 values from 1e-45 to 1e38: the
    logits a framework sees after its cast are the ones gradcheck checks at."""
    torch = pytest.importorskip("torch", reason=TORCH_REASON)
    rng = np.random.default_rng(18)
    values = rng.standard_normal(100_000) * 10.0 ** rng.integers(-45, 39, 100_000)
    for dtype, torch_dtype in (("bfloat16", torch.bfloat16), ("float16", torch.float16)):
        expected = torch.tensor(values, dtype=torch.float64).to(torch_dtype).double().numpy()
        assert np.array_equal(round_to(values, dtype), expected), dtype


def test_spacing_is_the_unit_in_the_last_place() -> None:
    """Protects the ulp the baseline verdict reports: 2^-7 at 1 in bfloat16, 2^-10 in float16, subnormal at 0."""
    assert list(spacing(np.array([1.0, 1.99, 2.0, 0.0]), "bfloat16")) == [2**-7, 2**-7, 2**-6, 2.0**-133]
    assert float(spacing(1.0, "float16")) == 2**-10 == FORMATS["float16"].eps


def test_rounded_sum_is_pairwise_with_each_partial_sum_rounded() -> None:
    """Protects the baseline's sums: pairwise, so 1000 ones in bfloat16 sum to 1000 exactly (every partial sum
    is representable), where a running sum stalls at 256 (256 + 1 rounds back to 256)."""
    assert rounded_sum(np.ones((2, 1000)), "bfloat16").tolist() == [1000.0, 1000.0]
    running = 0.0
    for _ in range(1000):
        running = float(round_to(np.array([running + 1.0]), "bfloat16")[0])
    assert running == 256.0
    # Each partial sum rounded: (1 + 2^-8) + 2^-8 pairs as (1 + 2^-8) -> 1, then 1 + 2^-8 -> 1.
    assert rounded_sum(np.array([[1.0, 2**-8, 2**-8]]), "bfloat16").tolist() == [1.0]


# --- the plain baseline, against an independent same-dtype implementation ---------------------------------------


def test_cross_entropy_baseline_equals_torch_ops_rounded_in_bfloat16() -> None:
    """Protects the cross-entropy baseline: torch's bfloat16 ops round after each operation too; the same formula
    written with them (pairwise sums, the gradient from exp of the kept log-probabilities) gives the same
    probabilities, row losses and gradient to within 1 ulp of each value (torch's float32 exp and log may differ
    from a correctly rounded one in the last float32 bit, which can move a bfloat16 rounding at a near-tie)."""
    torch = pytest.importorskip("torch", reason=TORCH_REASON)
    rng = np.random.default_rng(5)
    logits = round_to(rng.standard_normal((6, 37)) * 4, "bfloat16")
    labels = rng.integers(0, 37, 6)
    targets = np.eye(37)[labels]
    mine = plain_baseline(logits, CrossEntropy("sum", 1.0, 1.0, coefficients=targets), "bfloat16")

    def pairwise(x):  # every partial sum a bfloat16 add
        while x.shape[-1] > 1:
            if x.shape[-1] % 2:
                x = torch.cat([x, torch.zeros_like(x[..., :1])], dim=-1)
            x = x[..., 0::2] + x[..., 1::2]
        return x[..., 0]

    z = torch.tensor(logits).to(torch.bfloat16)
    y = torch.tensor(targets).to(torch.bfloat16)
    shifted = z - z.max(dim=-1, keepdim=True).values
    exps = torch.exp(shifted)
    total = pairwise(exps)[:, None]
    s = exps / total
    log_s = shifted - torch.log(total)
    rows = -pairwise(y * log_s)
    gradient = torch.exp(log_s) * pairwise(y)[:, None] - y  # log_softmax's backward: exp of what it kept
    for ours, theirs in ((mine.probabilities, s), (mine.row_losses, rows), (mine.gradient, gradient)):
        theirs = theirs.double().numpy()
        assert np.all(np.abs(ours - theirs) <= spacing(theirs, "bfloat16")), (ours, theirs)


# --- the two verdicts ------------------------------------------------------------------------------------------


def _float16_cross_entropy(logits: np.ndarray, labels: np.ndarray, accumulate_in_float16: bool):
    """A user's numpy float16 softmax cross-entropy (mean): numpy rounds each float16 operation to float16. Its
    sum over classes is either float32 (correct: an upcast accumulator) or a running float16 sum (the bug)."""
    z = logits.astype(np.float32).astype(np.float16)  # cast as torch casts float64: through float32
    shifted = z - z.max(axis=1, keepdims=True)
    exps = np.exp(shifted)
    if accumulate_in_float16:
        total = np.add.accumulate(exps, axis=1, dtype=np.float16)[:, -1:]  # each add rounded to float16
    else:
        total = exps.astype(np.float32).sum(axis=1, keepdims=True).astype(np.float16)
    s = exps / total
    onehot = np.eye(z.shape[1], dtype=np.float16)[labels]
    gradient = (s - onehot) / np.float16(len(labels))
    return s.astype(np.float64), gradient.astype(np.float64)


@pytest.mark.parametrize(("accumulate_in_float16", "passes"), [(False, True), (True, False)])
def test_float16_accumulation_fails_the_baseline_verdict_in_tables_and_json(gradcheck, tmp_path,
                                                                             accumulate_in_float16, passes) -> None:
    """Protects the baseline verdict end to end: a float16 softmax whose 2,000-class sum runs in float16 (no
    upcast) fails it, and the same code with a float32 accumulator passes both verdicts; tables and JSON carry
    the figures (your error, the baseline's, their ratio, both in ulp)."""
    rng = np.random.default_rng(7)
    logits, labels = rng.standard_normal((4, 2000)) * 3, rng.integers(0, 2000, 4)
    s, gradient = _float16_cross_entropy(logits, labels, accumulate_in_float16)
    path = tmp_path / "half.json"
    path.write_text(json.dumps({"logits": logits.tolist(), "labels": labels.tolist(), "gradient": gradient.tolist(),
                                "probabilities": s.tolist()}))
    run = gradcheck("check", "-i", str(path), "--dtype", "float16", "-f", "json")
    assert run.exit_code == (0 if passes else 1), run
    report = json.loads(run.stdout)
    checks = {entry["name"]: entry for entry in report["checks"]}
    check_schema = {"$defs": SCHEMA["$defs"], "$ref": "#/$defs/check"}
    for entry in report["checks"]:  # the new fields are described in schema.json
        jsonschema.validate(entry, check_schema, cls=jsonschema.Draft202012Validator)
    baseline = checks["supplied gradient vs float16 baseline"]
    assert baseline["passed"] is passes, baseline
    figures = baseline["baseline"]
    assert figures["dtype"] == "float16"
    assert figures["ratio"] == pytest.approx(figures["ulps"] / figures["baseline_ulps"], rel=1e-12)
    assert figures["allowed"] == pytest.approx(SLACK * figures["baseline_ulps"] + FLOOR, rel=1e-12)
    reference, gross = _reference_gradient(logits, labels)
    assert figures["error"] == pytest.approx(np.abs(gradient - reference).max(), rel=1e-9)
    ulps = np.sqrt(np.mean(np.square((gradient - reference) / spacing(gross, "float16"))))
    assert figures["ulps"] == pytest.approx(ulps, rel=1e-9)
    if passes:
        assert checks["supplied gradient"]["passed"] and checks["supplied probabilities"]["passed"], checks
    else:
        assert figures["ratio"] > 2 * 2, figures  # a running float16 sum: far worse than pairwise rounding
    table = gradcheck("check", "-i", str(path), "--dtype", "float16")
    assert "Half-precision baselines" in table.stdout and "your error" in table.stdout, table
    assert table.exit_code == run.exit_code, table


def _reference_gradient(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The float64 mean cross-entropy gradient at the float16-rounded logits, by hand: (s - y) / N, and the gross
    scale of each element, (s + y) / N (the terms it is made of)."""
    z = logits.astype(np.float32).astype(np.float16).astype(np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    s, y = e / e.sum(axis=1, keepdims=True), np.eye(z.shape[1])[labels]
    return (s - y) / len(labels), (s + y) / len(labels)


def test_baseline_check_figures_by_hand() -> None:
    """Protects baseline_check's rule and figures: each error in ulp of its element's gross scale (2^-7 at 1.5,
    2^-9 at 0.25 in bfloat16), root-mean-square over the elements; errors (3, 1) ulp against a baseline's (1, 1)
    give sqrt(5) <= 2 x 1 + 1 and pass, (1, 5) give sqrt(13) > 3 and fail at the element with the most ulp;
    a NaN fails whatever the baseline."""
    expected = gross = np.array([1.5, 0.25])
    unit = np.array([2**-7, 2**-9])
    baseline = expected + unit
    passing = baseline_check("g", expected + np.array([3, 1]) * unit, expected, baseline, gross, "bfloat16", "y")
    assert passing.passed and passing.baseline is not None
    figures = passing.baseline
    assert (figures.ulps, figures.baseline_ulps, figures.allowed) == (np.sqrt(5.0), 1.0, 3.0)
    assert (figures.ratio, figures.error, figures.baseline_error) == (np.sqrt(5.0), 3 * 2**-7, 2**-7)
    failing = baseline_check("g", expected + np.array([1, 5]) * unit, expected, baseline, gross, "bfloat16", "y")
    assert not failing.passed and failing.worst_index == (1,) and failing.baseline.ulps == np.sqrt(13.0)
    nan = baseline_check("g", np.array([np.nan, 0.25]), expected, baseline, gross, "bfloat16", "y")
    assert not nan.passed and nan.baseline.error is None


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_torch_cross_entropy_passes_in_200_random_cases(dtype: str) -> None:
    """Protects against false failures: torch's own F.cross_entropy in the dtype (loss, autograd gradient and
    softmax), 200 random cases of 1 to 8 rows, 2 to 300 classes, logit scales 0.1 to 100, every reduction,
    passes every check at default settings."""
    torch = pytest.importorskip("torch", reason=TORCH_REASON)
    torch_dtype = getattr(torch, dtype)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only cost
    try:
        _torch_cases(torch, torch_dtype, dtype)
    finally:
        torch.set_num_threads(threads)


def _torch_cases(torch, torch_dtype, dtype: str) -> None:
    functional = torch.nn.functional
    rng = np.random.default_rng(200)
    for case in range(200):
        rows, classes, scale = int(rng.integers(1, 9)), int(rng.integers(2, 301)), 10 ** rng.uniform(-1, 2)
        reduction = ("mean", "sum", "none")[case % 3]
        z = torch.tensor(rng.standard_normal((rows, classes)) * scale).to(torch_dtype).requires_grad_()
        labels = torch.tensor(rng.integers(0, classes, rows))
        loss = functional.cross_entropy(z, labels, reduction=reduction)
        (gradient,) = torch.autograd.grad(loss.sum(), z)
        report = check(z.detach(), labels, gradient=gradient, probabilities=torch.softmax(z.detach(), -1),
                       loss_value=loss.detach() if reduction == "none" else None, dtype=dtype, reduction=reduction)
        assert report.passed, (case, rows, classes, scale, reduction, report.failure_message())


def _bfloat16_kernel(z, labels, upcast: bool):
    """A kernel author's softmax cross-entropy in bfloat16 (mean): its class sum either upcast to float32 (right)
    or a running bfloat16 sum, each add rounded (the bug)."""
    import torch

    shifted = z - z.max(dim=-1, keepdim=True).values
    exps = torch.exp(shifted)
    if upcast:
        total = exps.float().sum(dim=-1, keepdim=True).to(torch.bfloat16)
    else:
        total = torch.zeros_like(exps[:, :1])
        for column in range(exps.shape[1]):  # no upcast: a bfloat16 accumulator
            total = total + exps[:, column:column + 1]
    s = exps / total
    onehot = torch.nn.functional.one_hot(labels, z.shape[1]).to(torch.bfloat16)
    return (s - onehot) / z.shape[0]


@pytest.mark.parametrize(("upcast", "passes"), [(True, True), (False, False)])
def test_bfloat16_accumulation_without_upcast_fails_the_baseline_verdict(upcast: bool, passes: bool) -> None:
    """Protects the planted kernel bug of issue 18: bfloat16 accumulation done in bfloat16 fails the baseline
    verdict; the same kernel accumulating in float32 passes it and the dtype's tolerance."""
    torch = pytest.importorskip("torch", reason=TORCH_REASON)
    rng = np.random.default_rng(18)
    z = torch.tensor(rng.standard_normal((3, 1024))).to(torch.bfloat16)
    labels = torch.tensor(rng.integers(0, 1024, 3))
    report = check(z, labels, gradient=_bfloat16_kernel(z, labels, upcast), dtype="bfloat16")
    verdicts = {entry.name: entry for entry in report.checks}
    assert verdicts["supplied gradient vs bfloat16 baseline"].passed is passes, report.failure_message()
    assert report.passed is passes, report.failure_message()


# --- inputs and settings ---------------------------------------------------------------------------------------


def test_half_precision_dtypes_are_choices() -> None:
    """Protects the choice: --dtype offers bfloat16 and float16 beside float64 and float32."""
    assert DTYPES == ("float64", "float32", "bfloat16", "float16")


def test_reference_is_float64_at_the_rounded_logits(gradcheck) -> None:
    """Protects 'the reference stays float64 at the inputs as rounded to the dtype': the probabilities printed
    at --dtype bfloat16 are float64 softmax of 0.1 rounded to bfloat16 (0.10009765625), not of 0.1."""
    run = gradcheck("check", "--logits", "0.1,0", "--labels", "0", "--dtype", "bfloat16", "-f", "json")
    assert run.exit_code == 0, run
    z = 0.10009765625
    s0 = 1.0 / (1.0 + np.exp(-z))
    assert json.loads(run.stdout)["probabilities"][0][0] == pytest.approx(s0, rel=1e-15, abs=0)


@pytest.mark.parametrize(("args", "message"), [
    (["--logits", "1e5,0", "--labels", "0", "--dtype", "float16"],
     ("gradcheck: error: logits[0][0]: 100000 overflows float16 (largest 65504); give logits within its range, "
      "or a wider --dtype\n")),
    (["--logits", "1,0", "--labels", "0", "--dtype", "float16", "--temperature", "1e-6"],
     "gradcheck: error: --temperature 1e-06 is outside the range of float16 (6.1e-05 to 6.55e+04)\n"),
])
def test_half_precision_input_errors(gradcheck, args: list[str], message: str) -> None:
    """Protects the one-line exit 2 for what a half-precision check cannot do: a logit beyond float16's range, a
    temperature outside it."""
    run = gradcheck("check", *args)
    assert (run.exit_code, run.stdout, run.stderr) == (2, "", message), run


def test_precision_notes_say_where_the_reference_comes_from() -> None:
    """Protects the note for the report: the differences are float64, never taken in the low dtype."""
    assert precision_notes(Settings(dtype="float32")) == []
    (note,) = precision_notes(Settings(dtype="bfloat16"))
    assert "finite differences are float64" in note and "bfloat16" in note


def _loss_and_reference(logits: np.ndarray, labels: np.ndarray, settings: Settings):
    """gradcheck's float64 cross-entropy (mean) at these logits, and its softmax, as the runner builds them."""
    from dataclasses import replace

    from gradcheck_cli.batch import Batch
    from gradcheck_cli.numerics.losses import loss_kind

    batch = Batch(logits=logits, labels=labels, targets=np.eye(logits.shape[1])[labels])
    loss = loss_kind("cross_entropy").build(batch, settings._replace(dtype="float64"), np.dtype(np.float64))
    loss = replace(loss, normalizer=float(len(labels)))
    return loss, loss.softmax(logits)


@pytest.mark.parametrize(("accumulate_in_float16", "passes"), [(False, True), (True, False)])
def test_verdicts_on_a_function_s_reduced_loss_and_gradient(accumulate_in_float16: bool, passes: bool) -> None:
    """Protects half_precision_verdicts, what --impl's values get at these dtypes: a mean loss of one number
    (reduced by gradcheck's own plain float16 code for the baseline) and the gradient, both verdicts each; the
    float16 running sum fails the gradient's baseline verdict, the float32 accumulator passes all four."""
    from gradcheck_cli.checks.rows import half_precision_verdicts
    from gradcheck_cli.numerics import differences

    rng = np.random.default_rng(7)
    logits, labels = rng.standard_normal((4, 2000)) * 3, rng.integers(0, 2000, 4)
    z = round_to(logits, "float16")
    gradient = _float16_cross_entropy(logits, labels, accumulate_in_float16)[1]
    # -log s_y = log sum exp(z - m) - (z_y - m): s_y itself may underflow in float16
    half = z.astype(np.float16)
    user_loss = float(np.mean(np.log(np.exp(half - half.max(axis=1, keepdims=True)).astype(np.float32).sum(axis=1))
                              - (half - half.max(axis=1, keepdims=True))[np.arange(4), labels]))
    settings = differences.resolve(Settings(dtype="float16"))
    loss, reference = _loss_and_reference(z, labels, settings)
    checks = half_precision_verdicts("impl", {"loss": np.asarray(user_loss), "gradient": gradient}, z, reference,
                                     loss, settings)
    names = [entry.name for entry in checks]
    assert names == ["impl loss", "impl loss vs float16 baseline", "impl gradient", "impl gradient vs float16 baseline"]
    assert checks[1].worst_index == () and checks[1].expected == pytest.approx(float(loss.loss(z)), rel=1e-15)
    assert checks[3].passed is passes, checks[3]
    if passes:
        assert all(entry.passed for entry in checks), checks


def test_baseline_gradient_carries_the_upstream_gradient(gradcheck, tmp_path) -> None:
    """Protects the baseline under --grad-output: with g = 3 the reference gradient is 3 grad L, and so is the
    plain implementation's; a correct float16 gradient times 3 passes both verdicts, the unscaled one fails."""
    rng = np.random.default_rng(11)
    logits, labels = rng.standard_normal((3, 50)) * 3, rng.integers(0, 50, 3)
    _, gradient = _float16_cross_entropy(logits, labels, False)
    verdicts = {}
    for factor in (3.0, 1.0):
        path = tmp_path / f"g{factor}.json"
        scaled = (gradient * factor).astype(np.float16).astype(np.float64)
        path.write_text(json.dumps({"logits": logits.tolist(), "labels": labels.tolist(), "gradient": scaled.tolist()}))
        (tmp_path / "g.txt").write_text("3\n")
        run = gradcheck("check", "-i", str(path), "--dtype", "float16", "--grad-output", str(tmp_path / "g.txt"),
                        "-f", "json")
        assert run.exit_code in (0, 1), run
        verdicts[factor] = {entry["name"]: entry["passed"] for entry in json.loads(run.stdout)["checks"]}
    assert verdicts[3.0]["supplied gradient"] and verdicts[3.0]["supplied gradient vs float16 baseline"], verdicts
    assert not verdicts[1.0]["supplied gradient"] and not verdicts[1.0]["supplied gradient vs float16 baseline"]


@pytest.mark.parametrize(("offset", "exit_code"), [(0.0, 0), (0.05, 1)])
def test_a_supplied_float16_loss_of_one_number(gradcheck, tmp_path, offset: float, exit_code: int) -> None:
    """Protects a supplied mean loss at --dtype float16: the float16 mean of float16 row losses passes (each row
    rounded once, u N, and their pairwise sum), and the same loss of 9.02 made 0.05 too high (6 ulp) fails."""
    rng = np.random.default_rng(3)
    logits, labels = rng.standard_normal((5, 40)) * 3, rng.integers(0, 40, 5)
    z = round_to(logits, "float16")
    shifted = z - z.max(axis=1, keepdims=True)
    rows = (np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(5), labels]).astype(np.float16)
    value = float(np.float16(rows.astype(np.float32).mean())) + offset
    path = tmp_path / "loss.json"
    path.write_text(json.dumps({"logits": logits.tolist(), "labels": labels.tolist(), "loss": value}))
    run = gradcheck("check", "-i", str(path), "--dtype", "float16", "-q")
    assert run.exit_code == exit_code, run


def test_a_half_precision_report_carries_the_note(gradcheck) -> None:
    """The report itself says the differences are float64 at the rounded logits (the runner adds the note)."""
    run = gradcheck("check", "--logits", "1,2,3", "--labels", "0", "--dtype", "bfloat16", "-f", "json")
    assert precision_notes(Settings(dtype="bfloat16"))[0] in json.loads(run.stdout)["notes"]
