"""How a user's FUNCTION is called (call_function), and what it returned, read as float64 arrays and the precision
it was computed in.

Runs where the function runs (in the worker process, or in this one): a torch tensor is turned into numpy
there, so torch is never needed to read the answer. --framework torch or jax calls the function with that
framework's tensors (imported there, only then), in --dtype, on --device; a function that returns only its
loss gets its gradient from the framework's autograd (torch.autograd.grad, jax.vjp) with the upstream
gradient as grad_outputs. Its second parameter's name says what it takes: a name with "label" in it (or
target_ids, indices) takes integer class labels, ignored rows carrying --ignore-index; any other, the
N x C target rows. A parameter named grad_output is given the upstream gradient.

Returned values: numpy arrays, Python numbers, lists, torch tensors (still attached to the autograd graph, on
any device, of any floating type) and anything numpy can read (JAX arrays) are accepted. Complex numbers,
strings, booleans and objects are refused with what was returned: casting them would check something other
than what the function computed.
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
_MOVE_BLOCK = 1 << 20  # elements of a direction's move made at once (8 MB of float64)
# From this many elements a value computed in float32 or coarser is handed over as float32 (the same numbers
# exactly, every float32, bfloat16 or float16 being a float32): half the bytes of float64 in the worker, across
# the pipe and in this process (a 1,024 x 128,256 gradient: 525 MB, not 1 GB). Implementation.answer widens it
# to float64 unless its caller takes it narrow.
NARROW_FROM = 1 << 20


class Refused(Exception):
    """The function returned something that is not (loss, gradient) in real numbers; the message says what."""


class Returned(NamedTuple):
    """One call's answer: the loss and the gradient as float64, and the machine epsilon they were computed in."""

    loss: np.ndarray
    gradient: np.ndarray | None  # None when only the loss was asked for; float32 when narrow (NARROW_FROM)
    precision: float  # the coarser of the loss's and the gradient's types (float64 for Python numbers)
    # Whether the gradient is sum_n g_n grad l_n with the upstream g sent (autograd, or a grad_output parameter);
    # False: the function made it without g, so it is the gradient of the plain sum (g = 1).
    weighted: bool = False


_LABEL_NAMES = ("target_ids", "targets_ids", "class_ids", "indices", "target_indices", "y_index")


class Calling(NamedTuple):
    """How the user's function is called: whose tensors, in which dtype, on which device (--framework, --dtype,
    --device), and the label of an ignored row for a function that takes labels."""

    framework: str = "numpy"
    device: str = "cpu"
    dtype: str = "float64"
    ignore_index: int = -100


NUMPY_CALLING = Calling()  # float64 numpy arrays, as functions were always called


class Signature(NamedTuple):
    """What the function's parameters say it takes."""

    labels: bool = False  # its second parameter is class labels, not target rows
    upstream: bool = False  # it has a parameter named grad_output


class Direction(NamedTuple):
    """A move of the logits along a random direction: flat elements start..stop-1 moved by step times the signs
    rademacher(seed, size) gives them (the rest stay). Sent instead of the moved logits, so a call costs what
    the user's function costs, and made the same way where the function runs and where the check runs."""

    seed: int
    step: float
    start: int
    stop: int


class Along(NamedTuple):
    """A Taylor point (checks/taylor.py): the logits plus step times SignedDirections(seed, ...)[position], of
    v1, -v1, v2, -v2, ... Sent instead of the moved logits; made where the function runs as taylor_test makes it
    (z + t v, v drawn and scaled the same way), bit for bit."""

    seed: int
    position: int
    step: float


def rademacher(seed: int, size: int) -> np.ndarray:
    """size random signs +1 / -1 (int8), the same for the same seed wherever they are made: the top bit of each
    byte of PCG64's raw 64-bit words (little-endian), which is what default_rng(seed).integers(0, 2, size,
    dtype=np.int8) draws (Lemire's method on one byte keeps its top bit), at a sixth of its time (0.3 against
    2 ms at 8 x 50,257; a directional check draws them 16 times here and 16 in the worker)."""
    words = np.random.default_rng(seed).bit_generator.random_raw((size + 7) // 8)
    signs = (words.astype("<u8", copy=False).view(np.uint8)[:size] >> 7).view(np.int8)
    signs *= 2
    signs -= 1
    return signs


def moved(logits: np.ndarray, at: Any) -> np.ndarray:
    """A copy of the logits with an edit set in it: (flat indices, values), a Direction or an Along."""
    return Points().logits(logits, at)


class Points:
    """The logits (and second argument) each call is given, made where the function runs, call after call.

    Each call gets a buffer re-filled from what is held before it is edited: the function may write into its
    input, and a fresh copy per call would be faulted in page by page (a GB at 131M logits). Kept: the signs of
    the last Direction's seed (its +step and -step calls share them), the Taylor direction being evaluated (its
    2 x 8 points share it; dropped at the next call that is not a Taylor point), and where each draw of a seed
    and shape starts in its generator, so that a direction costs one draw. `keep` False: nothing of the logits'
    size is kept between calls (in the checking process), and each Taylor point is drawn again."""

    def __init__(self, keep: bool = True) -> None:
        self.keep = keep
        self.buffers: dict[str, np.ndarray] = {}
        self.signs: tuple[int, int, np.ndarray] | None = None  # (seed, size, signs)
        self.draws: dict[tuple[int, tuple[int, ...], int], Any] = {}  # (seed, shape, draw) -> generator state
        self.direction: tuple[int, int, np.ndarray] | None = None  # (seed, draw, v) of the last Taylor point

    def logits(self, logits: np.ndarray, at: Any) -> np.ndarray:
        """The logits with `at` set in them, in the re-filled buffer (a fresh array when not `keep`)."""
        if isinstance(at, Along):
            return self._along(logits, at)
        self.direction = None
        point = self.refilled("logits", logits)
        if isinstance(at, Direction):
            part = point.reshape(-1)[at.start:at.stop]
            signs = self._signs(at.seed, logits.size)[at.start:at.stop]
            for begin in range(0, part.size, _MOVE_BLOCK):  # step * signs as float64 a block at a time, not N x C
                part[begin:begin + _MOVE_BLOCK] += at.step * signs[begin:begin + _MOVE_BLOCK]
        elif at is not None:
            point.flat[at[0]] = at[1]
        return point

    def refilled(self, key: str, values: np.ndarray) -> np.ndarray:
        """A C-ordered array of `values` (what values.copy() gives): the buffer kept under `key`, filled again."""
        buffer = self._buffer(key, values.shape, values.dtype)
        np.copyto(buffer, values)
        return buffer

    def _buffer(self, key: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        buffer = self.buffers.get(key) if self.keep else None
        if buffer is None or buffer.shape != shape or buffer.dtype != dtype:
            buffer = np.empty(shape, dtype)
            if self.keep:
                self.buffers[key] = buffer
        return buffer

    def _signs(self, seed: int, size: int) -> np.ndarray:
        if self.signs is None or self.signs[:2] != (seed, size):
            self.signs = (seed, size, rademacher(seed, size))  # int8: an eighth of the logits' size
        return self.signs[2]

    def _along(self, logits: np.ndarray, at: Along) -> np.ndarray:
        """z + t v as taylor_test computes it: v (or -v) times t, plus z."""
        point = self._buffer("logits", logits.shape, np.dtype(np.float64))  # every element written
        draw = at.position // 2
        if self.direction is not None and self.direction[:2] == (at.seed, draw) \
                and self.direction[2].shape == logits.shape:
            v = self.direction[2]
        else:
            v = self._drawn(at.seed, draw, logits.shape, point)
        np.multiply(v, -at.step if at.position % 2 else at.step, out=point)  # t (-v) is -(t v) exactly
        point += logits  # t v + z is z + t v exactly (addition commutes)
        return point

    def _drawn(self, seed: int, draw: int, shape: tuple[int, ...], point: np.ndarray) -> np.ndarray:
        """SignedDirections' v of that draw (standard_normal(out=) draws what standard_normal(shape) does),
        scaled by its largest |v|: kept when `keep`, else drawn into `point`."""
        v = np.empty(shape) if self.keep else point
        self.direction = None
        generator = self._generator(seed, draw, shape)
        generator.standard_normal(out=v)
        self.draws[seed, shape, draw + 1] = generator.bit_generator.state  # where the next starts: no redraw
        v /= np.abs(v).max()
        if self.keep:
            self.direction = (seed, draw, v)
        return v

    def _generator(self, seed: int, draw: int, shape: tuple[int, ...]) -> np.random.Generator:
        """The generator of SignedDirections(seed, ...) where its draw number `draw` starts."""
        generator = np.random.default_rng(seed)
        known = max((d for s, held, d in self.draws if (s, held) == (seed, shape) and d <= draw), default=0)
        if known:
            generator.bit_generator.state = self.draws[seed, shape, known]
        skipped = np.empty(shape)
        for _ in range(known, draw):  # draws before it not seen yet: drawn and dropped, their ends kept
            generator.standard_normal(out=skipped)
        self.draws = {key: state for key, state in self.draws.items() if key[:2] == (seed, shape)}
        self.draws[seed, shape, draw] = generator.bit_generator.state
        return generator


def read_signature(function: Any) -> Signature:
    import inspect

    try:
        parameters = list(inspect.signature(function).parameters)
    except (TypeError, ValueError):  # a builtin without a signature: the (logits, targets) of old
        return Signature()
    second = parameters[1].lower() if len(parameters) > 1 else ""
    return Signature("label" in second or second in _LABEL_NAMES, "grad_output" in parameters)


def call_function(function: Any, signature: Signature, calling: Calling, logits: np.ndarray, second: np.ndarray,
                  upstream: np.ndarray, loss_only: bool) -> Returned:
    """One call in the calling convention, `second` its second argument (the target rows, or the class labels
    labels_of gives a labels signature); what the function returned, read (Refused if it cannot be)."""
    if calling.framework == "torch":
        return _call_torch(function, signature, calling, logits, second, upstream, loss_only)
    if calling.framework == "jax":
        return _call_jax(function, signature, calling, logits, second, upstream, loss_only)
    extra = {"grad_output": upstream} if signature.upstream else {}
    result = function(logits, second, **extra)
    if not _is_pair(result):
        raise Refused(f"must return (loss, gradient), got {_describe(result)} (a function returning only its loss "
                      f"needs --framework torch or jax, whose autograd gives the gradient)")
    return read_returned(result, loss_only)._replace(weighted=signature.upstream)


def labels_of(targets: np.ndarray, ignore_index: int) -> np.ndarray:
    """Class labels from one-hot target rows (an all-zero row is an ignored one); Refused for a distribution."""
    kept = targets.any(axis=1)
    labels = np.where(kept, targets.argmax(axis=1), ignore_index)
    one_hot = (np.count_nonzero(targets, axis=1) == 1) & (targets.max(axis=1) == 1.0)
    bad = np.flatnonzero(kept & ~one_hot)
    if bad.size:
        raise Refused(f"its second parameter takes class labels, but row {int(bad[0])}'s target is a distribution; "
                      f"name it targets to be given the target rows")
    return labels.astype(np.int64)


def framework_module(name: str) -> Any:
    """torch or jax, imported only when asked; a one-line input error when it is not installed."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as error:
        from gradcheck_cli.errors import InputError

        raise InputError(f"--framework {name}: {name} cannot be imported here ({error}); install it "
                         f"(pip install {name}) or use --framework numpy") from None


def _placed(make: Any, device: str) -> Any:
    try:
        return make()
    except Exception as error:  # noqa: BLE001 - a device the framework does not have is the user's input error
        raise Refused(f"--device {device}: {type(error).__name__}: {error}") from None


def _call_torch(function: Any, signature: Signature, calling: Calling, logits: np.ndarray, second: np.ndarray,
                upstream: np.ndarray, loss_only: bool) -> Returned:
    torch = framework_module("torch")
    dtype = getattr(torch, calling.dtype)
    z = _placed(lambda: torch.from_numpy(logits).to(device=calling.device, dtype=dtype), calling.device)
    z.requires_grad_(not loss_only)
    kind = torch.int64 if signature.labels else dtype
    answer = torch.from_numpy(second).to(device=calling.device, dtype=kind)
    extra = {"grad_output": torch.from_numpy(upstream).to(device=calling.device, dtype=dtype)} if signature.upstream \
        else {}
    result = function(z, answer, **extra)
    if _is_pair(result):
        return read_returned(result, loss_only)._replace(weighted=signature.upstream)
    loss, precision = _numbers(result, "loss")
    if loss_only:
        return Returned(loss, None, precision)
    if not (_is_torch_tensor(result) and result.requires_grad):
        raise Refused(f"returned only its loss ({_describe(result)}), not attached to the logits' autograd graph: "
                      f"compute it from the logits given, or return (loss, gradient)")
    g = torch.from_numpy(upstream).to(device=result.device, dtype=result.dtype).reshape(result.shape)
    (gradient,) = torch.autograd.grad(result, z, grad_outputs=g, allow_unused=True)
    if gradient is None:  # the loss does not depend on the logits: its gradient is 0
        gradient = torch.zeros_like(z)
    values, gradient_precision = _numbers(gradient, "gradient")
    return Returned(loss, values, max(precision, gradient_precision), weighted=True)


def _call_jax(function: Any, signature: Signature, calling: Calling, logits: np.ndarray, second: np.ndarray,
              upstream: np.ndarray, loss_only: bool) -> Returned:
    jax = framework_module("jax")
    if calling.dtype == "float64":
        jax.config.update("jax_enable_x64", True)  # without it JAX computes float64 arrays in float32
    platform, _, index = calling.device.partition(":")
    device = _placed(lambda: jax.devices(platform)[int(index or 0)], calling.device)
    dtype = jax.numpy.dtype(calling.dtype)
    z = jax.device_put(jax.numpy.asarray(logits, dtype=dtype), device)
    answer = jax.device_put(jax.numpy.asarray(second, dtype=jax.numpy.int64 if signature.labels else dtype), device)
    extra = {"grad_output": jax.device_put(jax.numpy.asarray(upstream, dtype=dtype), device)} if signature.upstream \
        else {}
    result = function(z, answer, **extra)
    if _is_pair(result):
        return read_returned(result, loss_only)._replace(weighted=signature.upstream)
    if loss_only:
        loss, precision = _numbers(result, "loss")
        return Returned(loss, None, precision)
    result, backward = jax.vjp(lambda x: function(x, answer, **extra), z)  # its forward again, recorded
    loss, precision = _numbers(result, "loss")
    g = jax.numpy.asarray(upstream, dtype=result.dtype).reshape(result.shape)
    (gradient,) = backward(g)
    values, gradient_precision = _numbers(gradient, "gradient")
    return Returned(loss, values, max(precision, gradient_precision), weighted=True)


def _is_pair(result: Any) -> bool:
    return isinstance(result, tuple | list) and len(result) == 2


def read_returned(result: Any, loss_only: bool = False) -> Returned:
    """The function's (loss, gradient) as float64 arrays; Refused if it is anything else."""
    if not _is_pair(result):
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
    return array.astype(np.float32 if _narrow(array.size, precision) else np.float64), precision


def _narrow(size: int, precision: float) -> bool:
    """Whether values computed at this machine epsilon are handed over as float32 (NARROW_FROM)."""
    return size >= NARROW_FROM and precision >= _EPSILON_BY_NAME["float32"]


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
    wide = tensor.float() if _narrow(tensor.numel(), precision) else tensor.double()
    return np.asarray(wide.cpu().numpy()), precision


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
