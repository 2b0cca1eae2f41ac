"""Binary cross-entropy with logits, torch.nn.functional.binary_cross_entropy_with_logits' semantics: every class
an independent yes/no with its own sigmoid, multi-label targets in [0, 1] (N x C), pos_weight, per-class weight,
temperature; mean divides by N x C, and none gives each row's sum over its classes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from gradcheck_cli.batch import Batch
from gradcheck_cli.errors import InputError
from gradcheck_cli.numerics.differences import Perturbation
from gradcheck_cli.numerics.losses.base import Loss, LossKind, Scales, formatted_lines, shown, shown_each
from gradcheck_cli.numerics.sigmoid import sigmoid_parts, sigmoid_perturbation
from gradcheck_cli.numerics.softmax import Softmax
from gradcheck_cli.settings import Settings


@dataclass(eq=False, repr=False)  # holds arrays: == has no truth value; each generated method costs start-up
class BinaryCrossEntropy(Loss):
    """l_n = sum_j P_j softplus(-x_j) + Q_j softplus(x_j), x = z / T, with P = w p t and Q = w (1 - t) (w the
    class weight, p the pos_weight): -log sigma(x) = softplus(-x) and -log(1 - sigma(x)) = softplus(x), so no
    log of a rounded 0 at x = -120 (pytorch #13773). dl/dz_j = (Q_j sigma(x_j) - P_j sigma(-x_j)) / T: each
    term positive, nothing cancels (the stable form pytorch #2221 got a sign of wrong)."""

    positive: np.ndarray  # P = w p t
    negative: np.ndarray  # Q = w (1 - t)
    name: str = "bce"
    activation: ClassVar[str] = "sigmoid"

    def softmax(self, logits: np.ndarray, given: Softmax | None = None) -> Softmax:
        """The loss's probabilities: sigma(z / T) per class (numerics/sigmoid.py), in the Softmax shape. A `given`
        one is ignored: callers that compute softmax(z / T) for every loss hand one that is not this loss's, and
        one exp per logit more costs less than a wrong verdict."""
        return sigmoid_parts(logits / self.temperature)

    def row_losses(self, logits: np.ndarray, given: Softmax | None = None) -> np.ndarray:
        x = logits / self.temperature
        return (self.positive * np.logaddexp(0, -x) + self.negative * np.logaddexp(0, x)).sum(axis=-1)

    def row_gradients(self, logits: np.ndarray, given: Softmax | None = None) -> np.ndarray:
        parts = self.softmax(logits, given)
        return (self.negative * parts.s - self.positive * parts.complement) / self.temperature

    def perturbation(self, base: np.ndarray, given: Softmax | None = None) -> Perturbation:
        """l(z + d e_j) - l(z) exactly: softplus(x + u) - softplus(x) = log1p(sigma(x) (e^u - 1)) and
        softplus(-x - u) - softplus(-x) = log1p(sigma(-x) (e^-u - 1)), u = d / T; only class j moves."""
        parts = self.softmax(base, given)
        s, complement, p, q = parts.s, parts.complement, self.positive, self.negative

        def perturb(column: int | slice, offsets: np.ndarray) -> np.ndarray:
            u = offsets / self.temperature
            return (p[:, column] * np.log1p(complement[:, column] * np.expm1(-u))
                    + q[:, column] * np.log1p(s[:, column] * np.expm1(u)))

        return perturb

    def gradient_perturbation(self, base: np.ndarray, given: Softmax | None = None) -> Perturbation:
        """g(z + d e_j) - g(z): only g_j moves, by (P_j + Q_j) (sigma(x_j + u) - sigma(x_j)) / T, scaled."""
        parts = self.softmax(base, given)
        mass = (self.positive + self.negative) * self.factor

        def perturb(column: int | slice, offsets: np.ndarray) -> np.ndarray:
            change = np.zeros(np.broadcast_shapes(mass.shape, np.shape(offsets)), dtype=np.result_type(offsets, 1.0))
            rise = sigmoid_perturbation(parts.s, parts.complement, column, offsets / self.temperature)
            change[:, column] = rise * mass[:, column]
            return change

        return perturb

    def hessian(self, logits: np.ndarray) -> np.ndarray:
        """Diagonal: (P_j + Q_j) sigma(x_j) sigma(-x_j) / T^2, scaled; every class is independent of the others."""
        parts = self.softmax(logits)
        diagonal = (self.positive + self.negative) * parts.s * parts.complement * (self.factor / self.temperature)
        hessian = np.zeros(diagonal.shape + diagonal.shape[-1:], dtype=diagonal.dtype)
        index = np.arange(diagonal.shape[-1])
        hessian[:, index, index] = diagonal
        return hessian

    def gradient_scales(self, logits: np.ndarray, given: Softmax | None = None) -> Scales:
        """The element (P + Q) sigma - P along u_j: every u-derivative is (P + Q) sigma^(k), so S = (P + Q)
        sigma (1 - sigma), as cross-entropy's A s (1 - s) (differences.py's D bounds it); N = (P + Q) sigma + P,
        the terms of the straightforward (P + Q) sigma - P (torch's, which cancels where sigma is near 1: it is
        correct to its rounding); G = max (P + Q); all over T and scaled."""
        parts = self.softmax(logits, given)
        mass = self.positive + self.negative
        gross = mass * parts.s + self.positive
        row = mass.max(axis=-1, keepdims=True) if mass.size else np.zeros((mass.shape[0], 1))
        return Scales(mass * parts.s * parts.complement * self.factor, gross * self.factor, row * self.factor)

    def hessian_scales(self, logits: np.ndarray, given: Softmax | None = None) -> Scales:
        """On the diagonal S = (P + Q) sigma (1 - sigma) / T^2 scaled (its u-derivatives (P + Q) sigma^(k+1)),
        N = (P + Q) sigma / T^2 scaled; off it 0 (both sides are exactly 0)."""
        parts = self.softmax(logits, given)
        mass = (self.positive + self.negative) * (self.factor / self.temperature)
        size, gross = np.zeros(mass.shape + mass.shape[-1:]), np.zeros(mass.shape + mass.shape[-1:])
        index = np.arange(mass.shape[-1])
        size[:, index, index] = mass * parts.s * parts.complement
        gross[:, index, index] = mass * parts.s
        row = mass.max(axis=-1) if mass.size else np.zeros(mass.shape[0])
        return Scales(size, gross, row[:, None, None])

    def loss_scales(self, logits: np.ndarray, given: Softmax | None = None) -> Scales:
        """Of each row's loss: N = sum_j P_j (softplus(-x_j) + |x_j|) + Q_j (softplus(x_j) + |x_j|), each softplus
        off by a few u of itself and x = z / T by u |x|."""
        x = logits / self.temperature
        extent = np.abs(x)
        gross = (self.positive * (np.logaddexp(0, -x) + extent) + self.negative * (np.logaddexp(0, x) + extent))
        gross = gross.sum(axis=-1)
        return Scales(np.abs(self.row_losses(logits, given)), gross, gross)


def _per_class(values: tuple[float, ...] | None, flag: str, classes: int) -> np.ndarray:
    if values is None:
        return np.ones(classes)
    if len(values) != classes:
        raise InputError(f"{flag}: {len(values)} values for {classes} classes")
    return np.array(values)


def build(batch: Batch, settings: Settings, dtype: np.dtype) -> BinaryCrossEntropy:
    """P = w p t and Q = w (1 - t) of the batch's targets (one-hot rows of labels), in `dtype`; mean over N x C."""
    targets = batch.targets
    above = np.argwhere(targets > 1.0)
    if above.size:
        n, c = (int(i) for i in above[0])
        raise InputError(f"{batch.source or 'the input'}: row {n}: target {float(targets[n, c])!r} for class {c} is "
                         "above 1; --loss bce takes a probability per class, in [0, 1]")
    weights = _per_class(settings.weights, "--weights", batch.classes)
    positive = weights * _per_class(settings.pos_weight, "--pos-weight", batch.classes) * targets
    negative = weights * (1.0 - targets)
    return BinaryCrossEntropy(settings.reduction, float(batch.rows * batch.classes), settings.temperature,
                              positive=positive.astype(dtype), negative=negative.astype(dtype))


def divisor_rows(batch: Batch, settings: Settings) -> np.ndarray:
    """torch's mean is over every element: C per row."""
    return np.full(batch.rows, float(batch.classes))


def counts_rows(settings: Settings) -> bool:
    return False


def explain(loss: Loss, z: np.ndarray, s: np.ndarray, row: int) -> list[str]:
    """The per-class sigmoid, loss and gradient with the row's numbers (z is the row / T)."""
    assert isinstance(loss, BinaryCrossEntropy)
    p, q = loss.positive[row], loss.negative[row]
    parts = sigmoid_parts(z[None, :])
    sigma, other = parts.s[0], parts.complement[0]
    k = range(len(z))
    value = float((p * np.logaddexp(0, -z) + q * np.logaddexp(0, z)).sum())
    lines = ["3. Binary cross-entropy with logits (on the sigmoids of step 1):",
             "   ℓ_j = P_j·softplus(−z_j) + Q_j·softplus(z_j), P = w·p·t, Q = w·(1 − t)  (−log σ(z) = softplus(−z))",
             "   σ(z) = (" + ", ".join(shown_each(sigma)) + ")",
             "   P = (" + ", ".join(shown_each(p)) + "),  Q = (" + ", ".join(shown_each(q)) + ")",
             f"   L = Σ_j ℓ_j = {shown(value)}", "",
             "4. Gradient: ∂ℓ_j/∂z_j = Q_j·σ(z_j) − P_j·(1 − σ(z_j)), and 0 for the other classes (σ′ = σ(1 − σ))"]
    lines += formatted_lines("   ∂L/∂z_%d = %s×%s − %s×%s = %s", k, shown_each(q), shown_each(sigma), shown_each(p),
                             shown_each(other), shown_each(q * sigma - p * other))
    lines.append("   (with reduction mean, divided by N·C, as torch's mean over every element)")
    return lines


KIND = LossKind("bce", ("weights", "pos_weight"), build, divisor_rows, counts_rows, explain, activation="sigmoid")
