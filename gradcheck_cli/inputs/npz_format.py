"""A .npz file (numpy.savez): arrays by key (logits, labels or targets, and the user's values), read whole."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from gradcheck_cli.errors import InputError
from gradcheck_cli.inputs import tensors
from gradcheck_cli.inputs.source import Source
from gradcheck_cli.inputs.validate import Parsed


def sniff(first: bytes) -> bool:
    return tensors.first_zip_member(first).endswith(b".npy")


@contextmanager
def open_tensors(opened: Source, keys: dict[str, str]) -> Iterator[dict[str, tensors.Tensor]]:
    import zipfile  # only a .npz needs these
    import zlib

    unreadable = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error)
    # Opened here, not by np.load: it leaves its own file open when the archive is not a zip.
    with open(opened.file_path(), "rb") as handle:
        try:
            loaded = np.load(handle, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise InputError(f"{opened.name}: a single .npy array, not a .npz archive; name it .npy")
            with loaded as archive:
                arrays = {key: archive[key] for key in archive.files}
        except InputError:
            raise
        except unreadable as error:
            raise InputError(f"{opened.name}: not a readable .npz file: {' '.join(str(error).split())}") from None
    found = {key: tensors.in_memory(key, _array(array, key, opened.name)) for key, array in arrays.items()}
    yield tensors.find(found, keys, opened.name)


def _array(array: np.ndarray, key: str, name: str) -> np.ndarray:
    if array.dtype.kind == "V":  # how numpy writes a bfloat16 array: raw 2-byte records, the type lost
        raise InputError(f"{name}: {key}: raw {array.dtype.itemsize}-byte records (numpy saves bfloat16 so, "
                         "without its type); save bfloat16 tensors as .safetensors or .pt")
    return array


def pieces(opened: Source, plan: tensors.TensorPlan) -> Iterator[Parsed]:
    return tensors.pieces(open_tensors, opened, plan)
