"""The plain same-dtype implementation of every loss (numerics/baselines.py) and its lean rounding.

Its numbers are checked, bit for bit, against an independent step-by-step computation in the dtype itself
(ml_dtypes' bfloat16 and numpy's float16 arrays, whose +, -, * and / round each result to the dtype; exp,
log, log1p and tanh taken in float64 and cast once, as the baseline defines them). Its use: for every loss, a
correct implementation that computes in float32 and rounds its result once passes both half-precision
verdicts, and the same code with its class sum accumulated in bfloat16 (issue 18's planted kernel bug) fails
the baseline verdict.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pytest

from gradcheck_cli.api import check
from gradcheck_cli.batch import Batch
from gradcheck_cli.numerics import baselines, differences, precision
from gradcheck_cli.numerics.losses import loss_kind
from gradcheck_cli.numerics.precision import round_to
from gradcheck_cli.settings import Settings

ml_dtypes = pytest.importorskip("ml_dtypes", reason="ml_dtypes is a test dependency (pip install -e '.[test]')")
LOW = {"bfloat16": ml_dtypes.bfloat16, "float16": np.float16}


# --- lean rounding ---------------------------------------------------------------------------------------------


def _wide_values(count: int) -> np.ndarray:
    """float64 values from 1e-45 to 1e39 (subnormals, overflow), both signs, with the special values."""
    rng = np.random.default_rng(14)
    values = rng.standard_normal(count) * 10.0 ** rng.integers(-46, 40, count)
    ties = (1.0 + (2 * rng.integers(0, 128, 1000) + 1) * 2.0**-8) * 2.0 ** rng.integers(-130, 128, 1000)
    return np.concatenate([values, ties, -ties, [0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 3.4e38, 1e-45]])


def test_bit_rounding_equals_ml_dtypes_cast(monkeypatch) -> None:
    """Protects the rounding without ml_dtypes: the integer round-to-nearest-even on float32 bit patterns gives
    the very bits of ml_dtypes' cast (through float32), ties, subnormals, overflow, zeros' and NaNs' signs
    included; and round_to with ml_dtypes gives the same."""
    values = _wide_values(200_000)
    with np.errstate(over="ignore"):
        expected = values.astype(np.float32).astype(ml_dtypes.bfloat16).astype(np.float64)
    with_package = round_to(values, "bfloat16")
    monkeypatch.setattr(precision, "_ml_dtypes_bfloat16", lambda: None)
    without = round_to(values, "bfloat16")
    for rounded in (with_package, without):
        assert np.array_equal(rounded, expected, equal_nan=True)
        assert np.array_equal(np.signbit(rounded), np.signbit(expected))


def test_bit_rounding_keeps_a_nan_whose_payload_would_carry(monkeypatch) -> None:
    """Protects NaN: a float32 NaN with every payload bit set would carry into the sign bit and become -0; it
    stays a NaN with its sign."""
    monkeypatch.setattr(precision, "_ml_dtypes_bfloat16", lambda: None)
    patterns = np.array([0x7FFFFFFF, 0xFFFFFFFF, 0x7FFF8000], dtype=np.uint32)
    rounded = round_to(patterns.view(np.float32).astype(np.float64), "bfloat16")
    assert np.isnan(rounded).all() and np.signbit(rounded).tolist() == [False, True, False]


def test_round_to_writes_into_out_and_keeps_its_input() -> None:
    """Protects in-place rounding: `out` receives the result (it may be the input itself), and without it the
    input is left as it was."""
    values = np.array([[1 + 2**-8 + 2**-20, 0.1], [3.0, -1e-40]])
    kept = values.copy()
    expected = round_to(values, "bfloat16")
    assert np.array_equal(values, kept)
    out = round_to(values, "bfloat16", out=values)
    assert out is values and np.array_equal(values, expected)


# --- an independent step-by-step computation in the dtype ------------------------------------------------------


class Steps:
    """Arrays in the dtype itself: its arithmetic rounds every result; transcendental functions in float64,
    cast once (float64 -> float32 -> dtype, as the frameworks cast); sums pairwise, each add in the dtype."""

    def __init__(self, dtype: str) -> None:
        self.low = LOW[dtype]

    def __call__(self, values: object) -> np.ndarray:
        return np.asarray(values, dtype=np.float64).astype(np.float32).astype(self.low)

    def apply(self, function: Callable[[np.ndarray], np.ndarray], values: np.ndarray) -> np.ndarray:
        return self(function(np.asarray(values).astype(np.float64)))

    def sum(self, values: np.ndarray) -> np.ndarray:
        while values.shape[-1] > 1:
            if values.shape[-1] % 2:
                values = np.concatenate([values, np.zeros_like(values[..., :1])], axis=-1)
            values = values[..., 0::2] + values[..., 1::2]
        return values[..., 0]

    def softmax(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """s, log s, exp(log s), lse, as written out in the dtype."""
        top = u.max(axis=-1, keepdims=True)
        shifted = u - top
        exps = self.apply(np.exp, shifted)
        total = self.sum(exps)[:, None]
        log_total = self.apply(np.log, total)
        log_s = shifted - log_total
        return exps / total, log_s, self.apply(np.exp, log_s), (top + log_total)[:, 0]


def _steps_cross_entropy(d: Steps, u: np.ndarray, loss) -> tuple:
    s, log_s, held, lse = d.softmax(u)
    a = d(loss.coefficients)
    rows = -d.sum(a * log_s)
    gradient = held * d.sum(a)[:, None] - a
    if loss.z_weights is not None:
        weight = d(loss.z_weights)
        rows = rows + weight * (lse * lse)
        gradient = gradient + (d(2.0) * weight * lse)[:, None] * held
    return s, rows, gradient


def _steps_squared_error(d: Steps, u: np.ndarray, loss) -> tuple:
    s = d.softmax(u)[0]
    g = s - d(loss.targets)
    return s, d(0.5) * d.sum(g * g), s * (g - d.sum(g * s)[:, None])


def _steps_bce(d: Steps, u: np.ndarray, loss) -> tuple:
    positive, negative = d(loss.positive), d(loss.negative)
    tail = d.apply(np.log1p, d.apply(np.exp, -np.abs(u)))
    zero = d(0.0)
    rows = d.sum(positive * (np.maximum(-u, zero) + tail) + negative * (np.maximum(u, zero) + tail))
    sigma = d.apply(lambda x: 1.0 / (1.0 + np.exp(-x)), u)
    return sigma, rows, (positive + negative) * sigma - positive


def _steps_focal(d: Steps, u: np.ndarray, loss) -> tuple:
    s, log_s, held, _ = d.softmax(u)
    at = np.arange(u.shape[0])
    log_y, p_y = log_s[at, loss.labels], held[at, loss.labels]
    alpha, rest = d(loss.alpha), d(1.0) - p_y
    powered = d.apply(lambda x: x**loss.gamma, rest)
    lowered = d.apply(lambda x: np.where(x > 0, x ** (loss.gamma - 1.0), 0.0), rest)
    by_log = alpha * (d(loss.gamma) * lowered * (p_y * log_y) - powered)
    gradient = -(held * by_log[:, None])
    gradient[at, loss.labels] = by_log - held[at, loss.labels] * by_log
    return s, -(alpha * powered * log_y), gradient


def _steps_kl(d: Steps, u: np.ndarray, loss) -> tuple:
    s, log_s, held, _ = d.softmax(u)
    p, log_p = d(loss.p), d(loss.log_p)
    return s, d.sum(p * (log_p - log_s)), held * d.sum(p)[:, None] - p


def _steps_reverse_kl(d: Steps, u: np.ndarray, loss) -> tuple:
    s, log_s, held, _ = d.softmax(u)
    g = log_s - d(loss.log_p)
    return s, d.sum(held * g), held * (g - d.sum(held * g)[:, None])


def _steps_jsd(d: Steps, u: np.ndarray, loss) -> tuple:
    s, log_s, q, _ = d.softmax(u)
    p, log_p, beta, keep = d(loss.p), d(loss.log_p), d(loss.beta), d(1.0 - loss.beta)
    mixture = beta * p + keep * q
    log_m = np.where(mixture > 0, d.apply(np.log, mixture), log_s)  # xlogy's 0 where M (so p and q) is 0
    zero = d(0.0)
    rows = beta * d.sum(np.where(p > 0, p * (log_p - log_m), zero)) + keep * d.sum(q * (log_s - log_m))
    g = keep * (log_s - log_m)
    return s, rows, q * (g - d.sum(q * g)[:, None])


STEPS = {"cross_entropy": _steps_cross_entropy, "mse": _steps_squared_error, "bce": _steps_bce,
         "focal": _steps_focal, "kl": _steps_kl, "reverse-kl": _steps_reverse_kl, "jsd": _steps_jsd}


def _steps(d: Steps, z: np.ndarray, loss) -> tuple:
    """The whole plain computation, step by step: transforms, u = z / T, the formula, 1 / T, the mean, the
    chain rule of the transforms, the weight T^2 of a distillation loss."""
    transform = getattr(loss, "transform", None)
    if transform is not None:
        scale, cap = d(transform.scale), d(transform.cap if transform.cap is not None else 1.0)
        y = z * scale if transform.scale != 1.0 else z
        t = d.apply(np.tanh, y / cap) if transform.cap is not None else None
        y = cap * t if t is not None else y
        s, rows, gradient = _steps(d, y, loss.inner)
        if t is not None:
            gradient = gradient * cap * (d(1.0) - t * t) / cap
        return s, rows, gradient * scale if transform.scale != 1.0 else gradient
    temperature = d(loss.temperature)
    u = z / temperature if loss.temperature != 1.0 else z
    s, rows, gradient = STEPS[loss.name](d, u, loss)
    if getattr(loss, "weight", 1.0) != 1.0:
        rows, gradient = rows * d(loss.weight), gradient * d(loss.weight)
    gradient = gradient / temperature if loss.temperature != 1.0 else gradient
    if loss.reduction in ("mean", "batchmean"):
        gradient = d.apply(lambda x: x / loss.normalizer, gradient)
    return s, rows, gradient


CASES = [  # (loss, options, targets kind)
    ("cross_entropy", {}, "labels"),
    ("cross_entropy", {"z_loss": 1e-2, "label_smoothing": 0.1, "temperature": 1.5}, "labels"),
    ("cross_entropy", {"softcap": 5.0, "logit_scale": 0.75}, "labels"),
    ("cross_entropy", {"reduction": "sum"}, "distributions"),
    ("mse", {"temperature": 0.5}, "distributions"),
    ("bce", {"pos_weight": (2.0,) * 37, "reduction": "none"}, "multilabel"),
    ("focal", {"gamma": 2.0, "alpha": 0.25}, "labels"),
    ("focal", {"gamma": 0.5, "softcap": 3.0}, "labels"),
    ("kl", {"reduction": "batchmean", "temperature": 2.0, "t2_scaling": True}, "teacher"),
    ("reverse-kl", {"reduction": "sum"}, "teacher"),
    ("jsd", {"beta": 0.3, "reduction": "mean"}, "teacher"),
    ("jsd", {"beta": 0.5, "reduction": "sum", "temperature": 0.5, "scale": 16.0}, "teacher"),  # q and M underflow
]


def _batch(rows: int, classes: int, kind: str, dtype: str, seed: int = 4, scale: float = 3.0) -> Batch:
    """A batch whose logits (and teacher logits) lie on the dtype's grid."""
    rng = np.random.default_rng(seed)
    logits = round_to(rng.standard_normal((rows, classes)) * scale, dtype)
    labels = rng.integers(0, classes, rows)
    targets = np.eye(classes)[labels]
    teacher = None
    if kind == "distributions":
        targets, labels = rng.dirichlet(np.ones(classes), rows), None
    elif kind == "multilabel":
        targets, labels = rng.uniform(0, 1, (rows, classes)), None
    elif kind == "teacher":
        teacher = round_to(rng.standard_normal((rows, classes)) * scale, dtype)
        targets, labels = teacher, None  # as the readers set them
    return Batch(logits=logits, labels=labels, targets=targets, teacher_logits=teacher)


def _loss(name: str, options: dict, batch: Batch):
    settings = differences.resolve(Settings(loss=name, **options))
    return loss_kind(name).build(batch, settings, np.dtype(np.float64))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize(("name", "options", "kind"), CASES)
def test_baseline_equals_an_independent_step_by_step_computation(name, options, kind, dtype: str) -> None:
    """Protects every loss's plain formula and the rounding evaluator: the baseline's probabilities, row losses
    and gradient are, bit for bit, those of the same formula computed in the dtype's own arrays."""
    options = dict(options)
    batch = _batch(5, 37, kind, dtype, scale=options.pop("scale", 3.0))
    loss = _loss(name, options, batch)
    ours = baselines.plain_baseline(batch.logits, loss, dtype)
    with np.errstate(all="ignore"):
        steps = Steps(dtype)
        theirs = [np.asarray(x, dtype=np.float64) for x in _steps(steps, steps(batch.logits), loss)]
    assert np.isfinite(ours.row_losses).all() and np.isfinite(ours.gradient).all()
    for label, mine, expected in zip(("probabilities", "rows", "gradient"),
                                     (ours.probabilities, ours.row_losses, ours.gradient), theirs, strict=True):
        assert np.array_equal(np.asarray(mine, dtype=np.float64), expected, equal_nan=True), (label, mine, expected)


def test_chunks_change_nothing(monkeypatch) -> None:
    """Protects the row chunks: the baseline computed 3 rows at a time equals the one computed whole, and its
    reduced loss is the pairwise sum over every row, not per chunk; rounding in place never touches the
    loss's own arrays or the logits."""
    batch = _batch(10, 37, "labels", "bfloat16")
    batch.logits += 1e-3  # off the grid: rounding them in place would show
    loss = _loss("cross_entropy", {"z_loss": 1e-2, "softcap": 4.0, "label_smoothing": 0.1}, batch)
    kept = [batch.logits.copy(), loss.inner.coefficients.copy(), loss.inner.z_weights.copy()]
    whole = baselines.plain_baseline(batch.logits, loss, "bfloat16")
    for before, after in zip(kept, [batch.logits, loss.inner.coefficients, loss.inner.z_weights], strict=True):
        assert np.array_equal(before, after)
    monkeypatch.setattr(baselines, "CHUNK_ELEMENTS", 3 * 37)
    chunked = baselines.plain_baseline(batch.logits, loss, "bfloat16")
    for mine, theirs in zip(chunked, whole, strict=True):
        assert np.array_equal(mine, theirs), (mine, theirs)
    rows = np.asarray(whole.row_losses)
    assert float(chunked.loss) == float(round_to(precision.rounded_sum(rows, "bfloat16") / 10.0, "bfloat16"))


def test_baseline_temporaries_are_bounded_by_the_chunk() -> None:
    """Protects the memory bound: at 64 x 131,072 bfloat16 (8.4 M logits) the baseline's peak beyond its inputs
    is its two float32 N x C results (64 MB) and a few chunk-sized temporaries (2 MB each): under 100 MB, where
    an unchunked float64 computation makes a dozen 67 MB arrays. VmHWM in a child, which starts clean."""
    import subprocess
    import sys

    code = """
import numpy as np
from gradcheck_cli.numerics.baselines import plain_baseline
from gradcheck_cli.numerics.losses.cross_entropy import CrossEntropy
rows, classes = 64, 131072
logits = np.zeros((rows, classes)); logits[:, ::7] = 1.5
coefficients = np.zeros((rows, classes)); coefficients[:, 3] = 1.0
loss = CrossEntropy("mean", float(rows), 1.0, coefficients=coefficients)
def high():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
before = high()
plain_baseline(logits, loss, "bfloat16")
print(high() - before)
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert int(run.stdout) < 100 * 1024, run.stdout


# --- the verdicts, for every loss ------------------------------------------------------------------------------


def _softmax32(u: np.ndarray, running: bool) -> np.ndarray:
    """softmax in float32, or (running) with its class sum accumulated in bfloat16, each add rounded."""
    exps = np.exp(u - u.max(axis=-1, keepdims=True))
    if not running:
        return exps / exps.sum(axis=-1, keepdims=True)
    low = exps.astype(ml_dtypes.bfloat16)
    total = np.add.accumulate(low, axis=-1)[:, -1:].astype(np.float32)  # the planted bug: no upcast
    return low.astype(np.float32) / total


def _user_gradient(name: str, options: dict, batch: Batch, running: bool) -> np.ndarray:
    """A user's float32 implementation of the loss's gradient (mean-type reductions as CASES use them), rounded
    to bfloat16 once; `running` plants the bfloat16 class sum into its softmax."""
    z = batch.logits.astype(np.float32)
    rows, classes = z.shape
    temperature = np.float32(options.get("temperature", 1.0))
    slope = np.ones_like(z)
    if "logit_scale" in options or "softcap" in options:
        scale, cap = np.float32(options.get("logit_scale", 1.0)), np.float32(options.get("softcap", 1e30))
        t = np.tanh(z * scale / cap)
        z, slope = cap * t, scale * (1 - t * t)
    u = z / temperature
    s = _softmax32(u, running)
    if name == "cross_entropy":
        y = np.eye(classes, dtype=np.float32)[batch.labels]
        gradient = (s - y) / rows
        if "z_loss" in options:
            lse = np.log(np.exp(u - u.max(-1, keepdims=True)).sum(-1)) + u.max(-1)
            gradient = gradient + 2 * np.float32(options["z_loss"]) * lse[:, None] * s / rows
        if "label_smoothing" in options:
            smoothing = np.float32(options["label_smoothing"])
            gradient = (s - ((1 - smoothing) * y + smoothing / classes)) / rows + (gradient - (s - y) / rows)
    elif name == "focal":
        at = np.arange(rows)
        s_y = s[at, batch.labels]
        rest, log_y, gamma = 1 - s_y, np.log(s_y), np.float32(options["gamma"])
        alpha = np.float32(options.get("alpha", 1.0))
        bracket = alpha * rest**gamma * (gamma * s_y * log_y / rest - 1)
        gradient = bracket[:, None] * (np.eye(classes, dtype=np.float32)[batch.labels] - s) / rows
    elif name == "mse":
        g = s - batch.targets.astype(np.float32)
        gradient = s * (g - (g * s).sum(-1, keepdims=True)) / rows
    else:  # the distillation losses, against the teacher's float32 softmax
        teacher = batch.teacher_logits.astype(np.float32) / temperature
        p = _softmax32(teacher, False)
        gradient = _distillation_gradient(name, options, s, p) / (rows * (classes if options["reduction"] == "mean"
                                                                          else 1))
        gradient = gradient * (temperature**2 if options.get("t2_scaling") else 1)
    return round_to(gradient * slope / temperature, "bfloat16")


def _distillation_gradient(name: str, options: dict, q: np.ndarray, p: np.ndarray) -> np.ndarray:
    """By u, per row: q - p (kl); q (g - <q, g>) with g = log q - log p (reverse-kl) or (1 - beta) log(q / M)."""
    if name == "kl":
        return q - p
    if name == "reverse-kl":
        g = np.log(q) - np.log(p)
    else:
        beta = np.float32(options["beta"])
        g = (1 - beta) * (np.log(q) - np.log(beta * p + (1 - beta) * q))
    return q * (g - (q * g).sum(-1, keepdims=True))


VERDICT_CASES = [case for case in CASES if case[0] != "bce" and case[1].get("reduction") != "sum"]
VERDICT_CASES += [("kl", {"reduction": "batchmean"}, "teacher"), ("reverse-kl", {"reduction": "batchmean"}, "teacher")]


def _verdicts(name: str, options: dict, batch: Batch, **values) -> dict[str, bool]:
    targets = batch.targets if batch.labels is None and batch.teacher_logits is None else None
    report = check(batch.logits, batch.labels, targets, loss=name,
                   dtype="bfloat16", teacher_logits=batch.teacher_logits, **options, **values)
    return {entry.name: entry.passed for entry in report.checks}


@pytest.mark.parametrize(("name", "options", "kind"), VERDICT_CASES)
def test_upcast_passes_and_bfloat16_accumulation_fails_the_baseline(name, options, kind) -> None:
    """Protects the baseline verdict of every softmax loss (issue 18's planted bug, issue 14's --dtype for every
    loss): a float32 implementation rounded once to bfloat16 passes both verdicts on its gradient; the same
    code with its class sum accumulated in bfloat16 over 1,024 classes fails the baseline verdict. jsd over
    2,048 (one row, logits of scale 0.5): its gradient's gross scale holds the |log q| and |log M| its logs
    are computed from, ~100 times the element, and over 1,024 classes of scale 1 the 26 % error of every
    element is 0.74 of its ulp, below the floor (checks/precision.py)."""
    if name == "jsd":
        batch = _batch(1, 2048, kind, "bfloat16", seed=18, scale=0.5)
    else:
        batch = _batch(3, 1024, kind, "bfloat16", seed=18, scale=1.0)
    upcast = _verdicts(name, options, batch, gradient=_user_gradient(name, options, batch, running=False))
    assert upcast["supplied gradient"] and upcast["supplied gradient vs bfloat16 baseline"], upcast
    running = _verdicts(name, options, batch, gradient=_user_gradient(name, options, batch, running=True))
    assert not running["supplied gradient vs bfloat16 baseline"], running


def _bce_user(batch: Batch, running: bool) -> tuple[np.ndarray, np.ndarray]:
    """torch's stable BCE in float32 per element (pos_weight 2), reduction none: row losses summed over the
    classes in float32, or (running) accumulated in bfloat16; the gradient rounded once."""
    x, t = batch.logits.astype(np.float32), batch.targets.astype(np.float32)
    elements = (1 - t) * x + (1 + t) * (np.log1p(np.exp(-np.abs(x))) + np.maximum(-x, 0))
    rows = (np.add.accumulate(elements.astype(ml_dtypes.bfloat16), axis=-1)[:, -1] if running
            else elements.sum(-1))
    sigma = 1 / (1 + np.exp(-x))
    return round_to(rows.astype(np.float64), "bfloat16"), round_to((2 * t + 1 - t) * sigma - 2 * t, "bfloat16")


@pytest.mark.parametrize("running", [False, True])
def test_bce_row_loss_accumulated_in_bfloat16_fails_the_baseline(running: bool) -> None:
    """Protects bce's baseline: its gradient is elementwise (no class sum to accumulate), so the planted bug is
    in its row losses (reduction none): summed in float32 they pass both verdicts, a running bfloat16 sum over
    1,024 classes (stalling where an add is below half its ulp) fails the baseline verdict."""
    batch = _batch(3, 1024, "multilabel", "bfloat16", seed=18, scale=1.0)
    loss, gradient = _bce_user(batch, running)
    verdicts = _verdicts("bce", {"pos_weight": (2.0,) * 1024, "reduction": "none"}, batch, loss_value=loss,
                         gradient=gradient)
    assert verdicts["supplied gradient"] and verdicts["supplied gradient vs bfloat16 baseline"], verdicts
    assert verdicts["supplied loss vs bfloat16 baseline"] is not running, verdicts


@pytest.mark.parametrize(("running", "exit_code"), [(False, 0), (True, 1)])
def test_jsd_values_in_a_json_file_through_the_cli(gradcheck, tmp_path, running: bool, exit_code: int) -> None:
    """Protects the CLI path: a JSON file with teacher logits and a bfloat16 jsd gradient (2,048 classes) gets
    both verdicts, exit 0 for the upcast code and exit 1 for the bfloat16 accumulation, the baseline failing."""
    options = {"beta": 0.3, "reduction": "batchmean"}
    batch = _batch(1, 2048, "teacher", "bfloat16", seed=18, scale=0.5)
    gradient = _user_gradient("jsd", options, batch, running)
    path = tmp_path / "jsd.json"
    path.write_text(json.dumps({"logits": batch.logits.tolist(), "teacher_logits": batch.teacher_logits.tolist(),
                                "gradient": gradient.tolist()}))
    run = gradcheck("check", "-i", str(path), "--loss", "jsd", "--beta", "0.3", "--reduction", "batchmean",
                    "--dtype", "bfloat16", "-f", "json")
    assert run.exit_code == exit_code, run
    verdicts = {entry["name"]: entry for entry in json.loads(run.stdout)["checks"]}
    baseline = verdicts["supplied gradient vs bfloat16 baseline"]
    assert baseline["passed"] is not running and baseline["baseline"]["dtype"] == "bfloat16", baseline


def test_z_loss_values_in_a_json_file_get_the_baseline_verdict(gradcheck, tmp_path) -> None:
    """Protects --z-loss at bfloat16 with supplied values (refused before this baseline existed): both verdicts
    are given, and a correct gradient passes them."""
    options = {"z_loss": 1e-2}
    batch = _batch(2, 50, "labels", "bfloat16", seed=3)
    path = tmp_path / "z.json"
    gradient = _user_gradient("cross_entropy", options, batch, running=False)
    path.write_text(json.dumps({"logits": batch.logits.tolist(), "labels": batch.labels.tolist(),
                                "gradient": gradient.tolist()}))
    run = gradcheck("check", "-i", str(path), "--dtype", "bfloat16", "--z-loss", "1e-2", "-f", "json")
    assert run.exit_code == 0, run
    names = [entry["name"] for entry in json.loads(run.stdout)["checks"]]
    assert "supplied gradient vs bfloat16 baseline" in names, names


def test_a_held_log_sum_exp_widens_the_gradient_tolerance() -> None:
    """Protects verdict (a) for a z-loss whose code holds lse in the dtype: each gradient element's rounding term
    u (1 + lambda) N takes lambda = max(|log s_j|, |lse|) (float16: u = 2^-11), and nothing changes without it
    or for other quantities."""
    from gradcheck_cli.checks.precision import half_precision_tolerance

    expected, gross = np.array([[0.5, -0.5]]), np.array([[1.0, 2.0]])
    log_s = np.log(np.array([[0.25, 0.75]]))
    plain = half_precision_tolerance("gradient", expected, gross, log_s, "float16")
    held = half_precision_tolerance("gradient", expected, gross, log_s, "float16", lse=np.array([118.0]))
    base = 1e-5 + 1e-3 * 0.5
    assert plain == pytest.approx(base + 2.0**-11 * (1 + np.abs(log_s)) * gross, rel=1e-15)
    assert held == pytest.approx(base + 2.0**-11 * 119.0 * gross, rel=1e-15)
    loss = half_precision_tolerance("loss", np.array(1.0), np.array(3.0), log_s, "float16", lse=np.array([118.0]))
    assert loss == pytest.approx(1e-5 + 1e-3 + 2.0**-11 * 3.0, rel=1e-15)


def test_baseline_check_sums_in_chunks_as_whole(monkeypatch) -> None:
    """Protects baseline_check's chunked sums: one row at a time gives the figures, the worst element (the first
    of equal ones) and the verdict of one pass over the whole array, NaN included."""
    from gradcheck_cli.checks import precision as checks_precision

    rng = np.random.default_rng(9)
    expected = rng.standard_normal((7, 5))
    gross = np.abs(expected) + 0.5
    actual = round_to(expected, "bfloat16")
    baseline = round_to(expected * (1 + 2.0**-9), "bfloat16").astype(np.float32)
    actual[2, 3], actual[4, 1] = expected[2, 3] + 0.25, expected[4, 1] + 0.25  # equal worst errors
    gross[4, 1] = gross[2, 3]
    whole = checks_precision.baseline_check("g", actual, expected, baseline, gross, "bfloat16", "y")
    monkeypatch.setattr(checks_precision, "_CHUNK_ELEMENTS", 5)
    rows = checks_precision.baseline_check("g", actual, expected, baseline, gross, "bfloat16", "y")
    assert rows == whole and whole.worst_index == (2, 3) and not whole.passed, (rows, whole)
    figures = whole.baseline
    assert figures is not None and figures.error == pytest.approx(0.25, rel=1e-12)
    unit = precision.spacing(gross, "bfloat16")
    by_hand = np.sqrt(np.mean(np.square((actual - expected) / unit)))
    assert figures.ulps == pytest.approx(by_hand, rel=1e-12)
    actual[5, 0] = np.nan
    nan = checks_precision.baseline_check("g", actual, expected, baseline, gross, "bfloat16", "y")
    assert not nan.passed and nan.worst_index == (5, 0) and nan.baseline is not None and nan.baseline.error is None


def test_teacher_logits_are_held_at_the_dtype_as_the_logits_are() -> None:
    """Protects the reference at the inputs as rounded to the dtype, teacher logits included: a kernel casts
    the teacher's logits to bfloat16 as it casts the student's, so a correct float32 kl gradient computed from
    both rounded passes, though the teacher's logits given (scale 20) are off the grid by up to 2^-9 relative,
    a change of up to ~4 % in p (e^0.04 - 1), over the 1.6e-2 of the bfloat16 tolerance if the reference kept
    them unrounded."""
    rng = np.random.default_rng(7)
    batch = _batch(3, 256, "teacher", "bfloat16", seed=7, scale=1.0)
    given = rng.standard_normal(batch.logits.shape) * 20.0  # off the grid
    rounded = Batch(logits=batch.logits, labels=None, targets=round_to(given, "bfloat16"),
                    teacher_logits=round_to(given, "bfloat16"))
    gradient = _user_gradient("kl", {"reduction": "batchmean"}, rounded, running=False)
    report = check(batch.logits, loss="kl", reduction="batchmean", dtype="bfloat16", teacher_logits=given,
                   gradient=gradient)
    verdicts = {entry.name: entry.passed for entry in report.checks}
    assert verdicts["supplied gradient"] and verdicts["supplied gradient vs bfloat16 baseline"], verdicts
