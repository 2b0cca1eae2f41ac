"""Frames on the worker's pipes (checks/worker_process.py): their format, the memory files large arrays cross in,
and what a request's edit and an answer are in them.

A frame is a little-endian 8-byte length and a pickle: ("ready" | "ok" | "error", value), or a spawned worker's
("started", None) and first request ("setup", ...). Arrays of SHARED_BYTES or more (a 128k-vocabulary gradient: a
GB) are written once into a nameless memory file (memfd) the receiver maps copy-on-write via /proc/SENDER/fd/N
(pickle 5's out-of-band buffers), not copied four times through the pipe.
"""

from __future__ import annotations

import mmap
import os
import pickle
from typing import TYPE_CHECKING, Any

import numpy as np

from gradcheck_cli.checks.returned import Along, Direction, Returned
from gradcheck_cli.inputs.pipes import LENGTH, write_all

if TYPE_CHECKING:
    from gradcheck_cli.checks.worker_keys import Edit

PIPE_BYTES = 1 << 20  # asked of the kernel for each pipe, so that a gradient crosses in a few reads
SHARED_BYTES = 1 << 20  # arrays from this size cross in a memory file; a pickle through the pipe costs less below


def encode(message: Any) -> tuple[bytes, list[int]]:
    """A frame's payload, and the memory files its large arrays were written to (module docstring)."""
    shared: list[tuple[int, int]] = []  # (memory file, size)

    def in_band(buffer: pickle.PickleBuffer) -> bool:
        if buffer.raw().nbytes < SHARED_BYTES or not hasattr(os, "memfd_create"):
            return True
        shared.append((os.memfd_create("gradcheck-array", os.MFD_CLOEXEC), buffer.raw().nbytes))
        write_all(shared[-1][0], buffer.raw())
        return False

    inner = pickle.dumps(message, protocol=5, buffer_callback=in_band)
    return pickle.dumps((os.getpid(), shared, inner), protocol=5), [fd for fd, _ in shared]


def decode(payload: bytes) -> Any:
    sender, shared, inner = pickle.loads(payload)
    return pickle.loads(inner, buffers=[_mapped(sender, fd, size) for fd, size in shared])


def _mapped(sender: int, fd: int, size: int) -> Any:
    """The sender's memory file (never empty), mapped copy-on-write: its array is writable and shares pages."""
    with open(f"/proc/{sender}/fd/{fd}", "rb") as file:
        return mmap.mmap(file.fileno(), size, access=mmap.ACCESS_COPY)


def close_all(files: list[int]) -> None:
    for fd in files:
        os.close(fd)


def read_frame(fd: int, received: Frames) -> Any:
    """The next message on a blocking pipe, or None at end of file (the other side has gone)."""
    while (frame := received.next()) is None:
        chunk = os.read(fd, PIPE_BYTES)
        if not chunk:
            return None
        received.buffer += chunk
    return decode(frame)


class Frames:
    """Frames arriving on a pipe, read in as large pieces as are waiting: several may come in one read."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def next(self) -> bytes | None:
        """The next whole frame's payload, if it has arrived."""
        if len(self.buffer) < LENGTH.size:
            return None
        end = LENGTH.size + LENGTH.unpack_from(self.buffer)[0]
        if len(self.buffer) < end:
            return None
        frame = bytes(self.buffer[LENGTH.size:end])
        del self.buffer[:end]
        return frame


# Pickling a small numpy array costs some 20 us, a list of a few numbers 1: a perturbation's edit and a loss
# of one number cross the pipe as plain Python numbers (exactly: float64 <-> float is lossless).
SMALL = 64


def edit_on_wire(at: Edit | None) -> Any:
    if at is None or isinstance(at, Direction | Along) or at[0].size > SMALL:
        return at
    return at[0].tolist(), at[1].tolist()


def returned_on_wire(answer: Returned) -> tuple[Any, np.ndarray | None, float, bool]:
    loss = answer.loss.item() if answer.loss.ndim == 0 else answer.loss
    return loss, answer.gradient, answer.precision, answer.weighted


def returned_from_wire(wire: tuple[Any, np.ndarray | None, float, bool]) -> Returned:
    loss, gradient, precision, weighted = wire
    return Returned(np.asarray(loss, dtype=np.float64), gradient, precision, weighted)
