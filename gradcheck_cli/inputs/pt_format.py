"""A .pt file (torch.save): a dict of tensors by key, or one tensor (the logits alone), read whole with
torch.load(weights_only=True), which runs no code from the file. Only where torch is installed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from gradcheck_cli.errors import InputError
from gradcheck_cli.inputs import tensors
from gradcheck_cli.inputs.source import Source
from gradcheck_cli.inputs.validate import Parsed


def sniff(first: bytes) -> bool:
    return tensors.first_zip_member(first).endswith(b"data.pkl")


@contextmanager
def open_tensors(opened: Source, keys: dict[str, str]) -> Iterator[dict[str, tensors.Tensor]]:
    import importlib

    try:  # by name: torch is never a dependency, and its stubs may or may not be there for mypy
        torch: Any = importlib.import_module("torch")
    except ImportError:
        raise InputError(f"{opened.name}: reading a .pt file needs torch, which is not installed: pip install "
                         "torch (or save the tensors with safetensors and give the .safetensors file)") from None
    try:
        loaded = torch.load(opened.file_path(), map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many kinds (pickle, zip, its own) for a bad file
        raise InputError(f"{opened.name}: not a readable .pt file: {' '.join(str(error).split())[:200]}") from None
    if isinstance(loaded, torch.Tensor):
        loaded = {"logits": loaded}
    if not isinstance(loaded, dict) or not all(isinstance(value, torch.Tensor) for value in loaded.values()):
        raise InputError(f"{opened.name}: holds a {type(loaded).__name__}; expected a tensor or a dict of tensors "
                         "by name (logits, labels or targets, ...)")
    arrays = {str(key): _tensor(str(key), value, torch.bfloat16) for key, value in loaded.items()}
    yield tensors.find(arrays, keys, opened.name)


def _tensor(key: str, value: Any, bfloat16: Any) -> tensors.Tensor:
    """A torch tensor as numpy: bfloat16 (which numpy lacks) as float32, which holds every bfloat16 exactly."""
    dtype_name = str(value.dtype).removeprefix("torch.")
    array = value.detach().float().numpy() if value.dtype == bfloat16 else value.detach().numpy()
    return tensors.in_memory(key, np.asarray(array), dtype_name)


def pieces(opened: Source, plan: tensors.TensorPlan) -> Iterator[Parsed]:
    return tensors.pieces(open_tensors, opened, plan)
