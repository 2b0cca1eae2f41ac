"""Requests to a worker sent ahead of the moment their answers are wanted, and those answers kept until then.

The worker answers in the order it is asked. A check that knows what it will ask later (the Taylor points, say)
puts those requests in early, so the worker computes them while this process does its own arithmetic (the
reference's checks, the differences of answers already in); asking for a request's answer reads every answer
before it, keeping them under their requests' keys. A key says everything the answer depends on (the logits',
targets' and upstream gradient's fingerprints, the edit, loss only or not), so a kept answer is only ever
given to a request that would have made the same call; each answer is given once (the determinism check's
two calls at one point are two requests and two answers).

At most AHEAD requests are unanswered at once (worker_process.py): the worker closes an answer's memory
file AHEAD + 2 answers later, so this process must have read (and mapped) it by then. Requests beyond that
wait here and go out as answers come in. An answer's deadline (--impl-timeout) runs from when it is waited
for, so a call asked ahead may have run longer than that by then: a call that never ends is still stopped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Any

from gradcheck_cli.checks.worker_process import AHEAD, WorkerProcess
from gradcheck_cli.errors import InputError


class AnswerQueue:
    """Requests in the order sent, their answers read in that order and kept until asked for by key."""

    def __init__(self, process: WorkerProcess, activity: str) -> None:
        self.process, self.activity = process, activity
        self.unsent: deque[tuple[Hashable, Any]] = deque()  # (key, message): beyond the window, not sent yet
        self.sent: deque[Hashable] = deque()  # keys of the requests sent and not answered, in order
        self.kept: dict[Hashable, deque[tuple[str, Any]]] = {}  # answers read, not yet asked for
        self.made = 0  # requests sent: the calls of the function

    def put(self, key: Hashable, message: Any) -> None:
        """A request to answer; sent now if fewer than AHEAD are unanswered, else as answers come in."""
        self.unsent.append((key, message))
        self._fill()

    def waiting(self, key: Hashable) -> int:
        """How many answers for `key` are coming or kept, not yet asked for."""
        kept = len(self.kept.get(key, ()))
        return kept + self.sent.count(key) + sum(queued == key for queued, _ in self.unsent)

    def get(self, key: Hashable) -> Any:
        """The value of the first answer for `key` not asked for yet (it must have been put): the answers before
        it are read and kept. An error answer of the user's code is raised here, for the request that made it."""
        while not self.kept.get(key):
            if not self.sent:
                raise KeyError(key)  # asked for what was never put: a bug in the caller, not the user's
            done = self.sent.popleft()
            self.kept.setdefault(done, deque()).append(self.process.outcome(self.activity))
            self._fill()
        answers = self.kept[key]
        kind, value = answers.popleft()
        if not answers:
            del self.kept[key]
        if kind == "error":
            raise InputError(value)
        return value

    def _fill(self) -> None:
        while self.unsent and len(self.sent) < AHEAD:
            key, message = self.unsent.popleft()
            self.process.send(message, self.activity)
            self.sent.append(key)
            self.made += 1
