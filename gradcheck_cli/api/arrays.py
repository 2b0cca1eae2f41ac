"""Arrays as callers hold them (lists, numpy, torch, JAX, anything with __array__ or __dlpack__) to numpy and back.

Every conversion to float64 is exact: float32, float16 and bfloat16 values are all float64 values. torch and JAX
are never imported here unless the caller's own arrays come from them (then they are installed and loaded).
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from gradcheck_cli.errors import InputError
from gradcheck_cli.inputs.limits import LARGEST_LABEL

# The package an array type comes from -> the framework a user's function is written for.
FRAMEWORKS = {"torch": "torch", "jax": "jax", "jaxlib": "jax"}


def framework(values: Any) -> str:
    """'torch', 'jax' or 'numpy' (everything else, lists included), told by the module of the values' type."""
    return FRAMEWORKS.get(type(values).__module__.partition(".")[0], "numpy")


def dtype_name(values: Any) -> str:
    """The name of the values' floating-point type ('float32', 'bfloat16', ...); lists count as float64."""
    dtype = getattr(values, "dtype", None)
    if dtype is None:
        return "float64"
    return str(dtype).removeprefix("torch.")


def to_numpy(values: Any, what: str) -> np.ndarray:
    """The values as a numpy array of their own type, on the CPU; torch tensors detached (bfloat16 as float32).

    A tensor that requires grad, or lives on a GPU, is detached and copied first, as the caller would do.
    """
    if framework(values) == "torch" and hasattr(values, "detach"):
        tensor = values.detach().cpu()
        try:
            return np.asarray(tensor.numpy())
        except TypeError:  # numpy has no bfloat16 (nor the float8 types): their float32 values are exact
            return np.asarray(tensor.float().numpy())
    try:
        if hasattr(values, "__array__") or not hasattr(values, "__dlpack__"):
            return np.asarray(values)
        return np.from_dlpack(values)
    except ValueError as error:
        if "inhomogeneous" in str(error):
            raise InputError(f"{what}: ragged: its rows have different lengths") from None
        raise InputError(f"{what}: cannot be read as an array: {error}") from None
    except (TypeError, RuntimeError, BufferError) as error:
        raise InputError(f"{what}: cannot be read as an array: {error}") from None


def as_float64(values: Any, what: str) -> np.ndarray:
    """Real numbers as float64 (exactly: every narrower float is a float64 value); anything else refused."""
    array = to_numpy(values, what)
    if array.dtype.kind in "bcOSUMm":
        kinds = {"b": "booleans", "c": "complex numbers", "O": "objects (ragged rows, or not numbers)",
                 "S": "text", "U": "text", "M": "dates", "m": "time spans"}
        raise InputError(f"{what}: expected real numbers, got {kinds[array.dtype.kind]}")
    try:
        return array.astype(np.float64)
    except (TypeError, ValueError) as error:
        raise InputError(f"{what}: expected real numbers, got {array.dtype}: {error}") from None


def as_class_indices(values: Any, what: str) -> np.ndarray:
    """Class indices as int64: integers, or floats that are whole numbers (2.0), as the CLI reads them."""
    array = to_numpy(values, what)
    if array.dtype.kind in "iu" and (array.size == 0 or array.max() < LARGEST_LABEL):
        return array.astype(np.int64)
    numbers = as_float64(array, what)
    flat = numbers.ravel()
    bad = np.flatnonzero(~np.isfinite(flat) | (flat != np.round(flat)) | (np.abs(flat) >= LARGEST_LABEL))
    if bad.size:
        n = int(bad[0])
        problem = "far too large for a" if np.abs(flat[n]) >= LARGEST_LABEL else "not an integer"
        raise InputError(f"{what}[{n}]: {float(flat[n])!r} is {problem} class index")
    return numbers.astype(np.int64)


def like(template: Any, values: np.ndarray) -> Any:
    """float64 values as the same kind of array as `template`, in its floating-point type (and device).

    A user's function is called with what it was written for: torch tensors, JAX arrays, or numpy arrays.
    """
    kind = framework(template)
    if kind == "torch":
        return template.new_tensor(values)  # the template's dtype and device
    if kind == "jax":
        jnp = importlib.import_module("jax.numpy")
        return jnp.asarray(values, dtype=template.dtype)
    dtype = getattr(template, "dtype", None)
    floating = isinstance(dtype, np.dtype) and dtype.kind == "f"
    return values.astype(dtype if floating else np.float64)
