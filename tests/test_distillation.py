"""The distillation losses (kl, reverse-kl, jsd) with temperature, T^2 and teacher logits, end to end.

Golden values are torch 2.13's (tests/fixtures/make_torch_golden.py, "variant_cases"), run through the CLI
without torch. torch's own float64 gradient is not exact: its backward forms v = dl/dlog q (q (r + 1) for the
reverse KL, -p for the forward one) and then v - q sum v, so an element carries up to a few u (|v_k| + q_k
sum |v|) of rounding, and every log-softmax an absolute u (max |z / T| + max |t / T|). Where q_k is near 1 and
the element is a small difference of large terms, that is far above 1e-12 of the gradient (case 92: torch is
off by 2e-4 relative to its largest element; gradcheck's value agrees with a 50-digit mpmath evaluation to
2e-15). So each element is held to 1e-12 relative plus 8 u times those terms (torch_rounding below): a wrong
formula is off by O(1) of an element, never by that.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from gradcheck_cli.inputs.gather import InputRequest
from gradcheck_cli.pipeline import check, open_check
from gradcheck_cli.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = json.loads((ROOT / "tests" / "fixtures" / "torch_golden.json").read_text())
CASES = [(index, case) for index, case in enumerate(GOLDEN["variant_cases"])
         if case["options"]["loss"] in ("kl", "reverse-kl", "jsd")]
SLIPS = ROOT / "examples" / "distillation_slips.py"
EXAMPLE = ROOT / "examples" / "distillation.json"
U = 2.0**-53
# batchmean needs the mean's divisor and the reported total for a reduction other than "mean": the one-line
# changes to pipeline.mean_divisor and runner._reduced_sum named in the report (settings.DIVIDING_REDUCTIONS).


def options_args(options: dict) -> list[str]:
    args = ["--loss", options["loss"], "--reduction", options["reduction"], "--temperature", repr(options["temperature"])]
    if options.get("t2_scaling"):
        args.append("--t2-scaling")
    if "beta" in options:
        args += ["--beta", repr(options["beta"])]
    return args


def log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def reduction_scale(reduction: str, rows: int, classes: int) -> float:
    return {"batchmean": 1 / rows, "mean": 1 / (rows * classes), "sum": 1.0, "none": 1.0}[reduction]


def torch_rounding(case: dict) -> np.ndarray:
    """8 u (|v_k| + q_k sum |v|) per element, times w / T and the reduction's scale (module docstring)."""
    options, z, t = case["options"], np.array(case["logits"]), np.array(case["teacher_logits"])
    temperature = options["temperature"]
    log_q, log_p = log_softmax(z / temperature), log_softmax(t / temperature)
    q, p = np.exp(log_q), np.exp(log_p)
    reach = np.abs(z).max() / temperature + np.abs(t).max() / temperature
    log_m = np.log(0.5 * p + 0.5 * q)  # |log M| <= |log p| + |log q| + log 2 for any beta: a bound, not a value
    terms = np.abs(log_q) + np.abs(log_p) + np.abs(log_m) + 2.0 + reach
    v = q * terms + p * (1.0 + reach)
    weight = temperature**2 if options.get("t2_scaling") else 1.0
    scale = reduction_scale(options["reduction"], *z.shape)
    return 8 * U * (v + q * v.sum(axis=1, keepdims=True)) * weight / temperature * scale


def assert_agrees(ours, theirs, what: str, allowance: np.ndarray | float = 0.0) -> None:
    ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    assert ours.shape == theirs.shape, what
    bound = 1e-12 * np.abs(theirs) + 1e-12 * max(float(np.max(np.abs(theirs))), 1e-300) + allowance
    worst = float(np.max(np.abs(ours - theirs) - bound))
    assert worst <= 0, f"{what}: off by {np.max(np.abs(ours - theirs)):.3e}"


def _case_id(item: tuple[int, dict]) -> str:
    index, case = item
    return f"variant{index}-{case['options']['loss']}-{case['options']['reduction']}"


@pytest.mark.parametrize("item", CASES, ids=[_case_id(item) for item in CASES])
def test_matches_torch(passing_json_report, item):
    """Every distillation golden case through the CLI: torch's loss and gradient, supplied as the user's values,
    pass gradcheck's checks, and gradcheck's own agree with them (protects the formulas, T, T^2, reductions)."""
    _, case = item
    document = {key: case[key] for key in ("logits", "teacher_logits", "loss", "gradient")}
    report = passing_json_report(document, options_args(case["options"]))
    assert_agrees(report["loss"], case["loss"], "loss")
    assert_agrees(report["gradient"]["analytic"], case["gradient"], "gradient", torch_rounding(case))
    names = {check["name"]: check["passed"] for check in report["checks"]}
    assert names["supplied loss"] and names["supplied gradient"], names


def test_the_fixture_covers_every_option():
    """The golden cases hold every loss, reduction, beta (0 and 1 included) and both T^2 settings."""
    seen = {(case["options"]["loss"], case["options"]["reduction"]) for _, case in CASES}
    assert seen == {(loss, reduction) for loss in ("kl", "reverse-kl", "jsd")
                    for reduction in ("batchmean", "sum", "mean", "none")}
    assert {case["options"].get("beta") for _, case in CASES} >= {0.0, 0.1, 0.5, 0.9, 1.0}
    assert {case["options"]["t2_scaling"] for _, case in CASES} == {True, False}


def run_json(gradcheck, *args: str) -> tuple[int, dict]:
    run = gradcheck("check", *args, "-f", "json")
    assert run.exit_code in (0, 1), run
    return run.exit_code, json.loads(run.stdout)


@pytest.mark.parametrize("beta, same_as", [("0", "kl"), ("1", "reverse-kl")])
def test_jsd_at_beta_0_and_1_is_the_kl(gradcheck, beta, same_as):
    """Liger-Kernel's convention: JSD with beta 0 is the forward KL and with 1 the reverse KL, exactly."""
    common = ("-i", str(EXAMPLE), "--temperature", "2", "--t2-scaling", "--reduction", "sum")
    _, jsd = run_json(gradcheck, *common, "--loss", "jsd", "--beta", beta)
    _, kl = run_json(gradcheck, *common, "--loss", same_as)
    assert jsd["loss"] == kl["loss"] and jsd["gradient"] == kl["gradient"]


@pytest.mark.parametrize("loss", ["kl", "reverse-kl", "jsd"])
@pytest.mark.parametrize("extra", [("--order", "2"), ("--dtype", "float32"), ("--method", "complex-step"),
                                   ("--method", "five-point", "--order", "2", "--temperature", "0.05")])
def test_every_check_passes_on_a_correct_reference(gradcheck, loss, extra):
    """The Hessian, float32, the complex step and a small T with its large z / T: a correct computation passes."""
    code, report = run_json(gradcheck, "-i", str(EXAMPLE), "--loss", loss, "--reduction", "mean", "--t2-scaling",
                            *extra)
    assert code == 0 and report["passed"], report["checks"]


def test_a_gradient_off_by_one_part_in_1e8_fails(gradcheck, tmp_path):
    """A supplied gradient 1e-8 relative off the reference fails: the tolerances do not hide real errors."""
    _, report = run_json(gradcheck, "-i", str(EXAMPLE), "--loss", "jsd", "--beta", "0.3", "--reduction", "sum")
    document = json.loads(EXAMPLE.read_text())
    document["gradient"] = (np.array(report["gradient"]["analytic"]) * (1 + 1e-8)).tolist()
    path = tmp_path / "off.json"
    path.write_text(json.dumps(document))
    code, report = run_json(gradcheck, "-i", str(path), "--loss", "jsd", "--beta", "0.3", "--reduction", "sum")
    assert code == 1 and not {c["name"]: c["passed"] for c in report["checks"]}["supplied gradient"]


def load_slips():
    spec = importlib.util.spec_from_file_location("distillation_slips", SLIPS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


KL_MEAN = ("--loss", "kl", "--reduction", "mean", "--temperature", "2")
JSD_SUM = ("--loss", "jsd", "--beta", "0.1", "--t2-scaling", "--reduction", "sum", "--temperature", "2")


def reference_gradient(loss: str, z: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The gradient of the asked loss from the fixture's formulas: kl (q - p) / T / (N C); jsd (beta 0.1, T^2,
    sum) T q (g - <q, g>) with g = 0.9 (log q - log M)."""
    log_q, log_p = log_softmax(z / 2), log_softmax(t / 2)
    q, p = np.exp(log_q), np.exp(log_p)
    if loss == "kl":
        return (q - p) / (2 * z.size)
    g = 0.9 * (log_q - np.log(0.1 * p + 0.9 * q))
    return q * (g - (q * g).sum(axis=1, keepdims=True)) * 2


@pytest.mark.parametrize("function, args, passes", [
    ("kl_mean", KL_MEAN, True),
    ("kl_batchmean_for_mean", KL_MEAN, False),
    ("kl_swapped_direction", KL_MEAN, False),
    ("jsd", JSD_SUM, True),
    ("jsd_swapped_weights", JSD_SUM, False),
    ("jsd_teacher_without_temperature", JSD_SUM, False),
])
def test_planted_slips_fail_at_their_worst_element(gradcheck, function, args, passes):
    """examples/distillation_slips.py through --impl: the correct functions pass (exit 0); each published slip
    (kl_div's batchmean for mean, a factor C; the KL's direction swapped; trl PR #5731's JSD weights and
    temperature) exits 1, naming the element whose error is the largest share of its tolerance."""
    run = gradcheck("check", "-i", str(EXAMPLE), *args, "--impl", f"{SLIPS}:{function}", "-f", "json")
    assert run.exit_code == (0 if passes else 1), run
    if passes:
        return
    report = json.loads(run.stdout)
    named = next(c for c in report["checks"] if c["name"] == "impl gradient")
    document = json.loads(EXAMPLE.read_text())
    z, t = np.array(document["logits"]), np.array(document["teacher_logits"])
    reference = reference_gradient(args[1], z, t)
    users = getattr(load_slips(), function)(z, t)[1]
    # A value compared with the reference may be off by rtol |n| plus its rounding allowance (README), which is
    # below 1e-13 |n| for every element of this input (none is under 1e-4 of the largest): so the largest
    # share of the tolerance is at the largest relative error.
    assert np.abs(reference).min() > 1e-4 * np.abs(reference).max()
    share = np.abs(users - reference) / np.abs(reference)
    assert not named["passed"]
    # A scale slip (batchmean for mean: C times every element) is equally wrong everywhere: any element within
    # rounding of the largest relative error is the right one to name.
    assert share[tuple(named["worst"]["index"])] >= share.max() * (1 - 1e-9), (named, share)
    verdict = gradcheck("check", "-i", str(EXAMPLE), *args, "--impl", f"{SLIPS}:{function}", "-q")
    assert verdict.exit_code == 1 and verdict.stdout.startswith("FAIL:"), verdict


def one_line_error(run) -> str:
    assert run.exit_code == 2, run
    assert run.stdout == "" and run.stderr.count("\n") == 1 and "Traceback" not in run.stderr, run
    return run.stderr


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("document, args, message", [
    ({"logits": [[1, 2, 3]], "teacher_logits": [[1, 2]]}, ("--loss", "kl"),
     "teacher logits have 2 classes, the logits have 3"),
    ({"logits": [[1, 2], [3, 4]], "teacher_logits": [[1, 2]]}, ("--loss", "kl"), "1 teacher row for 2 rows of logits"),
    ({"logits": [[1, 2]], "teacher_logits": [[1, "x"]]}, ("--loss", "jsd"), "teacher_logits[0][1]: expected a number"),
    ({"logits": [[1, 2]], "teacher_logits": [[1, 2e9]]}, ("--loss", "kl"), "teacher_logits[0]: logit 2000000000.0"),
    ({"logits": [[1, 2]], "teacher_logits": [[1, 2]], "labels": [0]}, ("--loss", "kl"),
     "both give what the logits are compared with"),
    ({"logits": [[1, 2]], "teacher_logits": [[1, 2]]}, (), "teacher logits apply to the distillation losses"),
    ({"logits": [[1, 2]], "labels": [0]}, ("--loss", "reverse-kl"), "--loss reverse-kl compares with a teacher"),
    ({"logits": [[1, 2]], "labels": [0]}, ("--reduction", "batchmean"),
     "--reduction batchmean does not apply to --loss cross_entropy"),
    ({"logits": [[1, 2]], "teacher_logits": [[1, 2]]}, ("--loss", "kl", "--beta", "0.5"), "--beta"),
    ({"logits": [[1, 2]], "labels": [0]}, ("--t2-scaling",), "--t2-scaling"),
    ({"logits": [[1, 2]], "teacher_logits": [[1, 2]]}, ("--loss", "jsd", "--beta", "1.5"), "1.5 is out of range"),
])
def test_teacher_input_errors_exit_2_with_one_line(gradcheck, tmp_path, document, args, message):
    """Every bad teacher input or option: exit 2, one line on stderr saying what and where, nothing on stdout."""
    path = write(tmp_path, "bad.json", json.dumps(document))
    assert message in one_line_error(gradcheck("check", "-i", path, *args))


def test_json_lines_teacher_rows_stream_with_their_rows(gradcheck, tmp_path):
    """A JSON Lines file read in chunks of a few rows gives the report of the same rows read whole: the teacher
    logits travel with their rows (and the fast and the strict reader agree on them)."""
    rng = np.random.default_rng(5)
    z, t = rng.standard_normal((40, 4)) * 3, rng.standard_normal((40, 4)) * 3
    lines = [json.dumps({"logits": a.tolist(), "teacher_logits": b.tolist()}) for a, b in zip(z, t, strict=True)]
    path = write(tmp_path, "rows.jsonl", "\n".join(lines) + "\n")
    settings = Settings(loss="reverse-kl", reduction="mean", temperature=1.5)
    whole = check(InputRequest(input_path=path), settings)
    with open_check(InputRequest(input_path=path), settings, chunk_bytes=300) as job:
        assert job.input.whole is None  # really chunked
        chunked = job.run()
    assert chunked.exit_code == whole.exit_code == 0
    assert chunked.loss == whole.loss
    np.testing.assert_array_equal(chunked.analytic_gradient, whole.analytic_gradient)
    strict = write(tmp_path, "strict.jsonl", "\n".join(lines[:2]) + '\n{"logits": [1, 2, 3, 4], "label": 0}\n')
    assert "mixes labels and teacher_logits" in one_line_error(gradcheck("check", "-i", strict, "--loss", "kl"))


def test_teacher_from_arguments_and_a_file_beside_a_csv(tmp_path):
    """--teacher-logits rows and a --teacher-file CSV (InputRequest's teacher fields) give the JSON's batch."""
    document = json.loads(EXAMPLE.read_text())
    settings = Settings(loss="kl", reduction="sum", temperature=2.0)
    from_json = check(InputRequest(input_path=str(EXAMPLE)), settings)
    rows = tuple(",".join(map(repr, row)) for row in document["teacher_logits"])
    logits = tuple(",".join(map(repr, row)) for row in document["logits"])
    from_args = check(InputRequest(logits_args=logits, teacher_logits_args=rows), settings)
    csv = write(tmp_path, "logits.csv", "\n".join(logits) + "\n")
    teacher = write(tmp_path, "teacher.csv", "\n".join(rows) + "\n")
    from_file = check(InputRequest(input_path=csv, teacher_path=teacher), settings)
    assert from_json.loss == from_args.loss == from_file.loss
    np.testing.assert_array_equal(from_args.analytic_gradient, from_json.analytic_gradient)


def test_explain_and_sweep_take_the_distillation_losses(gradcheck):
    """explain writes the chain rule (g = dL/dq, then q_k (g_k - <q, g>)); sweep sees a correct V."""
    explained = gradcheck("explain", "-i", str(EXAMPLE), "--loss", "jsd", "--beta", "0.2")
    assert explained.exit_code == 0, explained
    assert "∂L/∂q = (1 \u2212 β)(log q \u2212 log M)" in explained.stdout  # real minus signs, as explain writes
    swept = gradcheck("sweep", "-i", str(EXAMPLE), "--loss", "reverse-kl", "--temperature", "2", "-q")
    assert swept.exit_code == 0 and "looks correct" in swept.stdout, swept


# The commands take --teacher-logits and --teacher-file once they are decorated with options.teacher_options
# and pass InputRequest's teacher fields on; explain divides the teacher by T as it divides the logits: the
# changes to commands/ and api/explaining.py named in the report.


def test_teacher_options_on_the_command_line(gradcheck, tmp_path):
    """--teacher-logits and --teacher-file through the CLI give the JSON input's report; a wrong row is exit 2."""
    document = json.loads(EXAMPLE.read_text())
    rows = [",".join(map(repr, row)) for row in document["teacher_logits"]]
    logits = [",".join(map(repr, row)) for row in document["logits"]]
    loss = ("--loss", "jsd", "--beta", "0.3", "--temperature", "2", "--reduction", "sum")
    _, from_json = run_json(gradcheck, "-i", str(EXAMPLE), *loss)
    arguments = [part for a, t in zip(logits, rows, strict=True) for part in ("--logits", a, "--teacher-logits", t)]
    _, from_args = run_json(gradcheck, *arguments, *loss)
    csv, teacher = write(tmp_path, "z.csv", "\n".join(logits) + "\n"), write(tmp_path, "t.csv", "\n".join(rows) + "\n")
    _, from_file = run_json(gradcheck, "-i", csv, "--teacher-file", teacher, *loss)
    assert from_json["loss"] == from_args["loss"] == from_file["loss"]
    assert from_json["gradient"] == from_args["gradient"] == from_file["gradient"]
    extra = gradcheck("check", *arguments[:4], "--teacher-logits", rows[1], *loss)
    assert "--teacher-logits: 2 teacher rows for 1 row of logits" in one_line_error(extra)
    ragged = gradcheck("check", *arguments[:4], "--teacher-logits", "1,2", *loss)
    assert "--teacher-logits[1]: ragged" in one_line_error(ragged)


def test_explain_divides_the_teacher_by_t(gradcheck):
    """explain at T = 2 shows p = softmax(teacher / 2), the teacher's softmax the loss uses."""
    run = gradcheck("explain", "--logits", "1,2,3", "--teacher-logits", "3,2,1", "--loss", "kl", "--temperature", "2")
    assert run.exit_code == 0, run
    assert "p = softmax(teacher / T) = (0.506, 0.307, 0.186)" in run.stdout


# --- explain on wide rows (issue 13: `explain -i n8_c50257.json` in under a second, memory O(C)) ---------------

EXPLAIN_CASES = [("kl", {}), ("reverse-kl", {}), ("jsd", {"beta": 0.3}), ("jsd", {"beta": 0.0}),
                 ("cross_entropy", {"z_loss": 0.01, "softcap": 5.0, "logit_scale": 1.5}), ("focal", {"softcap": 4.0}),
                 ("bce", {}), ("mse", {})]


def _explained(monkeypatch, name: str, options: dict, classes: int, counting) -> list[str]:  # type: ignore[no-untyped-def]
    """One row's explain lines of a loss, every module's shown() replaced by `counting`."""
    import importlib

    from gradcheck_cli.batch import Batch
    from gradcheck_cli.numerics import differences
    from gradcheck_cli.numerics.losses import loss_kind

    for module in ("kl", "reverse_kl", "jsd", "distillation", "transformed", "focal", "bce", "cross_entropy",
                   "squared_error"):
        monkeypatch.setattr(importlib.import_module(f"gradcheck_cli.numerics.losses.{module}"), "shown", counting)
    rng = np.random.default_rng(classes)
    logits, teacher = rng.standard_normal((2, classes)) * 3, rng.standard_normal((2, classes)) * 3
    labels = np.array([1, 0])
    distilling = name in ("kl", "reverse-kl", "jsd")
    targets = np.full((2, classes), 0.3) if name == "bce" else np.eye(classes)[labels]
    settings = differences.resolve(Settings(loss=name, **options))
    batch = Batch(logits, None if distilling or name in ("bce", "mse") else labels, targets,
                  teacher_logits=teacher if distilling else None)
    kind = loss_kind(name)
    loss = kind.build(batch, settings, np.dtype(np.float64))
    return kind.explain(loss, logits[1] / settings.temperature, loss.softmax(logits).s[1], 1)


@pytest.mark.parametrize(("name", "options"), EXPLAIN_CASES, ids=[f"{n}-{o}" for n, o in EXPLAIN_CASES])
def test_explain_formats_a_wide_row_without_a_loop_over_its_classes(monkeypatch, name, options):
    """Protects the per-loss explain lines from a Python loop over the C classes (2 to 6 s for C = 50,257 at
    most 0.4 s CPU now): the number of single-number shown() calls does not grow with C (each kind of number is
    formatted for every class by one call: base.shown_each / formatted_lines), and a line per class is written."""
    from gradcheck_cli.numerics.losses import base

    calls: list[int] = []

    def counting(value: float) -> str:
        calls.append(1)
        return base.shown(value)

    counts, widths = [], (5, 400)
    for classes in widths:
        calls.clear()
        lines = _explained(monkeypatch, name, options, classes, counting)
        counts.append(len(calls))
        assert sum(line.startswith("   ∂L/∂z_") for line in lines) >= classes, name
    assert counts[0] == counts[1], counts


def test_the_vectorized_formatting_is_shown_s():
    """Protects shown_each and signed_each: the same text as shown() (and distillation.signed) number by number,
    across signs, magnitudes, exponents, a trailing point, zero, inf and nan."""
    from gradcheck_cli.numerics.losses import distillation
    from gradcheck_cli.numerics.losses.base import formatted_lines, shown, shown_each, signed_each

    values = np.array([0.0, -0.0, 1.0, -1.5, 123.0, 1234.5, -1e-5, 2.5e-300, 9.995e7, -np.inf, np.nan, 1 / 3])
    assert shown_each(values) == [shown(float(v)) for v in values]
    assert signed_each(values) == [distillation.signed(float(v)) for v in values]
    assert formatted_lines("%d: %s", range(3), ["a", "b", "c"]) == ["0: a", "1: b", "2: c"]
