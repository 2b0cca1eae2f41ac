"""Calls of an --impl function asked ahead of their answers (issue 13, the --impl row): the worker computes the
Taylor check's calls while this process checks the reference, answers are kept under everything they depend on
and each given once to its own request, the directional check works on each answer as it comes, and the Taylor
check's loss at the logits is the first call's (checks/worker_queue.py, worker.py's _Worker, impl.Session)."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from gradcheck_cli.checks import impl as impl_module
from gradcheck_cli.checks import worker
from gradcheck_cli.checks.impl import Implementation
from gradcheck_cli.checks.returned import Along
from gradcheck_cli.checks.worker_process import AHEAD, WorkerProcess
from gradcheck_cli.checks.worker_queue import AnswerQueue
from gradcheck_cli.errors import InputError

COUNTING = textwrap.dedent("""
    import numpy as np

    calls = [0]

    def first_logit(logits, targets):
        # its loss says what it was given (the first logit), its gradient is 0: answers are told apart by value
        if logits[0, 0] == 13.0:
            raise ValueError("thirteen")
        return float(logits[0, 0]), np.zeros_like(logits)

    def counter(logits, targets):
        # its loss says which call of this process it is
        calls[0] += 1
        return float(calls[0]), np.zeros_like(logits)
""")


def _module(tmp_path: Path) -> Path:
    path = tmp_path / "counting.py"
    path.write_text(COUNTING)
    return path


def _watch(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Every request sent to a worker, and the most ever sent and not yet answered."""
    seen: dict[str, Any] = {"sent": [], "read": 0, "most": 0}
    send, outcome = WorkerProcess.send, WorkerProcess.outcome

    def sending(self: WorkerProcess, message: Any, activity: str) -> None:
        seen["sent"].append(message)
        seen["most"] = max(seen["most"], len(seen["sent"]) - seen["read"])
        send(self, message, activity)

    def reading(self: WorkerProcess, activity: str, timeout: float | None = None) -> tuple[str, Any]:
        seen["read"] += 1
        if seen["sent"] and "before first answer" not in seen:  # (the worker's "ready" comes before any request)
            seen["before first answer"] = len(seen["sent"])
        return outcome(self, activity, timeout)

    monkeypatch.setattr(WorkerProcess, "send", sending)
    monkeypatch.setattr(WorkerProcess, "outcome", reading)
    return seen


def _point(value: float) -> np.ndarray:
    return np.array([[value, 0.5, -1.0]])


TARGETS = np.array([[1.0, 0.0, 0.0]])


def test_answers_read_ahead_go_to_their_own_requests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Protects AnswerQueue's keys and window: 40 calls asked ahead (more than AHEAD) and then asked for in
    another order each get the answer of their own point; never more than AHEAD are unanswered at once (the
    worker closes an answer's memory file AHEAD + 2 answers later); nothing is called twice."""
    seen = _watch(monkeypatch)
    values = [float(k) + 0.25 for k in range(40)]
    with Implementation.load(f"{_module(tmp_path)}:first_logit") as implementation:
        seen["read"] = 0  # the worker's "ready" is not an answer to a request
        for value in values:
            implementation.ahead(_point(value), TARGETS, [None], loss_only=True)
        for value in reversed(values):
            assert float(implementation.answer(_point(value), TARGETS, "mean", loss_only=True).loss) == value
    assert len(seen["sent"]) == 40
    assert seen["most"] == AHEAD


def test_two_asks_of_one_call_are_two_calls_answered_in_order(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Protects each answer being given once: the same call asked twice ahead (the determinism check's two calls)
    is made twice, and its two answers come back in the order made, not the first one twice."""
    seen = _watch(monkeypatch)
    z = _point(2.0)
    with Implementation.load(f"{_module(tmp_path)}:counter") as implementation:
        implementation.ahead(z, TARGETS, [None, None], loss_only=False, upstream=np.ones(()))  # as answer() asks
        first = implementation.answer(z, TARGETS, "mean")
        second = implementation.answer(z, TARGETS, "mean")
    assert (float(first.loss), float(second.loss)) == (1.0, 2.0)
    assert len(seen["sent"]) == 2


def test_the_loss_of_a_full_answer_serves_a_loss_only_call_there(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Protects the Taylor check's loss at the logits being the first call's: a loss-only call where a full
    call was made is answered with that call's loss, without a call; a full call there is still a call (the
    determinism check), and a loss-only call elsewhere too."""
    seen = _watch(monkeypatch)
    z = _point(2.0)
    with Implementation.load(f"{_module(tmp_path)}:counter") as implementation:
        assert float(implementation.answer(z, TARGETS, "mean").loss) == 1.0
        assert float(implementation.answer(z, TARGETS, "mean", loss_only=True).loss) == 1.0
        assert float(implementation.answer(z, TARGETS, "mean").loss) == 2.0
        assert float(implementation.answer(_point(3.0), TARGETS, "mean", loss_only=True).loss) == 3.0
    assert len(seen["sent"]) == 3


def test_an_error_answer_is_raised_for_its_own_request_only(tmp_path: Path) -> None:
    """Protects error answers kept under their request: the user's code failing on one call asked ahead is
    raised when that call is asked for (one line, what it raised), not for the calls around it, which answer
    with their own values; the worker goes on serving."""
    with Implementation.load(f"{_module(tmp_path)}:first_logit") as implementation:
        implementation.ahead(_point(1.0), TARGETS, [None], loss_only=True)
        implementation.ahead(_point(13.0), TARGETS, [None], loss_only=True)
        implementation.ahead(_point(3.0), TARGETS, [None], loss_only=True)
        assert float(implementation.answer(_point(3.0), TARGETS, "mean", loss_only=True).loss) == 3.0
        assert float(implementation.answer(_point(1.0), TARGETS, "mean", loss_only=True).loss) == 1.0
        with pytest.raises(InputError, match="first_logit raised ValueError: thirteen"):
            implementation.answer(_point(13.0), TARGETS, "mean", loss_only=True)
        assert float(implementation.answer(_point(5.0), TARGETS, "mean", loss_only=True).loss) == 5.0


def test_asking_for_what_was_never_asked_ahead_is_a_bug_not_a_hang() -> None:
    """Protects AnswerQueue.get: a key that was never put raises KeyError at once (no wait for an answer that
    cannot come)."""
    queue = AnswerQueue(None, "running f")  # type: ignore[arg-type]  # never touched: nothing was sent
    with pytest.raises(KeyError):
        queue.get(("never", "put"))


def _input(tmp_path: Path, rows: int, classes: int) -> Path:
    rng = np.random.default_rng(11)
    path = tmp_path / "batch.json"
    logits = np.round(rng.standard_normal((rows, classes)) * 3, 6)
    path.write_text(json.dumps({"logits": logits.tolist(), "labels": rng.integers(0, classes, rows).tolist()}))
    return path


def test_a_check_asks_for_each_call_once_and_uses_every_answer(gradcheck: Callable[..., Any], tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Protects the calls of a whole --impl check (2 x 40 logits: the directional check): 84 calls, each made
    once and its answer used: the two on the logits, the Taylor check's loss at uniform logits and its 48
    points (asked ahead by impl.Session), the directional check's point on its grid and 2 x 16 directions;
    the Taylor check's loss at the logits is the first call's (no loss-only call there). The verdict is the
    same as the function's called in this process."""
    monkeypatch.setattr(impl_module, "_spare_cpu", lambda: False)  # one worker's window (two: test_impl_workers.py)
    seen = _watch(monkeypatch)
    got = {"answers": 0}
    get = AnswerQueue.get

    def counted(self: AnswerQueue, key: Any) -> Any:
        got["answers"] += 1
        return get(self, key)

    monkeypatch.setattr(AnswerQueue, "get", counted)
    path = _input(tmp_path, 2, 40)
    impl = f"{Path(__file__).resolve().parent.parent / 'examples' / 'my_softmax.py'}:softmax_cross_entropy"
    run = gradcheck("check", "-i", str(path), "--impl", impl, "-f", "json")
    assert run.exit_code == 0, run
    sent = seen["sent"]
    assert len(sent) == 84 and got["answers"] == 84
    assert seen["before first answer"] == AHEAD  # the Taylor calls were asked before the first answer was read
    assert sum(isinstance(message[2], Along) for message in sent) == 48
    whole_loss_only = [message for message in sent if message[2] is None and message[3]]
    assert len(whole_loss_only) == 1 and not np.any(whole_loss_only[0][0])  # the uniform logits only
    names = {check["name"]: check["passed"] for check in json.loads(run.stdout)["checks"]}
    assert names["impl taylor"] and names["impl gradient vs its own loss"] and names["impl determinism"]


def test_the_taylor_calls_are_not_asked_where_the_taylor_check_does_not_run(
        gradcheck: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Protects impl._taylor_ahead's conditions (users.taylor_check's own): with --loss mse there is no Taylor
    check, and none of its 49 calls is asked for (they would only keep the worker busy)."""
    seen = _watch(monkeypatch)
    path = _input(tmp_path, 2, 40)
    impl = f"{Path(__file__).resolve().parent.parent / 'examples' / 'my_softmax.py'}:mse"
    run = gradcheck("check", "-i", str(path), "--loss", "mse", "--impl", impl, "-f", "json")
    assert run.exit_code == 0, run
    assert not any(isinstance(message[2], Along) for message in seen["sent"])
    assert len(seen["sent"]) == 2 + 1 + 2 * 16  # the two on the logits, the grid point, the directions


def test_the_directional_check_works_on_each_answer_as_it_comes() -> None:
    """Protects the directional check's streaming (own_loss._Directional._measure over Implementation.arriving):
    each direction's gap is worked out once its two calls are in, before the next direction's calls (so, with
    a worker, while they run), not after all 2K calls."""
    from gradcheck_cli.checks import own_loss
    from gradcheck_cli.numerics import differences
    from gradcheck_cli.numerics.losses.cross_entropy import torch_cross_entropy
    from gradcheck_cli.settings import Settings

    log: list[str] = []

    def logged(logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
        log.append("call")
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_s = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return float(-(targets * log_s).sum() / logits.shape[0]), (np.exp(log_s) - targets) / logits.shape[0]

    gap = own_loss._Directional._gap

    def logged_gap(self: Any, *args: Any) -> tuple[float, float]:
        log.append("gap")
        return gap(self, *args)

    rng = np.random.default_rng(5)
    logits, labels = rng.normal(0, 3, (4, 20)), rng.integers(0, 20, 4)
    with pytest.MonkeyPatch.context() as patch, Implementation("own:logged", logged) as implementation:
        patch.setattr(own_loss._Directional, "_gap", logged_gap)
        checks = implementation.checks(logits, np.eye(20)[labels], torch_cross_entropy(20, labels=labels),
                                       differences.resolve(Settings(directions=4)), [])
    assert all(check.passed for check in checks), checks
    directional = log[log.index("gap") - 2:]
    assert directional == ["call", "call", "gap"] * 4, log


def test_a_function_in_this_process_is_never_called_ahead() -> None:
    """Protects InProcess.ahead: where the function runs in this process, asking ahead calls nothing (a call
    is made when asked for), so a check there makes the calls it made before."""
    calls: list[int] = []

    def f(logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
        calls.append(1)
        return 0.0, np.zeros_like(logits)

    caller = worker.InProcess("own:f", f)
    caller.ahead(_point(1.0), TARGETS, [None, None], loss_only=False)
    assert calls == []


@pytest.mark.parametrize("options", [
    {}, {"loss": "kl"}, {"loss": "mse"}, {"loss": "focal"}, {"loss": "reverse_kl"}, {"z_loss": 1e-4},
    {"softcap": 30.0}, {"grad_output": "random"}, {"temperature": 2.0, "logit_scale": -0.5},
    {"dtype": "float32"}, {"dtype": "bfloat16"}, {"dtype": "float16"}, {"dtype": "bfloat16", "temperature": 64.0},
])
def test_the_taylor_calls_are_asked_exactly_where_the_taylor_check_runs(options: dict[str, Any]) -> None:
    """Protects taylor.taylor_plan against drifting from what users.taylor_check does: the check calls the user's
    function exactly where the plan says it will, at the plan's scale (a drift would spend 49 calls asked ahead
    for nothing, or ask for none)."""
    from gradcheck_cli.checks import users
    from gradcheck_cli.checks.taylor import taylor_plan, taylor_points
    from gradcheck_cli.settings import Settings

    settings = Settings(**options)
    logits = np.array([[3.0, -1.0, 0.5], [0.25, 2.0, -7.5]])
    asked: list[Any] = []

    class Counting:
        def answer(self, point, targets, reduction, loss_only=False):
            asked.append("answer")
            return SimpleNamespace(loss=np.float64(1.0))

        def arriving(self, base, targets, reduction, points):
            asked.extend(points)
            return iter([np.float64(1.0)] * len(points))

    users.taylor_check(Counting(), logits, TARGETS, settings, {"gradient": np.zeros_like(logits)}, 1e-16, [])
    scale = taylor_plan(logits, settings)
    assert (scale is not None) == bool(asked)
    if scale is not None:
        assert [point for point in asked if point != "answer"] == taylor_points(scale)
