"""`sweep`: the command line's `gradcheck sweep` as a function: the error of central differences at each step.

SweepReport is its result: the points of the curve, whether it looks like a correct gradient's V, and the
JSON document `gradcheck sweep -f json` prints.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradcheck_cli.api import keywords
from gradcheck_cli.api.arrays import as_float64
from gradcheck_cli.api.checking import Path, batch_from_arrays, file_request
from gradcheck_cli.batch import Batch
from gradcheck_cli.errors import InputError
from gradcheck_cli.numerics import differences
from gradcheck_cli.numerics.losses import accepted_kind
from gradcheck_cli.pipeline import load_whole
from gradcheck_cli.report import EXIT_AGREE, EXIT_DISAGREE, SCHEMA_VERSION
from gradcheck_cli.settings import Settings


@dataclass(eq=False)
class SweepReport:
    """The sweep's points (largest step first), its verdict, and the exit code `gradcheck sweep` gives."""

    points: list[differences.SweepPoint]
    passed: bool
    verdict: str
    default_eps: float

    @property
    def exit_code(self) -> int:
        return EXIT_AGREE if self.passed else EXIT_DISAGREE

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of `gradcheck sweep -f json`, as plain data."""
        return {
            "schema_version": SCHEMA_VERSION,
            "command": "sweep",
            "passed": self.passed,
            "default_eps": self.default_eps,
            "steps": [{"eps": p.eps, "max_abs_error": p.max_abs_error, "max_rel_error": p.max_rel_error}
                      for p in self.points],
            "verdict": self.verdict,
        }

    def assert_ok(self) -> None:
        """Raise AssertionError with the verdict and the curve unless it looks like a correct gradient's V."""
        __tracebackhide__ = True  # pytest shows the test's line, not this one
        if not self.passed:
            curve = [f"    step {p.eps:.0e}: error {p.error_vs_largest:.2e}" for p in self.points]
            raise AssertionError("\n".join([f"gradcheck sweep: {self.verdict}", *curve]))


def sweep_batch(batch: Batch, settings: Settings, steps: tuple[float, ...] | None = None) -> SweepReport:
    """Central differences of the batch's row losses at each step (largest first), against the gradient."""
    built = accepted_kind(settings).build(batch, settings, np.dtype(np.float64))
    points = differences.sweep(built.row_gradients(batch.logits), built.row_losses, batch.logits,
                               steps or differences.SWEEP_STEPS)
    correct = differences.sweep_looks_correct(points)
    best = min(points, key=lambda point: point.error_vs_largest)
    verdict = (
        f"looks correct: the error falls to {best.error_vs_largest:.1e} of the largest gradient element "
        f"at step {best.eps:g} (a V reaching near machine precision)"
        if correct
        else f"looks WRONG: no step gets the error under {best.error_vs_largest:.1e} of the largest gradient "
        f"element (a floor, not a V)"
    )
    return SweepReport(points, correct, verdict, differences.default_eps("central"))


def sweep_steps(value: Any) -> tuple[float, ...] | None:
    """Steps as --steps takes them ("1e-2,1e-6") or as numbers: positive and finite, largest first, once each."""
    if value is None:
        return None
    tokens = value.replace(",", " ").split() if isinstance(value, str) else [
        repr(step) for step in np.ravel(as_float64(value, "steps")).tolist()]
    steps = set()
    for token in tokens:
        try:
            step = float(token)
        except ValueError:
            raise keywords.invalid("--steps", f"{token!r} is not a number") from None
        if not (math.isfinite(step) and step > 0):
            raise keywords.invalid("--steps", f"{token!r} is not a positive finite step")
        steps.add(step)
    if not steps:
        raise keywords.invalid("--steps", "no steps given")
    return tuple(sorted(steps, reverse=True))


def sweep(
    logits: Any = None,
    labels: Any = None,
    targets: Any = None,
    *,
    steps: Any = None,
    loss: str = "cross_entropy",
    weights: Any = None,
    label_smoothing: float = 0.0,
    ignore_index: int | None = None,
    temperature: float = 1.0,
    input: Path | None = None,
    input_format: str = "auto",
    labels_file: Path | None = None,
    targets_file: Path | None = None,
) -> SweepReport:
    """Sweep the finite-difference step: `gradcheck sweep` as a function (keywords as its options).

    A correct gradient draws a V of error against step (truncation on the right, rounding on the left)
    reaching near machine precision; a wrong one a floor. `steps` defaults to 1e-1, 1e-2, ..., 1e-13.

    Example:

        sweep([[1.1, 2.2, 0.2, -1.7]], labels=[2]).assert_ok()
    """
    settings = keywords.settings_from(locals())  # the loss options are Settings fields of the same names
    chosen = sweep_steps(steps)
    fmt = keywords.input_format(input_format)
    if input is None:
        if labels_file is not None or targets_file is not None or fmt != "auto":
            raise InputError("labels_file=, targets_file= and input_format= go with input=, and the logits are "
                             "given as logits=; give everything as arrays, or everything in files")
        accepted_kind(settings)
        batch = batch_from_arrays(logits, labels, targets, {}, None, settings.ignore_index)
    else:
        if logits is not None:
            raise InputError("give the logits either as logits= or in the file input= names, not both")
        files = {"labels_file": labels_file, "targets_file": targets_file}
        request = file_request(os.fspath(input), fmt, files, labels, targets)
        batch = load_whole(request, settings)
    return sweep_batch(batch, settings, chosen)
