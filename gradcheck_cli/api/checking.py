"""`check`: the command line's `gradcheck check` as a function, on the same pipeline, returning its Report.

Arrays go in as a Parsed piece through validate.make_batch, the step every reader's rows go through, so they
meet the same rules (one kind of answers, labels in range, targets not negative, logits in range, the user's
values in their report shapes); a file named by `input=` goes through the command line's own InputRequest.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from gradcheck_cli.api import keywords
from gradcheck_cli.api.arrays import as_class_indices, as_float64
from gradcheck_cli.checks.runner import FULL_LIMIT, Keep
from gradcheck_cli.errors import InputError
from gradcheck_cli.inputs.gather import Input, InputRequest, open_input
from gradcheck_cli.inputs.validate import Answers, Parsed, Teacher, make_batch
from gradcheck_cli.numerics.losses import accepted_kind
from gradcheck_cli.pipeline import (
    TORCH_IGNORE_INDEX,
    CheckJob,
    ignored_rows,
    open_check,
    read_ignore_index,
    upstream_default,
)
from gradcheck_cli.settings import Settings

if TYPE_CHECKING:
    from gradcheck_cli.batch import Batch
    from gradcheck_cli.checks.impl import Implementation
    from gradcheck_cli.checks.returned import Calling
    from gradcheck_cli.report import Report

Path = str | os.PathLike[str]
# A user's loss-and-gradient function: f(logits, targets) -> (loss, gradient), as --impl MODULE:FUNCTION.
ImplFunction = Callable[[Any, Any], Any]


def check(
    logits: Any = None,
    labels: Any = None,
    targets: Any = None,
    *,
    loss: str = "cross_entropy",
    impl: str | ImplFunction | None = None,
    gradient: Any = None,
    probabilities: Any = None,
    jacobian: Any = None,
    loss_value: Any = None,
    lse: Any = None,
    input: Path | None = None,
    input_format: str = "auto",
    labels_file: Path | None = None,
    targets_file: Path | None = None,
    grad_file: Path | None = None,
    probabilities_file: Path | None = None,
    method: str = "central",
    eps: float | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    dtype: str = "float64",
    order: int = 1,
    reduction: str = "mean",
    weights: Any = None,
    label_smoothing: float = 0.0,
    ignore_index: int | None = None,
    temperature: float = 1.0,
    beta: float | None = None,
    t2_scaling: bool = False,
    z_loss: float = 0.0,
    softcap: float | None = None,
    logit_scale: float = 1.0,
    pos_weight: Any = None,
    gamma: float | None = None,
    alpha: float | None = None,
    teacher_logits: Any = None,
    teacher_file: Path | None = None,
    key: Any = None,
    grad_output: Any = None,
    seed: int | None = None,
    directions: int = 16,
    framework: str = "numpy",
    device: str = "cpu",
    full: bool = False,
    impl_timeout: float = 60.0,
) -> Report:
    """Check softmax, its Jacobian, the loss and its gradient against finite differences, and your values.

    `gradcheck check` as a function: each keyword is the option of the same name (`--label-smoothing` is
    `label_smoothing`), with its default and its checks; a bad value raises InputError (a ValueError) with the
    message the command line prints. Arrays may be lists, numpy arrays, torch tensors (any float type,
    bfloat16 included; detached and copied to the CPU) or anything with __array__ or __dlpack__: logits N x C
    (or one row of C), labels N class indices, or targets N x C rows; your `gradient`, `probabilities`,
    `jacobian` (N x C x C) and `loss_value` are compared with the reference. `impl` is a function
    f(logits, targets) -> (loss, gradient), called with float64 numpy arrays, or "MODULE:FUNCTION". Instead of
    arrays, `input=` names a CSV, JSON or JSON Lines file, read as `--input` reads it (streamed when big).
    `impl_timeout` bounds the import of a "MODULE:FUNCTION" and each call of it (a Python function given
    itself runs in this process, unbounded).

    Example:

        report = check([[1.1, 2.2, 0.2, -1.7]], labels=[2])
        report.assert_ok()
    """
    settings = keywords.settings_from(locals())  # every Settings field is a keyword of the same name
    fmt = keywords.input_format(input_format)
    timeout = keywords.POSITIVE("--impl-timeout", impl_timeout)
    calling = keywords.calling(impl is not None, framework, device)
    if impl is not None and not isinstance(impl, str) and not callable(impl):
        raise InputError(f"impl: expected a function f(logits, targets) -> (loss, gradient) or "
                         f"'MODULE:FUNCTION', got {type(impl).__name__}")
    kind = accepted_kind(settings)  # refuses options this loss does not take before anything is read
    keep = Keep(arrays=True, jacobian_classes=None, limit=None if full else FULL_LIMIT)  # what JSON shows
    files = {"labels_file": labels_file, "targets_file": targets_file, "grad_file": grad_file,
             "probabilities_file": probabilities_file, "teacher_file": teacher_file}
    values = {"gradient": gradient, "probabilities": probabilities, "jacobian": jacobian, "lse": lse}
    notes: list[str] = []
    if input is None:
        _refuse_beside("logits=", "input=", {"input_format": None if fmt == "auto" else fmt, "key": key, **files})
        settings = upstream_default(settings, impl is not None, notes)
        ignore = read_ignore_index(settings, kind)
        with _implementation(impl, timeout, _called(calling, settings, ignore)) as implementation:  # first, as the CLI
            batch = batch_from_arrays(logits, labels, targets, values, loss_value, ignore, teacher_logits)
            settings = ignored_rows(batch, settings, ignore, notes)
            return CheckJob(Input(None, None, 0, batch), settings, implementation, notes).run(keep)
    if logits is not None:
        raise InputError("give the logits either as logits= or in the file input= names, not both")
    _refuse_beside("input=", "logits=", values)
    request = file_request(os.fspath(input), fmt, files, labels, targets, loss_value, teacher_logits,
                           keywords.tensor_keys(key))
    if impl is None or isinstance(impl, str):  # the command line's own way in
        with open_check(request, settings, impl, impl_timeout=timeout, calling=calling) as job:
            return job.run(keep)
    # A function is called on the input whole, so it is read as one batch.
    ignore = read_ignore_index(settings, kind)
    with (_implementation(impl, timeout, _called(calling, settings, ignore)) as implementation,
          open_input(request, ignore, True) as opened):
        assert opened.whole is not None
        settings = upstream_default(settings, True, notes, opened)  # a tensor file may hold g
        settings = ignored_rows(opened, settings, ignore, notes)
        return CheckJob(opened, settings, implementation, notes).run(keep)


def _called(calling: Calling, settings: Settings, ignore: int | None) -> Calling:
    """`calling` in the settings' dtype, an ignored row labelled `ignore` (torch's -100 when none is read)."""
    return calling._replace(dtype=settings.dtype, ignore_index=TORCH_IGNORE_INDEX if ignore is None else ignore)


@contextmanager
def _implementation(impl: str | ImplFunction | None, timeout: float,
                    calling: Calling | None = None) -> Iterator[Implementation | None]:
    """The user's function as the runner calls it, stopped on leaving: "MODULE:FUNCTION" is imported as --impl
    imports it (in a worker process), and a Python function is called in this process; either as `calling`
    says (framework, device, dtype; None: float64 numpy arrays)."""
    if impl is None:
        yield None
        return
    from gradcheck_cli.checks.impl import Implementation  # the worker machinery only when asked
    from gradcheck_cli.checks.returned import NUMPY_CALLING

    calling = NUMPY_CALLING if calling is None else calling
    if isinstance(impl, str):
        with Implementation.load(impl, timeout, calling) as loaded:
            yield loaded
        return
    name = getattr(impl, "__qualname__", None) or type(impl).__qualname__
    with Implementation(f"{getattr(impl, '__module__', None) or '?'}:{name}", impl, calling=calling) as in_process:
        yield in_process


def _refuse_beside(route: str, other: str, values: dict[str, Any]) -> None:
    """Arrays go with arrays and files with files: a keyword that belongs to the other way is refused."""
    for name, value in values.items():
        if value is not None:
            raise InputError(f"{name}= goes with {other}, and the logits are given as {route}; "
                             f"give everything as arrays, or everything in files")


def file_request(
    path: str, input_format: str, files: dict[str, Path | None], labels: Any, targets: Any, loss_value: Any = None,
    teacher_logits: Any = None, key_names: tuple[tuple[str, str], ...] = (),
) -> InputRequest:
    """The command line's request for a file (and the files beside it, by keyword), with labels, targets, teacher
    logits or a loss given beside it as arrays passed on as their text, exactly (as --labels, --targets,
    --teacher-logits, --loss-value)."""
    paths = {key: None if value is None else os.fspath(value) for key, value in files.items()}
    return InputRequest(
        key_names=key_names,
        teacher_logits_args=() if teacher_logits is None else tuple(
            map(_row_text, _matrix(teacher_logits, "teacher_logits")[0])),
        teacher_path=paths.get("teacher_file"),
        input_path=path,
        input_format=input_format,
        labels_arg=None if labels is None else _row_text(np.ravel(as_class_indices(labels, "labels"))),
        targets_args=() if targets is None else tuple(map(_row_text, _matrix(targets, "targets")[0])),
        labels_path=paths.get("labels_file"),
        targets_path=paths.get("targets_file"),
        gradient_path=paths.get("grad_file"),
        probabilities_path=paths.get("probabilities_file"),
        loss_value=None if loss_value is None else _row_text(np.ravel(as_float64(loss_value, "loss_value"))),
    )


def _row_text(row: np.ndarray) -> str:
    """Numbers as the command line takes them; repr() gives every float64 (and integer) back exactly."""
    return ",".join(map(repr, row.tolist()))


def batch_from_arrays(
    logits: Any, labels: Any, targets: Any, values: dict[str, Any], loss_value: Any, ignore_index: int | None,
    teacher_logits: Any = None,
) -> Batch:
    """The Batch of arrays given in memory, through the same validation as every reader's rows."""
    if logits is None:
        raise InputError("no logits: give logits= (N x C numbers, or one row of C) or input= (a file)")
    if labels is None and targets is None and teacher_logits is None:
        raise InputError("no labels or targets: give labels= (N class indices) or targets= (N x C rows), or "
                         "teacher_logits= for kl, reverse-kl and jsd")
    z, one_row = _matrix(logits, "logits")
    answers = []
    if labels is not None:
        indices = np.atleast_1d(as_class_indices(labels, "labels"))
        if indices.ndim != 1:
            raise InputError(f"labels: expected N class indices, got an array of shape {indices.shape}")
        answers.append(Answers(indices, True, "labels", lambda n: f"labels[{n}]"))
    if targets is not None:
        answers.append(Answers(_matrix(targets, "targets")[0], False, "targets", lambda n: f"targets[{n}]"))
    supplied = {key: (_supplied(value, key, one_row), key) for key, value in values.items() if value is not None}
    if loss_value is not None:
        supplied["loss"] = (np.ravel(as_float64(loss_value, "loss_value")), "loss_value")
    teacher = None if teacher_logits is None else Teacher(
        _matrix(teacher_logits, "teacher_logits")[0], "teacher_logits=", lambda n: f"teacher_logits[{n}]")
    return make_batch(Parsed(logits=z, answers=answers, teacher=teacher), None, [], supplied, ignore_index)


def _matrix(values: Any, what: str) -> tuple[np.ndarray, bool]:
    """N x C finite float64 rows (one row of C is a batch of one), and whether it was given as one row."""
    array = as_float64(values, what)
    if array.ndim not in (1, 2) or 0 in array.shape:
        raise InputError(f"{what}: expected N x C numbers (or one row of C), got an array of shape {array.shape}")
    bad = np.argwhere(~np.isfinite(np.atleast_2d(array)))
    if bad.size:
        n, c = (int(i) for i in bad[0])
        raise InputError(f"{what}[{n}, {c}]: {float(np.atleast_2d(array)[n, c])!r} is not finite; "
                         "logits and targets must be finite numbers (mask a class with a very negative logit)")
    return np.atleast_2d(array), array.ndim == 1


def _supplied(values: Any, key: str, one_row: bool) -> np.ndarray:
    """A value of the user's (NaN allowed: it fails its check); with one row of logits, one row of it too."""
    array = as_float64(values, key)
    if key == "lse":  # one per row: a bare number is the lse of one row
        return np.atleast_1d(array)
    if one_row and array.ndim == (2 if key == "jacobian" else 1):
        array = array[None]
    return array
