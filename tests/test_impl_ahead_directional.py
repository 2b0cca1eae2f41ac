"""The directional check's calls asked ahead (issue 13, the --impl row at 8 x 50,257): right after the first answer,
before the reference is checked a chunk at a time, impl.Session asks the first worker for the gradient at z~ and the
2 x K direction calls (own_loss.directional_plan), from the reference's row losses runner.reference_rows computes
up front. The plan made early is the plan made late: the same calls (none asked twice, none after the chunks), the
same JSON report byte for byte as with nothing asked ahead, for passing functions and planted slips, reduction none
with --grad-output, float32 and bfloat16; where elements are differenced one by one (N C <= 2K) nothing is asked.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gradcheck_cli.checks import impl, runner, worker
from gradcheck_cli.checks.returned import Along
from gradcheck_cli.checks.worker_queue import AnswerQueue

# Forked workers are what these tests watch: run before any test brings torch's or JAX's threads (conftest.py).
pytestmark = pytest.mark.forks
ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "my_softmax.py"
WORKERS = pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or not worker.can_fork(),
                             reason="calls are asked ahead of a worker process (fork, Linux)")

CASES = [
    ("example:softmax_cross_entropy", ()), ("example:forgot_one_over_n", ()), ("own:one_element", ()),
    ("own:loss_scaled", ()), ("own:one_element", ("--directions", "4", "--seed", "7")),
    ("own:rows", ("--reduction", "none")), ("own:rows_slip", ("--reduction", "none", "--grad-output", "ones")),
    ("own:in_float32", ("--dtype", "float32")), ("own:in_float32_slip", ("--dtype", "float32")),
    ("example:softmax_cross_entropy", ("--dtype", "bfloat16")),
]


def _input(tmp_path: Path, rows: int, classes: int) -> Path:
    rng = np.random.default_rng(rows * 31 + classes)
    path = tmp_path / f"n{rows}_c{classes}.json"
    logits = np.round(rng.standard_normal((rows, classes)) * 3.0, 6)
    path.write_text(json.dumps({"logits": logits.tolist(), "labels": rng.integers(0, classes, rows).tolist()}))
    return path


def _function(planted: Path, name: str) -> str:
    return name.replace("example:", f"{EXAMPLE}:").replace("own:", f"{planted}:")


def _requests(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every request put to a worker's queue, as (queue, edit), and "chunk" where the reference's chunks start."""
    log: list[Any] = []
    put, chunk = AnswerQueue.put, impl.Session.chunk

    def logged_put(self: AnswerQueue, key: Any, message: Any) -> None:
        log.append((id(self), message[2]))
        put(self, key, message)

    def logged_chunk(self: impl.Session, *args: Any) -> Any:
        log.append("chunk")
        return chunk(self, *args)

    monkeypatch.setattr(AnswerQueue, "put", logged_put)
    monkeypatch.setattr(impl.Session, "chunk", logged_chunk)
    return log


def _first_workers(log: list[Any]) -> tuple[list[Any], list[Any]]:
    """The edits of the first worker's requests put before the first chunk, and after it, but Taylor points (its
    share of them, impl.FIRST_WORKER_TAYLOR, where a second worker runs: asked in __init__ either way)."""
    first, at = log[0][0], log.index("chunk")
    ours = [entry if entry == "chunk" else entry[1] for entry in log if entry == "chunk" or entry[0] == first]
    ours = [entry for entry in ours if not isinstance(entry, Along)]
    at = ours.index("chunk")
    return ours[:at], [entry for entry in ours[at + 1:] if entry != "chunk"]


@WORKERS
@pytest.mark.parametrize(("function", "options"), CASES)
def test_the_directional_calls_asked_ahead_give_the_same_report_and_calls(
        gradcheck: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, function: str,
        options: tuple[str, ...], planted_slips: Path) -> None:
    """Protects the early plan: with the directional check's calls asked before the reference's chunks, the first
    worker is asked every one of its calls (the two at the logits, the gradient at z~ where z~ is not the logits,
    2 per direction) before the first chunk and none after (the late plan found each waiting: the same point, step
    and directions), and the JSON report, stderr and exit code are byte for byte those of the run that asks them
    late (runner.reference_rows answering None: the plan made only in Session.finish), which asks the same number."""
    arguments = ("check", "-i", str(_input(tmp_path, 2, 40)), "--impl", _function(planted_slips, function), "-f", "json",
                 *options)
    log = _requests(monkeypatch)
    ahead = gradcheck(*arguments)
    before, after = _first_workers(log)
    assert ahead.exit_code in (0, 1), ahead
    directions = int(options[options.index("--directions") + 1]) if "--directions" in options else 16
    assert len(before) in (2 + 2 * directions, 3 + 2 * directions), len(before)
    assert ahead.exit_code == 1 or not after  # after the chunks: only a failure's halvings
    log.clear()
    monkeypatch.setattr(runner, "reference_rows", lambda *args: None)
    late = gradcheck(*arguments)
    late_before, late_after = _first_workers(log)
    assert late_before == before[:2] and late_after == before[2:] + after  # the same calls, asked after the chunks
    assert (late.exit_code, late.stdout, late.stderr) == (ahead.exit_code, ahead.stdout, ahead.stderr)
    names = [check["name"] for check in json.loads(ahead.stdout)["checks"]]
    assert "impl gradient vs its own loss" in names


@WORKERS
def test_nothing_is_asked_ahead_where_each_element_is_differenced(
        gradcheck: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Protects directional_plan's None: on 3 x 7 (21 elements, at most 2K = 32 a call) each element is differenced
    one by one, so only the two calls at the logits are asked before the chunks, and the report is the late one's."""
    arguments = ("check", "-i", str(_input(tmp_path, 3, 7)), "--impl", f"{EXAMPLE}:softmax_cross_entropy",
                 "-f", "json")
    log = _requests(monkeypatch)
    ahead = gradcheck(*arguments)
    assert ahead.exit_code == 0 and len(_first_workers(log)[0]) == 2
    monkeypatch.setattr(runner, "reference_rows", lambda *args: None)
    late = gradcheck(*arguments)
    assert (late.exit_code, late.stdout, late.stderr) == (ahead.exit_code, ahead.stdout, ahead.stderr)


@pytest.mark.parametrize("options", [
    (), ("--label-smoothing", "0.1", "--temperature", "2"), ("--dtype", "bfloat16"), ("--reduction", "sum"),
    ("--loss", "kl", "--dtype", "bfloat16"), ("--loss", "jsd", "--dtype", "float16"),
])
def test_reference_rows_are_the_row_losses_the_chunks_give(
        gradcheck: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        options: tuple[str, ...]) -> None:
    """Protects runner.reference_rows: the row losses and scale it computes up front (which the check then uses)
    are exactly (array_equal) those Session.chunk takes from check_rows' reference chunk by chunk where they are
    not known up front (CHUNK_LOGITS shrunk to 3 rows of 40: 3 chunks), with smoothing and temperature, a half
    precision, sum, and teachers rounded to the dtype (kl, jsd); and the report is the same either way."""
    rng = np.random.default_rng(5)
    logits = np.round(rng.standard_normal((7, 40)) * 3.0, 6)
    data: dict[str, Any] = {"logits": logits.tolist()}
    extra: tuple[str, ...] = ()
    if "--loss" in options:
        np.savetxt(tmp_path / "teacher.csv", rng.standard_normal((7, 40)) * 2.0, delimiter=",")
        extra = ("--teacher-file", str(tmp_path / "teacher.csv"))
    else:
        data["labels"] = rng.integers(0, 40, 7).tolist()
    (tmp_path / "in.json").write_text(json.dumps(data))
    monkeypatch.setattr(runner, "CHUNK_LOGITS", 120)
    used: list[Any] = []
    finish = impl.Session.finish

    def finishing(self: impl.Session, *args: Any) -> Any:
        used.append(self.rows)
        return finish(self, *args)

    monkeypatch.setattr(impl.Session, "finish", finishing)
    arguments = ("check", "-i", str(tmp_path / "in.json"), "--impl", f"{EXAMPLE}:softmax_cross_entropy",
                 "-f", "json", *extra, *options)
    early = gradcheck(*arguments)
    monkeypatch.setattr(runner, "reference_rows", lambda *args: None)
    late = gradcheck(*arguments)
    assert early.exit_code in (0, 1), early
    before, after = used
    assert np.array_equal(before.uniform, after.uniform) and np.array_equal(before.losses, after.losses)
    assert before.scale == after.scale
    assert np.all(after.losses > 0)  # filled: every row's loss, not the zeros Session starts from
    assert (early.exit_code, early.stdout, early.stderr) == (late.exit_code, late.stdout, late.stderr)


@WORKERS
def test_the_plan_is_made_once_and_the_chunks_compute_no_row_losses(
        gradcheck: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Protects Session with the row losses known up front (runner.reference_rows): the directional plan is made
    once, in __init__ (own_loss._Directional.plan, not again in finish), and Session.chunk computes no row losses
    (the reference's row_losses called only by reference_rows: at zero logits and at the logits)."""
    from gradcheck_cli.checks import own_loss
    from gradcheck_cli.numerics.losses.cross_entropy import CrossEntropy

    made: list[Any] = []
    plan, row_losses = own_loss._Directional.plan, CrossEntropy.row_losses
    callers: list[str] = []

    def counted(self: Any, *args: Any) -> Any:
        made.append(plan(self, *args))
        return made[-1]

    def called(self: Any, *args: Any, **kwargs: Any) -> Any:
        callers.append(sys._getframe(1).f_code.co_name)
        return row_losses(self, *args, **kwargs)

    monkeypatch.setattr(own_loss._Directional, "plan", counted)
    monkeypatch.setattr(CrossEntropy, "row_losses", called)
    run = gradcheck("check", "-i", str(_input(tmp_path, 2, 40)), "--impl", f"{EXAMPLE}:softmax_cross_entropy",
                    "-f", "json")
    assert run.exit_code == 0 and len(made) == 1
    assert "chunk" not in callers and callers.count("reference_rows") == 2
