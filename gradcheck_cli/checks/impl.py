"""`--impl MODULE:FUNCTION`: import a user's loss-and-gradient function and check it.

The function is called as FUNCTION(logits, targets) -> (loss, gradient), with N x C float64 logits and
N x C target rows, the loss for the chosen reduction. This runs the user's code, in this process.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gradcheck_cli.checks.compare import compare
from gradcheck_cli.errors import InputError
from gradcheck_cli.numerics import differences
from gradcheck_cli.report import CheckResult

if TYPE_CHECKING:
    from gradcheck_cli.numerics.losses.base import Loss
    from gradcheck_cli.settings import Settings

# A scalar loss gives one number per evaluation, so its finite differences take one perturbation per
# element; past this many elements the first rows up to it are differenced (and a note says so).
MAX_SCALAR_ELEMENTS = 4096


def _load(spec: str) -> Callable[..., Any]:
    module_name, _, attribute = spec.rpartition(":")
    if not module_name or not attribute:
        raise InputError(f"--impl {spec!r}: expected MODULE:FUNCTION or path/to/file.py:FUNCTION")
    try:
        if module_name.endswith(".py") or "/" in module_name:
            path = Path(module_name)
            if not path.is_file():
                raise InputError(f"--impl {spec}: no such file {module_name}")
            module_spec = importlib.util.spec_from_file_location(path.stem, path)
            assert module_spec is not None and module_spec.loader is not None
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            # Like `python -m`, look in the current directory first, where the user's code usually is.
            if "" not in sys.path and str(Path.cwd()) not in sys.path:
                sys.path.insert(0, str(Path.cwd()))
            module = importlib.import_module(module_name)
    except InputError:
        raise
    except Exception as error:  # noqa: BLE001 - any failure to import the user's code is their input error
        raise InputError(f"--impl {spec}: cannot import {module_name}: {type(error).__name__}: {error}") from None
    function = getattr(module, attribute, None)
    if function is None:
        raise InputError(f"--impl {spec}: {module_name} has no attribute {attribute!r}")
    if not callable(function):
        raise InputError(f"--impl {spec}: {module_name}.{attribute} is not callable")
    return function


@dataclass
class Implementation:
    spec: str
    function: Callable[..., Any]
    calls: int = 0

    @classmethod
    def load(cls, spec: str) -> Implementation:
        return cls(spec, _load(spec))

    def call(self, logits: np.ndarray, targets: np.ndarray, reduction: str) -> tuple[np.ndarray, np.ndarray]:
        """Call the function on copies (it may write to them) with its stdout sent to stderr (ours is results)."""
        self.calls += 1
        try:
            with contextlib.redirect_stdout(sys.stderr):
                result = self.function(logits.copy(), targets.copy())
        except Exception as error:  # noqa: BLE001 - the user's code failing on valid input is reported, one line
            raise InputError(f"--impl {self.spec} raised {type(error).__name__}: {error}") from None
        if not (isinstance(result, tuple | list) and len(result) == 2):
            raise InputError(f"--impl {self.spec}: must return (loss, gradient), got {type(result).__name__}")
        try:
            loss = np.asarray(result[0], dtype=np.float64)
            gradient = np.asarray(result[1], dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise InputError(f"--impl {self.spec}: loss and gradient must be numbers: {error}") from None
        rows = logits.shape[0]
        if reduction == "none" and loss.shape != (rows,):
            raise InputError(f"--impl {self.spec}: with --reduction none the loss must have {rows} values, "
                             f"got shape {loss.shape}")
        if reduction != "none" and loss.size != 1:
            raise InputError(f"--impl {self.spec}: with --reduction {reduction} the loss must be one number, "
                             f"got shape {loss.shape}")
        if gradient.shape != logits.shape:
            raise InputError(f"--impl {self.spec}: the gradient must be {rows} x {logits.shape[1]}, "
                             f"got shape {gradient.shape}")
        return (loss if reduction == "none" else loss.reshape(())), gradient

    def checks(
        self, logits: np.ndarray, targets: np.ndarray, reference: Loss, settings: Settings, notes: list[str]
    ) -> list[CheckResult]:
        assert settings.eps is not None and settings.atol is not None and settings.rtol is not None
        reduction = settings.reduction
        loss, gradient = self.call(logits, targets, reduction)
        again_loss, again_gradient = self.call(logits, targets, reduction)
        same = np.array_equal(loss, again_loss, equal_nan=True) and np.array_equal(
            gradient, again_gradient, equal_nan=True
        )
        changed = np.abs(np.nan_to_num(gradient - again_gradient, nan=np.inf))
        worst = np.unravel_index(int(np.argmax(changed)), changed.shape)
        determinism = CheckResult(
            name="impl determinism",
            passed=bool(same),
            max_abs_error=float(changed.max()) if np.isfinite(changed).all() else None,
            max_rel_error=None if not same else 0.0,
            worst_index=tuple(int(i) for i in worst),
            actual=float(again_gradient[worst]),
            expected=float(gradient[worst]),
            description="two calls on the same input give identical loss and gradient",
        )
        tolerances = {"atol": settings.atol, "rtol": settings.rtol}
        numeric, rounding = self._own_differences(logits, targets, settings, notes)
        covered = numeric.shape[0]
        return [
            compare("impl loss", loss, np.asarray(reference.loss(logits)), **tolerances,
                    description="your loss vs gradcheck's reference"),
            compare("impl gradient", gradient, reference.gradient(logits), **tolerances,
                    description="your gradient vs gradcheck's reference"),
            compare("impl gradient vs its own loss", gradient[:covered], numeric,
                    atol=settings.atol + rounding, rtol=settings.rtol,
                    description="your gradient vs finite differences of your own loss"),
            determinism,
        ]

    def _own_differences(
        self, logits: np.ndarray, targets: np.ndarray, settings: Settings, notes: list[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Finite differences of the user's own loss, and the rounding they may carry (eps |f| sum|w| / h).

        Its loss is re-evaluated whole, so its rounding error is relative to the loss, not to the change:
        that much is added to atol, element by element, so a correct implementation never fails on it.
        """
        assert settings.eps is not None
        method = settings.method
        if method == "complex-step":  # user code is not expected to accept complex logits
            method = "central"
            notes.append("--impl: complex-step needs complex arithmetic in your code; its own loss used central")
        eps = differences.default_eps(method) if settings.method == "complex-step" else settings.eps
        spec = differences.METHODS[method]
        weight = sum(abs(w) for w in spec.weights)
        machine = float(np.finfo(np.float64).eps)
        reduction = settings.reduction

        def loss_of(z: np.ndarray) -> np.ndarray:
            return self.call(z, targets[: z.shape[0]], reduction)[0]

        if reduction == "none":
            h = differences.steps(logits, eps)
            numeric = differences.differentiate(differences.column_perturbation(loss_of, logits), h, method)
            base = np.abs(loss_of(logits))[:, None]
            return numeric, 4 * machine * np.maximum(base, 1.0) * weight / h
        rows = max(1, min(logits.shape[0], MAX_SCALAR_ELEMENTS // logits.shape[1]))
        if rows < logits.shape[0]:
            notes.append(f"--impl: a scalar loss is differenced one element at a time; the first {rows} of "
                         f"{logits.shape[0]} rows were (use --reduction none to difference every row at once)")
        h = differences.steps(logits[:rows], eps)
        numeric = np.zeros((rows, logits.shape[1]))
        for n in range(rows):  # one number per call: each element needs its own perturbations
            for j in range(logits.shape[1]):
                for offset, w in zip(spec.offsets, spec.weights, strict=True):
                    moved = logits.copy()
                    moved[n, j] += offset * h[n, j]
                    numeric[n, j] += w * float(loss_of(moved))
        numeric /= h
        base = abs(float(loss_of(logits)))
        return numeric, 4 * machine * max(base, 1.0) * weight / h
