"""Frames on the worker's pipes (checks/worker_process.py): their format, and the memory files large arrays cross in.

A frame is a little-endian 8-byte length and a pickle: ("ready" | "ok" | "error", value), or a spawned worker's
("started", None) and first request ("setup", ...). Arrays of SHARED_BYTES or more (a 128k-vocabulary gradient: a
GB) are written once into a nameless memory file (memfd) the receiver maps copy-on-write via /proc/SENDER/fd/N
(pickle 5's out-of-band buffers), not copied four times through the pipe.
"""

from __future__ import annotations

import mmap
import os
import pickle
from typing import Any

from gradcheck_cli.inputs.pipes import LENGTH, write_all

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
