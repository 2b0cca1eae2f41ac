"""Input-side plumbing for chunked reading: parse ahead in a forked process, and keep freed memory for reuse."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from gradcheck_cli.batch import Batch
from gradcheck_cli.errors import InputError
from gradcheck_cli.inputs.pipes import receive_item, send_item

if TYPE_CHECKING:
    import queue
    from multiprocessing.process import BaseProcess


# How often the reader looks whether the checking process is still there while its queue is full, and how
# long the checking process waits for a reader that ended to be reaped.
_POLL_SECONDS = 0.5


@contextmanager
def read_ahead(batches: Iterator[Batch], depth: int = 8) -> Iterator[Iterator[Batch]]:
    """The same batches, parsed in a forked process (started at once) while this one checks the ones before.

    Parsing is most of a streamed check's time, and a machine has more than one core: the check of each
    chunk overlaps the parsing of the next ones. At most `depth` parsed chunks wait, so memory stays bounded.
    Their arrays cross the pipe as raw bytes, read straight into the arrays this process checks (pickle 5's
    out-of-band buffers): only a few hundred bytes of each batch are pickled. An error the reader meets is
    raised here in turn, after the batches before it, as without the reader.
    The reader never outlives this process: it is ended on leaving (an error, Ctrl-C, SIGTERM), and the
    kernel kills it if this process dies any other way (SIGKILL). Neither process waits forever for the other.
    Where fork is not safe (macOS, Windows; a process running other threads, such as torch's or JAX's:
    inputs/fork_safety.py) or not possible, the batches are read in this process.
    """
    from gradcheck_cli.inputs.fork_safety import fork_is_safe

    if not sys.platform.startswith("linux") or not fork_is_safe():
        yield batches
        return
    import multiprocessing
    import os

    receiving, sending = os.pipe()
    try:
        reader = multiprocessing.get_context("fork").Process(
            target=_send_batches, args=(batches, receiving, sending, depth, os.getpid()), daemon=True)
        reader.start()
    except OSError:  # no more processes allowed
        os.close(receiving)
        yield batches
        return
    finally:
        # Only the reader writes: without this process's copy of the write end, a reader that dies (even
        # half-way through sending a batch) ends the pipe, instead of leaving a read that never returns.
        os.close(sending)
    try:
        yield _received(receiving, reader)
    finally:
        reader.terminate()
        reader.join()
        os.close(receiving)


def _received(receiving: int, reader: BaseProcess) -> Iterator[Batch]:
    """The batches the reader sends, until its None; its error raised in turn; a reader gone is an error."""
    while True:
        try:
            item: Batch | Exception | None = receive_item(receiving)
        except EOFError:  # the pipe ended, even inside a batch: nobody writes to it any more
            raise _ended(reader) from None
        if item is None:
            return
        if isinstance(item, Exception):
            raise item
        yield item


def _ended(reader: BaseProcess) -> RuntimeError:
    reader.join(_POLL_SECONDS)  # its exit code, once it is reaped
    return RuntimeError(f"the process reading the input ended before it was done (exit code {reader.exitcode})")


def _send_batches(batches: Iterator[Batch], receiving: int, sending: int, depth: int, parent: int) -> None:
    """The reader process: every batch, then None; or the error that stopped it. A thread writes them to the
    pipe while this one parses the next (at most `depth` wait between the two)."""
    import os
    import queue
    import threading

    from gradcheck_cli.inputs.fork_safety import follow_parent

    follow_parent(parent)
    os.close(receiving)  # a checking process gone then ends the pipe: writing to it fails instead of waiting
    parsed: queue.Queue[Batch | Exception | None] = queue.Queue(depth)
    writer = threading.Thread(target=_write_items, args=(parsed, sending), daemon=True)
    writer.start()

    def send(item: Batch | Exception | None) -> None:
        if not _put(parsed, item, parent) or not writer.is_alive():
            os._exit(0)  # nobody to send to: nothing to clean up

    try:
        for batch in batches:
            send(batch)
        send(None)
    except InputError as error:
        send(error)
    except Exception as error:  # noqa: BLE001 - an internal error: the checking process reports it, exit 3
        send(RuntimeError(f"reading the input failed: {error!r}"))
    writer.join()  # everything sent before the process ends


def _write_items(parsed: queue.Queue[Batch | Exception | None], sending: int) -> None:
    """The reader's writing thread: each item as a frame, until the None after the last."""
    while True:
        item = parsed.get()
        try:
            send_item(sending, item)
        except OSError:  # the checking process is gone (EPIPE): the parsing thread sees this thread end
            return
        if item is None or isinstance(item, Exception):
            return


def _put(parsed: queue.Queue[Batch | Exception | None], item: Batch | Exception | None, parent: int) -> bool:
    """item sent to the checking process, waiting while the queue is full: True; False if that process (the
    parent, by its process id) is gone, so nobody will ever take it."""
    import os
    import queue

    while True:
        try:
            parsed.put(item, timeout=_POLL_SECONDS)
            return True
        except queue.Full:
            if os.getppid() != parent:
                return False


def keep_freed_memory() -> None:
    """Let glibc keep freed memory for reuse instead of handing it back to the system at once.

    Each chunk makes dozens of numpy temporaries of a few MB. By default glibc maps each afresh and unmaps it
    when freed, so every temporary costs page faults and zeroing, which on a streamed file took longer
    than the arithmetic itself (5.5 s against 4.5 s for 1,000,000 x 10). Memory stays bounded: what is kept
    is what the largest chunk needed. Only glibc has mallopt; elsewhere this does nothing.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: blocks below 32 MB come from the heap...
        libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD: ...which keeps up to 256 MB of free space
    except (OSError, AttributeError):  # not glibc (musl has no-op mallopt; others may lack it)
        return
