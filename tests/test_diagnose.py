"""Naming the slip (issue 15): every catalogue id is diagnosed first on a case planted with that slip, a correct
or merely wrong value is never given a slip, and the wrong models' formulas equal independent derivatives.

Planted values are computed here by the slip itself, written naively in numpy (the way the users in the
sources wrote them), never by the module's own formulas. The wrong models' gradients and Jacobians in
slip_formulas.py are held to complex-step derivatives of naive losses (exact to rounding: no difference
is taken) to 1e-12 relative to the array's largest element.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradcheck_cli.batch import Batch
from gradcheck_cli.checks import slip_formulas
from gradcheck_cli.checks.diagnose import CATALOGUE, diagnose, matches, verdict
from gradcheck_cli.checks.slip_context import SlipContext, context_for
from gradcheck_cli.settings import Settings

# The central method's default tolerances: the user's values are compared with these, as the checks do.
ATOL, RTOL = 1e-10, 1e-7
N, C = 3, 5  # N, C, T, D all distinct and none 2, so no two slips predict the same numbers


def naive_softmax(u: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax as a user writes it; the shift by the real maximum keeps complex-step probes exact."""
    e = np.exp(u - u.real.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def complex_step(function, z: np.ndarray, h: float = 1e-30) -> np.ndarray:
    """d function / dz for every element at once: Im f(z + i h e_k) / h, exact to rounding (nothing cancels).
    `function` maps K stacked N x C probes to K values, or to K arrays (then the result is K x output)."""
    k = z.size
    probes = z[None].astype(complex) + 1j * h * np.eye(k).reshape(k, *z.shape)
    return function(probes).imag / h


def gradient_of(function, z: np.ndarray) -> np.ndarray:
    return complex_step(function, z).reshape(z.shape)


def assert_close(actual: np.ndarray, expected: np.ndarray) -> None:
    """To 1e-12 of the largest element: the module's closed forms against complex-step derivatives."""
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-12 * float(np.abs(expected).max()))


def batch(rows: int = N, classes: int = C, seed: int = 0, labels: np.ndarray | None = None,
          scale: float = 2.0) -> Batch:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(rows, classes)) * scale
    y = rng.integers(0, classes, rows) if labels is None else labels
    kept = (y >= 0) & (y < classes)
    return Batch(z, y, np.eye(classes)[np.where(kept, y, 0)] * kept[:, None])


def run(quantity: str, user: np.ndarray, data: Batch, **options: object):
    context = context_for(quantity, data, Settings(atol=ATOL, rtol=RTOL, **options))
    return diagnose(quantity, user, context.reference_with(), ATOL, RTOL, context, check=f"impl {quantity}")


def onehot(data: Batch) -> np.ndarray:
    return data.targets


# --- planted slips: (id, quantity, settings, the slip written naively) -----------------------------------------------

def _missing_mean(d: Batch) -> np.ndarray:
    return naive_softmax(d.logits) - onehot(d)  # forgot_one_over_n


def _extra_mean(d: Batch) -> np.ndarray:
    return (naive_softmax(d.logits) - onehot(d)) / N / N


def _mean_over_elements(d: Batch) -> np.ndarray:
    return (naive_softmax(d.logits) - onehot(d)) / (N * C)


def _constant_scale(d: Batch) -> np.ndarray:
    return (naive_softmax(d.logits) - onehot(d)) * 3.7 / N


def _factor_two(d: Batch) -> np.ndarray:
    s = naive_softmax(d.logits)
    g = 2 * (s - onehot(d))  # the source's derivative of 1/2 (s - t)^2
    return s * (g - (g * s).sum(axis=1, keepdims=True)) / N


def _sign_flip(d: Batch) -> np.ndarray:
    return np.sum(onehot(d) * np.log(naive_softmax(d.logits))) / N  # sum t log y, without the minus


def _missing_temperature(d: Batch) -> np.ndarray:
    return (naive_softmax(d.logits / 1.7) - onehot(d)) / N  # the chain rule's 1/T dropped


def _probabilities_without_temperature(d: Batch) -> np.ndarray:
    return naive_softmax(d.logits)


def _temperature_squared(d: Batch) -> np.ndarray:
    return (naive_softmax(d.logits / 1.7) - onehot(d)) / 1.7 / N * 1.7**2


def _smoothing_icefall(d: Batch) -> np.ndarray:
    eps = 0.1
    smoothed = np.where(onehot(d) == 1, 1 - eps, eps / (C - 1))  # ESPnet/icefall: eps / (K - 1) to the others
    return (naive_softmax(d.logits) - smoothed) / N


WEIGHTS = (0.5, 2.0, 1.0, 3.0, 0.25)


def _divisor_n(d: Batch) -> np.ndarray:
    w = np.array(WEIGHTS)[d.labels][:, None]
    return w * (naive_softmax(d.logits) - onehot(d)) / N  # torch divides by sum w_y, this by N


def _ignored_not_zeroed(d: Batch) -> np.ndarray:
    kept = np.count_nonzero(d.labels != 0)
    return (naive_softmax(d.logits) - np.eye(C)[d.labels]) / kept  # class 0 rows keep a gradient


def _double_softmax(d: Batch) -> np.ndarray:
    p = naive_softmax(d.logits)
    upstream = (naive_softmax(p) - onehot(d)) / N  # CrossEntropyLoss applied to probabilities
    jacobian = np.einsum("ni,ij->nij", p, np.eye(C)) - np.einsum("ni,nj->nij", p, p)
    return np.einsum("nij,ni->nj", jacobian, upstream)


def _log_probabilities_as_logits(d: Batch) -> np.ndarray:
    return -onehot(d) / N  # nll_loss(logits, y)


def _softmax_instead_of_log(d: Batch) -> np.ndarray:
    return gradient_of(lambda z: -(onehot(d) * naive_softmax(z)).sum(axis=(-2, -1)) / N, d.logits)


def _transposed_probabilities(d: Batch) -> np.ndarray:
    return naive_softmax(d.logits, axis=0)


def _label_shift(d: Batch) -> np.ndarray:
    return (naive_softmax(d.logits) - np.eye(C)[(d.labels + 1) % C]) / N


def _no_max_subtraction(d: Batch) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        exps = np.exp(d.logits)
        return (exps / exps.sum(axis=1, keepdims=True) - onehot(d)) / N


def _overflowing(d: Batch) -> Batch:
    logits = d.logits.copy()
    logits[1] = [1000.0, 0.0, -1000.0, 3.0, 1.0]
    return Batch(logits, d.labels, d.targets)


PLANTED = [
    ("missing-mean", "gradient", {}, _missing_mean),
    ("extra-mean", "gradient", {}, _extra_mean),
    ("mean-over-elements", "gradient", {}, _mean_over_elements),
    ("constant-scale", "gradient", {}, _constant_scale),
    ("factor-two", "gradient", {"loss": "mse"}, _factor_two),
    ("sign-flip", "loss", {}, _sign_flip),
    ("missing-temperature", "gradient", {"temperature": 1.7}, _missing_temperature),
    ("missing-temperature", "probabilities", {"temperature": 1.7}, _probabilities_without_temperature),
    ("temperature-squared", "gradient", {"temperature": 1.7}, _temperature_squared),
    ("smoothing-convention", "gradient", {"label_smoothing": 0.1}, _smoothing_icefall),
    ("divisor-convention", "gradient", {"weights": WEIGHTS}, _divisor_n),
    ("double-softmax", "gradient", {}, _double_softmax),
    ("log-probabilities-as-logits", "gradient", {}, _log_probabilities_as_logits),
    ("softmax-instead-of-log", "gradient", {}, _softmax_instead_of_log),
    ("transposed", "probabilities", {}, _transposed_probabilities),
    ("label-shift", "gradient", {}, _label_shift),
]


@pytest.mark.parametrize(("slip", "quantity", "options", "plant"), PLANTED,
                         ids=[f"{slip}-{quantity}" for slip, quantity, _, _ in PLANTED])
def test_each_planted_slip_is_named_first(slip: str, quantity: str, options: dict, plant) -> None:
    """Protects the catalogue: a value made by the slip is diagnosed with that slip's id first, and matched."""
    data = batch(labels=np.array([2, 0, 4]))
    findings = run(quantity, plant(data), data, **options)
    assert findings and findings[0].matched, [f.description for f in findings]
    assert findings[0].id == slip, [f.description for f in matches(findings)]
    assert findings[0].check == f"impl {quantity}"


def test_missing_mean_sentence_has_the_users_numbers() -> None:
    """Protects the sentence under the FAIL line: the factor, N and the slip, as the issue words it."""
    data = batch(labels=np.array([2, 0, 4]))
    findings = run("gradient", _missing_mean(data), data)
    assert verdict(findings, "gradient") == (
        "every element of your gradient is 3.000 \u00d7 the reference (N = 3): the mean's 1/N is missing from the gradient")
    assert findings[0].residual is not None and findings[0].residual < 1e-14
    assert findings[0].explains_rows == 1.0


def test_ignored_class_rows_not_zeroed_are_named() -> None:
    """Protects ignored-rows-not-zeroed with an in-range ignored class: the rows keep s - y, the mean D unchanged."""
    data = batch(rows=4, labels=np.array([2, 0, 4, 0]))
    findings = run("gradient", _ignored_not_zeroed(data), data, ignore_index=0)
    assert (findings[0].id, findings[0].matched) == ("ignored-rows-not-zeroed", True)


def test_ignored_rows_out_of_range_are_a_partial_match_naming_them() -> None:
    """Protects the partial match: with label -100 the ignored rows' values cannot be predicted, so the slip
    explains every other row and says which rows it leaves unexplained."""
    data = batch(rows=5, labels=np.array([2, -100, 4, 1, -100]))
    kept = data.labels != -100
    user = (naive_softmax(data.logits) - data.targets) / kept.sum()  # ignored rows keep their softmax
    findings = run("gradient", user, data, ignore_index=-100)
    assert not matches(findings)
    first = findings[0]
    assert (first.id, first.partial, first.unexplained_rows) == ("ignored-rows-not-zeroed", True, (1, 4))
    assert first.rows_explained == 3 and "rows 1 and 4 (the ignored rows)" in first.description


def test_divisor_by_n_with_ignored_rows_left_nonzero_is_partial() -> None:
    """Protects the issue's example of a partial match: one row scale (N instead of the rows not ignored)
    explains all but the ignored rows."""
    data = batch(rows=5, labels=np.array([2, -100, 4, 1, -100]))
    user = (naive_softmax(data.logits) - data.targets) / 5
    findings = run("gradient", user, data, ignore_index=-100)
    assert findings[0].partial and findings[0].unexplained_rows == (1, 4)


def test_grad_output_broadcast_from_the_first_row() -> None:
    """Protects grad-output-broadcast: reduction none with a per-row upstream g, every row scaled by g_0."""
    data = batch(rows=4, labels=np.array([2, 0, 4, 1]))
    upstream = np.array([0.5, -1.5, 2.0, 3.0])
    context = context_for("gradient", data, Settings(atol=ATOL, rtol=RTOL, reduction="none"), upstream=upstream)
    reference = context.reference_with()
    np.testing.assert_allclose(reference, upstream[:, None] * (naive_softmax(data.logits) - data.targets), rtol=1e-13)
    user = upstream[0] * (naive_softmax(data.logits) - data.targets)
    findings = diagnose("gradient", user, reference, ATOL, RTOL, context)
    assert (findings[0].id, findings[0].matched) == ("grad-output-broadcast", True)


def test_no_max_subtraction_names_the_overflowing_row() -> None:
    """Protects no-max-subtraction: NaN only on the row whose logit 1000 overflows e^z, the rest exact."""
    data = _overflowing(batch(labels=np.array([2, 0, 4])))
    user = _no_max_subtraction(data)
    assert np.isnan(user[1]).any() and np.isfinite(user[[0, 2]]).all()
    findings = run("gradient", user, data)
    assert (findings[0].id, findings[0].matched) == ("no-max-subtraction", True)
    assert "float64 (1)" in findings[0].description
    loss = run("loss", np.array(np.nan), data)
    assert (loss[0].id, loss[0].matched) == ("no-max-subtraction", True)


def test_nan_on_a_row_that_does_not_overflow_is_not_no_max_subtraction() -> None:
    """Protects never guessing: a NaN where e^z is finite is not explained by the missing max subtraction."""
    data = _overflowing(batch(labels=np.array([2, 0, 4])))
    user = _no_max_subtraction(data)
    user[0, 0] = np.nan
    assert not matches(run("gradient", user, data))


# --- the KL losses, on arrays (their registry entries come with issue 14) --------------------------------------------

def kl_context(quantity: str, reduction: str, student: np.ndarray, teacher: np.ndarray, loss: str = "kl") -> SlipContext:
    """A context built by hand, as the KL losses will build theirs: forward KL(p || q), torch's reductions."""
    rows, classes = student.shape
    row_scale = {"batchmean": 1 / rows, "mean": 1 / (rows * classes), "sum": 1.0, "none": 1.0}[reduction]

    def recompute(logits: np.ndarray = student, temperature: float = 1.0, **unused: object) -> np.ndarray:
        """Forward KL at other student logits or temperature; labels and targets do not enter it."""
        p, q = naive_softmax(teacher / temperature), naive_softmax(logits / temperature)
        rows_loss = (p * (np.log(p) - np.log(q))).sum(axis=1)
        if quantity == "loss":
            return rows_loss if reduction == "none" else np.asarray(rows_loss.sum() * row_scale)
        return (q - p) / temperature * row_scale

    return SlipContext(quantity, student, np.zeros_like(student), None, Settings(loss=loss, reduction=reduction),
                       divisor=rows, row_scale=row_scale, kept=np.ones(rows, bool), class_weights=np.ones(classes),
                       recompute=recompute, teacher_logits=teacher)


def naive_reverse_kl(student: np.ndarray, teacher: np.ndarray):
    p = naive_softmax(teacher)
    return lambda z: (naive_softmax(z) * (np.log(naive_softmax(z)) - np.log(p))).sum(axis=(-2, -1))


def test_kl_direction_is_named() -> None:
    """Protects kl-direction: a gradient of KL(q || p) where KL(p || q) was asked (batchmean)."""
    rng = np.random.default_rng(3)
    student, teacher = rng.normal(size=(N, C)), rng.normal(size=(N, C))
    context = kl_context("gradient", "batchmean", student, teacher)
    user = gradient_of(naive_reverse_kl(student, teacher), student) / N
    findings = diagnose("gradient", user, context.reference_with(), ATOL, RTOL, context)
    assert (findings[0].id, findings[0].matched) == ("kl-direction", True)


@pytest.mark.parametrize(("reduction", "factor"), [("batchmean", 1 / C), ("mean", C)])
def test_batchmean_vs_mean_is_named(reduction: str, factor: float) -> None:
    """Protects batchmean-vs-mean: kl_div's mean (/N C) where batchmean (/N) was asked, and back."""
    rng = np.random.default_rng(4)
    context = kl_context("loss", reduction, rng.normal(size=(N, C)), rng.normal(size=(N, C)))
    reference = context.reference_with()
    findings = diagnose("loss", reference * factor, reference, ATOL, RTOL, context)
    assert (findings[0].id, findings[0].matched) == ("batchmean-vs-mean", True)


def _kl_registry(reduction: str, seed: int = 5) -> tuple[Batch, Settings, np.ndarray, np.ndarray]:
    """A student and teacher batch, the registry's own kl settings, and q - p (the sum-reduced gradient, T = 1)."""
    rng = np.random.default_rng(seed)
    student, teacher = rng.normal(size=(N, C)), rng.normal(size=(N, C))
    data = Batch(student, None, teacher, teacher_logits=teacher)
    return data, Settings(loss="kl", reduction=reduction, atol=ATOL, rtol=RTOL), student, \
        naive_softmax(student) - naive_softmax(teacher)


@pytest.mark.parametrize(("reduction", "divided", "slip", "said"), [
    ("batchmean", 1.0, "missing-mean", "(N = 3): the batchmean's 1/N is missing"),
    ("batchmean", 1.0 / N**2, "extra-mean", "divided by N twice"),
    ("mean", 1.0, "missing-mean", "(N C = 15): the mean's 1/N C is missing"),
    ("sum", 1.0 / N, "extra-mean", "a batchmean (1/N) where the reduction is sum"),
])
def test_kl_reductions_name_a_missing_or_extra_mean(reduction: str, divided: float, slip: str, said: str) -> None:
    """Protects missing-mean and extra-mean for the KL losses: batchmean divides by N (torch's kl_div), mean by
    N C, sum by nothing; a gradient q - p with its batchmean's 1/N (mean's 1/(N C)) forgotten, one divided by N
    twice, and one divided by N under sum are each named first, with the divisor in words."""
    data, options, _, q_minus_p = _kl_registry(reduction)
    context = context_for("gradient", data, options)
    findings = diagnose("gradient", q_minus_p * divided, context.reference_with(), ATOL, RTOL, context)
    assert (findings[0].id, findings[0].matched) == (slip, True), findings[0]
    assert said in findings[0].description, findings[0].description


def test_kl_divisor_convention_offers_the_other_kl_divisor() -> None:
    """Protects divisor-convention under batchmean: a gradient divided by N C where batchmean's N was asked is
    batchmean-vs-mean first (the specific name) and divisor-convention too; the reference itself gives none."""
    data, options, _, q_minus_p = _kl_registry("batchmean")
    context = context_for("gradient", data, options)
    reference = context.reference_with()
    np.testing.assert_allclose(reference, q_minus_p / N, rtol=1e-12, atol=0)
    named = [finding.id for finding in matches(diagnose("gradient", q_minus_p / (N * C), reference, ATOL, RTOL,
                                                         context))]
    assert named[0] == "batchmean-vs-mean" and "divisor-convention" in named
    assert diagnose("gradient", reference, reference, ATOL, RTOL, context) == []


def test_every_catalogue_id_is_planted() -> None:
    """Protects the catalogue's coverage: a new id needs a planted case here."""
    planted = {slip for slip, *_ in PLANTED} | {"ignored-rows-not-zeroed", "grad-output-broadcast",
                                                "no-max-subtraction", "kl-direction", "batchmean-vs-mean"}
    assert {hypothesis.id for hypothesis in CATALOGUE} == planted
    assert len(CATALOGUE) == len(planted)  # ids are unique


# --- no slip is guessed ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("options", [{}, {"temperature": 1.7, "label_smoothing": 0.1}, {"loss": "mse"},
                                     {"weights": WEIGHTS, "ignore_index": 0, "reduction": "sum"}])
def test_correct_values_get_no_diagnosis(options: dict) -> None:
    """Protects 'a correct one produces no match': values that agree with the reference are not diagnosed."""
    data = batch(rows=4, labels=np.array([2, 0, 4, 1]))
    context = context_for("gradient", data, Settings(atol=ATOL, rtol=RTOL, **options))
    reference = context.reference_with()
    correct = reference * (1 + 1e-12)  # a correct computation, rounded differently
    assert diagnose("gradient", correct, reference, ATOL, RTOL, context) == []


@pytest.mark.parametrize("quantity", ["gradient", "probabilities", "jacobian", "lse", "loss"])
def test_wrong_values_that_no_slip_makes_are_not_named(quantity: str) -> None:
    """Protects never guessing: noise of 1e-3 relative matches no hypothesis, and the verdict says so."""
    data = batch(rows=4, labels=np.array([2, 0, 4, 1]))
    context = context_for(quantity, data, Settings(atol=ATOL, rtol=RTOL, temperature=1.3))
    reference = context.reference_with()
    noise = np.random.default_rng(9).normal(size=reference.shape)
    findings = diagnose(quantity, reference * (1 + 1e-3 * noise), reference, ATOL, RTOL, context)
    assert findings and not matches(findings) and not any(f.partial for f in findings)
    assert verdict(findings, quantity).startswith(f"no known slip reproduces your {quantity}")


# --- hypothesis properties: scales, row masks, transpositions recovered exactly -------------------------------------

@settings(max_examples=30, deadline=None)
@given(k=st.floats(0.05, 20.0).filter(lambda k: abs(k - 1) > 1e-3), sign=st.sampled_from([1.0, -1.0]),
       seed=st.integers(0, 2**16))
def test_random_scales_are_recovered(k: float, sign: float, seed: int) -> None:
    """Protects constant-scale: any factor is found, and matched, to the last digits."""
    data = batch(rows=4, classes=6, seed=seed, labels=np.array([0, 5, 2, 3]))
    context = context_for("gradient", data, Settings(atol=ATOL, rtol=RTOL))
    reference = context.reference_with()
    findings = diagnose("gradient", reference * sign * k, reference, ATOL, RTOL, context)
    scale = next(f for f in findings if f.id == "constant-scale")
    assert findings[0].matched and scale.matched
    assert scale.parameter == pytest.approx(sign * k, rel=1e-12)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), data=st.data())
def test_random_row_masks_are_recovered(seed: int, data: st.DataObject) -> None:
    """Protects partial matches: rows scaled differently from the majority are exactly the rows left unexplained."""
    rows = 9
    mask = np.array(data.draw(st.lists(st.booleans(), min_size=rows, max_size=rows).filter(lambda m: 0 < sum(m) < 4)))
    batch_ = batch(rows=rows, classes=4, seed=seed, labels=np.arange(rows) % 4)
    context = context_for("gradient", batch_, Settings(atol=ATOL, rtol=RTOL))
    reference = context.reference_with()
    user = reference * np.where(mask, 0.3, 7.5)[:, None]
    findings = diagnose("gradient", user, reference, ATOL, RTOL, context)
    assert findings[0].partial and findings[0].unexplained_rows == tuple(np.flatnonzero(mask))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16), data=st.data())
def test_random_ignored_rows_are_recovered(seed: int, data: st.DataObject) -> None:
    """Protects ignored-rows-not-zeroed: whichever rows are ignored (label -100), they are the rows named."""
    rows = 7
    mask = np.array(data.draw(st.lists(st.booleans(), min_size=rows, max_size=rows).filter(lambda m: 0 < sum(m) < rows)))
    labels = np.where(mask, -100, np.arange(rows) % 4)
    batch_ = batch(rows=rows, classes=4, seed=seed, labels=labels)
    user = (naive_softmax(batch_.logits) - batch_.targets) / np.count_nonzero(~mask)
    findings = run("gradient", user, batch_, ignore_index=-100)
    assert findings[0].id == "ignored-rows-not-zeroed"
    assert findings[0].unexplained_rows == tuple(np.flatnonzero(mask))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16), size=st.integers(3, 6))
def test_random_transpositions_are_recovered(seed: int, size: int) -> None:
    """Protects transposed: a square batch's gradient transposed, and probabilities over the batch axis."""
    data = batch(rows=size, classes=size, seed=seed, labels=np.arange(size)[::-1].copy())
    context = context_for("gradient", data, Settings(atol=ATOL, rtol=RTOL))
    reference = context.reference_with()
    findings = diagnose("gradient", reference.T, reference, ATOL, RTOL, context)
    assert (findings[0].id, findings[0].matched) == ("transposed", True)
    findings = run("probabilities", naive_softmax(data.logits, axis=0), data)
    assert (findings[0].id, findings[0].matched) == ("transposed", True)


# --- the wrong models' formulas against complex-step derivatives -----------------------------------------------------

def _model_context(quantity: str, loss: str = "cross_entropy", temperature: float = 1.3, reduction: str = "mean"):
    data = batch(rows=4, classes=5, seed=11, labels=np.array([2, 0, 4, 1]))
    options = {"loss": loss, "temperature": temperature, "reduction": reduction}
    return data, context_for(quantity, data, Settings(atol=ATOL, rtol=RTOL, **options))


def test_double_softmax_matches_complex_step() -> None:
    """Protects the double-softmax gradient and Jacobian (chain rule through two softmaxes, T on the first)."""
    data, context = _model_context("gradient")

    def loss(z: np.ndarray) -> np.ndarray:
        return -(data.targets * np.log(naive_softmax(naive_softmax(z / 1.3)))).sum(axis=(-2, -1)) / 4

    assert_close(slip_formulas.double_softmax(context, "gradient", 1.0), gradient_of(loss, data.logits))
    _, context = _model_context("jacobian")
    outputs = complex_step(lambda z: naive_softmax(naive_softmax(z / 1.3)), data.logits).reshape(4, 5, 4, 5)
    expected = np.einsum("njni->nij", outputs)
    assert_close(slip_formulas.double_softmax(context, "jacobian", 1.0), expected)


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_batch_axis_softmax_matches_complex_step(loss: str) -> None:
    """Protects the gradient of a loss on softmax(z / T, dim=0), for cross-entropy and the squared error."""
    data, context = _model_context("gradient", loss=loss)
    t = data.targets

    def value(z: np.ndarray) -> np.ndarray:
        p = naive_softmax(z / 1.3, axis=-2)
        rows = -(t * np.log(p)).sum(axis=-1) if loss == "cross_entropy" else 0.5 * ((p - t) ** 2).sum(axis=-1)
        return rows.sum(axis=-1) / 4

    assert_close(slip_formulas.batch_axis_softmax(context, "gradient"), gradient_of(value, data.logits))
    _, loss_context = _model_context("loss", loss=loss)
    np.testing.assert_allclose(slip_formulas.batch_axis_softmax(loss_context, "loss"), value(data.logits), rtol=1e-13)


def test_softmax_instead_of_log_and_logits_as_log_probabilities_match_complex_step() -> None:
    """Protects -sum y s and -sum y z / T with their gradients (reduction sum, T = 1.3)."""
    data, context = _model_context("gradient", reduction="sum")
    t = data.targets
    assert_close(slip_formulas.softmax_instead_of_log(context, "gradient"),
                 gradient_of(lambda z: -(t * naive_softmax(z / 1.3)).sum(axis=(-2, -1)), data.logits))
    assert_close(slip_formulas.logits_as_log_probabilities(context, "gradient"),
                 gradient_of(lambda z: -(t * z / 1.3).sum(axis=(-2, -1)), data.logits))


def test_kl_directions_match_complex_step() -> None:
    """Protects both KL divergences and their gradients by the student logits, with temperature."""
    rng = np.random.default_rng(5)
    student, teacher, temperature = rng.normal(size=(4, 6)), rng.normal(size=(4, 6)) * 2, 1.7
    p = naive_softmax(teacher / temperature)

    def forward(z: np.ndarray) -> np.ndarray:
        return (p * (np.log(p) - np.log(naive_softmax(z / temperature)))).sum(axis=(-2, -1))

    def reverse(z: np.ndarray) -> np.ndarray:
        q = naive_softmax(z / temperature)
        return (q * (np.log(q) - np.log(p))).sum(axis=(-2, -1))

    for function, naive in ((slip_formulas.forward_kl, forward), (slip_formulas.reverse_kl, reverse)):
        rows, gradient = function(student, teacher, temperature)
        np.testing.assert_allclose(rows.sum(), naive(student), rtol=1e-13)
        assert_close(gradient, gradient_of(naive, student))


# --- the evidence rules and the result objects -------------------------------------------------------------------------

def test_a_fitted_number_needs_evidence() -> None:
    """Protects MIN_SUPPORT and MIN_DEVIATION: one number fits one or two values, or a miss of about the tolerance,
    whatever they are; such a fit is not reported as constant-scale (or as a fitted smoothing)."""
    data = batch(rows=4, labels=np.array([2, -100, -100, -100]))
    context = context_for("loss", data, Settings(atol=ATOL, rtol=RTOL, reduction="none", ignore_index=-100,
                                                 label_smoothing=0.1))
    reference = context.reference_with()
    one_row_off = reference * np.array([1.3, 1, 1, 1])  # one informative value: any k fits it
    assert not matches(diagnose("loss", one_row_off, reference, ATOL, RTOL, context))
    data = batch(rows=4, classes=6, labels=np.array([2, 0, 4, 1]))
    context = context_for("gradient", data, Settings(atol=ATOL, rtol=RTOL))
    reference = context.reference_with()
    barely = reference * (1 + 3 * RTOL)  # a constant factor, but missing the reference by 3 tolerances at most
    assert not matches(diagnose("gradient", barely, reference, ATOL, RTOL, context))
    assert matches(diagnose("gradient", reference * (1 + 30 * RTOL), reference, ATOL, RTOL, context))[0].id == "constant-scale"


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), rows=st.integers(1, 6), classes=st.integers(2, 6),
       quantity=st.sampled_from(["gradient", "loss", "probabilities", "jacobian", "lse"]),
       noise=st.sampled_from([1e-6, 1e-3, 0.3]), temperature=st.sampled_from([1.0, 0.5, 1.7]),
       reduction=st.sampled_from(["mean", "sum", "none"]), loss=st.sampled_from(["cross_entropy", "mse"]))
def test_random_errors_are_never_named(seed, rows, classes, quantity, noise, temperature, reduction, loss) -> None:
    """Protects never guessing: errors that are no slip (independent per element, from 1e-6 to 0.3 relative) get
    neither a match nor a partial match, on any input, quantity and option."""
    data = batch(rows=rows, classes=classes, seed=seed)
    context = context_for(quantity, data, Settings(atol=ATOL, rtol=RTOL, temperature=temperature, reduction=reduction,
                                                   loss=loss))
    reference = context.reference_with()
    user = reference * (1 + noise * np.random.default_rng(seed).normal(size=np.shape(reference)))
    findings = diagnose(quantity, user, reference, ATOL, RTOL, context)
    assert not [f.description for f in findings if f.matched or f.partial]


def test_the_context_reference_is_gradchecks() -> None:
    """Protects context_for: each quantity's reference equals its textbook formula (T = 1.3, weights, mean)."""
    data = batch(rows=4, labels=np.array([2, 0, 4, 1]))
    options = Settings(atol=ATOL, rtol=RTOL, temperature=1.3, weights=WEIGHTS)
    s = naive_softmax(data.logits / 1.3)
    w = np.array(WEIGHTS)[data.labels]
    expected = {
        "probabilities": s,
        "jacobian": (np.einsum("ni,ij->nij", s, np.eye(C)) - np.einsum("ni,nj->nij", s, s)) / 1.3,
        "lse": np.log(np.exp(data.logits / 1.3).sum(axis=1)),
        "loss": -(w * np.log(s[np.arange(4), data.labels])).sum() / w.sum(),
        "gradient": w[:, None] * (s - data.targets) / 1.3 / w.sum(),
    }
    for quantity, value in expected.items():
        np.testing.assert_allclose(context_for(quantity, data, options).reference_with(), value, rtol=1e-13, atol=1e-16)


def test_findings_are_plain_json_and_shapes_must_agree() -> None:
    """Protects the result objects: to_dict is strict JSON (a residual that is not finite is null), explains_rows
    is a share, and a user array of another shape is a caller's error, not a diagnosis."""
    import json

    data = _overflowing(batch(labels=np.array([2, 0, 4])))
    findings = run("gradient", _no_max_subtraction(data), data)
    document = json.loads(json.dumps([finding.to_dict() for finding in findings], allow_nan=False))
    assert document[0]["id"] == "no-max-subtraction" and document[0]["explains_rows"] == 1.0
    assert any(entry["residual"] is None for entry in document)  # the NaN row is left in every other hypothesis
    context = context_for("gradient", data, Settings(atol=ATOL, rtol=RTOL))
    with pytest.raises(ValueError, match="diagnose: the gradient is"):
        diagnose("gradient", np.zeros((2, 5)), context.reference_with(), ATOL, RTOL, context)


def test_the_readme_impl_examples_name_their_slips() -> None:
    """Protects the issue's 'done when': examples/my_softmax.py's planted slips, on examples/batch.json, are named
    (the forgotten 1/N, the missing max subtraction at logit 1000, the squared error's factor 2)."""
    import importlib.util
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("my_softmax_for_diagnose", root / "examples" / "my_softmax.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    document = json.loads((root / "examples" / "batch.json").read_text())
    logits, labels = np.array(document["logits"], dtype=float), np.array(document["labels"])
    data = Batch(logits, labels, np.eye(logits.shape[1])[labels])
    for function, loss, slip in [("forgot_one_over_n", "cross_entropy", "missing-mean"),
                                 ("naive_softmax_cross_entropy", "cross_entropy", "no-max-subtraction"),
                                 ("mse_factor_two", "mse", "factor-two")]:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            _, gradient = getattr(module, function)(logits, data.targets)
        findings = run("gradient", gradient, data, loss=loss)
        assert (findings[0].id, findings[0].matched) == (slip, True), function


def test_a_row_missed_by_about_its_tolerance_is_no_partial_evidence() -> None:
    """Protects the partial match's evidence rule: a slip that scales by k allows |k| atol, so on a row of tiny
    values (a confident row) it 'explains' an error of 1.5 atol the reference misses; such a row, missed by the
    reference by fewer than MIN_DEVIATION tolerances, makes no partial match."""
    data = batch(labels=np.array([2, 0, 4]))
    data.logits[0] = [0.0, 0.0, 100.0, 0.0, 0.0]  # row 0 confident at its label: its gradient is about 1e-26
    context = context_for("gradient", data, Settings(atol=ATOL, rtol=RTOL, temperature=1.7))
    reference = context.reference_with()
    user = reference * (1 + 0.3 * np.random.default_rng(2).normal(size=reference.shape))  # rows 1, 2: no slip
    user[0] = reference[0] + 1.5 * ATOL
    findings = diagnose("gradient", user, reference, ATOL, RTOL, context)
    assert np.abs(1.7 * reference[0] - user[0]).max() <= 1.7 * ATOL  # x T would 'explain' row 0
    assert not [f.description for f in findings if f.matched or f.partial]


def test_a_scaled_slip_carries_scaled_rounding() -> None:
    """Protects the slack: values k times the reference carry k times its rounding, so a user's x N gradient whose
    tiny elements are off by 2.5 atol (within N atol, N = 3) is still the missing mean; and a slip that changes
    nothing on this input (T = 1: x T, x T^2) is not even tried."""
    data = batch(labels=np.array([2, 0, 4]))
    data.logits[0] = [0.0, 0.0, 25.0, 0.0, 0.0]  # row 0 confident: its elements are about 1e-11
    context = context_for("gradient", data, Settings(atol=ATOL, rtol=RTOL))
    reference = context.reference_with()
    user = reference * 3
    user[0] += 2.5 * ATOL
    findings = diagnose("gradient", user, reference, ATOL, RTOL, context)
    assert (findings[0].id, findings[0].matched) == ("missing-mean", True)
    assert not {"missing-temperature", "temperature-squared"} & {finding.id for finding in findings}


def test_a_convention_undefined_on_the_input_is_skipped_not_raised():
    """label-shift moves the only kept label onto the ignored one: the shifted mean divides by no row. That
    hypothesis cannot explain anything here; the others are still tried (it raised ZeroDivisionError)."""
    data = batch(rows=1, classes=3, labels=np.array([1]))
    user = naive_softmax(data.logits) - onehot(data)  # mean over one row: correct, then x 3
    findings = run("gradient", user * 3.0, data, ignore_index=2)
    assert all(finding.id != "label-shift" for finding in findings)
    assert matches(findings)[0].id == "constant-scale"
