"""What a user's FUNCTION(logits, targets) returned, read as float64 arrays and the precision it was computed in.

Runs where the function runs (in the worker process, or in this one): a torch tensor is turned into numpy
there, so torch is never needed to read the answer. numpy arrays, Python numbers, lists, torch tensors
(still attached to the autograd graph, on any device, of any floating type) and anything numpy can read
(JAX arrays) are accepted. Complex numbers, strings, booleans and objects are refused with what was
returned: casting them would check something other than what the function computed.
"""

from __future__ import annotations

import reprlib
from typing import Any, NamedTuple

import numpy as np

# Machine epsilon by the name of a floating type (numpy's, torch's after its "torch." prefix, ml_dtypes').
# numpy's own floating types go through np.finfo; these are the ones it does not know.
_EPSILON_BY_NAME = {
    "float64": 2.0**-52,
    "float32": 2.0**-23,
    "float16": 2.0**-10,
    "bfloat16": 2.0**-7,
    "float8_e4m3fn": 2.0**-3,
    "float8_e5m2": 2.0**-2,
}
FLOAT64_EPSILON = 2.0**-52


class Refused(Exception):
    """The function returned something that is not (loss, gradient) in real numbers; the message says what."""


class Returned(NamedTuple):
    """One call's answer: the loss and the gradient as float64, and the machine epsilon they were computed in."""

    loss: np.ndarray
    gradient: np.ndarray | None  # None when only the loss was asked for
    precision: float  # the coarser of the loss's and the gradient's types (float64 for Python numbers)


def read_returned(result: Any, loss_only: bool = False) -> Returned:
    """The function's (loss, gradient) as float64 arrays; Refused if it is anything else."""
    if not (isinstance(result, tuple | list) and len(result) == 2):
        raise Refused(f"must return (loss, gradient), got {_describe(result)}")
    loss, loss_precision = _numbers(result[0], "loss")
    if loss_only:
        return Returned(loss, None, loss_precision)
    gradient, gradient_precision = _numbers(result[1], "gradient")
    return Returned(loss, gradient, max(loss_precision, gradient_precision))


def _numbers(value: Any, what: str) -> tuple[np.ndarray, float]:
    """One returned value as a float64 array and the epsilon of its type."""
    try:
        if _is_torch_tensor(value):
            return _from_torch(value, what)
        array = np.asarray(value)
    except Refused:
        raise
    except Exception as error:  # noqa: BLE001 - anything numpy cannot read is the user's value, not our bug
        raise Refused(f"the {what} must be numbers, got {_describe(value)} ({type(error).__name__}: {error})") from None
    precision = _precision(array.dtype, value, what)
    return array.astype(np.float64), precision


def _precision(dtype: np.dtype, value: Any, what: str) -> float:
    if dtype.kind == "c":
        raise Refused(f"the {what} must be real numbers, got {_describe(value)}: return the real part if you mean it")
    if dtype.kind == "f":
        return max(float(np.finfo(dtype).eps), FLOAT64_EPSILON)  # longdouble from float64 logits is float64
    if dtype.kind in "iu":
        return FLOAT64_EPSILON  # integers are exact (a loss that is one is rounded, and its checks say so)
    if dtype.name in _EPSILON_BY_NAME:  # ml_dtypes' bfloat16 (JAX) and float8 types
        return _EPSILON_BY_NAME[dtype.name]
    raise Refused(f"the {what} must be numbers, got {_describe(value)}")


def _is_torch_tensor(value: Any) -> bool:
    return type(value).__module__.partition(".")[0] == "torch" and hasattr(value, "detach")


def _from_torch(tensor: Any, what: str) -> tuple[np.ndarray, float]:
    """A torch tensor, detached from the autograd graph and moved to the CPU, as float64 (torch not imported)."""
    tensor = tensor.detach()
    name = str(tensor.dtype).removeprefix("torch.")
    if tensor.is_complex():
        raise Refused(f"the {what} must be real numbers, got {_describe(tensor)}: return the real part if you mean it")
    if tensor.is_floating_point():
        if name not in _EPSILON_BY_NAME:
            raise Refused(f"the {what} has a floating type gradcheck does not know: {_describe(tensor)}")
        precision = _EPSILON_BY_NAME[name]
    elif name == "bool":
        raise Refused(f"the {what} must be numbers, got {_describe(tensor)}")
    else:
        precision = FLOAT64_EPSILON
    return np.asarray(tensor.cpu().double().numpy()), precision


def _describe(value: Any) -> str:
    """What was returned, in a few words: its type, and its shape or a short repr."""
    if _is_torch_tensor(value) or isinstance(value, np.ndarray):
        kind = "tensor" if _is_torch_tensor(value) else "array"
        dtype = str(value.dtype)
        shape = " x ".join(str(n) for n in value.shape) or "0-d"
        return f"a {dtype} {kind} ({shape})"
    if isinstance(value, np.generic):
        return f"a {value.dtype} {reprlib.repr(value.item())}"
    return f"{type(value).__name__} {reprlib.repr(value)}"
