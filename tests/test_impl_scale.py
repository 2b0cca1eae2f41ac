"""--impl at LLM vocabulary scale (issue 18's target, issue 13's --impl row): the function's answer is checked a
chunk of rows at a time (runner.CHUNK_LOGITS), the own-loss and Taylor checks allocate O(1) arrays of the
logits' size per direction, and none of it changes a verdict, a figure or a worst element."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from gradcheck_cli.batch import Batch
from gradcheck_cli.checks import runner
from gradcheck_cli.checks.impl import Implementation
from gradcheck_cli.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _mean_cross_entropy(logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """A correct numpy cross-entropy, mean over rows, but for a slip: one gradient element 1.5 times too large."""
    log_s = _log_softmax(logits)
    rows = logits.shape[0]
    gradient = (np.exp(log_s) * targets.sum(axis=1, keepdims=True) - targets) / rows
    gradient[2, 3] *= 1.5
    return float(-(targets * log_s).sum() / rows), gradient


def _row_cross_entropy(logits: np.ndarray, targets: np.ndarray, grad_output: np.ndarray) -> tuple[np.ndarray, ...]:
    """Row losses weighted by grad_output, correct but for one row's loss off by 0.1 and one gradient element by 0.5."""
    log_s = _log_softmax(logits)
    rows = -(targets * log_s).sum(axis=1)
    rows[4] += 0.1
    gradient = (np.exp(log_s) * targets.sum(axis=1, keepdims=True) - targets) * grad_output[:, None]
    gradient[5, 1] += 0.5
    return rows, gradient


def _correct_sum(logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    log_s = _log_softmax(logits)
    return float(-(targets * log_s).sum()), np.exp(log_s) * targets.sum(axis=1, keepdims=True) - targets


CASES = {
    "float64 mean, a slipped element": (_mean_cross_entropy, Settings(directions=4)),
    "bfloat16 none, grad_output random, slips": (
        _row_cross_entropy, Settings(dtype="bfloat16", reduction="none", grad_output="random", seed=3, directions=4)),
    "bfloat16 mean, a slipped element": (_mean_cross_entropy, Settings(dtype="bfloat16", directions=4)),
    "float32 sum, correct": (_correct_sum, Settings(dtype="float32", reduction="sum", directions=4)),
}


def _report(function: object, settings: Settings, batch: Batch) -> runner.Report:
    from gradcheck_cli.inputs.gather import Input
    from gradcheck_cli.pipeline import mean_divisor

    with Implementation("scale:f", function) as implementation:  # type: ignore[arg-type]
        return runner.run([batch], settings, mean_divisor(Input(None, None, 0, batch), settings), implementation)


def _batch(rows: int, classes: int, seed: int) -> Batch:
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 3.0, (rows, classes))
    labels = rng.integers(0, classes, rows)
    return Batch(logits, labels, np.eye(classes)[labels])


@pytest.mark.parametrize("case", CASES)
def test_chunked_checks_equal_the_whole_batch(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Protects the exactness of the chunked comparisons (runner._check_implementation, impl_rows.py): a chunk of
    one row gives the same checks (verdicts, figures, worst elements, the baseline's root-mean-square errors),
    loss, kept arrays and notes as the whole batch in one chunk, on failing and passing answers, per-row and
    reduced losses, float64, float32 and bfloat16 (whose baseline verdict is finished from per-row sums)."""
    function, settings = CASES[case]
    batch = _batch(9, 7, seed=1)
    whole = _report(function, settings, batch)
    monkeypatch.setattr(runner, "CHUNK_LOGITS", 1)
    assert len(runner.row_chunks(9, 7)) == 9
    chunked = _report(function, settings, batch)
    assert repr(chunked.checks) == repr(whole.checks)
    assert repr(chunked.notes) == repr(whole.notes)
    np.testing.assert_array_equal(np.asarray(chunked.loss), np.asarray(whole.loss))
    assert chunked.impl.keys() == whole.impl.keys() and chunked.impl
    for name, value in whole.impl.items():
        np.testing.assert_array_equal(chunked.impl[name], value)
    names = [check.name for check in whole.checks]
    if function is not _correct_sum:  # the planted slips fail where they were planted
        gradient = next(check for check in whole.checks if check.name == "impl gradient")
        assert not gradient.passed and gradient.worst_index == ((2, 3) if function is _mean_cross_entropy else (5, 1))
    else:
        assert all(check.passed for check in whole.checks), whole.checks
    # the report's order: the reference's checks, then the loss's, the gradient's, own loss, determinism
    impl = [name for name in names if name.startswith("impl")]
    assert impl.index("impl loss") < impl.index("impl gradient") < impl.index("impl gradient vs its own loss")


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
def test_the_function_gets_the_logits_check_rows_rounds(dtype: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Protects runner.rounded_logits: the whole input rounded a chunk at a time for the function's call is,
    bit for bit, what check_rows rounds each chunk to (the reference and the answer are taken at one point)."""
    from gradcheck_cli.checks.rows import check_rows
    from gradcheck_cli.numerics import differences
    from gradcheck_cli.numerics.losses import accepted_kind

    monkeypatch.setattr(runner, "CHUNK_LOGITS", 10)
    batch = _batch(6, 5, seed=2)
    batch.logits[0, 0] = 1.0 + 2.0**-9  # halfway cases of bfloat16 and float16
    settings = differences.resolve(Settings(dtype=dtype))
    rounded = runner.rounded_logits(batch.logits, dtype)
    for rows in runner.row_chunks(6, 5):
        part = check_rows(runner.rows_of(batch, rows), settings, accepted_kind(settings), 6.0)
        np.testing.assert_array_equal(part.logits, rounded[rows])


def test_rows_of_cuts_every_array_of_rows_and_keeps_a_total() -> None:
    """Protects runner.rows_of: labels, targets, lines, teacher logits and per-row supplied values are cut; a
    supplied loss of one number (the whole input's) is kept as it is."""
    batch = _batch(4, 3, seed=3)
    batch.row_lines = np.arange(10, 14)
    batch.supplied = {"loss": np.asarray(1.5), "gradient": np.arange(12.0).reshape(4, 3)}
    part = runner.rows_of(batch, slice(1, 3))
    np.testing.assert_array_equal(part.logits, batch.logits[1:3])
    np.testing.assert_array_equal(part.labels, batch.labels[1:3])  # type: ignore[index]
    np.testing.assert_array_equal(part.targets, batch.targets[1:3])
    np.testing.assert_array_equal(part.row_lines, [11, 12])  # type: ignore[arg-type]
    np.testing.assert_array_equal(part.supplied["gradient"], batch.supplied["gradient"][1:3])
    assert part.supplied["loss"] is batch.supplied["loss"]


def test_a_direction_is_moved_in_blocks_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    """Protects returned.moved's blocks: a move along a direction over part of the logits equals the logits
    plus step times the direction's signs there, made whole (independently here), and nothing else moves."""
    from gradcheck_cli.checks import returned

    monkeypatch.setattr(returned, "_MOVE_BLOCK", 7)
    logits = np.random.default_rng(4).standard_normal((5, 11))
    at = returned.Direction(seed=12, step=2.0**-6, start=3, stop=50)
    signs = np.where(np.random.default_rng(12).integers(0, 2, 55, dtype=np.int8) == 1, 1.0, -1.0)
    expected = logits.copy().reshape(-1)
    expected[3:50] += 2.0**-6 * signs[3:50]
    np.testing.assert_array_equal(returned.moved(logits, at).reshape(-1), expected)


def test_the_precision_is_read_from_every_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """Protects own_loss.detected_precision's blocks: float32 values cast to float64 read as float32 only if
    every block is exact in float32 (one float64 value in the last block makes it float64)."""
    from gradcheck_cli.checks import own_loss
    from gradcheck_cli.checks.returned import FLOAT64_EPSILON, Returned

    monkeypatch.setattr(own_loss, "BLOCK", 4)
    gradient = np.random.default_rng(5).standard_normal((3, 7)).astype(np.float32).astype(np.float64)
    loss = np.asarray(np.float32(0.7), dtype=np.float64)
    assert own_loss.detected_precision(Returned(loss, gradient, FLOAT64_EPSILON)) == own_loss.FLOAT32_EPSILON
    gradient[2, 6] += 2.0**-40
    assert own_loss.detected_precision(Returned(loss, gradient, FLOAT64_EPSILON)) == FLOAT64_EPSILON


def test_the_largest_element_is_found_across_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Protects own_loss._largest: argmax |G| a block at a time is numpy's over the whole (first of equals,
    a NaN the largest)."""
    from gradcheck_cli.checks import own_loss

    monkeypatch.setattr(own_loss, "BLOCK", 3)
    values = np.array([1.0, -5.0, 2.0, 5.0, -5.0, 0.0, 3.0])
    assert own_loss._largest(values) == 1
    values[5] = np.nan
    assert own_loss._largest(values) == 5


def test_the_taylor_directions_are_those_of_one_draw() -> None:
    """Protects taylor.SignedDirections: made one at a time they are v1, -v1, v2, -v2 of one draw of
    count x shape normals, each scaled to max |v| = 1 (what taylor_test stacked before)."""
    from gradcheck_cli.checks.taylor import SignedDirections

    drawn = np.random.default_rng(9).standard_normal((3, 4, 5))
    drawn /= np.abs(drawn).reshape(3, -1).max(axis=1)[:, None, None]
    expected = [sign * v for v in drawn for sign in (1.0, -1.0)]
    directions = SignedDirections(9, 3, (4, 5))
    assert len(directions) == 6
    for made, wanted in zip(directions, expected, strict=True):
        np.testing.assert_array_equal(made, wanted)
    np.testing.assert_array_equal(directions[3], expected[3])


_PEAK = textwrap.dedent("""
    import sys
    import numpy as np
    from gradcheck_cli.batch import Batch
    from gradcheck_cli.checks import runner
    from gradcheck_cli.checks.impl import Implementation
    from gradcheck_cli.settings import Settings

    def resident(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1]) * 1024

    import functools, inspect
    from gradcheck_cli.checks import own_loss, users
    runner.CHUNK_LOGITS = 1 << 14
    own_loss.BLOCK = 1 << 14
    if "sample_logits" in inspect.signature(users.UsersValues).parameters:  # the diagnosis' sample, as small
        users.UsersValues = functools.partial(users.UsersValues, sample_logits=1 << 14)
    rows, classes = 16, 32_768
    settings = Settings(dtype="bfloat16", directions=2)
    with Implementation.load(sys.argv[1]) as implementation:
        small = Batch(np.zeros((2, 3)), np.array([0, 1]), np.eye(3)[[0, 1]])
        runner.run([small], settings, 2.0, implementation)  # every lazy import, before the baseline
        before = resident("VmRSS")
        rng = np.random.default_rng(0)
        labels = rng.integers(0, classes, rows)
        targets = np.zeros((rows, classes))
        targets[np.arange(rows), labels] = 1.0
        batch = Batch(rng.normal(0.0, 2.0, (rows, classes)), labels, targets)
        report = runner.run([batch], settings, float(rows), implementation)
        print(all(check.passed for check in report.checks), (resident("VmHWM") - before) / (rows * classes * 8))
""")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="VmHWM is read from /proc (Linux)")
def test_a_wide_impl_check_holds_a_few_arrays_of_the_input_size(tmp_path: Path) -> None:
    """Protects the memory bound of --impl at wide vocabularies: a 16 x 32,768 bfloat16 check whose function
    runs in the worker grows this process by at most 14 arrays of the logits' size (4 MB each), where the
    whole-batch checks took over 30. Counted: the logits, their targets and the logits rounded to bfloat16 (3);
    the copies the worker protocol keeps of what it sent (logits, targets: 2, and for a moment 3 when the
    own-loss point replaces the logits); the answer's gradient (1, and 2 while the determinism check holds the
    second answer); the own-loss check's point and the gradient there (2); the chunks' and blocks' temporaries
    (CHUNK_LOGITS and BLOCK shrunk to 2^14 elements: a few dozen 128 KB arrays, about 1; the rows a diagnosis
    keeps, users.py's bounded sample, shrunk as much) and the int8 signs of a direction (1/8): 10 or so at the
    peak, 4 more for the allocator's slack. The function passes."""
    kernel = tmp_path / "kernel.py"
    kernel.write_text(textwrap.dedent("""
        import numpy as np

        def cross_entropy(logits, targets):
            shifted = logits - logits.max(axis=1, keepdims=True)
            log_s = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
            n = logits.shape[0]
            return -(targets * log_s).sum() / n, (np.exp(log_s) * targets.sum(axis=1, keepdims=True) - targets) / n
    """))
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", _PEAK, f"{kernel}:cross_entropy"], capture_output=True, text=True,
                         env=environment, timeout=300, check=False)
    assert run.returncode == 0, run.stderr
    passed, arrays = run.stdout.split()
    assert passed == "True" and float(arrays) <= 14, run.stdout


def _kl_batchmean(logits: np.ndarray, teacher: np.ndarray) -> tuple[float, np.ndarray]:
    """kl_div(log_softmax(z), softmax(t), reduction="batchmean") and its gradient, in float32 (an upcast kernel)."""
    z, t = logits.astype(np.float32), teacher.astype(np.float32)
    log_q, log_p = _log_softmax(z), _log_softmax(t)
    p = np.exp(log_p)
    rows = z.shape[0]
    return float((p * (log_p - log_q)).sum() / rows), (np.exp(log_q) - p) / rows


def test_a_batchmean_loss_baseline_is_divided_by_the_rows() -> None:
    """Protects impl_rows._half_precision_loss's divisor for batchmean (settings.DIVIDING_REDUCTIONS): the plain
    bfloat16 baseline of kl's batchmean loss is the rows' sum over N, so its error is a few bfloat16 ulps of the
    loss; summed without the 1/N it would be N - 1 times the loss off, and the verdict would pass any loss."""
    from gradcheck_cli.numerics.precision import spacing

    rng = np.random.default_rng(5)
    logits, teacher = rng.normal(0.0, 2.0, (16, 64)), rng.normal(0.0, 2.0, (16, 64))
    batch = Batch(logits, None, teacher, teacher_logits=teacher)
    report = _report(_kl_batchmean, Settings(loss="kl", reduction="batchmean", dtype="bfloat16", directions=4), batch)
    verdict = next(check for check in report.checks if check.name == "impl loss vs bfloat16 baseline")
    assert verdict.passed, report.checks
    assert verdict.baseline is not None and verdict.baseline.baseline_error is not None
    assert verdict.baseline.baseline_error <= 4 * float(spacing(np.asarray(report.loss), "bfloat16")), verdict
