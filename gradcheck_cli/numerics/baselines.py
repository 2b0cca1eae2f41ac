"""The plain same-dtype implementation of every loss: what the baseline verdict (checks/precision.py) holds a
user's bfloat16 or float16 error to.

Each loss's formula is written once below, as a straightforward kernel writes it, and evaluated by a rounding
evaluator (`Plain`): every operation is computed in float64 from values on the format's grid and rounded to
the format (through float32, as a float32 unit rounds it), and every sum is pairwise with each partial sum
rounded (a tree, as numpy and GPU reductions add: a sum of C terms errs by about u log2 C, not the u C of a
running sum). The forward is the formula's own; the backward is autograd's where the formula is autograd's
(log_softmax's backward takes exp of the log-probabilities the forward kept in the dtype), and the
vector-Jacobian product q (g - <q, g>) a fused kernel writes for reverse-kl and jsd. Inputs a kernel holds
in the dtype (cross-entropy's coefficients, bce's P and Q, the teacher's p and log p, alpha, S, A, C, T) are
rounded to it once.

The work is done in chunks of rows (CHUNK_ELEMENTS logits each), so its temporaries are a few chunk-sized
float64 arrays whatever N; what it returns is the N x C probabilities and gradient as float32 (exact on
these grids) and the N row losses. Every row is computed on its own, so the chunks change nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, replace
from typing import Any, NamedTuple

import numpy as np

from gradcheck_cli.errors import InputError
from gradcheck_cli.numerics.precision import Baseline, round_to, rounded_sum
from gradcheck_cli.settings import DIVIDING_REDUCTIONS

CHUNK_ELEMENTS = 1 << 18  # logits per chunk: each float64 temporary is 2 MB, whatever N x C


class Plain(NamedTuple):
    """The rounding evaluator: plain(x) is one operation's result x (a fresh array, rounded in place: no copy)
    rounded to the dtype; plain.given(x) an input held in the dtype (copied: the caller's array is kept)."""

    dtype: str

    def __call__(self, values: Any) -> np.ndarray:
        result = np.asarray(values, dtype=np.float64)
        if result.ndim and result.flags.owndata and result.flags.writeable:
            return round_to(result, self.dtype, out=result)
        return round_to(result, self.dtype)

    def given(self, values: Any) -> np.ndarray:
        return round_to(np.array(values, dtype=np.float64), self.dtype)

    def sum(self, values: np.ndarray) -> np.ndarray:
        """Over the last axis, pairwise, every partial sum rounded."""
        return rounded_sum(values, self.dtype)

    def softmax(self, u: np.ndarray) -> PlainSoftmax:
        """softmax and log_softmax of u as a kernel computes them: u - max u, exp, their sum, a division and
        a log; `held` is exp of the kept log-probabilities (what autograd's log_softmax backward uses)."""
        top = u.max(axis=-1, keepdims=True)
        shifted = self(u - top)
        exps = self(np.exp(shifted))
        total = self.sum(exps)[:, None]
        log_total = self(np.log(total))
        log_s = self(shifted - log_total)
        return PlainSoftmax(self(exps / total), log_s, self(np.exp(log_s)), self(top + log_total)[:, 0])


class PlainSoftmax(NamedTuple):
    s: np.ndarray
    log_s: np.ndarray
    held: np.ndarray  # exp(log_s), rounded
    lse: np.ndarray  # max u + log sum exp(u - max u), per row


class Parts(NamedTuple):
    """A formula's result for a chunk: probabilities, row losses, gradient by u = z / T (before 1 / T)."""

    probabilities: np.ndarray
    rows: np.ndarray
    gradient: np.ndarray


def cross_entropy(r: Plain, u: np.ndarray, loss: Any) -> Parts:
    """l = -sum_c a_c log s_c (+ S lse^2), gradient s A - a (+ 2 S lse s), s = exp of the kept log s."""
    soft = r.softmax(u)
    a = r.given(loss.coefficients)
    rows = -r.sum(r(a * soft.log_s))
    gradient = r(r(soft.held * r.sum(a)[:, None]) - a)
    if loss.z_weights is not None:  # PaLM's z-loss: S lse^2, S per row (0 on an ignored row)
        weight = r.given(loss.z_weights)
        rows = r(rows + r(weight * r(soft.lse * soft.lse)))
        gradient = r(gradient + r(r(2.0 * weight * soft.lse)[:, None] * soft.held))
    return Parts(soft.s, rows, gradient)


def squared_error(r: Plain, u: np.ndarray, loss: Any) -> Parts:
    """l = 1/2 sum_k (s_k - t_k)^2, gradient s (g - <g, s>), g = s - t."""
    s = r.softmax(u).s
    g = r(s - r.given(loss.targets))
    rows = r(0.5 * r.sum(r(g * g)))
    return Parts(s, rows, r(s * r(g - r.sum(r(g * s))[:, None])))


def binary_cross_entropy(r: Plain, u: np.ndarray, loss: Any) -> Parts:
    """torch's stable form per element: P softplus(-x) + Q softplus(x), softplus(+-x) = max(+-x, 0) +
    log1p(exp(-|x|)); gradient (P + Q) sigma(x) - P. sigma is one rounded operation (torch computes it in
    float32 and rounds once)."""
    positive, negative = r.given(loss.positive), r.given(loss.negative)
    tail = r(np.log1p(r(np.exp(-np.abs(u)))))
    below, above = r(np.maximum(-u, 0.0) + tail), r(np.maximum(u, 0.0) + tail)
    rows = r.sum(r(r(positive * below) + r(negative * above)))
    sigma = r(np.exp(-np.logaddexp(0.0, -u)))
    return Parts(sigma, rows, r(r(r(positive + negative) * sigma) - positive))


def focal(r: Plain, u: np.ndarray, loss: Any) -> Parts:
    """torch ops on log_softmax: L = log s_y, p = exp(L), l = -alpha (1 - p)^gamma L; autograd's backward:
    dl/dL = alpha (gamma (1 - p)^(gamma - 1) p L - (1 - p)^gamma) (its first term 0 where 1 - p is 0, the
    limit a kernel guards), then log_softmax's: dl/du_j = dl/dL (delta_jy - s_j)."""
    soft = r.softmax(u)
    rows_at = np.arange(u.shape[0])
    log_y, p_y = soft.log_s[rows_at, loss.labels], soft.held[rows_at, loss.labels]
    alpha, gamma = r.given(loss.alpha), loss.gamma
    rest = r(1.0 - p_y)
    powered = r(rest**gamma)
    losses = -r(r(alpha * powered) * log_y)
    first = np.zeros_like(rest)
    if gamma != 0.0:
        with np.errstate(divide="ignore"):
            lowered = np.where(rest > 0, r(rest ** (gamma - 1.0)), 0.0)
        first = r(r(gamma * lowered) * r(p_y * log_y))
    by_log = r(alpha * r(first - powered))
    product = r(soft.held * by_log[:, None])
    gradient = -product
    gradient[rows_at, loss.labels] = r(by_log - product[rows_at, loss.labels])
    return Parts(soft.s, losses, gradient)


def forward_kl(r: Plain, u: np.ndarray, loss: Any) -> Parts:
    """w sum p (log p - log q) (torch's kl_div of log_softmax), gradient w (q sum p - p) (autograd's)."""
    soft = r.softmax(u)
    p, log_p = r.given(loss.p), r.given(loss.log_p)
    rows = r.sum(r(p * r(log_p - soft.log_s)))
    gradient = r(r(soft.held * r.sum(p)[:, None]) - p)
    return _weighted(r, loss, Parts(soft.s, rows, gradient))


def reverse_kl(r: Plain, u: np.ndarray, loss: Any) -> Parts:
    """w sum q (log q - log p); gradient w q (g - <q, g>), g = log q - log p (the +1 of d/dq cancels)."""
    soft = r.softmax(u)
    g = r(soft.log_s - r.given(loss.log_p))
    rows = r.sum(r(soft.held * g))
    return _weighted(r, loss, Parts(soft.s, rows, _vector_jacobian(r, soft.held, g)))


def jensen_shannon(r: Plain, u: np.ndarray, loss: Any) -> Parts:
    """Liger-Kernel's JSD: M = beta p + (1 - beta) q, w (beta sum p (log p - log M) + (1 - beta) sum q (log q -
    log M)); gradient w q (g - <q, g>), g = (1 - beta)(log q - log M). Where M rounds to 0, p and q are 0 and
    so is every term weighted by them (xlogy's convention, as torch's kl_div): log M is taken as log q there,
    not -inf, whose 0 x inf would make the whole row NaN."""
    soft = r.softmax(u)
    p, log_p, q = r.given(loss.p), r.given(loss.log_p), soft.held
    beta, keep = r.given(loss.beta), r.given(1.0 - loss.beta)
    mixture = r(r(beta * p) + r(keep * q))
    log_m = np.where(mixture > 0, r(np.log(mixture)), soft.log_s)
    teacher = r(beta * r.sum(np.where(p > 0, r(p * r(log_p - log_m)), 0.0)))
    student = r(keep * r.sum(r(q * r(soft.log_s - log_m))))
    g = r(keep * r(soft.log_s - log_m))
    return _weighted(r, loss, Parts(soft.s, r(teacher + student), _vector_jacobian(r, q, g)))


def _vector_jacobian(r: Plain, q: np.ndarray, g: np.ndarray) -> np.ndarray:
    return r(q * r(g - r.sum(r(q * g))[:, None]))


def _weighted(r: Plain, loss: Any, parts: Parts) -> Parts:
    """The distillation losses' T^2 factor w (Hinton), one product each, when it is not 1."""
    if loss.weight == 1.0:
        return parts
    weight = r.given(loss.weight)
    return parts._replace(rows=r(parts.rows * weight), gradient=r(parts.gradient * weight))


Formula = Callable[[Plain, np.ndarray, Any], Parts]
# loss name (its Loss object's `name`) -> its plain formula
FORMULAS: dict[str, Formula] = {
    "cross_entropy": cross_entropy,
    "mse": squared_error,
    "bce": binary_cross_entropy,
    "focal": focal,
    "kl": forward_kl,
    "reverse-kl": reverse_kl,
    "jsd": jensen_shannon,
}


def plain_baseline(logits: np.ndarray, loss: Any, dtype: str) -> Baseline:
    """The loss computed plainly in `dtype` at `logits` (on the format's grid already), chunk by chunk of rows;
    the reduced loss is the pairwise rounded sum of all its rows, divided by the normaliser for a mean."""
    _formula(loss)  # refuses a loss without one before any work
    rows, classes = logits.shape
    probabilities = np.empty((rows, classes), dtype=np.float32)
    gradient = np.empty((rows, classes), dtype=np.float32)
    row_losses = np.empty(rows)
    r = Plain(dtype)
    step = max(1, CHUNK_ELEMENTS // max(classes, 1))
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        for start in range(0, rows, step):
            part = slice(start, min(start + step, rows))
            chunk = _chunk(r, np.asarray(logits[part], dtype=np.float64), _rows_of(loss, part, rows))
            probabilities[part], row_losses[part], gradient[part] = chunk
        total = row_losses
        if loss.reduction != "none":
            total = r.sum(row_losses)
            if loss.reduction in DIVIDING_REDUCTIONS:
                total = r(total / loss.normalizer)
    return Baseline(probabilities, row_losses, np.asarray(total), gradient, loss.activation)


def _chunk(r: Plain, z: np.ndarray, loss: Any) -> Parts:
    """One chunk: the logit transforms (if any) around the loss's formula of u = z / T, then d/dz."""
    transform = getattr(loss, "transform", None)
    if transform is not None:  # transformed.Transformed: the formula of its inner loss at y = g(z)
        return _transformed(r, z, loss, transform)
    temperature = r.given(loss.temperature)
    u = z if loss.temperature == 1.0 else r(z / temperature)
    parts = FORMULAS[loss.name](r, u, loss)
    gradient = parts.gradient if loss.temperature == 1.0 else r(parts.gradient / temperature)
    if loss.reduction in DIVIDING_REDUCTIONS:
        gradient = r(gradient / loss.normalizer)
    return parts._replace(gradient=gradient)


def _transformed(r: Plain, z: np.ndarray, loss: Any, transform: Any) -> Parts:
    """y = A z, then C tanh(y / C) (each step rounded), and autograd's chain rule back: C, 1 - t^2, 1 / C, A."""
    scale = r.given(transform.scale)
    y = z if transform.scale == 1.0 else r(z * scale)
    if transform.cap is not None:
        cap = r.given(transform.cap)
        t = r(np.tanh(r(y / cap)))
        y = r(cap * t)
    parts = _chunk(r, y, loss.inner)
    gradient = parts.gradient
    if transform.cap is not None:
        gradient = r(r(r(gradient * cap) * r(1.0 - r(t * t))) / cap)
    if transform.scale != 1.0:
        gradient = r(gradient * scale)
    return parts._replace(gradient=gradient)


def _formula(loss: Any) -> Formula:
    name = str(getattr(loss, "name", type(loss).__name__))
    if name not in FORMULAS:
        raise InputError(f"--loss {name} has no plain half-precision implementation for the baseline verdict; "
                         "check your values with --dtype float32 or float64")
    return FORMULAS[name]


def _rows_of(loss: Any, part: slice, rows: int) -> Any:
    """The loss cut to the rows `part`: every per-row array field (first axis the N rows), a wrapped loss too."""
    cut = {}
    for field in fields(loss):
        value = getattr(loss, field.name)
        if isinstance(value, np.ndarray) and value.ndim and value.shape[0] == rows:
            cut[field.name] = value[part]
        elif hasattr(value, "reduction") and hasattr(value, "normalizer"):  # an inner loss
            cut[field.name] = _rows_of(value, part, rows)
    return replace(loss, **cut) if cut else loss
