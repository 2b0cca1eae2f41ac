"""A .npy file: the logits alone (N x C), memory-mapped and read in chunks of rows, so memory stays bounded
for any N. Its labels or targets come from beside it: --labels, --labels-file or --targets-file (text or .npy)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from gradcheck_cli.errors import InputError
from gradcheck_cli.inputs import tensors
from gradcheck_cli.inputs.limits import LARGEST_LABEL
from gradcheck_cli.inputs.source import Source, open_source
from gradcheck_cli.inputs.validate import Answers, Parsed

MAGIC = b"\x93NUMPY"


def sniff(first: bytes) -> bool:
    return first.startswith(MAGIC)


@contextmanager
def open_tensors(opened: Source, keys: dict[str, str]) -> Iterator[dict[str, tensors.Tensor]]:
    if keys:
        raise InputError(f"{opened.name}: --key names the arrays of .npz, .safetensors and .pt files; a .npy "
                         "file holds the logits alone")
    yield {"logits": tensors.in_memory("logits", _memory_map(opened.file_path(), opened.name))}


def pieces(opened: Source, plan: tensors.TensorPlan) -> Iterator[Parsed]:
    return tensors.pieces(open_tensors, opened, plan)


def _memory_map(path: str, name: str) -> np.ndarray:
    """The array, memory-mapped read-only: nothing is read until its rows are."""
    with open(path, "rb") as file:
        if not sniff(file.read(len(MAGIC))):  # else numpy takes it for a pickle, and says so
            raise InputError(f"{name}: not a .npy file (it does not start with numpy's magic string)")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise InputError(f"{name}: not a readable .npy file: {_one_line(error)}") from None
    if array.dtype.kind == "V":  # how numpy writes a bfloat16 array: raw 2-byte records, the type lost
        raise InputError(f"{name}: an array of raw {array.dtype.itemsize}-byte records (numpy saves bfloat16 "
                         "so, without its type); save bfloat16 logits as .safetensors or .pt")
    return array


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def read_beside(path: str, are_labels: bool) -> tuple[np.ndarray, str, str]:
    """A .npy labels (N integers) or targets (N x C floats) file given beside the input: the values (labels as
    int64, targets as float64), what messages call the file, and how they name an element."""
    with open_source(path, "npy") as opened:
        array = np.asarray(_memory_map(opened.file_path(), opened.name))
    what = "labels" if are_labels else "targets"
    dtype = array.dtype.name
    if are_labels and (array.ndim != 1 or not dtype.startswith(("int", "uint"))):
        raise InputError(f"{opened.name}: labels of shape {array.shape} and dtype {dtype}; a labels file holds "
                         "N integer class indices")
    if not are_labels and (array.ndim != 2 or dtype not in tensors.FLOAT_DTYPES):
        raise InputError(f"{opened.name}: targets of shape {array.shape} and dtype {dtype}; a targets file holds "
                         f"N x C floats ({', '.join(tensors.FLOAT_DTYPES)})")
    if are_labels and array.dtype == np.uint64 and array.size and int(array.max()) >= LARGEST_LABEL:
        n = int(np.argmax(array >= LARGEST_LABEL))
        raise InputError(f"{opened.name}: labels[{n}]: {int(array[n])} is far too large for a class index")
    if not are_labels and not np.isfinite(array).all():
        n, c = (int(i) for i in np.argwhere(~np.isfinite(array))[0])
        raise InputError(f"{opened.name}: {what}[{n}][{c}]: {float(array[n, c])!r} is not finite")
    return array.astype(np.int64 if are_labels else np.float64), opened.name, what


def beside_answers(path: str, are_labels: bool) -> Answers:
    values, name, what = read_beside(path, are_labels)
    return Answers(values, are_labels, name, lambda n: f"{name}: {what}[{n}]")
