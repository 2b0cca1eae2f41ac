"""A .safetensors file: arrays by key, read with the safetensors package's numpy API (bfloat16 exactly, as
ml_dtypes' type). The logits are read in chunks of rows, so memory stays bounded for any N; the other arrays
(labels, one loss...) are small beside them, or read in the same chunks (the user's gradient)."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from gradcheck_cli.errors import InputError
from gradcheck_cli.inputs import tensors
from gradcheck_cli.inputs.source import Source
from gradcheck_cli.inputs.validate import Parsed

# safetensors' dtype names, as numpy's (the file format's own table).
_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
           "I32": "int32", "I16": "int16", "I8": "int8", "U64": "uint64", "U32": "uint32", "U16": "uint16",
           "U8": "uint8", "BOOL": "bool"}


def sniff(first: bytes) -> bool:
    """An 8-byte little-endian header length, then the JSON header's '{'."""
    return len(first) > 9 and first[8:9] == b"{" and struct.unpack("<Q", first[:8])[0] < (100 << 20)


@contextmanager
def open_tensors(opened: Source, keys: dict[str, str]) -> Iterator[dict[str, tensors.Tensor]]:
    try:
        from safetensors import SafetensorError, safe_open
    except ImportError:
        raise tensors.missing_package(".safetensors", opened.name) from None
    try:
        with safe_open(opened.file_path(), framework="numpy") as handle:
            arrays = {key: _tensor(handle, key, opened.name) for key in handle.keys()}  # noqa: SIM118 - no __iter__
            yield tensors.find(arrays, keys, opened.name)
    except SafetensorError as error:
        raise InputError(f"{opened.name}: not a readable .safetensors file: {' '.join(str(error).split())}") from None


def _tensor(handle: Any, key: str, name: str) -> tensors.Tensor:
    part = handle.get_slice(key)
    stored = part.get_dtype()
    dtype_name = _DTYPES.get(stored, stored.lower())
    if dtype_name == "bfloat16":
        try:
            import ml_dtypes  # noqa: F401 - safetensors reads BF16 into numpy through it
        except ImportError:
            raise tensors.missing_package("bfloat16 tensors", name) from None
    shape = tuple(int(n) for n in part.get_shape())
    if len(shape) <= 1:  # labels, a loss: small, read whole
        return tensors.in_memory(key, np.asarray(handle.get_tensor(key)), dtype_name)
    return tensors.Tensor(key, shape, dtype_name, lambda start, stop: part[start:stop])


def pieces(opened: Source, plan: tensors.TensorPlan) -> Iterator[Parsed]:
    return tensors.pieces(open_tensors, opened, plan)
