"""Whole messages on a pipe: a little-endian 8-byte length before each frame, and writes that go on until every
byte is out. The read-ahead's batches (readahead.py) and the --impl worker's frames (checks/worker_wire.py)."""

from __future__ import annotations

import os
import struct

LENGTH = struct.Struct("<Q")


def framed(payload: bytes) -> bytes:
    return LENGTH.pack(len(payload)) + payload


def write_all(fd: int, data: memoryview | bytes) -> None:
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view):]
