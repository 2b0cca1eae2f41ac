"""What each call of an --impl function costs and is given (issue 13, the --impl row): Taylor points sent as edits
the worker applies to the logits it holds, buffers re-filled before every call, a direction's signs and a Taylor
direction's draw made where the function runs exactly as the check makes them."""

from __future__ import annotations

import sys
import textwrap
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gradcheck_cli.checks import worker, worker_keys
from gradcheck_cli.checks.impl import Implementation
from gradcheck_cli.checks.returned import Along, Direction, Points, moved, rademacher
from gradcheck_cli.checks.taylor import taylor_test
from gradcheck_cli.checks.worker_process import WorkerProcess

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "my_softmax.py"


def _bits(array: np.ndarray) -> np.ndarray:
    """The float64 bit patterns: equal arrays of these are equal bit for bit (-0.0 is not 0.0)."""
    return np.ascontiguousarray(array, dtype=np.float64).view(np.uint64)


def _mean_cross_entropy(logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_s = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = logits.shape[0]
    return float(-(targets * log_s).sum() / rows), (np.exp(log_s) - targets) / rows


def _watch_requests(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every request a worker is sent from now on (the list fills as they go)."""
    sent: list[Any] = []
    send = WorkerProcess.send

    def seen(self: WorkerProcess, message: Any, activity: str) -> None:
        sent.append(message)
        send(self, message, activity)

    monkeypatch.setattr(WorkerProcess, "send", seen)
    return sent


def test_a_taylor_point_is_the_one_taylor_test_makes() -> None:
    """Protects Points' Along: z + t v made where the function runs is, bit for bit, z + t v with v the index-th of
    v1, -v1, v2, -v2 of one draw of count x shape normals scaled to max |v| = 1 (drawn independently here),
    whatever order the points are asked in (the kept direction, the generator states, a restart for an earlier
    draw), and the kept direction is dropped at the first call that is not a Taylor point."""
    z = np.random.default_rng(1).standard_normal((3, 7)) * 3
    drawn = np.random.default_rng(5).standard_normal((3, 3, 7))
    drawn /= np.abs(drawn).reshape(3, -1).max(axis=1)[:, None, None]
    signed = [sign * v for v in drawn for sign in (1.0, -1.0)]
    points = Points()
    for index, t in ((0, 2.0**-5), (0, 2.0**-9), (1, 2.0**-5), (5, 0.1), (2, 2.0**-6), (4, 3e-3), (3, 1.0)):
        made = points.logits(z, Along(5, index, t))
        np.testing.assert_array_equal(_bits(made), _bits(z + t * signed[index]))
    np.testing.assert_array_equal(_bits(moved(z, Along(5, 3, 0.25))), _bits(z + 0.25 * signed[3]))
    assert points.direction is not None
    points.logits(z, None)  # not a Taylor point: the direction (the logits' size) is not kept past it
    assert points.direction is None


def test_taylor_directions_are_drawn_once_each_and_per_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    """Protects Points' generator states: v1, v2, v3 asked in order are three draws, not five (the state after a
    direction is where the next starts: 13 ms a direction at 8 x 50,257), and a worker asked for the same seed's
    directions over logits of another shape draws them for that shape (a state kept for one shape would move
    the points elsewhere, and a right gradient would fail the Taylor check)."""
    shapes = ((3, 7), (4, 7))
    zs = {shape: np.random.default_rng(1).standard_normal(shape) for shape in shapes}
    expected = {}
    for shape in shapes:
        drawn = np.random.default_rng(5).standard_normal((3, *shape))
        drawn /= np.abs(drawn).reshape(3, -1).max(axis=1)[:, None, None]
        expected[shape] = [sign * v for v in drawn for sign in (1.0, -1.0)]
    draws: list[tuple[int, ...]] = []
    real = np.random.default_rng

    class Counted:
        def __init__(self, seed: int) -> None:
            self.inner = real(seed)
            self.bit_generator = self.inner.bit_generator

        def standard_normal(self, *args: Any, **kwargs: Any) -> Any:
            draws.append(kwargs["out"].shape)
            return self.inner.standard_normal(*args, **kwargs)

    monkeypatch.setattr(np.random, "default_rng", Counted)
    points = Points()
    for shape in (*shapes, shapes[0]):
        for index in range(6):
            made = points.logits(zs[shape], Along(5, index, 0.25))
            np.testing.assert_array_equal(_bits(made), _bits(zs[shape] + 0.25 * expected[shape][index]))
    assert draws == [shapes[0]] * 3 + [shapes[1]] * 3 + [shapes[0]] * 3


def test_taylor_points_as_edits_give_the_same_remainders() -> None:
    """Protects taylor_test's losses_at: the remainders and slopes are those of the loss called on each point
    itself (the same points, so every verdict stays)."""
    z = np.random.default_rng(2).standard_normal((4, 9)) * 3
    targets = np.eye(9)[[0, 3, 8, 1]]
    g = _mean_cross_entropy(z, targets)[1]

    def loss(point: np.ndarray) -> float:
        return _mean_cross_entropy(point, targets)[0]

    points = Points()
    plain = taylor_test(loss, z, g, seed=3)
    edited = taylor_test(loss, z, g, seed=3, losses_at=lambda at: [loss(points.logits(z, a)) for a in at])
    np.testing.assert_array_equal(_bits(plain.remainders), _bits(edited.remainders))
    assert plain.slopes == edited.slopes and plain.passed


def test_a_direction_after_another_seed_uses_its_own_signs() -> None:
    """Protects the signs kept for one seed: a Direction of another seed, or of the same seed over logits of
    another size, gets its own signs, as a fresh move (nothing kept) gives them."""
    kept = Points()
    for shape, seed in (((4, 6), 1), ((4, 6), 1), ((4, 6), 2), ((5, 6), 2), ((4, 6), 1)):
        z = np.random.default_rng(seed).standard_normal(shape)
        at = Direction(seed, -2.0**-7, 2, 19)
        signs = np.where(np.random.default_rng(seed).integers(0, 2, z.size, dtype=np.int8) == 1, 1.0, -1.0)
        expected = z.copy().reshape(-1)
        expected[2:19] += -2.0**-7 * signs[2:19]
        np.testing.assert_array_equal(_bits(kept.logits(z, at).reshape(-1)), _bits(expected))



@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, 31, 402_056, 1_000_003])
def test_rademacher_draws_the_signs_integers_draws(size: int) -> None:
    """Protects returned.rademacher, made from the generator's raw words: for every seed its signs are those
    default_rng(seed).integers(0, 2, dtype=int8) gives as +1 / -1 (the directions of every earlier report), at
    sizes ending mid-word, and half of a large draw is +1 (within 5 standard deviations)."""
    for seed in (0, 1, 12_345, 1_000_003 * 7 + 15, 2**40 + 5):
        signs = rademacher(seed, size)
        drawn = np.random.default_rng(seed).integers(0, 2, size, dtype=np.int8)
        assert signs.dtype == np.int8 and signs.shape == (size,)
        np.testing.assert_array_equal(signs, 2 * drawn - 1)
    if size > 1000:
        assert abs(int(np.count_nonzero(signs == 1)) - size / 2) < 5 * np.sqrt(size) / 2

SCRIBBLER = textwrap.dedent("""
    import numpy as np

    def f(logits, targets):
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_s = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        rows = logits.shape[0]
        loss, gradient = float(-(targets * log_s).sum() / rows), (np.exp(log_s) - targets) / rows
        logits[...] = np.nan  # what it was given, written over after use
        targets[...] = 7.0
        return loss, gradient
""")


@pytest.mark.parametrize("where", ["worker", "in this process"])
def test_a_function_writing_into_its_input_never_sees_it_again(where: str, tmp_path: Path) -> None:
    """Protects the re-filled buffers: a function that writes over its logits and targets gets, at every later
    call (an edit, a direction, a Taylor point, none), exactly the point asked for, as an untouched function
    would (computed here on independently made points)."""
    path = tmp_path / "scribbler.py"
    path.write_text(SCRIBBLER)
    spec = f"{path}:f"
    if where == "worker":
        caller: Any = worker.start(spec)
    else:
        namespace: dict[str, Any] = {}
        exec(SCRIBBLER, namespace)  # the test's own module text, run in this process
        caller = worker.InProcess(spec, namespace["f"])
    z = np.random.default_rng(3).standard_normal((3, 5))
    targets = np.eye(5)[[1, 4, 0]]
    edits: list[Any] = [None, (np.array([0, 7]), np.array([2.5, -1.0])), Direction(4, 0.01, 0, 15),
                        Direction(4, -0.01, 0, 15), Along(6, 1, 0.125), Along(6, 0, 0.125), None]
    try:
        answers = [caller.call(z, targets, at, False) for at in edits] + list(caller.arriving(z, targets, edits))
    finally:
        caller.close()
    expected = [_mean_cross_entropy(moved(z, at), targets) for at in edits]
    for answer, (loss, gradient) in zip(answers, expected + expected, strict=True):
        assert float(answer.loss) == loss
        if answer.gradient is not None:
            np.testing.assert_array_equal(answer.gradient, gradient)


def test_the_taylor_check_sends_the_logits_only_when_they_change(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Protects the Taylor check's edits: its 48 points cross the pipe as Along edits, the logits being sent only
    when what the worker holds changes (the check's point, the uniform logits, the check's point again), not a
    copy of the logits per point."""
    from gradcheck_cli.checks.users import taylor_check
    from gradcheck_cli.settings import Settings

    path = tmp_path / "own.py"
    path.write_text(SCRIBBLER)
    sent = _watch_requests(monkeypatch)
    z = np.random.default_rng(4).standard_normal((3, 6)) * 2
    targets = np.eye(6)[[5, 0, 2]]
    notes: list[str] = []
    with Implementation.load(f"{path}:f") as implementation:
        values = {"gradient": _mean_cross_entropy(z, targets)[1]}
        [result] = taylor_check(implementation, z, targets, Settings(), values, 2.0**-52, notes)
    assert result.passed, notes
    along = [message for message in sent if isinstance(message[2], Along)]
    assert len(along) == 48
    assert sum(message[0] is not None for message in sent) == 3


MEAN_CROSS_ENTROPY = textwrap.dedent("""
    import numpy as np

    def f(logits, targets):
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_s = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        rows = logits.shape[0]
        return float(-(targets * log_s).sum() / rows), (np.exp(log_s) - targets) / rows
""")


def test_a_check_fingerprints_each_array_once(gradcheck: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Protects Implementation.unchanged around a check (runner.py): of the 84 calls of a 2 x 40 check, each worker
    fingerprints each array it is given once (worker_keys.Prints; it was 30 fingerprints of 4 arrays at 8 x 50,257,
    the targets 15 times), and at the end those still alive once more, to make sure none was changed."""
    made: list[tuple[str, int]] = []
    alive: list[tuple[int, weakref.ref[np.ndarray]]] = []
    again: list[str] = []
    fingerprint = worker_keys.fingerprint

    def recorded(array: np.ndarray) -> Any:
        # By a weak reference, not by id(): an id is reused once its array is gone, and a new array there is
        # rightly fingerprinted anew.
        caller = sys._getframe(1)
        name, prints = caller.f_code.co_name, id(caller.f_locals.get("self"))
        made.append((name, prints))
        if name == "of":
            again.extend(repr(array.shape) for was, kept in alive if was == prints and kept() is array)
            alive.append((prints, weakref.ref(array)))
        return fingerprint(array)

    monkeypatch.setattr(worker_keys, "fingerprint", recorded)
    logits = np.round(np.random.default_rng(2).standard_normal((2, 40)) * 3, 6)
    rows = [arg for row in logits for arg in ("--logits", ",".join(map(str, row)))]
    run = gradcheck("check", *rows, "--labels", "3,17", "--impl", f"{EXAMPLE}:softmax_cross_entropy")
    assert run.exit_code == 0, run
    assert {name for name, _ in made} == {"of", "check_unchanged"}
    assert again == [] and sum(name == "of" for name, _ in made) >= 3


def test_an_array_changed_in_place_is_an_error_inside_unchanged_and_sent_again_outside(tmp_path: Path) -> None:
    """Protects worker_keys.Prints' soundness: outside Implementation.unchanged every call fingerprints what it is given,
    so logits changed in place between two calls are sent again and answered anew; inside it, the same change is
    found at the end and raised (a bug of gradcheck's, exit 3), never answered with the values sent before."""
    path = tmp_path / "mean.py"
    path.write_text(MEAN_CROSS_ENTROPY)
    z = np.random.default_rng(8).standard_normal((3, 6))
    targets = np.eye(6)[[1, 4, 0]]
    with Implementation.load(f"{path}:f") as implementation:
        before = implementation.answer(z, targets, "mean").loss
        z[0, 0] += 1.0
        after = implementation.answer(z, targets, "mean").loss
        assert after == _mean_cross_entropy(z, targets)[0] != before
        with pytest.raises(RuntimeError, match="changed in place"), implementation.unchanged():
            implementation.answer(z, targets, "mean")
            z[1, 2] -= 1.0
        assert implementation.answer(z, targets, "mean").loss == _mean_cross_entropy(z, targets)[0]
