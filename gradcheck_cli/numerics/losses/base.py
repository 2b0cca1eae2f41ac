"""What every loss on top of softmax(z / T) shares, the LossKind each loss module registers, and the
element-by-element allowance that the scales a loss reports turn into.

A loss object offers row_losses, row_gradients (each row's own), scale (what the reduction multiplies rows
by), loss, gradient, hessian, the exact changes perturbation (of its row losses) and gradient_perturbation
(of its gradient) that finite differences evaluate (see differences.py), and the Scales of its loss,
gradient and Hessian elements that their tolerances are proportional to. Gradients are always with respect
to the logits z, temperature included. A caller that has softmax(z / T) already (softmax.softmax_parts)
passes it as `given`: a batch computes it once.

The tolerance of an element (differences.py's "tolerances" section has the truncation part):
    |a - n| <= atol + rtol max(|n|, S) + u rho N + floor.
Rounding is always allowed, for no correct computation in --dtype does better: softmax(z / T) with unit
roundoff u is off by at most u (8 max|z| / T + C + 8) relative (z / T and z - max z are off by u |z| / T
each; exp, a sum of C terms, a division), and an element built on it adds a sum of C coefficients and a
few products: rho = 2 (8 max|z| / T + 2 C + 16) is twice that bound. The float64 reference's own rounding
(a few u per exact perturbation term, sum |w_k o_k| <= 2.9 of them) stays below it. Underflow: a subnormal
result is off by at most its spacing (tiny), and that is then divided by T and multiplied by the reduction's
scale or a coefficient: floor = 4 tiny (1 + G + unit / T), G a bound on the row's elements, `unit` what the
row's terms are multiplied by (the reduction's scale for a gradient, 1 for s). For differences add
4 sum |w_k| 2^-1074 (G + unit / T) / eta: a tiny s_j times a tiny step may underflow in float64, losing up
to 2^-1074 times the coefficient it is multiplied by in each perturbed value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import numpy as np

from gradcheck_cli.batch import Batch
from gradcheck_cli.errors import InputError
from gradcheck_cli.numerics.differences import METHODS, Perturbation
from gradcheck_cli.numerics.exact import exact_sum
from gradcheck_cli.numerics.in_place import scaled_into
from gradcheck_cli.numerics.precision import FORMATS
from gradcheck_cli.numerics.softmax import Softmax, softmax_parts
from gradcheck_cli.settings import Settings


class Scales(NamedTuple):
    """What an element's tolerance is proportional to: one per element, and one bound per row."""

    scale: np.ndarray  # S: what its truncation error is proportional to (differences.py)
    gross: np.ndarray  # N: the terms a straightforward computation adds up to it (what its rounding is)
    row: np.ndarray  # G: a bound on the row's elements, for the underflow floor


def unit_roundoff(dtype: str | np.dtype) -> float:
    """u of the format (precision.FORMATS: numpy cannot describe bfloat16)."""
    return FORMATS[dtype if isinstance(dtype, str) else np.dtype(dtype).name].unit_roundoff


def rounding_factor(logits: np.ndarray, temperature: float) -> np.ndarray:
    """rho per row (N x 1): twice the worst relative rounding of softmax(z / T) and what is built on it, in u."""
    if not logits.size:
        return 2.0 * (8.0 * np.zeros((*logits.shape[:-1], 1)) / temperature + 2.0 * logits.shape[-1] + 16.0)
    # max |z| by two reductions, without an |z| array: the same number (a NaN propagates through both)
    largest = np.maximum(logits.max(axis=-1, keepdims=True), -logits.min(axis=-1, keepdims=True))
    return 2.0 * (8.0 * largest / temperature + 2.0 * logits.shape[-1] + 16.0)


def allowance(
    expected: np.ndarray, scales: Scales, settings: Settings, rho: np.ndarray, eta: float = math.inf,
    unit: float = 1.0,
) -> np.ndarray:
    """The atol, element by element, that makes compare()'s atol + rtol |n| the tolerance above.

    rtol max(|n|, S) = rtol |n| + rtol max(S - |n|, 0). eta is the step in u of the differences the element
    comes from (inf for a value compared with the analytic reference: no differences, nothing truncated),
    `unit` what a row's terms are multiplied by (the reduction's scale, for a gradient).
    """
    return Allowance(expected, scales, settings, rho, eta, unit).whole()


class Allowance:
    """allowance(), not yet computed: compare() computes it a block at a time beside the shares, where its
    passes read and write a block in the caches rather than the whole array, then reads it again (whole()
    is allowance's value, block() the same numbers of a block, operation for operation)."""

    __slots__ = ("_views", "expected", "offset", "rtol", "scales", "width")

    def __init__(self, expected: np.ndarray, scales: Scales, settings: Settings, rho: np.ndarray,
                 eta: float = math.inf, unit: float = 1.0) -> None:
        assert settings.atol is not None and settings.rtol is not None
        stencil = sum(abs(w) for w in METHODS[settings.method].weights)
        tiny = FORMATS[settings.dtype].smallest_subnormal
        units = scales.row + unit / settings.temperature
        floor = 4.0 * tiny * (1.0 + units) + 4.0 * stencil * 2.0**-1074 / eta * units  # per row
        self.expected, self.scales, self.rtol = expected, scales, settings.rtol
        self.width = unit_roundoff(settings.dtype) * rho
        self.offset = settings.atol + floor
        self._views: tuple[np.ndarray, ...] = ()

    def whole(self) -> np.ndarray:
        # In place: on a streamed file this runs over every gradient and Jacobian element.
        scales = self.scales
        return _tolerance(scales.scale, scales.gross, np.abs(self.expected), self.rtol, self.width, self.offset,
                          same=scales.gross is scales.scale)

    def blocks_with(self, expected: np.ndarray, shape: tuple[int, ...]) -> bool:
        """Whether block() gives whole()'s numbers for a comparison with `expected` of this shape: the same
        expected, every part float64 (whole()'s dtype throughout) and within its shape. Then it gets ready."""
        parts = (self.expected, self.scales.scale, self.scales.gross, self.width, self.offset)
        if expected is not self.expected or shape != self.expected.shape:
            return False
        if any(np.asarray(x).dtype != np.float64 for x in parts) or _broadcast_shape(parts) != shape:
            return False
        self._views = tuple(x if np.shape(x) == shape else np.broadcast_to(x, shape) for x in parts[1:])
        return True

    def block(self, index: tuple[slice, ...], magnitude: np.ndarray, out: np.ndarray, spare: np.ndarray) -> np.ndarray:
        """whole()[index], given |expected[index]| (float64), into out (spare a buffer as big)."""
        scale, gross, width, offset = (x[index] for x in self._views)
        return _tolerance(scale, gross, magnitude, self.rtol, width, offset, self.scales.gross is self.scales.scale,
                          out, spare)


def _tolerance(scale: np.ndarray, gross: np.ndarray, magnitude: np.ndarray, rtol: float, width: np.ndarray,
               offset: np.ndarray, same: bool, out: np.ndarray | None = None, spare: np.ndarray | None = None
               ) -> np.ndarray:
    """rtol max(S - |e|, 0) + u rho max(G, S) + atol + floor, kept finite: allowance's numbers, of whole arrays or
    of a block (into out, with spare a buffer as big; else new arrays, each in the dtype numpy gives it)."""
    tolerance = np.subtract(scale, magnitude, out=out)
    np.maximum(tolerance, 0.0, out=tolerance)
    tolerance *= rtol
    if same:  # max(S, S) is S: one pass less (the Jacobian's off-diagonal elements)
        rounding = np.multiply(scale, width, out=np.empty_like(scale) if spare is None else spare)  # in S's dtype
    else:
        rounding = np.maximum(gross, scale, out=spare)
        rounding *= width
    tolerance += rounding
    tolerance += offset
    # An allowance that overflowed would pass anything: keep it finite (the values are then huge or not finite).
    # Looked for first: a read-only pass, and a NaN (max gives it, > does not) is left NaN by minimum anyway.
    if tolerance.size and np.maximum.reduce(tolerance, axis=None) > _LARGEST:  # ndarray.max, without its wrapper
        np.minimum(tolerance, _LARGEST, out=tolerance)
    return tolerance


_LARGEST = float(np.finfo(np.float64).max)


def _broadcast_shape(arrays: tuple[np.ndarray, ...]) -> tuple[int, ...]:
    shapes = {np.shape(x) for x in arrays}
    return shapes.pop() if len(shapes) == 1 else np.broadcast_shapes(*shapes)


def upstream_gradient(settings: Settings, rows: int) -> np.ndarray:
    """g, the gradient flowing into the loss (--grad-output): one number per row for reduction none, else one.

    The reference gradient is then sum_n g_n grad l_n (MATH.md). "random" draws g_n uniformly in [0.5, 2) from
    settings.seed: all positive and different, so a backward that uses one g for every row is caught, and
    within a factor 4 of 1, so the tolerances (proportional to |g_n|) stay those of the plain sum.
    """
    size = rows if settings.reduction == "none" else 1
    chosen = settings.grad_output
    if chosen is None or chosen == "ones":
        values = np.ones(size)
    elif chosen == "random":
        values = np.random.default_rng(settings.seed).uniform(0.5, 2.0, size)
    else:
        values = np.asarray(chosen, dtype=np.float64)
        if values.size != size:
            wanted = f"one per row ({rows})" if settings.reduction == "none" else "one number"
            raise InputError(f"--grad-output: {values.size} values; --reduction {settings.reduction} takes {wanted}")
    return values if settings.reduction == "none" else values.reshape(())


@dataclass(eq=False, repr=False)  # holds arrays: == has no truth value; each generated method costs start-up
class Loss:
    """What every loss shares: a temperature, a reduction, and the normaliser of the mean."""

    reduction: str
    normalizer: float
    temperature: float
    # What turns its logits into its probabilities: "softmax" (one distribution per row) or "sigmoid" (a yes/no
    # per class, bce, whose Jacobian is diagonal): the probabilities and Jacobian checks follow it (checks/rows.py).
    activation: ClassVar[str] = "softmax"

    @property
    def scale(self) -> float:
        """What the reduction multiplies each row's loss (and so its gradient) by."""
        return 1.0 / self.normalizer if self.reduction == "mean" else 1.0

    def entering(self, logits: np.ndarray) -> np.ndarray:
        """The logits that enter the softmax before / T (transformed.py's g(z)): rounding is measured on them."""
        return logits

    def softmax(self, logits: np.ndarray, given: Softmax | None = None) -> Softmax:
        """softmax(z / T) (the loss's probabilities: a sigmoid loss gives its own), unless the caller has it."""
        if given is not None:
            return given
        return softmax_parts(logits if self.temperature == 1 else logits / self.temperature)  # z / 1 is z: no copy

    def softmax_into(self, logits: np.ndarray, out: Softmax) -> Softmax:
        """softmax(logits), its big arrays (s, complement, shifted) written into out's (see softmax_parts): the
        same numbers as softmax(logits). A loss with a softmax of its own has it copied there."""
        if type(self).softmax is Loss.softmax:
            return softmax_parts(logits if self.temperature == 1 else logits / self.temperature, out)
        parts = self.softmax(logits)
        for kept, part in zip((out.s, out.complement, out.shifted), parts[:3], strict=True):
            kept[...] = part
        return parts._replace(s=out.s, complement=out.complement, shifted=out.shifted)

    def row_losses(self, logits: np.ndarray, given: Softmax | None = None) -> np.ndarray:
        raise NotImplementedError

    def row_gradients(self, logits: np.ndarray, given: Softmax | None = None) -> np.ndarray:
        raise NotImplementedError

    def loss(self, logits: np.ndarray, given: Softmax | None = None) -> float | np.ndarray:
        """The reduced loss: a float for mean and sum, the row losses for none."""
        return self.reduce(self.row_losses(logits, given))

    def reduce(self, rows: np.ndarray) -> float | np.ndarray:
        """The row losses reduced: a float for mean and sum, the rows themselves for none."""
        if self.reduction == "none":
            return rows
        total = exact_sum(rows)  # exactly rounded, so a streamed file's loss equals the in-memory one
        return total / self.normalizer if self.reduction == "mean" else total

    def hessian(self, logits: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def gradient(self, logits: np.ndarray, given: Softmax | None = None, out: np.ndarray | None = None) -> np.ndarray:
        """dL/dz for mean and sum; for none, the gradient of the sum of rows (each row's own). `out`, an array of
        the result's shape and dtype, receives it (the same numbers, written where the caller keeps them)."""
        rows = self.row_gradients(logits, given)
        if out is None:
            return rows * self.scale
        return scaled_into(rows, self.scale, out)

    def perturbation(self, base: np.ndarray, given: Softmax | None = None) -> Perturbation:
        """l(z + d e_j) - l(z) for every row, exactly: what finite differences of the gradient evaluate."""
        raise NotImplementedError

    def gradient_perturbation(self, base: np.ndarray, given: Softmax | None = None) -> Perturbation:
        """g(z + d e_j) - g(z) (N x C, the reduction's scale included), exactly: for the Hessian's differences."""
        raise NotImplementedError

    def gradient_scales(self, logits: np.ndarray, given: Softmax | None = None) -> Scales:
        raise NotImplementedError

    def hessian_scales(self, logits: np.ndarray, given: Softmax | None = None) -> Scales:
        raise NotImplementedError

    def loss_scales(self, logits: np.ndarray, given: Softmax | None = None) -> Scales:
        """Of each row's loss (N): S = |l| (nothing is differenced), N the terms it sums, G = N."""
        raise NotImplementedError

    @property
    def factor(self) -> float:
        """What one derivative by z multiplies a row's u-derivatives by: the reduction's scale over T."""
        return self.scale / self.temperature




class LossKind:
    """A loss as the registry knows it: how it builds itself for a batch, and what the mean divides by.

    build(batch, settings, dtype) gives the loss with the batch's own mean divisor (a caller checking one
    chunk of a bigger input replaces `normalizer` with the whole input's). divisor_rows gives each row's share
    of that divisor, so it can be summed over chunks; counts_rows(settings) says when it is simply the number
    of rows, which an input can count without parsing. `options` are the loss options it accepts.
    `explain` is the loss's part of `gradcheck explain`: (loss, logits z of the row / T, softmax s of them, row)
    -> lines. `reductions`, the --reduction values it accepts (settings.REDUCTIONS has them all; accepted_kind
    refuses the others). `needs_teacher`: whether it compares the student's logits with a batch's
    teacher_logits (which it then requires, and every other loss refuses): checked by build itself, so no caller
    can skip it. `activation` turns logits into its probabilities: "softmax" (over each row) or "sigmoid" (each
    logit on its own, a diagonal Jacobian); the tables name them by it.

    Read-only and compared by identity, as a frozen dataclass would be, but a plain class: making a dataclass
    costs every run's start-up some 0.3 ms.
    """

    __slots__ = ("activation", "build", "counts_rows", "divisor_rows", "explain", "name", "needs_teacher", "options",
                 "reductions")
    name: str
    options: tuple[str, ...]
    build: Callable[[Batch, Settings, np.dtype], Loss]
    divisor_rows: Callable[[Batch, Settings], np.ndarray]
    counts_rows: Callable[[Settings], bool]
    explain: Callable[[Loss, np.ndarray, np.ndarray, int], list[str]]
    reductions: tuple[str, ...]
    needs_teacher: bool
    activation: str

    def __init__(self, name: str, options: tuple[str, ...], build: Callable[[Batch, Settings, np.dtype], Loss],
                 divisor_rows: Callable[[Batch, Settings], np.ndarray], counts_rows: Callable[[Settings], bool],
                 explain: Callable[[Loss, np.ndarray, np.ndarray, int], list[str]],
                 reductions: tuple[str, ...] = ("mean", "sum", "none"), needs_teacher: bool = False,
                 activation: str = "softmax") -> None:
        values = {"name": name, "options": options, "build": _teacher_checked(build, name, needs_teacher),
                  "divisor_rows": divisor_rows, "counts_rows": counts_rows, "explain": explain,
                  "reductions": reductions, "needs_teacher": needs_teacher, "activation": activation}
        for field_name, value in values.items():
            object.__setattr__(self, field_name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"LossKind is read-only: cannot assign {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"LossKind is read-only: cannot delete {name!r}")


def _teacher_checked(build: Callable[[Batch, Settings, np.dtype], Loss], name: str, needs_teacher: bool
                     ) -> Callable[[Batch, Settings, np.dtype], Loss]:
    """`build`, refusing a batch with teacher logits for a loss without a teacher, and the other way round."""

    def checked(batch: Batch, settings: Settings, dtype: np.dtype) -> Loss:
        if needs_teacher and batch.teacher_logits is None:
            raise InputError(f"--loss {name} compares with a teacher: give --teacher-logits ROW (one per sample), "
                             "--teacher-file PATH beside a CSV, or \"teacher_logits\" in the JSON")
        if not needs_teacher and batch.teacher_logits is not None:
            raise InputError(f"teacher logits apply to the distillation losses (kl, reverse-kl, jsd), not {name}")
        return build(batch, settings, dtype)

    return checked


def one_per_row(batch: Batch, settings: Settings) -> np.ndarray:
    """The divisor share of a loss whose mean is over rows."""
    return np.ones(batch.rows)


def always(settings: Settings) -> bool:
    return True


def shown(value: float) -> str:
    """A number in a derivation: three significant digits, trailing zeros kept (0.150), a real minus sign."""
    return f"{value:#.3g}".rstrip(".").replace("-", "\u2212")


def shown_each(values: np.ndarray) -> list[str]:
    """shown() of every value, for a whole array at once: a wide row's explain has C of them (issue 13)."""
    from gradcheck_cli.numerics.shown import numbers

    return numbers(values)


def signed_each(values: np.ndarray) -> list[str]:
    """Numbers after a minus sign: shown_each, in parentheses where negative (two minus signs never meet)."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    templates = "".join(np.where(flat >= 0, "%s\n", "(%s)\n").tolist())
    return (templates % tuple(shown_each(flat))).split("\n")[:-1]


def formatted_lines(template: str, *columns: Sequence[object]) -> list[str]:
    """template % (the k-th value of every column) for each k, in one formatting call (no loop over the C
    classes of a wide row: the columns are interleaved by slices, one per column)."""
    count, width = len(columns[0]), len(columns)
    values: list[object] = [None] * (count * width)
    for position, column in enumerate(columns):  # a handful of columns, each placed by one slice
        values[position::width] = list(column)
    return (((template + "\n") * count) % tuple(values)).split("\n")[:-1]
