"""Diagnosis at any size (issue 15's remaining gap): past the limit of logits kept whole, the slip is named on a
bounded sample of rows (checks/slip_sample.py) with the whole input's numbers, and says on how many rows.

Inputs of 1,200 x 50 are run with the limits shrunk (UsersValues' `limit` and `sample_logits`), fed batch by
batch with the checks the runner makes of each (check_rows, merged as the runner merges them); one real input
of 3 x 10,000 logits goes through the command line with the default limits. Planted values are written here
naively (softmax minus one-hot, divided as torch does), never by the module's formulas.
"""

from __future__ import annotations

import json
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from gradcheck_cli.batch import Batch
from gradcheck_cli.checks.compare import merge
from gradcheck_cli.checks.rows import check_rows
from gradcheck_cli.checks.slip_sample import row_priority
from gradcheck_cli.checks.users import UsersValues
from gradcheck_cli.numerics import differences
from gradcheck_cli.numerics.losses import accepted_kind
from gradcheck_cli.settings import Settings

N, C = 1_200, 50
LIMIT = 2_000  # 40 rows of 50: the 1,200 rows are over it
SAMPLE = 2_000  # the sample's budget: 40 rows


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def labelled(seed: int = 0, ignored: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """N x C logits and labels, `ignored` of them -100 at random rows."""
    rng = np.random.default_rng(seed)
    z, y = rng.normal(size=(N, C)) * 2.0, rng.integers(0, C, N)
    y[rng.choice(N, ignored, replace=False)] = -100
    return z, y


def plain_gradient(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each row's softmax minus its one-hot label, 0 on an ignored row: the sum-reduced gradient."""
    kept = y >= 0
    return (softmax(z) - np.eye(C)[np.where(kept, y, 0)]) * kept[:, None]


def drive(z: np.ndarray, y: np.ndarray, gradient: np.ndarray, settings: Settings, pieces: int = 4,
          checks: bool = True) -> tuple[list, list[str], UsersValues]:
    """What the runner does with the user's values: each batch checked, offered with its checks, the checks merged
    with the input's row offsets, and the failing ones diagnosed at the end."""
    settings = differences.resolve(settings)
    kind = accepted_kind(settings)
    valid = (y >= 0) & (y < C)  # a label -100 has a zero target row, as the readers make it
    targets = np.eye(C)[np.where(valid, y, 0)] * valid[:, None]
    normalizer = float(kind.divisor_rows(Batch(z, y, targets), settings).sum())  # the whole input's, as the runner's
    users, merged = UsersValues(settings, limit=LIMIT, sample_logits=SAMPLE), {}
    for rows in np.array_split(np.arange(len(y)), pieces):
        batch = Batch(z[rows], y[rows], targets[rows], supplied={"gradient": gradient[rows]})
        part = check_rows(batch, settings, kind, normalizer)
        for check in part.checks:
            shift = (int(rows[0]),) + (0,) * (len(check.worst_index) - 1) if check.worst_index else ()
            merged[check.name] = merge(merged.get(check.name), check, shift)
        users.add(batch, part.logits, {}, part.checks if checks else None)
    notes: list[str] = []
    return users.diagnoses(list(merged.values()), notes), notes, users


def test_a_sampled_diagnosis_divides_by_the_whole_inputs_count() -> None:
    """Protects the whole input's numbers on a sample: the mean's 1/D forgotten, D the 1,080 rows not ignored of
    the whole input (not of the 40 sampled), is missing-mean with D = 1080; the diagnosis, its findings and a
    note say it was decided on a sample of at most 40 of the 1,200 rows, and which."""
    z, y = labelled(ignored=120)
    (diagnosis,), notes, users = drive(z, y, plain_gradient(z, y), Settings(ignore_index=-100))
    first = diagnosis.findings[0]
    assert (first.id, first.matched) == ("missing-mean", True), diagnosis.verdict
    assert "1080" in first.description and "the rows not ignored" in first.description
    sample = users.sample
    assert sample is not None and 4 <= sample.rows <= 40
    said = f"on a sample of {sample.rows} of the 1,200 rows"
    assert said in diagnosis.verdict and all(said in finding.description for finding in diagnosis.findings)
    assert any(note.startswith(f"diagnosis: decided on a sample of {sample.rows} of the 1,200 rows") for note in notes)
    assert first.rows == sample.rows and first.explains_rows == 1.0


def test_the_sample_holds_the_worst_ignored_and_overflowing_rows_and_row_0() -> None:
    """Protects the sample's pools: the rows of the failing check's worst elements, the ignored rows and the rows
    whose e^z overflows are kept (up to their share), with row 0, whichever batch they came in."""
    z, y = labelled(seed=1, ignored=3)
    z[[100, 900]] *= 600.0  # e^z overflows on these rows
    gradient = plain_gradient(z, y) / np.count_nonzero(y >= 0)
    gradient[[333, 777]] *= 1.5  # two rows wrong: the worst elements
    _, _, users = drive(z, y, gradient, Settings(ignore_index=-100))
    index = set(users.sample.totals().sample_rows.tolist())
    assert {0, 100, 900, 333, 777} | set(np.flatnonzero(y < 0).tolist()) <= index


def test_the_spread_rows_do_not_depend_on_the_batches() -> None:
    """Protects a deterministic sample: the rows spread across the input are those of smallest hash of their
    index and the seed, however the input was split into batches."""
    z, y = labelled(seed=2)
    gradient = plain_gradient(z, y)  # wrong everywhere
    spread = [drive(z, y, gradient, Settings(), pieces=pieces)[2].sample.pools["spread"].rows for pieces in (1, 7)]
    expected = np.argsort(row_priority(np.arange(N), None))
    expected = np.concatenate([[0], expected[expected != 0]])[: spread[0].size]
    assert sorted(spread[0].tolist()) == sorted(spread[1].tolist()) == sorted(expected.tolist())


def test_ignored_rows_not_zeroed_is_named_on_a_sample() -> None:
    """Protects ignored-rows-not-zeroed at size: the ignored rows keep a gradient and the rest is right (divided
    by the 1,195 rows not ignored of the whole input); the partial match names the input's ignored rows."""
    z, y = labelled(seed=3, ignored=5)
    kept = y >= 0
    gradient = (softmax(z) - np.eye(C)[np.where(kept, y, 0)]) / np.count_nonzero(kept)  # ignored rows not zeroed
    (diagnosis,), _, _ = drive(z, y, gradient, Settings(ignore_index=-100))
    first = diagnosis.findings[0]
    assert (first.id, first.partial) == ("ignored-rows-not-zeroed", True), diagnosis.verdict
    assert set(first.unexplained_rows) == set(np.flatnonzero(~kept).tolist())
    assert "(the ignored rows)" in first.description


def _weighted_label_shift(z: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    shifted = (y + 1) % C  # torch's weighted mean: divided by the summed weights of the (shifted) labels
    return (softmax(z) - np.eye(C)[shifted]) * w[shifted][:, None] / w[shifted].sum()


def _class_not_ignored(z: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    return (softmax(z) - np.eye(C)[y]) / N  # ignore_index 3 is a class: its rows counted, divided by every row


def _class_not_ignored_still_divided(z: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    return (softmax(z) - np.eye(C)[y]) / np.count_nonzero(y != 3)  # counted, but divided by the rows not ignored


def _divided_by_every_row(z: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    return plain_gradient(z, y) / N  # torch divides by the rows not ignored


@pytest.mark.parametrize(("slip", "planted", "options"), [
    ("label-shift", _weighted_label_shift, {"weights": "w"}),
    ("ignored-rows-not-zeroed", _class_not_ignored, {"ignore_index": 3}),
    ("ignored-rows-not-zeroed", _class_not_ignored_still_divided, {"ignore_index": 3}),
    ("divisor-convention", _divided_by_every_row, {"ignore_index": -100}),
])
def test_recomputed_conventions_take_the_whole_inputs_divisor(slip, planted, options) -> None:
    """Protects the divisors of recomputed conventions on a sample: labels off by one under class weights divide
    by the shifted labels' summed weights over the whole input, class 3 not ignored by all 1,200 rows (or still
    by the input's rows not ignored), and a divisor of N where torch's is the rows not ignored: each named first."""
    z, y = labelled(seed=11, ignored=60 if options.get("ignore_index") == -100 else 0)
    w = np.random.default_rng(12).uniform(0.5, 2.0, C)
    if options.get("ignore_index") == 3:
        y[np.random.default_rng(13).choice(N, 60, replace=False)] = 3
    settings = Settings(**{key: tuple(w) if value == "w" else value for key, value in options.items()})
    (diagnosis,), _, _ = drive(z, y, planted(z, y, w), settings)
    assert (diagnosis.findings[0].id, diagnosis.findings[0].matched) == (slip, True), diagnosis.verdict


def test_no_max_subtraction_is_named_on_a_sample() -> None:
    """Protects no-max-subtraction at size: NaN on the two rows whose e^z overflows, right elsewhere."""
    z, y = labelled(seed=4)
    z[[10, 1100]] *= 600.0
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(z)
        gradient = (e / e.sum(axis=1, keepdims=True) - np.eye(C)[y]) / N
    assert not np.isfinite(gradient[[10, 1100]]).all() and np.isfinite(np.delete(gradient, [10, 1100], 0)).all()
    (diagnosis,), _, _ = drive(z, y, gradient, Settings())
    assert (diagnosis.findings[0].id, diagnosis.findings[0].matched) == ("no-max-subtraction", True), diagnosis


def test_a_sample_missing_the_wrong_rows_says_so_plainly() -> None:
    """Protects never guessing: without the checks' worst rows, a sample that holds none of the two wrong rows
    says the sampled values agree and names no slip; with them, the rows are in it and the check is diagnosed."""
    z, y = labelled(seed=5)
    gradient = plain_gradient(z, y) / N
    wrong = np.argsort(row_priority(np.arange(N), None))[-2:]  # the last two rows the spread would take
    gradient[wrong] *= 2.0
    (blind,), _, users = drive(z, y, gradient, Settings(), checks=False)
    assert not set(wrong) & set(users.sample.totals().sample_rows.tolist())
    assert blind.findings == () and blind.verdict.startswith("not diagnosed: your gradient agrees with the reference")
    (seen,), _, _ = drive(z, y, gradient, Settings())
    assert seen.findings and not seen.verdict.startswith("not diagnosed")


@pytest.mark.parametrize("slip", ["grad-output-broadcast", "factor-two", "missing-temperature"])
def test_the_upstream_gradient_of_a_sample_is_its_rows_own(slip: str) -> None:
    """Protects the upstream gradient of a sample: reduction none with --grad-output random, each row of the input
    has its own g_n. A backward that scales every row by g_0 is named (row 0 is always sampled); one that is
    twice sum_n g_n grad l_n is factor-two (the reference of the sampled rows takes their own g_n, not the first
    K); one at T = 1 where T = 2 is asked is missing-temperature (so does the recomputed reference)."""
    z, y = labelled(seed=6)
    settings = Settings(reduction="none", grad_output="random", seed=7,
                        temperature=2.0 if slip == "missing-temperature" else 1.0)
    g = np.random.default_rng(7).uniform(0.5, 2.0, N)  # as upstream_gradient draws it
    each = {"grad-output-broadcast": g[0], "factor-two": 2.0 * g[:, None], "missing-temperature": g[:, None]}
    gradient = plain_gradient(z, y) * each[slip]
    (diagnosis,), _, _ = drive(z, y, gradient, settings, pieces=1)
    assert (diagnosis.findings[0].id, diagnosis.findings[0].matched) == (slip, True), diagnosis


def test_a_correct_input_gets_no_diagnosis_at_size() -> None:
    """Protects no false slip: a right gradient over the limit has no failing check, so no diagnosis."""
    z, y = labelled(seed=8, ignored=10)
    gradient = plain_gradient(z, y) / np.count_nonzero(y >= 0)
    diagnoses, notes, _ = drive(z, y, gradient, Settings(ignore_index=-100))
    assert diagnoses == [] and not any(note.startswith("diagnosis") for note in notes)


# --- through the command line ------------------------------------------------------------------------------------

def _wide(tmp_path: Path) -> tuple[str, np.ndarray, np.ndarray]:
    """3 x 10,000 logits, over the default 20,000 kept whole, with labels, as .npz."""
    rng = np.random.default_rng(9)
    z, y = rng.normal(size=(3, 10_000)), np.array([5, 17, 9_999])
    return str(tmp_path / "wide.npz"), z, y


def test_a_real_over_limit_input_is_diagnosed(gradcheck, tmp_path) -> None:
    """Protects diagnosis at the default limits: 3 x 10,000 logits from .npz with the mean's 1/N forgotten in the
    gradient is missing-mean in check's JSON and tables and in diagnose, said to be on all 3 rows."""
    path, z, y = _wide(tmp_path)
    np.savez(path, logits=z, labels=y, gradient=softmax(z) - np.eye(10_000)[y])
    document = json.loads(gradcheck("check", "-i", path, "-f", "json").stdout)
    (first, *_) = document["diagnosis"]
    assert (first["id"], first["matched"]) == ("missing-mean", True) and "on all 3 rows" in first["description"]
    assert any(note.startswith("diagnosis: decided on all 3 rows") for note in document["notes"])
    tables = gradcheck("check", "-i", path)
    assert tables.exit_code == 1 and "diagnosis: every element of your gradient is 3.000" in tables.stdout
    run = gradcheck("diagnose", "-i", path, "-f", "json")
    assert run.exit_code == 1 and json.loads(run.stdout)["diagnoses"][0]["findings"][0]["id"] == "missing-mean"


def test_an_impl_over_the_limit_is_diagnosed(gradcheck, tmp_path) -> None:
    """Protects diagnosis of --impl at size: a function whose gradient forgets 1/N on 3 x 10,000 logits."""
    _, z, y = _wide(tmp_path)
    np.save(tmp_path / "z.npy", z)
    np.save(tmp_path / "y.npy", y)
    module = tmp_path / "wide_impl.py"
    module.write_text("import numpy as np\n\n\ndef forgot(logits, targets, reduction='mean'):\n"
                      "    e = np.exp(logits - logits.max(axis=1, keepdims=True))\n"
                      "    s = e / e.sum(axis=1, keepdims=True)\n"
                      "    loss = -(targets * np.log(s)).sum() / len(logits)\n"
                      "    return loss, s - targets\n")
    run = gradcheck("check", "-i", str(tmp_path / "z.npy"), "--labels-file", str(tmp_path / "y.npy"),
                    "--impl", f"{module}:forgot", "-f", "json")
    document = json.loads(run.stdout)
    assert run.exit_code == 1 and document["diagnosis"][0]["id"] == "missing-mean", document["diagnosis"]


def test_a_shrunk_limit_samples_through_the_runner(gradcheck, tmp_path, monkeypatch) -> None:
    """Protects the runner's use of the sample: with the limit shrunk, a 1,200 x 50 input with the 1/N forgotten
    in its supplied gradient is named missing-mean (N = 1200) on a sample of at most 40 rows, and a note says so."""
    from gradcheck_cli.checks import users

    monkeypatch.setattr(users, "UsersValues", partial(UsersValues, limit=LIMIT, sample_logits=SAMPLE))
    z, y = labelled(seed=10)
    path = tmp_path / "shrunk.npz"
    np.savez(path, logits=z, labels=y, gradient=plain_gradient(z, y))
    document = json.loads(gradcheck("check", "-i", str(path), "-f", "json").stdout)
    (first, *_) = document["diagnosis"]
    assert (first["id"], first["matched"]) == ("missing-mean", True) and "(N = 1200)" in first["description"]
    assert "of the 1,200 rows" in first["description"]
    assert any(note.startswith("diagnosis: decided on a sample of") for note in document["notes"])


def test_a_reduced_loss_is_diagnosed_on_a_sample(gradcheck, tmp_path, monkeypatch) -> None:
    """Protects a loss of one number at size: its reference and tolerance are its check's (the sample's rows
    cannot sum the input's loss); the sum where the mean was asked is missing-mean (N = 1200), and the
    hypotheses that recompute the whole loss are not tried on a sample (none of them is listed)."""
    from gradcheck_cli.checks import users

    monkeypatch.setattr(users, "UsersValues", partial(UsersValues, limit=LIMIT, sample_logits=SAMPLE))
    z, y = labelled(seed=14)
    summed = -np.log(softmax(z)[np.arange(N), y]).sum()  # the mean's 1/N forgotten
    path = tmp_path / "loss.json"
    path.write_text(json.dumps({"logits": z.tolist(), "labels": y.tolist(), "loss": float(summed)}))
    run = gradcheck("diagnose", "-i", str(path), "-f", "json")
    (diagnosis,) = json.loads(run.stdout)["diagnoses"]
    first = diagnosis["findings"][0]
    assert run.exit_code == 1 and (first["id"], first["matched"]) == ("missing-mean", True), diagnosis
    assert "(N = 1200)" in first["description"]
    tried = {finding["id"] for finding in diagnosis["findings"]}
    assert not tried & {"smoothing-convention", "double-softmax", "label-shift", "softmax-instead-of-log"}


_MEMORY = """
import sys
import numpy as np
from gradcheck_cli.batch import Batch
from gradcheck_cli.checks.users import UsersValues
from gradcheck_cli.settings import Settings

batches, rows, classes = int(sys.argv[1]), 400, 1_000
users = UsersValues(Settings(atol=1e-10, rtol=1e-7), limit=20_000, sample_logits=200_000)
rng = np.random.default_rng(0)
for number in range(batches):
    z = rng.normal(size=(rows, classes))
    y = rng.integers(0, classes, rows)
    batch = Batch(z, y, np.eye(classes)[y], supplied={"gradient": z * 0.5})
    users.add(batch, z, {})
    del z, y, batch
status = open("/proc/self/status").read()
print(int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))), users.sample.rows)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="VmHWM is Linux's")
def test_the_sample_keeps_memory_bounded_whatever_the_length() -> None:
    """Protects bounded memory: ten times the rows (1,600 against 16,000 of 1,000 logits: 13 to 128 MB of float64
    logits, and as much again of targets and of gradients, streamed) raise the peak by less than 24 MB: the
    sample's 200,000 logits (at most 200 rows of logits, targets and gradient, 4.8 MB) plus the batch in hand,
    never the input (kept whole, the longer input's three arrays would be 384 MB)."""
    peaks = []
    for batches in (4, 40):
        out = subprocess.run([sys.executable, "-c", _MEMORY, str(batches)], capture_output=True, text=True,
                             check=True).stdout.split()
        peaks.append(int(out[0]))
        assert int(out[1]) <= 200
    assert peaks[1] - peaks[0] < 24 * 1024, peaks
