"""Tensor files: the named arrays a binary reader finds, checked once, then cut into Parsed pieces of rows.

A binary format module (npy_format, npz_format, safetensors_format, pt_format) only finds the arrays: each is a
Tensor, its shape and stored dtype known before any row is read, and `rows(start, stop)` reading just those
rows (a memory map, a safetensors slice, or an array already in memory). Everything else is decided here, once
for every tensor format: which key holds what (`--key NAME=KEY`), shapes, dtypes, finite logits, and the cut
into chunks, so the rows reach validate.make_batch exactly as a text reader's do, as float64 (the stored dtype
is kept on the Batch as `dtype_name`; every float16, bfloat16 and float32 value is a float64 exactly).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from types import ModuleType
from typing import NamedTuple

import numpy as np

from gradcheck_cli.batch import Batch
from gradcheck_cli.errors import InputError
from gradcheck_cli.inputs import TENSOR_NAMES
from gradcheck_cli.inputs.limits import LARGEST_LABEL, LARGEST_LOGIT, check_logit_range
from gradcheck_cli.inputs.source import Source, unchanged
from gradcheck_cli.inputs.validate import Answers, Parsed, Teacher, make_batch

FLOAT_DTYPES = ("float64", "float32", "float16", "bfloat16")
# About this many bytes of float64 logits per chunk (8 rows of a 128,256 vocabulary): the checks make a few
# dozen temporaries of a chunk's size, so a chunk of 8 MB keeps a check of any N well under 1 GB, while the
# fixed cost of a chunk (a few hundred microseconds) stays small beside its 1,000,000 elements.
TENSOR_CHUNK_BYTES = 8 << 20
# The user's values in the order the JSON reader gives them, so that the checks come in the same order.
_SUPPLIED_ORDER = ("probabilities", "gradient", "jacobian", "loss", "lse")
_INSTALL_TENSORS = "pip install 'gradcheck[tensors]' (the safetensors and ml_dtypes packages)"
# What a tensor file may hold: the arrays of the rows, and the upstream gradient g (--grad-output's values).
UPSTREAM = "grad_output"
_READ_NAMES = (*dict.fromkeys((*TENSOR_NAMES, UPSTREAM)),)


class Tensor(NamedTuple):
    """One array of a tensor file: its key there, shape, stored dtype, and a way to read rows start:stop (in a
    numpy dtype that holds its values exactly: bfloat16 as ml_dtypes' type or as float32)."""

    key: str
    shape: tuple[int, ...]
    dtype_name: str
    rows: Callable[[int, int], np.ndarray]


def in_memory(key: str, array: np.ndarray, dtype_name: str | None = None) -> Tensor:
    """A Tensor of an array already read (or memory-mapped): its rows are slices of it (a single number: itself)."""
    return Tensor(key, tuple(array.shape), dtype_name or array.dtype.name,
                  lambda start, stop: array[start:stop] if array.ndim else array)


OpenTensors = Callable[[Source, dict[str, str]], AbstractContextManager[dict[str, Tensor]]]


@dataclass(eq=False)
class TensorPlan:
    """How a tensor file is read: which key holds what, what was given beside it, and its rows in chunks."""

    keys: dict[str, str]  # gradcheck's name -> the file's key, for the names --key maps
    answers: list[Answers] = field(default_factory=list)  # labels or targets given beside the file, N rows each
    supplied: dict[str, tuple[np.ndarray, str]] = field(default_factory=dict)  # the user's values beside it
    teacher: Teacher | None = None  # teacher logits given beside the file (distillation losses), N rows
    rows: int = 0  # N, from the file's header
    dtype_name: str = "float64"  # the stored dtype of the logits
    chunk_rows: int = 1
    # The file's grad_output (one number, or one per row of the whole file) as float64, and where it is.
    upstream: tuple[np.ndarray, str] | None = None

    def batches(self, opened: Source, ignore_index: int | None) -> Iterator[Batch]:
        """The file's rows as batches of chunk_rows, each through make_batch, with the stored dtype named."""
        start = 0
        for parsed in opened.reader.pieces(opened, self):
            stop = start + parsed.logits.shape[0]
            batch = make_batch(parsed, opened.name, [], {}, ignore_index, self._teacher_rows(start, stop))
            batch.dtype_name = self.dtype_name
            batch.upstream = self.upstream
            start = stop
            yield batch

    def count_label(self, opened: Source, label: int) -> int:
        """The rows labelled `label`, from labels beside the file or the file's own (N integers: little to read)."""
        beside = [given.values for given in self.answers if given.are_labels]
        if beside:
            return int(np.count_nonzero(beside[0] == label))
        with opened.reader.open_tensors(opened, self.keys) as found:
            if "labels" not in found:
                return 0
            labels = found["labels"]
            step = max(self.chunk_rows, 1 << 20)
            return sum(int(np.count_nonzero(np.asarray(labels.rows(start, start + step)) == label))
                       for start in range(0, self.rows, step))

    def _teacher_rows(self, start: int, stop: int) -> Teacher | None:
        if self.teacher is None:
            return None
        locate = self.teacher.locate
        return Teacher(self.teacher.values[start:stop], self.teacher.source, lambda n: locate(start + n))


def key_map(pairs: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """--key NAME=KEY pairs as a map; a name given twice is refused."""
    keys: dict[str, str] = {}
    for name, key in pairs:
        if name in keys:
            raise InputError(f"--key {name}=...: given twice ({keys[name]!r} and {key!r})")
        keys[name] = key
    return keys


def plan(opened: Source, keys: dict[str, str], answers: list[Answers], supplied: dict[str, tuple[np.ndarray, str]],
         teacher: Teacher | None, chunk_bytes: int | None) -> TensorPlan:
    """Look at the file's arrays (shapes and dtypes only, no rows) and what was given beside it, refuse what
    does not fit, and say how its rows will be read: chunks of about chunk_bytes of float64 (None: the default)."""
    with _open(opened, keys) as found:
        logits = _logits(found, opened.name)
        rows, classes = logits.shape
        for name, tensor in found.items():
            if name != UPSTREAM:  # checked with the settings, once its values are read
                _check_tensor(name, tensor, rows, opened.name)
        _check_beside(answers, rows)
        if teacher is not None and teacher.values.shape[0] != rows:
            raise InputError(f"{teacher.source}: {teacher.values.shape[0]} rows of teacher logits for {rows} rows "
                             "of logits")
        chunk = (TENSOR_CHUNK_BYTES if chunk_bytes is None else chunk_bytes) // (8 * classes)
        upstream = _upstream(found[UPSTREAM], opened.name) if UPSTREAM in found else None
    return TensorPlan(keys, answers, supplied, teacher, rows, logits.dtype_name, max(1, chunk), upstream)


def upstream_setting(upstream: tuple[np.ndarray, str], option: object, reduction: str, rows: int,
                     chunked: bool) -> tuple[float, ...]:
    """A file's grad_output as the --grad-output setting, with --grad-output FILE's rules: N values for
    --reduction none, else one number. Refused beside an explicit --grad-output (one g, given once: neither is
    silently dropped), and with --reduction none when the file is read in chunks (g is checked per row)."""
    values, where = upstream
    if option is not None:
        raise InputError(f"{where}: the file gives the upstream gradient, and so does --grad-output; give it "
                         "once (drop the option, or the key)")
    if values.size != (rows if reduction == "none" else 1):
        takes = f"one per row ({rows})" if reduction == "none" else "one number"
        raise InputError(f"{where}: {values.size} upstream gradient values; --reduction {reduction} takes {takes}")
    if chunked and reduction == "none":
        raise InputError(f"{where}: with --reduction none the upstream gradient takes one value per row of the "
                         "whole input, and the file is read in chunks: check it with --reduction sum, or in a "
                         "smaller file")
    return tuple(values.tolist())


def _upstream(tensor: Tensor, name: str) -> tuple[np.ndarray, str]:
    """The file's grad_output as --grad-output FILE reads it: its values in order (float64, exact from every
    float dtype), finite; how many a --reduction takes is checked with the settings (pipeline.upstream_default)."""
    where = f"{name}: {tensor.key}"
    if tensor.dtype_name not in FLOAT_DTYPES:
        raise InputError(f"{name}: {tensor.key}: dtype {tensor.dtype_name}; the upstream gradient must be "
                         f"{', '.join(FLOAT_DTYPES)}")
    if len(tensor.shape) > 1 or 0 in tensor.shape:
        raise InputError(f"{name}: {tensor.key}: the upstream gradient is {_shape(tensor.shape)}; give one number, "
                         "or one per row for --reduction none")
    values = np.asarray(tensor.rows(0, tensor.shape[0] if tensor.shape else 1), dtype=np.float64).reshape(-1)
    if not np.isfinite(values).all():
        n = int(np.argmin(np.isfinite(values)))
        raise InputError(f"{name}: {tensor.key}[{n}]: {float(values[n])!r} is not finite; the upstream gradient "
                         "must be finite numbers")
    return values, where


def _open(opened: Source, keys: dict[str, str]) -> AbstractContextManager[dict[str, Tensor]]:
    module: ModuleType = opened.reader
    unknown = sorted(set(keys) - set(_READ_NAMES))
    if unknown:
        raise InputError(f"--key {unknown[0]}=...: {unknown[0]!r} is not something gradcheck reads; "
                         f"name one of {', '.join(_READ_NAMES)}")
    opener: OpenTensors = module.open_tensors
    return opener(opened, keys)


def find(arrays: dict[str, Tensor], keys: dict[str, str], name: str) -> dict[str, Tensor]:
    """The arrays gradcheck reads, by its names, from a file's arrays by key (`--key` maps the names)."""
    wanted = {what: keys.get(what, what) for what in _READ_NAMES}
    missing = sorted(key for what, key in wanted.items() if what in keys and key not in arrays)
    if missing:
        raise InputError(f"{name}: no key {missing[0]!r} (named by --key); the file has {_listed(arrays)}")
    if wanted["logits"] not in arrays:
        raise InputError(f"{name}: no 'logits' array (the file has {_listed(arrays)}); name the key that holds "
                         "them with --key logits=KEY")
    return {what: arrays[key] for what, key in wanted.items() if key in arrays}


def _listed(arrays: dict[str, Tensor]) -> str:
    return ", ".join(repr(key) for key in sorted(arrays)) or "no arrays"


def _logits(found: dict[str, Tensor], name: str) -> Tensor:
    logits = found["logits"]
    if len(logits.shape) != 2 or 0 in logits.shape:
        raise InputError(f"{name}: {logits.key}: the logits are {_shape(logits.shape)}; they must be N x C "
                         "(rows x classes, both at least 1: reshape(-1, C) a batch x time x vocabulary tensor)")
    return logits


def _shape(shape: tuple[int, ...]) -> str:
    return " x ".join(map(str, shape)) if shape else "a single number"


def _check_tensor(what: str, tensor: Tensor, rows: int, name: str) -> None:
    """Each array's dtype and shape for what it holds; the user's values may be of any float dtype."""
    integral = what == "labels"
    if integral and not _is_integer(tensor.dtype_name):
        raise InputError(f"{name}: {tensor.key}: labels of dtype {tensor.dtype_name}; class indices must be "
                         "integers (int64, as torch's cross_entropy takes them)")
    if not integral and tensor.dtype_name not in FLOAT_DTYPES:
        raise InputError(f"{name}: {tensor.key}: dtype {tensor.dtype_name} is not one gradcheck reads; "
                         f"{what} must be {', '.join(FLOAT_DTYPES)}")
    expected = {"labels": 1, "targets": 2, "teacher_logits": 2, "probabilities": 2, "gradient": 2, "jacobian": 3,
                "lse": 1}
    if what == "loss":
        if len(tensor.shape) > 1 or (tensor.shape and tensor.shape[0] not in (1, rows)):
            raise InputError(f"{name}: {tensor.key}: the loss is {_shape(tensor.shape)}; give one number, "
                             f"or one per row ({rows})")
    elif what != "logits" and (len(tensor.shape) != expected[what] or tensor.shape[0] != rows):
        raise InputError(f"{name}: {tensor.key}: {what} of shape {_shape(tensor.shape)} for {rows} rows of "
                         f"logits; expected {rows} {'labels' if integral else 'rows'} of "
                         f"{_row_of(what, integral, expected[what])}")


def _row_of(what: str, integral: bool, dimensions: int) -> str:
    """What one row of an array holds, as an error about its shape says it."""
    if integral:
        return "one class index"
    return "one value (a vector of N)" if dimensions == 1 else "C values" if dimensions == 2 else "C x C"


def _is_integer(dtype_name: str) -> bool:
    return dtype_name.startswith(("int", "uint"))


def _check_beside(answers: list[Answers], rows: int) -> None:
    for given in answers:
        if given.values.shape[0] != rows:
            what = "labels" if given.are_labels else "target rows"
            raise InputError(f"{given.source}: {given.values.shape[0]} {what} for {rows} rows of logits")


def pieces(open_tensors: OpenTensors, opened: Source, plan: TensorPlan) -> Iterator[Parsed]:
    """The file's rows in chunks of plan.chunk_rows, as the Parsed pieces a text reader would give."""
    with open_tensors(opened, plan.keys) as found:
        for start in range(0, plan.rows, plan.chunk_rows):
            stop = min(start + plan.chunk_rows, plan.rows)
            piece = _piece(found, opened.name, plan, start, stop)
            unchanged(opened)  # every chunk is read from the file as it was opened
            yield piece


def _piece(found: dict[str, Tensor], name: str, plan: TensorPlan, start: int, stop: int) -> Parsed:
    logits = _finite(found["logits"], name, start, stop, np.nextafter(LARGEST_LOGIT, np.inf))
    parsed = Parsed(logits=logits)
    if "labels" in found:
        parsed.answers.append(_labels(found["labels"], name, start, stop))
    if "targets" in found:
        key = found["targets"].key
        parsed.answers.append(Answers(_finite(found["targets"], name, start, stop), False, f"{key!r} in {name}",
                                      lambda n: f"{name}: {key}[{start + n}]"))
    parsed.answers += [_rows_of(given, start, stop) for given in plan.answers]
    if "teacher_logits" in found:
        key = found["teacher_logits"].key
        parsed.teacher = Teacher(_finite(found["teacher_logits"], name, start, stop), f"{key!r} in {name}",
                                 lambda n: f"{name}: {key}[{start + n}]")
    for what in _SUPPLIED_ORDER:
        if what in found:
            tensor = found[what]
            values = _user_rows(what, tensor, start, stop)
            parsed.supplied[what] = (values, f"{tensor.key!r} in {name}")
    for what, (values, where) in plan.supplied.items():
        parsed.supplied[what] = (values if values.size == 1 else values[start:stop], where)
    return parsed


def _finite(tensor: Tensor, name: str, start: int, stop: int, largest: float = np.inf) -> np.ndarray:
    """Rows start:stop as float64 (exact from every float dtype), or an InputError at the first non-finite
    value, or (logits: largest=LARGEST_LOGIT) one beyond the range gradcheck can check."""
    values = np.asarray(tensor.rows(start, stop), dtype=np.float64)
    # Two reductions and no temporary decide the usual case; NaN fails both comparisons.
    if values.size and -largest < values.min() and values.max() < largest:
        return values
    if not np.isfinite(values).all():
        n, c = (int(i) for i in np.argwhere(~np.isfinite(values))[0])
        raise InputError(f"{name}: {tensor.key}[{start + n}][{c}]: {float(values[n, c])!r} is not finite; logits and "
                         "targets must be finite numbers")
    if largest < np.inf:
        check_logit_range(values, lambda n: f"{name}: {tensor.key}[{start + n}]")
    return values


def _labels(tensor: Tensor, name: str, start: int, stop: int) -> Answers:
    raw = np.asarray(tensor.rows(start, stop))
    if raw.dtype == np.uint64 and raw.size and int(raw.max()) >= LARGEST_LABEL:
        n = int(np.argmax(raw >= LARGEST_LABEL))
        raise InputError(f"{name}: {tensor.key}[{start + n}]: {int(raw[n])} is far too large for a class index")
    key = tensor.key
    return Answers(raw.astype(np.int64), True, f"{key!r} in {name}", lambda n: f"{name}: {key}[{start + n}]")


def _user_rows(what: str, tensor: Tensor, start: int, stop: int) -> np.ndarray:
    """The user's values for rows start:stop as float64 (NaN allowed: it fails its check); a loss of one
    number goes with every chunk."""
    if what == "loss" and int(np.prod(tensor.shape)) == 1:
        return np.asarray(tensor.rows(0, 1), dtype=np.float64).reshape(-1)
    return np.asarray(tensor.rows(start, stop), dtype=np.float64)


def _rows_of(given: Answers, start: int, stop: int) -> Answers:
    locate = given.locate
    return Answers(given.values[start:stop], given.are_labels, given.source, lambda n: locate(start + n))


def missing_package(what: str, name: str) -> InputError:
    """The one-line error for a tensor file whose reading library is not installed."""
    return InputError(f"{name}: reading {what} needs packages that are not installed: {_INSTALL_TENSORS}")


def first_zip_member(first: bytes) -> bytes:
    """The name of a zip file's first member from its first bytes (b"" when they are not a zip's): a .npz
    holds .npy members, torch's .pt format <archive>/data.pkl first."""
    if not first.startswith(b"PK\x03\x04") or len(first) < 30:
        return b""
    name_length = int.from_bytes(first[26:28], "little")
    return first[30 : 30 + name_length]
