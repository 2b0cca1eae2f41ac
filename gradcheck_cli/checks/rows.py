"""The checks of one batch of rows: gradient, Jacobian and Hessian against finite differences, and the
values the user supplied for these rows against the reference.

Every tolerance is the error analysis' (losses/base.py and differences.py), element by element: the loss's
scales carry the temperature, weights, smoothing and reduction, the rounding allowance the dtype.
"""

from dataclasses import replace

import numpy as np

from gradcheck_cli.batch import Batch
from gradcheck_cli.checks.compare import compare, merge
from gradcheck_cli.checks.jacobian import (
    hessian_check,
    hessian_multiple,
    jacobian_check,
    jacobian_scales,
    refuse_wide_hessian,
)
from gradcheck_cli.errors import InputError
from gradcheck_cli.numerics import differences
from gradcheck_cli.numerics.losses.base import (
    Allowance,
    Loss,
    LossKind,
    Scales,
    allowance,
    rounding_factor,
    upstream_gradient,
)
from gradcheck_cli.numerics.precision import FORMATS, Baseline, round_to
from gradcheck_cli.numerics.softmax import Softmax, softmax_jacobian
from gradcheck_cli.report import CheckResult, RowChecks
from gradcheck_cli.settings import LOW_PRECISION, Settings


def check_rows(batch: Batch, settings: Settings, kind: LossKind, normalizer: float) -> RowChecks:
    """Every check of these rows; `normalizer` is the whole input's mean divisor, `settings` resolved.

    In float32 the logits are first rounded to float32, and the reference is computed at those same
    rounded logits, so the check measures the float32 error of the formulas, not of the input.
    """
    # Overflow (huge weights, say) gives inf and NaN, which the checks report as failures; numpy's warnings
    # about them would only repeat that on stderr.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        return _check_rows(batch, settings, kind, normalizer)


# Rows checked at a time (about this many elements): a block's temporaries stay in the caches, and every check
# is per row, so the blocks' results merge into the batch's exactly (compare.merge).
BLOCK_ELEMENTS = 1 << 17


class _Piece:
    """The checks of some rows, and what the batch's RowChecks and supplied checks need of them. A plain class,
    as _Outputs: a NamedTuple costs start-up some 0.2 ms to make."""

    __slots__ = ("analytic", "analytic_s", "checks", "numeric", "reference", "rho", "row_losses")

    def __init__(self, checks: list[CheckResult], row_losses: np.ndarray, analytic_s: Softmax, analytic: np.ndarray,
                 numeric: np.ndarray, reference: Softmax, rho: np.ndarray) -> None:
        self.checks, self.row_losses, self.analytic_s, self.analytic = checks, row_losses, analytic_s, analytic
        self.numeric, self.reference, self.rho = numeric, reference, rho


def reference_inputs(batch: Batch, held: Settings) -> tuple[Batch, Settings]:
    """The rows and settings gradcheck's own reference is built from, for values held to `held`: in half precision
    float64 settings (at the logits rounded to the dtype: see checks/precision.py), and the teacher's logits
    rounded to the dtype (they are inputs too, seen in it). runner.reference_rows builds the same reference."""
    if held.dtype not in LOW_PRECISION:
        return batch, held
    if batch.teacher_logits is not None:
        batch = replace(batch, teacher_logits=round_to(batch.teacher_logits, held.dtype).astype(np.float64))
    return batch, held._replace(dtype="float64")


def _check_rows(batch: Batch, settings: Settings, kind: LossKind, normalizer: float) -> RowChecks:
    held = settings  # what the user's values are held to; in half precision gradcheck's own are float64
    low = batch.logits
    if held.dtype in LOW_PRECISION and batch.dtype_name != held.dtype:  # a file's bfloat16 logits are rounded
        low = round_to(batch.logits, held.dtype)
    batch, settings = reference_inputs(batch, held)
    dtype = np.dtype(settings.dtype)
    low = low.astype(dtype, copy=False)
    logits = low.astype(np.float64, copy=False)
    _refuse_overflow(batch.logits, logits, settings.temperature, held.dtype)
    reference_loss = replace(kind.build(batch, settings, np.dtype(np.float64)), normalizer=normalizer)
    if settings.order == 2 and hessian_multiple(reference_loss, logits) is None:
        refuse_wide_hessian(logits.shape, settings)  # before any check: its Hessian would be built whole
    step = max(1, BLOCK_ELEMENTS // max(1, batch.classes))
    if settings.order == 2 or batch.rows <= step:  # the Hessian's refusal counts the whole batch's elements
        piece = _check_piece(batch, low, logits, settings, kind, normalizer, reference_loss)
    else:
        piece = _by_blocks(batch, low, logits, settings, kind, normalizer, step)
    checks = piece.checks + supplied_checks(batch, held, logits, piece.reference, reference_loss, piece.rho)
    return RowChecks(checks, piece.row_losses, piece.analytic_s, piece.analytic, piece.numeric, logits,
                     reference_loss)


class _Outputs:
    """Where a block's big arrays go (views of its rows of the chunk's arrays): written there, never copied."""

    __slots__ = ("analytic", "analytic_s", "numeric", "reference")

    def __init__(self, analytic_s: Softmax, reference: Softmax | None, analytic: np.ndarray,
                 numeric: np.ndarray) -> None:
        self.analytic_s, self.analytic, self.numeric = analytic_s, analytic, numeric
        self.reference = reference  # None where it is the analytic one (float64)


def _check_piece(batch: Batch, low: np.ndarray, logits: np.ndarray, settings: Settings, kind: LossKind,
                 normalizer: float, reference_loss: Loss | None = None, out: _Outputs | None = None) -> _Piece:
    """Every check of these rows against finite differences (the supplied values are the batch's to check);
    `out` receives the big arrays, if given."""
    assert settings.eps is not None and settings.atol is not None and settings.rtol is not None
    dtype = np.dtype(settings.dtype)
    if reference_loss is None:
        reference_loss = replace(kind.build(batch, settings, np.dtype(np.float64)), normalizer=normalizer)
    # softmax(z / T) once for every check of these rows (twice in float32: the analytic one and the reference)
    reference = _softmax(reference_loss, logits, None if out is None else out.reference or out.analytic_s)
    analytic_loss, analytic_s = reference_loss, reference  # its own probabilities: a sigmoid for bce
    if dtype != np.float64:
        analytic_loss = replace(kind.build(batch, settings, dtype), normalizer=normalizer)
        analytic_s = _softmax(analytic_loss, low, None if out is None else out.analytic_s)
    analytic = analytic_loss.gradient(low, analytic_s, out=None if out is None else out.analytic)
    numeric = differences.numeric_gradient(reference_loss, logits, settings.eps, settings.method, reference,
                                           out=None if out is None else out.numeric)
    # once for every check of these rows, of the logits entering the softmax (--logit-scale, --softcap)
    rho = rounding_factor(reference_loss.entering(logits), settings.temperature)
    eta = float(differences.exact_step(settings.eps)) / settings.temperature  # the step in u = z / T
    # computed by compare beside the shares, a block at a time (the same numbers as allowance())
    tolerance = Allowance(numeric, reference_loss.gradient_scales(logits, reference), settings, rho, eta,
                          unit=reference_loss.scale)
    checks = [compare("gradient", analytic, numeric, tolerance, settings.rtol,
                      description="dL/dz, analytic vs finite differences")]
    del tolerance  # its scales: as big as the batch
    checks.append(_JACOBIAN_CHECKS[reference_loss.activation](analytic_s, reference, logits, settings, rho))
    if settings.order == 2:
        checks.append(hessian_check(analytic_loss, reference_loss, low, logits, analytic_s, reference, settings, rho))
    return _Piece(checks, analytic_loss.row_losses(low, analytic_s), analytic_s, analytic, numeric, reference, rho)


def _softmax(loss: Loss, logits: np.ndarray, out: Softmax | None) -> Softmax:
    return loss.softmax(logits) if out is None else loss.softmax_into(logits, out)


def _rows_of(batch: Batch, start: int, stop: int) -> Batch:
    """Rows start to stop of a batch (views), without the user's values: those are checked on the whole batch."""
    def rows(values: np.ndarray | None) -> np.ndarray | None:
        return None if values is None else values[start:stop]

    return replace(batch, logits=batch.logits[start:stop], labels=rows(batch.labels), targets=batch.targets[start:stop],
                   row_lines=rows(batch.row_lines), supplied={}, teacher_logits=rows(batch.teacher_logits))


def _by_blocks(batch: Batch, low: np.ndarray, logits: np.ndarray, settings: Settings, kind: LossKind,
              normalizer: float, step: int) -> _Piece:
    """The checks of the batch's rows `step` at a time, merged. The first block's arrays give the batch's their
    dtypes; every later block writes its big ones straight into its rows of them and the small ones are copied
    (its temporaries go, so memory is the results' and one block's)."""
    checks: list[CheckResult | None] = []
    arrays: list[np.ndarray] = []
    same = True
    for start in range(0, batch.rows, step):
        stop = min(start + step, batch.rows)
        out = _outputs(arrays, same, start, stop) if arrays else None
        piece = _check_piece(_rows_of(batch, start, stop), low[start:stop], logits[start:stop], settings, kind,
                             normalizer, out=out)
        if not arrays:
            checks = [None] * len(piece.checks)
            same = piece.reference is piece.analytic_s  # float64: the analytic softmax is the reference
            arrays = [np.empty((batch.rows, *a.shape[1:]), dtype=a.dtype) for a in _arrays(piece, same)]
        for whole, part in zip(arrays, _arrays(piece, same), strict=True):
            if not np.may_share_memory(whole, part):  # written there already (out)
                whole[start:stop] = part
        checks = [merge(earlier, check, (start,) + (0,) * (len(check.worst_index) - 1))
                  for earlier, check in zip(checks, piece.checks, strict=True)]
    row_losses, *rest = arrays
    fields = len(Softmax._fields)
    analytic_s, (analytic, numeric), rest = Softmax(*rest[:fields]), rest[fields:fields + 2], rest[fields + 2:]
    reference = analytic_s if same else Softmax(*rest[:fields])
    return _Piece([c for c in checks if c is not None], row_losses, analytic_s, analytic, numeric, reference, rest[-1])


def _outputs(arrays: list[np.ndarray], same: bool, start: int, stop: int) -> _Outputs:
    """Rows start to stop of the batch's arrays (in _arrays' order), as the places a block writes its big ones."""
    fields = len(Softmax._fields)
    rows = [array[start:stop] for array in arrays]
    analytic_s, (analytic, numeric) = Softmax(*rows[1:1 + fields]), rows[1 + fields:3 + fields]
    reference = None if same else Softmax(*rows[3 + fields:3 + 2 * fields])
    return _Outputs(analytic_s, reference, analytic, numeric)


def _arrays(piece: _Piece, same: bool) -> list[np.ndarray]:
    """A piece's arrays, one row per row of the piece: row losses, analytic softmax, gradients, [reference], rho."""
    return [piece.row_losses, *piece.analytic_s, piece.analytic, piece.numeric, *(() if same else piece.reference),
            piece.rho]


def sigmoid_jacobian_check(analytic_s: Softmax, reference: Softmax, logits: np.ndarray, settings: Settings,
                           rho: np.ndarray) -> CheckResult:
    """d sigma(z_j / T) / dz_j against finite differences: the diagonal is all there is (each class its own
    sigmoid), and it is jacobian_check's diagonal element (the same exact change, scales and allowance)."""
    assert settings.eps is not None and settings.rtol is not None
    h, temperature = differences.exact_step(settings.eps), settings.temperature
    own = differences.softmax_derivative_factors(reference.s, reference.complement, h, settings.method, temperature)[1]
    analytic = analytic_s.s * analytic_s.complement / analytic_s.s.dtype.type(temperature)
    scales = Scales(reference.s * reference.complement / temperature, reference.s / temperature,
                    np.asarray(1.0 / temperature))
    tolerance = allowance(own, scales, settings, rho, float(h) / temperature)
    check = compare("jacobian", analytic, own, tolerance, settings.rtol,
                    description="dsigma/dz (diagonal: each class its own sigmoid), analytic vs finite differences")
    return check._replace(worst_index=_on_diagonal(check.worst_index),
                          worst_elements=tuple(e._replace(position=_on_diagonal(e.position))
                                               for e in check.worst_elements))


def _on_diagonal(at: tuple[int, ...]) -> tuple[int, ...]:
    """(row, class) -> (row, class, class): a diagonal element's place in the N x C x C Jacobian."""
    return (at[0], at[1], at[1])


_JACOBIAN_CHECKS = {"softmax": jacobian_check, "sigmoid": sigmoid_jacobian_check}


def _refuse_overflow(given: np.ndarray, logits: np.ndarray, temperature: float, dtype: str) -> None:
    """The logits rounded to the dtype, and z / T, must be finite in it, or no derivative is left to check."""
    # |z| at most: two reductions, no N x C temporary (NaN if any logit is NaN, as abs().max() gives)
    largest = max(float(logits.max()), -float(logits.min())) if logits.size else 0.0
    beyond = np.isinf(logits) & np.isfinite(given) if not np.isfinite(largest) else None  # float16 ends at 65504
    if beyond is not None and beyond.any():
        row, column = (int(i) for i in np.argwhere(beyond)[0])
        raise InputError(f"logits[{row}][{column}]: {given[row, column]:g} overflows {dtype} (largest "
                         f"{FORMATS[dtype].max_value:g}); give logits within its range, or a wider --dtype")
    if largest / temperature > FORMATS[dtype].max_value:
        raise InputError(f"--temperature {temperature:g}: a logit of size {largest:g} divided by it overflows "
                         f"{dtype}; use a larger temperature")


def supplied_checks(
    batch: Batch, settings: Settings, logits: np.ndarray, reference: Softmax, loss: Loss, rho: np.ndarray | None = None
) -> list[CheckResult]:
    """The user's values for these rows against the reference; a loss of one number is the runner's to check.

    Nothing is differenced here, so the tolerance is rtol |n| plus the rounding allowance of --dtype (a
    value computed straightforwardly in it is off by at most that much; see losses/base.py).
    """
    assert settings.atol is not None and settings.rtol is not None
    checks = []
    rho = rounding_factor(logits, settings.temperature) if rho is None else rho
    of_rows = [name for name in batch.supplied if name != "loss" or settings.reduction == "none"]
    low = settings.dtype in LOW_PRECISION and bool(of_rows)  # a loss of one number is the runner's to check
    baseline = None
    if low:
        from gradcheck_cli.checks.precision import plain_baseline  # the half precisions' only: not at start-up

        baseline = plain_baseline(logits, loss, settings)
    for name, supplied in batch.supplied.items():
        if name == "loss":
            per_row = settings.reduction == "none"
            if supplied.size != (batch.rows if per_row else 1):
                raise InputError(f"the supplied loss has {supplied.size} values; --reduction {settings.reduction} "
                                 f"gives {'one per row' if per_row else 'one number'}")
            if not per_row:
                continue
        if baseline is not None:  # the dtype's tolerance and the baseline verdict
            checks += half_precision_verdicts("supplied", {name: supplied}, logits, reference, loss, settings, baseline)
            continue
        expected, tolerance = supplied_reference(name, logits, reference, loss, settings, rho)
        checks.append(compare(f"supplied {name}", supplied.reshape(expected.shape), expected, tolerance,
                              settings.rtol, description=f"the {name} you supplied vs gradcheck's reference"))
    return checks


def supplied_reference(
    name: str, logits: np.ndarray, reference: Softmax, loss: Loss, settings: Settings, rho: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """gradcheck's value of a supplied quantity (a per-row loss, gradient, probabilities, Jacobian) and the
    tolerance a supplied value of it is held to beyond rtol (the diagnosis holds its slips to the same)."""
    if settings.dtype in LOW_PRECISION:
        assert settings.rtol is not None
        expected, tolerance, _ = _half_precision_reference(name, logits, reference, loss, settings)
        return expected, np.maximum(tolerance - settings.rtol * np.abs(expected), 0.0)
    expected, scales = _upstream(name, *_reference(name, logits, reference, loss, settings.temperature), settings)
    width = rho.reshape(rho.shape[:1] + (1,) * (expected.ndim - 1))
    unit = loss.scale if name in ("gradient", "loss") else 1.0
    return expected, allowance(expected, scales._replace(scale=np.abs(expected)), settings, width, unit=unit)


def half_precision_verdicts(
    source: str, values: dict[str, np.ndarray], logits: np.ndarray, reference: Softmax, loss: Loss, settings: Settings,
    baseline: Baseline | None = None
) -> list[CheckResult]:
    """At --dtype bfloat16 or float16: the dtype's tolerance and the baseline verdict (checks/precision.py) on the
    user's values by name (probabilities, jacobian, gradient, loss: per row, or one number for the input whole),
    `source` how the checks name them ("supplied", "impl"). `baseline` is the plain implementation's, if known."""
    from gradcheck_cli.checks.precision import baseline_value, half_precision_checks, plain_baseline

    baseline = plain_baseline(logits, loss, settings) if baseline is None else baseline
    checks = []
    for name, actual in values.items():
        if name == "loss" and settings.reduction != "none":
            expected, tolerance, gross = _reduced_loss_reference(logits, reference, loss, settings)
        else:
            expected, tolerance, gross = _half_precision_reference(name, logits, reference, loss, settings)
        checks += half_precision_checks(f"{source} {name}", np.reshape(actual, expected.shape), expected, tolerance,
                                        baseline_value(baseline, name, settings), gross, settings,
                                        f"the {name} you {'supplied' if source == 'supplied' else 'computed'}")
    return checks


def _reduced_loss_reference(logits: np.ndarray, reference: Softmax, loss: Loss, settings: Settings
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reduced loss, its tolerance and gross scale: the rows' gross scales summed, times 2 + log2 N for the
    rounding of each row and of their pairwise sum (as the runner's analysis of a supplied total)."""
    from gradcheck_cli.checks.precision import half_precision_tolerance

    rows, scales = _reference("loss", logits, reference, loss, settings.temperature)
    expected = np.asarray(loss.reduce(rows))
    gross = np.asarray(loss.scale * (2.0 + np.log2(max(rows.size, 1))) * float(np.abs(scales.gross).sum()))
    return expected, half_precision_tolerance("loss", expected, gross, reference.log_s, settings.dtype), gross


def _half_precision_reference(name: str, logits: np.ndarray, reference: Softmax, loss: Loss, settings: Settings
                              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """gradcheck's value of a supplied quantity at --dtype bfloat16 or float16, its whole tolerance, and the
    gross scale of each element (the terms a straightforward computation adds up to it)."""
    from gradcheck_cli.checks.precision import half_precision_tolerance, held_lse

    expected, scales = _upstream(name, *_reference(name, logits, reference, loss, settings.temperature), settings)
    gross = np.broadcast_to(scales.gross, expected.shape)
    lse = held_lse(loss, logits, reference)
    return expected, half_precision_tolerance(name, expected, gross, reference.log_s, settings.dtype, lse), gross


def _upstream(name: str, expected: np.ndarray, scales: Scales, settings: Settings) -> tuple[np.ndarray, Scales]:
    """A gradient as sum_n g_n grad l_n (--grad-output, ones unless asked): each element and its scales times
    |g_n|, the row's bound times the largest |g| (at least 1)."""
    if name != "gradient" or settings.grad_output in (None, "ones"):
        return expected, scales
    g = upstream_gradient(settings, expected.shape[0])
    g = g.reshape(-1, 1) if g.ndim else g
    size = np.abs(g)
    return expected * g, Scales(scales.scale * size, scales.gross * size, scales.row * max(float(size.max()), 1.0))


def row_loss_allowance(loss: Loss, logits: np.ndarray, settings: Settings) -> tuple[np.ndarray, np.ndarray]:
    """For a supplied loss of one number: each row's rounding allowance and |l_n| (N each), to be summed over
    the input. The total's tolerance is then atol + rtol |L| + scale (sum allowance + u (2 + log2 N) sum |l|),
    the last term the rounding of a pairwise sum of N rows (as numpy and torch sum)."""
    rows = loss.row_losses(logits)
    scales = loss.loss_scales(logits)
    if settings.dtype in LOW_PRECISION:  # each row rounded once in the dtype: u N (numpy's finfo has no bfloat16)
        return FORMATS[settings.dtype].unit_roundoff * np.abs(scales.gross), np.abs(rows)
    exact = settings._replace(atol=0.0, rtol=0.0)  # only the allowance: atol and rtol apply to the total once
    rho = rounding_factor(logits, settings.temperature)[:, 0]
    return allowance(rows, scales._replace(scale=np.abs(rows)), exact, rho), np.abs(rows)


def _reference(name: str, logits: np.ndarray, reference: Softmax, loss: Loss, temperature: float
               ) -> tuple[np.ndarray, Scales]:
    """gradcheck's value of a supplied quantity, and its scales."""
    if name == "probabilities":
        s = reference.s
        return s, Scales(s, s, np.ones((s.shape[0], 1)))
    if name == "jacobian" and loss.activation == "sigmoid":  # diagonal: sigma (1 - sigma) / T
        eye = np.eye(reference.s.shape[-1])
        diagonal = eye * (reference.s * reference.complement / temperature)[:, :, None]
        gross = eye * (reference.s / temperature)[:, :, None]  # what a straightforward sigma - sigma^2 rounds
        return diagonal, Scales(diagonal, gross, np.full((diagonal.shape[0], 1, 1), 1.0 / temperature))
    if name == "jacobian":
        jacobian = softmax_jacobian(reference.s, reference.complement) / temperature
        return jacobian, jacobian_scales(reference.s, reference.complement, temperature)
    if name == "gradient":
        return loss.gradient(logits, reference), loss.gradient_scales(logits, reference)
    if name == "lse":  # log sum exp of the logits entering the softmax, / T: what the z-loss squares
        if loss.activation != "softmax":
            raise InputError(f"a supplied lse applies to the softmax losses, not to a {loss.activation} loss")
        entering = loss.entering(logits) / temperature
        lse = entering.max(axis=-1) + reference.log_total[:, 0]
        extent = np.abs(entering).max(axis=-1) + reference.log_total[:, 0] + 1.0  # lse's rounding is absolute
        return lse, Scales(np.abs(lse), extent, np.ones(lse.shape[0]))
    return loss.row_losses(logits, reference), loss.loss_scales(logits, reference)
