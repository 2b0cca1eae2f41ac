"""Naming the slip through the command line (issue 15) and the user's values beside the reference (issue 17,
point 2): every catalogue id is named first on a planted supplied file, from JSON and from the tables; the
README's own --impl examples name their slips under their FAIL lines; correct values get no diagnosis;
`gradcheck diagnose` lists every hypothesis and exits 0/1/2; the `impl taylor` check; JSON valid against the
schema.

Planted values are written here naively in numpy, the way the slip's authors wrote them, never by
gradcheck's own formulas. A planted value carries only float64 rounding (about 1e-16 relative), far inside
the supplied check's tolerance, so a slip's transformation explains it exactly and nothing is loosened.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from test_schema import closed  # the schema with every object closed, as test_schema holds reports to it

from gradcheck_cli.render.schema import schema_text

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "my_softmax.py"
BATCH = str(ROOT / "examples" / "batch.json")
SCHEMA = json.loads(schema_text())
N, C, T, EPS = 3, 5, 1.7, 0.1  # N, C, T distinct and none 2, so no two slips predict the same numbers
LABELS = np.array([2, 0, 4])
WEIGHTS = (0.5, 2.0, 1.0, 3.0, 0.25)


def softmax(u: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(u - u.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def logits(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(N, C)) * 2.0


Z = logits()
Y = np.eye(C)[LABELS]
S = softmax(Z)


def jvp(s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """J(s) v row by row, J = diag(s) - s s^T (MATH.md)."""
    return s * (v - (s * v).sum(axis=1, keepdims=True))


def _overflowing() -> tuple[np.ndarray, np.ndarray]:
    z = Z.copy()
    z[1] = [1000.0, 0.0, -1000.0, 3.0, 1.0]
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(z)  # no max subtraction: row 1 is inf / inf
        return z, (e / e.sum(axis=1, keepdims=True) - Y) / N


def _kl_batch() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    student, teacher = rng.normal(size=(N, C)), rng.normal(size=(N, C))
    return student, teacher, softmax(teacher), softmax(student)


def _kl_direction() -> dict[str, Any]:
    student, teacher, p, q = _kl_batch()
    r = np.log(q) - np.log(p)  # the gradient of KL(q || p), where KL(p || q) is asked (batchmean)
    return {"logits": student, "teacher_logits": teacher, "gradient": q * (r - (q * r).sum(axis=1, keepdims=True)) / N}


def _batchmean_vs_mean() -> dict[str, Any]:
    student, teacher, p, q = _kl_batch()
    mean = (p * (np.log(p) - np.log(q))).sum() / (N * C)  # kl_div's mean where batchmean was asked
    return {"logits": student, "teacher_logits": teacher, "loss": mean}


def _planted() -> list[tuple[str, str, list[str], dict[str, Any]]]:
    """(id, quantity, options, the JSON input beside the logits and labels)."""
    s_t = softmax(Z / T)
    w = np.array(WEIGHTS)[LABELS][:, None]
    smoothed = np.where(Y == 1, 1 - EPS, EPS / (C - 1))  # ESPnet/icefall's eps / (C - 1)
    ignored = np.count_nonzero(LABELS != 0)
    overflowing, naive = _overflowing()
    shifted = np.eye(C)[(LABELS + 1) % C]
    double = softmax(S)
    return [
        ("missing-mean", "gradient", [], {"gradient": S - Y}),
        ("extra-mean", "gradient", [], {"gradient": (S - Y) / N / N}),
        ("mean-over-elements", "gradient", [], {"gradient": (S - Y) / (N * C)}),
        ("constant-scale", "gradient", [], {"gradient": (S - Y) * 3.7 / N}),
        ("factor-two", "gradient", ["--loss", "mse"], {"gradient": jvp(S, 2 * (S - Y)) / N}),
        ("sign-flip", "loss", [], {"loss": float(np.sum(Y * np.log(S)) / N)}),
        ("missing-temperature", "gradient", ["--temperature", str(T)], {"gradient": (s_t - Y) / N}),
        ("missing-temperature", "probabilities", ["--temperature", str(T)], {"probabilities": S}),
        ("temperature-squared", "gradient", ["--temperature", str(T)], {"gradient": (s_t - Y) * T / N}),
        ("smoothing-convention", "gradient", ["--label-smoothing", str(EPS)], {"gradient": (S - smoothed) / N}),
        ("divisor-convention", "gradient", ["--weights", ",".join(map(str, WEIGHTS))], {"gradient": w * (S - Y) / N}),
        ("ignored-rows-not-zeroed", "gradient", ["--ignore-index", "0"], {"gradient": (S - Y) / ignored}),
        ("double-softmax", "gradient", [], {"gradient": jvp(S, (double - Y) / N)}),
        ("log-probabilities-as-logits", "gradient", [], {"gradient": -Y / N}),
        ("softmax-instead-of-log", "gradient", [], {"gradient": -jvp(S, Y) / N}),
        ("transposed", "probabilities", [], {"probabilities": softmax(Z, axis=0)}),
        ("label-shift", "gradient", [], {"gradient": (S - shifted) / N}),
        ("no-max-subtraction", "gradient", [], {"logits": overflowing, "gradient": naive}),
        ("kl-direction", "gradient", ["--loss", "kl", "--reduction", "batchmean"], _kl_direction()),
        ("batchmean-vs-mean", "loss", ["--loss", "kl", "--reduction", "batchmean"], _batchmean_vs_mean()),
    ]


PLANTED = _planted()


def _json_ready(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [_json_ready(item) for item in value] if value.ndim else _json_ready(float(value))
    if isinstance(value, float) and not np.isfinite(value):
        return None  # strict JSON: a NaN is written null, and read back as NaN
    return value


def write_input(tmp_path: Path, fields: dict[str, Any], name: str = "planted.json") -> str:
    document = {"logits": Z, **({} if "teacher_logits" in fields else {"labels": LABELS.tolist()}), **fields}
    path = tmp_path / name
    path.write_text(json.dumps({key: _json_ready(value) for key, value in document.items()}))
    return str(path)


# Closed everywhere but `settings`, whose fields come with the options (tests/test_schema.py holds them closed):
# these tests hold the fields of the diagnosis and of the user's values to their descriptions.
CLOSED = closed(SCHEMA)
CLOSED["$defs"]["check_report"]["properties"]["settings"] = SCHEMA["$defs"]["check_report"]["properties"]["settings"]


def assert_valid(document: dict[str, Any], kind: str) -> None:
    jsonschema.validate(document, SCHEMA, cls=jsonschema.Draft202012Validator)
    schema = {key: value for key, value in CLOSED.items() if key != "oneOf"}
    jsonschema.validate(document, {**schema, "$ref": f"#/$defs/{kind}"}, cls=jsonschema.Draft202012Validator)


def flat(text: str) -> str:
    return " ".join(text.split())


def test_every_catalogue_id_is_planted_here() -> None:
    """Protects the 'done when': every id has a planted case through the CLI (grad-output-broadcast, which needs a
    --grad-output file, in its own test below)."""
    from gradcheck_cli.checks.diagnose import CATALOGUE

    assert {slip for slip, *_ in PLANTED} | {"grad-output-broadcast"} == {h.id for h in CATALOGUE}


def test_grad_output_broadcast_is_named(gradcheck, tmp_path) -> None:
    """Protects grad-output-broadcast through the CLI: with --grad-output g (reduction none) the reference is
    sum_n g_n grad l_n; a gradient with every row scaled by g_0 is named, in JSON and the tables."""
    g = np.array([1.5, 0.7, 1.2])
    upstream = tmp_path / "g.txt"
    upstream.write_text(" ".join(map(str, g)))
    path = write_input(tmp_path, {"gradient": g[0] * (S - Y)})
    options = ["-i", path, "--reduction", "none", "--grad-output", str(upstream)]
    run = gradcheck("check", *options, "-f", "json")
    assert run.exit_code == 1, run
    document = json.loads(run.stdout)
    assert_valid(document, "check_report")
    first = document["diagnosis"][0]
    assert (first["id"], first["matched"]) == ("grad-output-broadcast", True), document["diagnosis"]
    assert f"diagnosis: {first['description']}" in flat(gradcheck("check", *options).stdout)


@pytest.mark.parametrize(("slip", "quantity", "options", "fields"), PLANTED,
                         ids=[f"{slip}-{quantity}" for slip, quantity, _, _ in PLANTED])
def test_each_planted_slip_is_named_in_json_and_tables(gradcheck, tmp_path, slip, quantity, options, fields) -> None:
    """Protects the diagnosis wiring: a supplied value made by the slip fails its check, JSON's `diagnosis` names
    the slip first (matched), the tables print the same sentence under the failing check, and the JSON is valid."""
    path = write_input(tmp_path, fields)
    run = gradcheck("check", "-i", path, *options, "-f", "json")
    assert run.exit_code == 1, run
    document = json.loads(run.stdout)
    assert_valid(document, "check_report")
    first = document["diagnosis"][0]
    assert (first["id"], first["check"], first["matched"]) == (slip, f"supplied {quantity}", True), document["diagnosis"]
    assert first["explains_rows"] == 1.0
    assert first["residual"] is None or first["residual"] < 1e-12
    table = gradcheck("check", "-i", path, *options)
    assert table.exit_code == 1, table
    assert f"diagnosis: {first['description']}" in flat(table.stdout), table.stdout


def test_correct_supplied_values_get_no_diagnosis(gradcheck, tmp_path) -> None:
    """Protects 'never guessed': values that agree pass, with an empty diagnosis and no diagnosis line."""
    path = write_input(tmp_path, {"gradient": (S - Y) / N, "probabilities": S,
                                  "loss": float(-np.sum(Y * np.log(S)) / N)})
    run = gradcheck("check", "-i", path, "-f", "json")
    assert run.exit_code == 0, run
    document = json.loads(run.stdout)
    assert document["diagnosis"] == []
    assert_valid(document, "check_report")
    assert "diagnosis" not in gradcheck("check", "-i", path).stdout


def test_values_no_slip_makes_are_said_plainly(gradcheck, tmp_path) -> None:
    """Protects 'no match is said plainly': random noise of 1e-3 on a gradient fails and names nothing."""
    noise = np.random.default_rng(7).normal(size=(N, C)) * 1e-3
    path = write_input(tmp_path, {"gradient": (S - Y) / N + noise})
    run = gradcheck("check", "-i", path, "-f", "json")
    assert run.exit_code == 1 and json.loads(run.stdout)["diagnosis"] == [], run
    table = gradcheck("check", "-i", path)
    assert "diagnosis: no known slip reproduces your gradient (" in table.stdout, table.stdout


@pytest.mark.parametrize(("function", "loss", "sentence"), [
    ("forgot_one_over_n", "cross_entropy",
     "diagnosis: every element of your gradient is 3.000 \u00d7 the reference (N = 3): the mean's 1/N is missing"),
    ("naive_softmax_cross_entropy", "cross_entropy",
     ("diagnosis: every element of your gradient is the reference except for NaN or infinity from the rows where "
      "e^(z/T) overflows in float64 (2): the softmax does not subtract the row maximum")),
    ("mse_factor_two", "mse", "diagnosis: every element of your gradient is 2.000 \u00d7 the reference: the 1/2"),
])
def test_the_readme_impl_examples_name_their_slips(gradcheck, function, loss, sentence) -> None:
    """Protects the issue's 'done when': the FAIL output of the README's --impl examples names each planted slip
    (tables, JSON and `gradcheck diagnose`)."""
    spec = f"{EXAMPLE}:{function}"
    table = gradcheck("check", "-i", BATCH, "--loss", loss, "--impl", spec)
    assert table.exit_code == 1, table
    assert sentence in flat(table.stdout), table.stdout
    document = json.loads(gradcheck("check", "-i", BATCH, "--loss", loss, "--impl", spec, "-f", "json").stdout)
    slip = {"forgot_one_over_n": "missing-mean", "naive_softmax_cross_entropy": "no-max-subtraction",
            "mse_factor_two": "factor-two"}[function]
    assert next(f["id"] for f in document["diagnosis"] if f["check"] == "impl gradient") == slip
    assert_valid(document, "check_report")


def test_diagnose_lists_every_hypothesis_and_exits_1(gradcheck) -> None:
    """Protects `gradcheck diagnose`: every hypothesis tried is a row with its residual, the match first; exit 1."""
    from gradcheck_cli.checks.diagnose import CATALOGUE

    run = gradcheck("diagnose", "-i", BATCH, "--impl", f"{EXAMPLE}:forgot_one_over_n")
    assert run.exit_code == 1, run
    rows = [line.split() for line in run.stdout.splitlines() if line.strip().split(" ")[0] in {h.id for h in CATALOGUE}]
    assert rows[0][:2] == ["missing-mean", "match"], run.stdout
    assert len(rows) >= 10 and all(row[1] in ("match", "partial", "no") for row in rows), run.stdout
    document = json.loads(gradcheck("diagnose", "-i", BATCH, "--impl", f"{EXAMPLE}:forgot_one_over_n",
                                    "-f", "json").stdout)
    assert_valid(document, "diagnose_report")
    (diagnosis,) = document["diagnoses"]
    assert diagnosis["check"] == "impl gradient" and len(diagnosis["findings"]) == len(rows)
    assert diagnosis["findings"][0]["id"] == "missing-mean"
    residuals = [f["residual"] for f in diagnosis["findings"] if not f["matched"] and not f["partial"]]
    assert residuals == sorted(residuals)  # the rest, smallest residual first


def test_diagnose_exits_0_when_values_agree_and_2_on_bad_input(gradcheck, tmp_path) -> None:
    """Protects diagnose's exit codes: 0 agree, 2 with one line for bad input or nothing of the user's."""
    agree = gradcheck("diagnose", "-i", BATCH, "--impl", f"{EXAMPLE}:softmax_cross_entropy", "-f", "json")
    assert agree.exit_code == 0, agree
    assert json.loads(agree.stdout)["diagnoses"] == []
    nothing = gradcheck("diagnose", "-i", BATCH)
    assert (nothing.exit_code, nothing.stdout) == (2, ""), nothing
    assert "nothing of yours to diagnose" in nothing.stderr and nothing.stderr.count("\n") == 1
    missing = gradcheck("diagnose", "-i", str(tmp_path / "absent.json"), "--impl", f"{EXAMPLE}:mse")
    assert missing.exit_code == 2 and missing.stderr.count("\n") == 1, missing
    assert "ndjson" not in gradcheck("diagnose", "--help").stdout  # it writes tables and JSON only


def test_users_values_sit_beside_the_reference(gradcheck, tmp_path) -> None:
    """Protects issue 17 point 2: the gradient table leads with the user's values, then the reference and the
    finite difference; the user's probabilities and loss are shown; JSON carries them as arrays."""
    gradient = S - Y  # the forgotten 1/N: yours is 3 x the reference
    path = write_input(tmp_path, {"gradient": gradient, "probabilities": S, "loss": 0.25})
    table = gradcheck("check", "-i", path)
    header = next(line for line in table.stdout.splitlines() if "yours" in line and "class" in line)
    assert header.split() == ["row", "class", "yours", "reference", "finite", "diff", "abs", "error", "rel", "error"]
    first = next(line for line in table.stdout.splitlines() if line.split()[:2] == ["0", "0"])
    assert first.split()[2] == f"{gradient[0, 0]:.6g}" and first.split()[3] == f"{gradient[0, 0] / N:.6g}"
    assert "Your probabilities (supplied)" in table.stdout and "Your loss (supplied): 0.25" in table.stdout
    document = json.loads(gradcheck("check", "-i", path, "-f", "json").stdout)
    assert_valid(document, "check_report")
    assert document["gradient"]["supplied"] == gradient.tolist()
    assert document["supplied"] == {"probabilities": S.tolist(), "loss": 0.25}


def test_impl_values_are_in_json_and_the_report_says_the_slip(gradcheck) -> None:
    """Protects gradient.impl and impl.loss, and Report.assert_ok()'s message naming the slip."""
    import importlib.util

    import gradcheck_cli

    spec = importlib.util.spec_from_file_location("my_softmax_cli", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    document = json.loads(gradcheck("check", "-i", BATCH, "--impl", f"{EXAMPLE}:forgot_one_over_n", "-f",
                                    "json").stdout)
    batch = json.loads(Path(BATCH).read_text())
    z, y = np.array(batch["logits"]), np.eye(4)[batch["labels"]]
    loss, gradient = module.forgot_one_over_n(z, y)
    assert document["gradient"]["impl"] == gradient.tolist() and document["impl"] == {"loss": loss}
    report = gradcheck_cli.check(z, labels=batch["labels"], impl=module.forgot_one_over_n)
    with pytest.raises(AssertionError, match=r"diagnosis: every element of your gradient is 3\.000"):
        report.assert_ok()


def test_the_python_diagnose_function() -> None:
    """Protects gradcheck_cli.diagnose: check()'s keywords, one Diagnosis per failed check, [] when they agree."""
    import gradcheck_cli

    (found,) = gradcheck_cli.diagnose(Z, labels=LABELS, gradient=(S - Y) * 2 / N)
    assert (found.check, found.findings[0].id) == ("supplied gradient", "factor-two")
    assert found.verdict.startswith("every element of your gradient is 2.000")
    assert gradcheck_cli.diagnose(Z, labels=LABELS, gradient=(S - Y) / N) == []
    with pytest.raises(gradcheck_cli.InputError, match="nothing of yours"):
        gradcheck_cli.diagnose(Z, labels=LABELS)


def _impl_file(tmp_path: Path, body: str) -> str:
    path = tmp_path / "mine.py"
    path.write_text("import numpy as np\n\n\ndef f(logits, targets):\n" + body)
    return f"{path}:f"


CORRECT = ("    shifted = logits - logits.max(axis=1, keepdims=True)\n    e = np.exp(shifted)\n"
           "    s = e / e.sum(axis=1, keepdims=True)\n    n = logits.shape[0]\n"
           "    loss = -(targets * (shifted - np.log(e.sum(axis=1, keepdims=True)))).sum() / n\n")


def test_the_taylor_check(gradcheck, tmp_path) -> None:
    """Protects `impl taylor`: a correct gradient passes with slopes near 2 (taylor.py: within 0.05); one off by
    1e-3 relative fails (its remainder falls towards slope 1); losses outside its analysis get a note instead."""
    right = gradcheck("check", "-i", BATCH, "--impl", _impl_file(tmp_path, CORRECT + "    return loss, (s - targets) / n\n"),
                      "-f", "json")
    taylor = {c["name"]: c for c in json.loads(right.stdout)["checks"]}["impl taylor"]
    assert right.exit_code == 0 and taylor["passed"] and abs(taylor["worst"]["actual"] - 2.0) < 0.05, right
    off = gradcheck("check", "-i", BATCH, "--impl",
                    _impl_file(tmp_path, CORRECT + "    return loss, (s - targets) / n * (1 + 1e-3)\n"), "-f", "json")
    taylor = {c["name"]: c for c in json.loads(off.stdout)["checks"]}["impl taylor"]
    assert off.exit_code == 1 and not taylor["passed"] and taylor["worst"]["actual"] < 1.9, off
    mse = gradcheck("check", "-i", BATCH, "--loss", "mse", "--impl", f"{EXAMPLE}:mse", "-f", "json")
    document = json.loads(mse.stdout)
    assert mse.exit_code == 0 and "impl taylor" not in {c["name"] for c in document["checks"]}, mse
    assert any(note.startswith("impl taylor: not run for --loss mse") for note in document["notes"])


def test_a_big_input_is_diagnosed_on_a_sample(gradcheck, tmp_path) -> None:
    """Protects diagnosis past DIAGNOSIS_LIMIT logits: the input is checked in full and its slip named on a sample
    of its rows (tests/test_diagnosis_scale.py has the sample's own tests); a note says on which rows."""
    from gradcheck_cli.checks.users import DIAGNOSIS_LIMIT

    rows = DIAGNOSIS_LIMIT // 4 + 1
    z = np.random.default_rng(1).normal(size=(rows, 4))
    labels = np.arange(rows) % 4
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"logits": z.tolist(), "labels": labels.tolist(),
                                "gradient": (softmax(z) - np.eye(4)[labels]).tolist()}))
    run = gradcheck("check", "-i", str(path), "-f", "json")
    document = json.loads(run.stdout)
    assert run.exit_code == 1 and document["diagnosis"][0]["id"] == "missing-mean", run
    assert f"(N = {rows})" in document["diagnosis"][0]["description"]
    assert any(note.startswith("diagnosis: decided on") for note in document["notes"]), document["notes"]


def test_a_supplied_lse_at_the_wrong_temperature_is_named(gradcheck, tmp_path):
    """A failing `supplied lse` is diagnosed like the other supplied values: the lse of z instead of z / T is
    missing-temperature (it was left undiagnosed)."""
    z = np.array([[1.0, 2.0, 0.5], [0.3, 0.1, 2.0], [1.5, -1.0, 0.2], [0.0, 0.0, 3.0]])
    path = tmp_path / "lse.json"
    path.write_text(json.dumps({"logits": z.tolist(), "labels": [1, 2, 0, 2],
                                "lse": np.log(np.exp(z).sum(axis=1)).tolist()}))
    run = gradcheck("check", "-i", str(path), "--temperature", "2", "-f", "json")
    assert run.exit_code == 1, run
    (finding, *_) = json.loads(run.stdout)["diagnosis"]
    assert (finding["id"], finding["check"], finding["matched"]) == ("missing-temperature", "supplied lse", True)


def test_the_diagnosed_reference_is_the_transformed_softmax(gradcheck, tmp_path):
    """With --softcap the diagnosis compares with the capped softmax the check used: correct probabilities
    scaled by 3 are constant-scale with k = 3 (against the uncapped softmax nothing matched)."""
    z = np.array([[4.0, 2.0, 0.5, -1.0], [0.3, 5.1, 2.0, 0.0], [1.5, -1.0, 6.2, 0.2], [0.0, 0.0, 3.0, 7.0]])
    capped = 3.0 * np.tanh(z / 3.0)
    s = np.exp(capped - capped.max(axis=1, keepdims=True))
    s /= s.sum(axis=1, keepdims=True)
    path = tmp_path / "capped.json"
    path.write_text(json.dumps({"logits": z.tolist(), "labels": [0, 1, 2, 3], "probabilities": (3 * s).tolist()}))
    run = gradcheck("check", "-i", str(path), "--softcap", "3", "-f", "json")
    assert run.exit_code == 1, run
    (finding, *_) = json.loads(run.stdout)["diagnosis"]
    assert finding["check"] == "supplied probabilities" and finding["matched"]
    assert finding["id"] == "constant-scale" and "3.000" in finding["description"]


def test_a_summary_shows_your_values_beside_the_reference_where_your_check_is_worst(gradcheck, tmp_path):
    """Issue 17 point 2 for a summarised report (over 20,000 logits: no per-row tables): a failing check of your
    values lists its worst elements with yours beside the reference's; a passing one lists nothing."""
    rng = np.random.default_rng(0)
    z, y = rng.normal(size=(300, 100)), rng.integers(0, 100, 300)
    s = np.exp(z - z.max(axis=1, keepdims=True))
    s /= s.sum(axis=1, keepdims=True)
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"logits": z.tolist(), "labels": y.tolist(),
                                "gradient": (s - np.eye(100)[y]).tolist()}))  # the mean's 1/N forgotten
    tables = gradcheck("check", "-i", str(path))
    assert tables.exit_code == 1, tables
    assert "Your values where supplied gradient is worst" in " ".join(tables.stdout.split())  # the title wraps
    worst = next(check for check in json.loads(gradcheck("check", "-i", str(path), "-f", "json").stdout)["checks"]
                 if check["name"] == "supplied gradient")["worst"]
    row = next(line for line in tables.stdout.splitlines() if line.strip().startswith(f"[{worst['row']}, "
                                                                                       f"{worst['column']}]"))
    assert f"{worst['actual']:.6g}" in row and f"{worst['expected']:.6g}" in row
    (tmp_path / "right.json").write_text(json.dumps({"logits": z.tolist(), "labels": y.tolist(),
                                                      "gradient": ((s - np.eye(100)[y]) / 300).tolist()}))
    assert "Your values where" not in gradcheck("check", "-i", str(tmp_path / "right.json")).stdout
