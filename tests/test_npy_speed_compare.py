"""The faster passes behind the .npy target (issue 18) give, bit for bit, what the straightforward computations
give: compare() scanning blocks in the caches (no array of shares unless a check fails), the allowance computed by
compare a block at a time (losses.base.Allowance), and a block's big arrays written straight into the chunk's
(softmax_parts, Loss.gradient and numeric_gradient with out=)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from gradcheck_cli.batch import Batch
from gradcheck_cli.checks import compare as compare_module
from gradcheck_cli.checks import rows as rows_module
from gradcheck_cli.checks.compare import compare
from gradcheck_cli.checks.rows import check_rows
from gradcheck_cli.checks.runner import accepted_kind
from gradcheck_cli.numerics import differences, in_place
from gradcheck_cli.numerics.losses.base import Allowance, Scales, allowance
from gradcheck_cli.numerics.softmax import Softmax, softmax_parts
from gradcheck_cli.report import WORST_SHOWN
from gradcheck_cli.settings import Settings

_TINY = float(np.finfo(np.float64).tiny)


def _reference_compare(actual, expected, atol, rtol):
    """compare()'s definition on whole arrays, written plainly: (passed, worst index, worst share, largest abs
    error, largest rel error, mismatches, the worst WORST_SHOWN failing positions)."""
    actual, expected = (np.atleast_1d(np.asarray(x)) for x in (actual, expected))
    atol = np.atleast_1d(np.asarray(atol))
    shape = np.broadcast_shapes(actual.shape, expected.shape, atol.shape)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        abs_error = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
        share = np.broadcast_to(abs_error / (np.abs(expected.astype(np.float64)) * rtol + (atol + _TINY)), shape)
        magnitude = np.maximum(np.maximum(np.abs(expected.astype(np.float64)), np.abs(actual.astype(np.float64))),
                               _TINY)
        rel_error = abs_error / magnitude
    flat = share.reshape(-1)
    worst = int(np.argmax(flat))  # the first NaN, else the first largest
    failing = [i for i in range(flat.size) if not flat[i] <= 1.0]
    ranked = sorted(failing, key=lambda i: (not np.isnan(flat[i]), -flat[i] if not np.isnan(flat[i]) else 0.0, i))
    positions = [tuple(int(k) for k in np.unravel_index(i, shape)) for i in ranked[:WORST_SHOWN]]
    finite = bool(np.isfinite(flat[worst]))
    return (finite and flat[worst] <= 1.0, tuple(int(k) for k in np.unravel_index(worst, shape)),
            float(flat[worst]) if finite else float("inf"), float(abs_error.max()) if finite else None,
            float(rel_error.max()) if finite else None, len(failing), positions)


def _summary(result):
    return (result.passed, result.worst_index, result.worst_share, result.max_abs_error, result.max_rel_error,
            result.mismatches, [e.position for e in result.worst_elements])


def _inputs(shape, plant, seed):
    """expected and actual close to it (a relative error of 1e-9), with a plant: NaN, inf, zeros, exact ties of
    the largest share, float32 actual values, or elements off by half their value (failing)."""
    rng = np.random.default_rng(seed)
    expected = rng.normal(size=shape) * np.exp(rng.uniform(-30, 3, size=shape))
    actual = expected * (1 + rng.normal(scale=1e-9, size=shape))
    flat_a, flat_e = actual.reshape(-1), expected.reshape(-1)
    if not flat_a.size:
        return actual, expected
    if plant == "nan":
        flat_a[flat_a.size // 3] = np.nan
        flat_e[-1] = np.nan
    elif plant == "inf":
        flat_a[flat_a.size // 2] = np.inf
        flat_e[flat_e.size // 2] = np.inf  # inf - inf: NaN
        flat_a[-1] = -np.inf
    elif plant == "zeros":
        flat_a[::3] = 0.0
        flat_e[::3] = 0.0
        flat_a[1::5] = -0.0
    elif plant == "ties":  # the same element, so the same largest share, repeated across blocks
        flat_e[::97] = 1.0
        flat_a[::97] = 1.0 + 2e-7
    elif plant == "float32":
        actual = actual.astype(np.float32)
    elif plant == "failing":
        flat_a[:: max(1, flat_a.size // 11)] *= 1.5
    return actual, expected


SHAPES = [(), (1,), (7,), (5, 3), (3, 2500), (2, 3, 700), (1, 5000), (0,)]
PLANTS = ["nothing", "nan", "inf", "zeros", "ties", "float32", "failing"]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("plant", PLANTS)
@pytest.mark.parametrize("atol_kind", ["array", "scalar", "per row", "float32 scalar"])
def test_compare_is_the_whole_array_definition(monkeypatch, shape, plant, atol_kind):
    """Protects compare()'s block scan (blocks of 1,000 elements here: row pieces, leading-axis slices, a first
    NaN or an equal largest share in a later block, an atol of one number added once): every figure of the
    CheckResult must be the plain whole-array formula's, and an empty input must still be refused."""
    monkeypatch.setattr(compare_module, "_BLOCK", 1000)
    actual, expected = _inputs(shape, plant, len(shape) * 7 + PLANTS.index(plant))
    rng = np.random.default_rng(3)
    atol = {"array": lambda: np.abs(rng.normal(scale=1e-9, size=shape)),
            "scalar": lambda: 1e-9,
            "per row": lambda: np.abs(rng.normal(scale=1e-9, size=(*shape[:1], *(1,) * (len(shape) - 1)))),
            "float32 scalar": lambda: np.float32(3e-9)}[atol_kind]()
    if int(np.prod(shape)) == 0:
        with pytest.raises(ValueError):
            compare("x", actual, expected, atol, 1e-7)
        return
    got = _summary(compare("x", actual, expected, atol, 1e-7))
    want = _reference_compare(actual, expected, atol, 1e-7)
    if shape == ():
        want = (want[0], (), *want[2:6], [() for _ in want[6]])
    assert got == want


def _allowance_case(seed, plant, same_scales, settings=None):
    """expected, its scales and rho (4 rows of 2,600), and actual values within half their allowance (the
    settings' at eta 1e-5 and unit 0.25), with a plant: one element off (failing), a NaN, an infinite scale."""
    settings = settings or differences.resolve(Settings())
    rng = np.random.default_rng(seed)
    rows, classes = 4, 2600
    expected = rng.normal(scale=1e-3, size=(rows, classes))
    size = np.abs(rng.normal(scale=1e-3, size=(rows, classes)))
    gross = size if same_scales else size + np.abs(rng.normal(scale=1e-3, size=(rows, classes)))
    scales = Scales(size, gross, np.abs(rng.normal(size=(rows, 1))) + 1.0)
    rho = 2.0 * (8.0 * np.abs(rng.normal(size=(rows, 1))) + 2.0 * classes + 16.0)
    width = allowance(expected, scales, settings, rho, 1e-5, unit=0.25) + settings.rtol * np.abs(expected)
    actual = expected + width * rng.uniform(-0.5, 0.5, size=expected.shape)
    if plant == "failing":
        actual[2, 2100] += 1e-3
    elif plant == "nan":
        actual[1, 5] = np.nan
    elif plant == "overflow":  # an allowance that overflows is held to the largest float
        size[3, 7] = np.inf
    return actual, expected, scales, rho


@pytest.mark.parametrize("plant", ["nothing", "failing", "nan", "overflow"])
@pytest.mark.parametrize("same_scales", [True, False])
@pytest.mark.parametrize("settings", [Settings(), Settings(dtype="float32", rtol=1e-5, atol=1e-8, temperature=0.5)])
def test_an_allowance_computed_by_compare_is_allowance_bit_for_bit(monkeypatch, plant, same_scales, settings):
    """Protects the allowance fused into compare(): given an Allowance, compare must give exactly the
    CheckResult it gives with allowance()'s array (blocks within rows here, each with its row's rho and
    floor), passing or failing, with a NaN or an allowance that overflowed."""
    monkeypatch.setattr(compare_module, "_BLOCK", 1000)
    settings = differences.resolve(settings)
    actual, expected, scales, rho = _allowance_case(5, plant, same_scales, settings)
    eta = 1e-5
    lazy = Allowance(expected, scales, settings, rho, eta, unit=0.25)
    whole = allowance(expected, scales, settings, rho, eta, unit=0.25)
    np.testing.assert_array_equal(lazy.whole(), whole)
    # repr: every float to its last bit (and NaN equal to NaN)
    assert repr(compare("g", actual, expected, lazy, settings.rtol)) == repr(compare("g", actual, expected, whole,
                                                                                      settings.rtol))
    assert compare("g", actual, expected, whole, settings.rtol).passed == (plant in ("nothing", "overflow"))


def test_an_allowance_of_other_values_or_dtypes_is_computed_whole():
    """Protects the fallback: an Allowance of another array than the one compared, or of float32 scales (whose
    whole computation rounds in float32), is computed whole, as allowance() would, never block by block."""
    settings = differences.resolve(Settings())
    actual, expected, scales, rho = _allowance_case(6, "nothing", False)
    narrow = Scales(scales.scale.astype(np.float32), scales.gross.astype(np.float32), scales.row)
    for lazy, whole in (
        (Allowance(expected.copy(), scales, settings, rho), allowance(expected, scales, settings, rho)),
        (Allowance(expected, narrow, settings, rho), allowance(expected, narrow, settings, rho)),
    ):
        assert repr(compare("g", actual, expected, lazy, 1e-7)) == repr(compare("g", actual, expected, whole, 1e-7))
    assert not Allowance(expected, narrow, settings, rho).blocks_with(expected, expected.shape)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_outputs_written_in_place_are_the_functions_own_results(dtype):
    """Protects out= of softmax_parts, Loss.gradient and numeric_gradient (checks/rows.py writes a block's
    arrays straight into the chunk's with them): the same numbers as without out, in the given arrays."""
    rng = np.random.default_rng(2)
    logits = rng.normal(scale=3.0, size=(3, 50)).astype(dtype)
    logits[1, :2] = logits[1].max() + 1  # tied largest
    plain = softmax_parts(logits)
    out = Softmax(*(np.empty_like(x) for x in plain))
    written = softmax_parts(logits, out)
    for name in ("s", "complement", "shifted"):
        assert np.shares_memory(getattr(written, name), getattr(out, name))
        np.testing.assert_array_equal(getattr(written, name), getattr(plain, name))
    np.testing.assert_array_equal(written.log_total, plain.log_total)
    settings = differences.resolve(Settings())
    labels = rng.integers(0, 50, 3)
    targets = np.zeros((3, 50))
    targets[np.arange(3), labels] = 1.0
    loss = replace(accepted_kind(settings).build(Batch(logits.astype(np.float64), labels, targets), settings,
                                                 np.dtype(dtype)), normalizer=7.0)
    gradient = loss.gradient(logits, plain)
    into = np.full_like(gradient, np.nan)
    assert loss.gradient(logits, plain, out=into) is into
    np.testing.assert_array_equal(into, gradient)
    z = logits.astype(np.float64)
    numeric = differences.numeric_gradient(loss, z, settings.eps, settings.method)
    into = np.full_like(numeric, np.nan)
    assert differences.numeric_gradient(loss, z, settings.eps, settings.method, out=into) is into
    np.testing.assert_array_equal(into, numeric)


@pytest.mark.parametrize("settings", [Settings(softcap=20.0), Settings(logit_scale=0.5, dtype="float32")])
def test_a_loss_with_its_own_softmax_is_checked_in_blocks_as_whole(monkeypatch, settings):
    """Protects Loss.softmax_into's copy for a loss whose softmax is its own (soft-capping, a logit scale): the
    blocks' checks and arrays must be the whole batch's, bit for bit."""
    rng = np.random.default_rng(4)
    logits = rng.normal(scale=4.0, size=(6, 300))
    labels = rng.integers(0, 300, 6)
    targets = np.zeros((6, 300))
    targets[np.arange(6), labels] = 1.0
    settings = differences.resolve(settings)
    results = []
    for block in (10**9, 300):  # one piece; a block a row
        monkeypatch.setattr(rows_module, "BLOCK_ELEMENTS", block)
        results.append(check_rows(Batch(logits, labels, targets), settings, accepted_kind(settings), 6.0))
    whole, blocks = results
    assert repr(blocks.checks) == repr(whole.checks)
    for name in ("row_losses", "analytic_gradient", "numeric_gradient", "logits"):
        np.testing.assert_array_equal(getattr(blocks, name), getattr(whole, name))
    for kept, expected in zip(blocks.softmax, whole.softmax, strict=True):
        np.testing.assert_array_equal(kept, expected)


def _plain_change(loss, parts, u):
    """l(z + d e_j) - l(z) as perturbation() computed it before its shortcut, on whole arrays: (A - a_j) log1p(s_j q)
    everywhere, plus a_j log1p((1 - s_j)(e^-u - 1)) where a_j is not 0 (elsewhere that term is a zero, whose
    sign is not added), plus the z-loss's S d (2 lse + d) with d the first term's log1p."""
    a, s, complement = loss.coefficients, parts.s, parts.complement
    lift = np.log1p(s * np.expm1(u))
    change = (a.sum(axis=-1, keepdims=True) - a) * lift
    at = np.nonzero(a)
    change[at] += a[at] * np.log1p(complement[at] * np.expm1(-u))
    if loss.z_weights is None:
        return change
    from gradcheck_cli.numerics.losses.z_loss import log_sum_exp

    lse = log_sum_exp(np.log(s), parts, loss.temperature)[:, None]
    return change + loss.z_weights[:, None] * lift * (2 * lse + lift)


@pytest.mark.parametrize("rows_kind", ["labels", "weights", "ignored rows", "negative zero rows", "z-loss"])
def test_the_label_shortcut_of_the_exact_perturbation_is_the_general_formula(rows_kind):
    """Protects perturbation()'s shortcut with class labels (no A - a array; x times 1 skipped where every A is
    1): its change must be the general formula's, bit for bit, with weights (A not 1), ignored rows (A = 0),
    rows of -0 coefficients (A - a_j is +0 there: so must A be, as numpy's sum gives) and a z-loss (which reuses
    the lse change)."""
    from gradcheck_cli.numerics.losses.cross_entropy import cross_entropy

    rng = np.random.default_rng(9)
    rows, classes = 6, 400
    parts = softmax_parts(rng.normal(scale=3.0, size=(rows, classes)))
    targets = np.zeros((rows, classes))
    targets[np.arange(rows), rng.integers(0, classes, rows)] = 1.0
    if rows_kind == "weights":
        targets *= rng.uniform(0.5, 2.0, size=(rows, 1))
    elif rows_kind == "ignored rows":
        targets[[1, 4]] = 0.0
    elif rows_kind == "negative zero rows":
        targets[2] = -0.0
    loss = cross_entropy(targets)
    if rows_kind == "z-loss":
        loss = replace(loss, z_weights=np.full(rows, 1e-3))
    assert loss._labelled is not None  # the shortcut runs
    for u in (1e-5, -2e-5):
        got = loss.perturbation(np.log(parts.s), parts)(slice(None), np.asarray(u))
        want = _plain_change(loss, parts, u)
        assert got.tobytes() == want.tobytes()  # every bit, the sign of a zero too


def test_the_rounding_factor_by_two_reductions_is_the_largest_magnitude():
    """Protects rounding_factor's max(max z, -min z): rho must be 2 (8 max|z| / T + 2 C + 16) from max |z| as
    np.abs(z).max() gives it, with a NaN (NaN), infinities, signed zeros, negative-only rows and no rows."""
    from gradcheck_cli.numerics.losses.base import rounding_factor

    rows = np.array([[1.0, -3.0, 2.0], [-0.0, 0.0, -0.0], [-5.0, -7.0, -1.0], [np.inf, 1.0, 2.0],
                     [-np.inf, 0.0, 1.0], [np.nan, 1.0, 2.0], [1.0, np.nan, -9.0]])
    for temperature in (1.0, 0.5):
        want = 2.0 * (8.0 * np.abs(rows).max(axis=-1, keepdims=True) / temperature + 2.0 * 3 + 16.0)
        assert rounding_factor(rows, temperature).tobytes() == want.tobytes()
    assert rounding_factor(np.empty((0, 3)), 1.0).shape == (0, 1)


@pytest.mark.parametrize("method", ["central", "five-point", "richardson", "forward"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_the_jacobian_factors_in_blocks_are_the_whole_array_loop(monkeypatch, method, temperature):
    """Protects softmax_derivative_factors' blocked loop (blocks of 1,000 elements here, across rows): factor
    and own must be the whole-array loop's bits, -0 sums turned +0 as 0 + x does, a zero s included."""
    monkeypatch.setattr(in_place, "FACTOR_BLOCK", 1000)
    rng = np.random.default_rng(11)
    parts = softmax_parts(rng.normal(scale=4.0, size=(3, 2100)) / temperature)
    s, complement = parts.s.copy(), parts.complement.copy()
    s[0, :5] = 0.0  # an underflowed probability: its terms are zeros
    h = differences.exact_step(1e-5)
    spec = differences.METHODS[method]
    factor, own = np.zeros(s.shape), np.zeros(s.shape)
    for offset, weight in zip(spec.offsets, spec.weights, strict=True):  # the loop, on whole arrays
        others = s * np.expm1(offset * h / temperature)
        others = others / (others + 1.0)
        mine = others * complement
        factor += others * -weight
        own += mine * weight
    got = differences.softmax_derivative_factors(s, complement, h, method, temperature)
    assert got[0].tobytes() == (factor / h).tobytes() and got[1].tobytes() == (own / h).tobytes()


@pytest.mark.parametrize("settings", [Settings(), Settings(temperature=0.5), Settings(dtype="float32")])
def test_the_jacobian_diagonal_reuses_its_product_only_where_it_is_the_size(settings):
    """Protects the diagonal's size S = s (1 - s) taken from the analytic diagonal (float64 at T = 1, where they
    are the same product): the check must be the one computed with S made apart, in every case."""
    from gradcheck_cli.checks import jacobian

    rng = np.random.default_rng(12)
    settings = differences.resolve(settings)
    logits = rng.normal(scale=3.0, size=(4, 300))
    reference = softmax_parts(logits / settings.temperature)
    analytic = reference if settings.dtype == "float64" else softmax_parts((logits / settings.temperature).astype(
        np.float32))
    sides = jacobian.jacobian_sides(analytic, reference, settings)
    assert sides.diagonal_is_size == (settings.dtype == "float64" and settings.temperature == 1.0)
    rho = np.full((4, 1), 700.0)
    apart = sides._replace(diagonal=sides.diagonal.copy(), diagonal_is_size=False)
    assert repr(jacobian._diagonal(sides, settings, rho, jacobian.JACOBIAN)) == repr(
        jacobian._diagonal(apart, settings, rho, jacobian.JACOBIAN))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_logits_stored_in_the_dtype_are_not_rounded_again(monkeypatch, dtype):
    """A tensor file's half-precision logits are held as float64 exactly: rounding them to their own dtype is
    the identity, so the check skips it (0.6 s of a 1,024 x 128,256 bfloat16 check) and reports exactly what
    rounding them first reports. Logits read as float64 (text) are still rounded."""
    from gradcheck_cli.numerics.precision import round_to

    rng = np.random.default_rng(11)
    logits = round_to(rng.standard_normal((6, 40)) * 4, dtype)
    labels = rng.integers(0, 40, 6)
    batch = Batch(logits=logits, labels=labels, targets=np.eye(40)[labels], dtype_name=dtype)
    settings = differences.resolve(Settings(dtype=dtype))
    kind = accepted_kind(settings)
    from_text = check_rows(replace(batch, dtype_name="float64"), settings, kind, 6.0)
    calls = []
    monkeypatch.setattr(rows_module, "round_to", lambda *args: calls.append(args) or round_to(*args))
    from_file = check_rows(batch, settings, kind, 6.0)
    assert calls == []
    check_rows(replace(batch, dtype_name="float64"), settings, kind, 6.0)
    assert len(calls) == 1
    assert from_file.checks == from_text.checks
    for name in ("analytic_gradient", "numeric_gradient", "row_losses", "logits"):
        assert np.array_equal(getattr(from_file, name), getattr(from_text, name)), name
