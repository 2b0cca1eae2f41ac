"""Work on a second thread for the span of a with block: api/sweeping.py runs its curve beside the Taylor test."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

_Result = TypeVar("_Result")


class Beside(Generic[_Result]):
    """`work` run on a second thread from entering the with block to leaving it (never longer: leaving waits
    for it, also on an error); result() is its result, or raises its error.

    numpy lets go of the interpreter lock in its loops over arrays, so on two cores the curve's differences
    and the Taylor test's evaluations (each some N C-element passes) overlap; on one core they take turns.
    Each builds its own arrays from read-only inputs, so the results are those of running them in turn. A
    worker for --impl started meanwhile sees the thread and is spawned, not forked (inputs/fork_safety.py);
    the sweep's is started before.
    """

    def __init__(self, work: Callable[[], _Result], name: str) -> None:
        self._work = work
        self._outcome: list[_Result] = []
        self._failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        try:
            self._outcome.append(self._work())
        except BaseException as error:  # noqa: BLE001  # raised in the thread that asks for the result
            self._failure.append(error)

    def __enter__(self) -> Beside[_Result]:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._thread.join()

    def result(self) -> _Result:
        self._thread.join()
        if self._failure:
            raise self._failure[0]
        return self._outcome[0]
