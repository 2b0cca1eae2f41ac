"""Whole messages on a pipe: a little-endian 8-byte length before each frame, and writes that go on until every
byte is out. The read-ahead's batches (readahead.py), the ndjson rows' formatter (render/forked_writer.py) and
the --impl worker's frames (checks/worker_wire.py)."""

from __future__ import annotations

import os
import struct
from contextlib import suppress
from typing import Any

LENGTH = struct.Struct("<Q")


def framed(payload: bytes) -> bytes:
    return LENGTH.pack(len(payload)) + payload


def write_all(fd: int, data: memoryview | bytes) -> None:
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view):]


def widen(pipe: int) -> None:
    """A 1 MB pipe where Linux allows it (F_SETPIPE_SZ), not 64 KB: a batch's few MB cross in a few writes, not
    fifty wake-ups of each process (measured at 1,000,000 x 10 ndjson: the formatter's extra CPU 0.65 -> 0.35 s)."""
    import fcntl

    with suppress(OSError):  # above /proc/sys/fs/pipe-max-size for this user: the default stays
        fcntl.fcntl(pipe, 1031, 1 << 20)  # 1031: F_SETPIPE_SZ


def send_item(fd: int, item: Any) -> None:
    """A frame: the length of a pickle of (the sizes of its arrays, the item pickled without them), that
    pickle, then each array's bytes as they are in memory (pickle 5's out-of-band buffers: a batch's arrays
    are not pickled, only a few hundred bytes about them)."""
    import pickle

    arrays: list[pickle.PickleBuffer] = []
    inner = pickle.dumps(item, protocol=5, buffer_callback=arrays.append)
    views = [array.raw() for array in arrays]
    header = pickle.dumps(([view.nbytes for view in views], inner), protocol=5)
    write_all(fd, framed(header))
    for view in views:
        write_all(fd, view)


def receive_item(fd: int) -> Any:
    """The next frame's item, its arrays made on the bytes read for them (see send_item); EOFError if the
    pipe ends first."""
    import pickle

    (length,) = LENGTH.unpack(_read_exactly(fd, LENGTH.size))
    sizes, inner = pickle.loads(_read_exactly(fd, length))
    arrays = [_read_exactly(fd, size) for size in sizes]  # writable: the arrays made on them are
    return pickle.loads(inner, buffers=arrays)


def _read_exactly(fd: int, size: int) -> memoryview:
    """size bytes from the pipe, in memory not written before (numpy's: a bytearray would be zeroed first)."""
    import numpy as np

    into = view = np.empty(size, dtype=np.uint8).data
    while view:
        count = os.readv(fd, [view])
        if count == 0:
            raise EOFError
        view = view[count:]
    return into
