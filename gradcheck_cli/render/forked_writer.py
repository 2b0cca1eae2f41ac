"""A forked process that writes a streaming format's rows to stdout while this one checks the next batch.

ndjson's records cost about as much to format as the rows cost to check (1,000,000 x 10: ~2.8 s of formatting
against ~2.3 s of checking, in the process that also receives the parsed batches), and a machine has more
than one core. From an input's second batch on (one checked in chunks: there is a next batch to check while
this one is formatted), each batch's arrays cross a pipe as raw bytes (inputs/pipes.py) to a forked process
that formats and writes them, in order; the first, and every batch where forking is not safe or stdout is
not a file descriptor (a test runner's capture), is written here as before. The formatter never outlives this
process (inputs/fork_safety.follow_parent); a formatter that meets a closed stdout (`| head`) ends, and this
process then stops writing as Output does; one that fails is an internal error (exit 3).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import IO, TYPE_CHECKING, Any

from gradcheck_cli.inputs.fork_safety import follow_parent, fork_is_safe
from gradcheck_cli.inputs.pipes import receive_item, send_item, widen

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    from gradcheck_cli.terminal import Output

Write = Callable[[IO[str], Any], None]  # writes one item to a stream (stdout, here or in the formatter)
_READER_LEFT = 75  # the formatter's exit code when stdout was closed under it (`| head`)
_FAILED = 70  # ... when its writing raised anything else: a bug of ours


@contextmanager
def forked_writer(out: Output, write: Write) -> Iterator[Callable[[Any], None]]:
    """send(item): the item written by `write(sys.stdout, item)`, in the order sent. On leaving, every item sent
    is out before this process writes anything more (the report after the rows; an error's message after the
    rows checked before it, as when they are written here); on Ctrl-C or a signal the formatter is ended at once."""
    writer = _Writer(out, write)
    try:
        try:
            yield writer.send
        except Exception:
            writer.finish()
            raise
        writer.finish()
    finally:
        writer.stop()


class _Writer:
    def __init__(self, out: Output, write: Write) -> None:
        self.out, self.write = out, write
        self.sent = 0
        self.forkable = sys.platform.startswith("linux")
        self.process: BaseProcess | None = None
        self.pipe: int | None = None

    def send(self, item: Any) -> None:
        if self.out.reader_gone:  # nobody reads: nothing more is formatted
            return
        if self.pipe is None and self.sent and self.forkable:
            self._start()
        self.sent += 1
        if self.pipe is None:
            self.out.write(lambda: self.write(sys.stdout, item))
            return
        try:
            send_item(self.pipe, item)
        except BrokenPipeError:  # the formatter ended before it was told to
            self._ended()

    def finish(self) -> None:
        """Every item out: the formatter told there are no more, and waited for."""
        if self.pipe is None:
            return
        with suppress(BrokenPipeError):  # ended already: its exit code says why
            send_item(self.pipe, None)
        self._ended()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.join()
            self.process = None
        if self.pipe is not None:
            os.close(self.pipe)
            self.pipe = None

    def _start(self) -> None:
        """The formatter forked, where it is safe and stdout is a descriptor it can write to; tried once."""
        self.forkable = False
        try:
            sys.stdout.fileno()
        except (AttributeError, OSError, ValueError):  # an in-memory stream: only this process can write to it
            return
        if not fork_is_safe():
            return
        import multiprocessing

        sys.stdout.flush()  # nothing this process buffered may be written twice
        receiving, sending = os.pipe()
        widen(sending)
        try:
            self.process = multiprocessing.get_context("fork").Process(
                target=_format, args=(self.write, receiving, sending, os.getpid()), daemon=True)
            self.process.start()
        except OSError:  # no more processes allowed: written here
            self.process = None
            os.close(sending)
            return
        finally:
            os.close(receiving)  # only the formatter reads: its end closes the pipe
        self.pipe = sending

    def _ended(self) -> None:
        """The formatter's end, waited for: a closed stdout is handled as Output handles it, anything else fails."""
        assert self.process is not None and self.pipe is not None
        self.process.join()
        code = self.process.exitcode
        self.stop()
        if code == _READER_LEFT:
            self.out.write(_reader_left)  # Output stops writing, as if this process had met the closed pipe
        elif code != 0:
            raise RuntimeError(f"the process writing the rows failed (exit code {code})")


def _reader_left() -> None:
    raise BrokenPipeError


def _format(write: Write, receiving: int, sending: int, parent: int) -> None:
    """The formatter: each item received written to stdout, until None. Exits 0 when every item is out,
    _READER_LEFT when stdout is closed, _FAILED on anything else (no traceback: the parent reports it)."""
    follow_parent(parent, keep_stdout=True)
    os.close(sending)  # a parent gone then ends the pipe: receiving fails instead of waiting
    try:
        while (item := receive_item(receiving)) is not None:
            write(sys.stdout, item)
        sys.stdout.flush()
    except BrokenPipeError:
        os._exit(_READER_LEFT)
    except EOFError:  # the parent is gone: nobody to write for
        os._exit(0)
    except BaseException:  # noqa: BLE001 - a bug of ours: the parent says so (exit 3)
        os._exit(_FAILED)
