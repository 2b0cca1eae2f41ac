"""Cross-entropy with torch.nn.functional.cross_entropy's semantics: labels or soft targets, class weights,
label smoothing, ignore_index, reductions, temperature."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from gradcheck_cli.batch import Batch
from gradcheck_cli.errors import InputError
from gradcheck_cli.numerics.differences import Perturbation, softmax_perturbation
from gradcheck_cli.numerics.exact import exact_sum
from gradcheck_cli.numerics.losses.base import Loss, LossKind, Scales, shown
from gradcheck_cli.numerics.softmax import Softmax, softmax_jacobian, softmax_parts
from gradcheck_cli.settings import Settings


@dataclass(eq=False, repr=False)  # holds arrays: == has no truth value; each generated method costs start-up
class CrossEntropy(Loss):
    """Cross-entropy of softmax(z / T) against fixed per-class coefficients.

    Every variant (one-hot labels, soft targets, class weights, label smoothing, ignored rows) reduces to
    row losses l_n = -sum_c a[n, c] log s[n, c] with coefficients `a` that do not depend on the logits, and
    a total L = sum_n l_n / normalizer. So one loss function and one gradient cover them all:
    dl_n/dz = (s_n * sum_c a[n, c] - a[n]) / T.
    """

    coefficients: np.ndarray
    name: str = "cross_entropy"

    def row_losses(self, logits: np.ndarray, given: Softmax | None = None) -> np.ndarray:
        return -(self.coefficients * self.softmax(logits, given).log_s).sum(axis=-1)

    def row_gradients(self, logits: np.ndarray, given: Softmax | None = None) -> np.ndarray:
        """The gradient of each row's own loss, before the reduction's scale."""
        # s_j A - a_j rewritten as s_j (A - a_j) - a_j (1 - s_j), with the accurate 1 - s_j: the naive form
        # cancels catastrophically at the label of a confident row.
        parts = self.softmax(logits, given)
        a = self.coefficients
        others = a.sum(axis=-1, keepdims=True) - a
        return (parts.s * others - a * parts.complement) / self.temperature

    def perturbation(self, base: np.ndarray, given: Softmax | None = None) -> Perturbation:
        """l(z + d e_j) - l(z) for every row, exactly, in O(N) per column: for finite differences around `base`.

        Moving z_j by d moves z_j / T by d / T = u, which multiplies exp(z_j/T - m) by e^u and the normaliser
        by 1 + s_j q (q = e^u - 1), so l changes by A log(1 + s_j q) - a_j u, with A = sum_c a_c. Split
        A = B + a_j and fold a_j u into the log: B log1p(s_j q) + a_j log1p((1 - s_j)(e^-u - 1)). Each term
        keeps full relative precision (the accurate 1 - s_j), so the differences carry rounding of eps |dl|
        rather than eps |l|: a loss of 17 cannot swamp a gradient element of 5e-4. It is the loss itself that
        is evaluated, never its derivative. Each (row, column) is independent, so `column` may be a slice
        and `offsets` one per logit: every column moved at once, each on its own.
        """
        parts = self.softmax(base, given)
        s, complement = parts.s, parts.complement
        a = self.coefficients
        others = a.sum(axis=-1, keepdims=True) - a

        def perturb(column: int | slice, offsets: np.ndarray) -> np.ndarray:
            u = offsets / self.temperature
            rise = others[:, column] * np.log1p(s[:, column] * np.expm1(u))
            return rise + a[:, column] * np.log1p(complement[:, column] * np.expm1(-u))

        return perturb

    def gradient_perturbation(self, base: np.ndarray, given: Softmax | None = None) -> Perturbation:
        """g(z + d e_j) - g(z) exactly: the gradient (s A - a) / T moves by A / T times the change of s."""
        change = softmax_perturbation(base / self.temperature, given)
        mass = self.coefficients.sum(axis=-1, keepdims=True) * self.factor
        return lambda column, offsets: change(column, offsets / self.temperature) * mass

    def hessian(self, logits: np.ndarray) -> np.ndarray:
        """d2L/dz2 per row (N x C x C): the gradient (s A - a) / T differentiates to A J / T^2."""
        parts = softmax_parts(logits / self.temperature)
        jacobian = softmax_jacobian(parts.s, parts.complement)
        # Divided by T twice, not by T**2: that underflows to 0 for T below 1e-154 (and 1/0 raises).
        factor = self.coefficients.sum(axis=-1) * (self.factor / self.temperature)
        return jacobian * factor[:, None, None]

    def gradient_scales(self, logits: np.ndarray, given: Softmax | None = None) -> Scales:
        """Per element, over T and times the reduction's scale: S = A s_j (1 - s_j), the size of every
        u-derivative of s_j A - a_j; N = s_j A + a_j, what the straightforward s A - a rounds; G = A."""
        parts = self.softmax(logits, given)
        a, s = self.coefficients, parts.s
        mass = a.sum(axis=-1, keepdims=True) * self.factor
        return Scales(mass * s * parts.complement, s * mass + a * self.factor, mass)

    def hessian_scales(self, logits: np.ndarray, given: Softmax | None = None) -> Scales:
        """S = |A J| / T^2 scaled (no cancellation: J's diagonal uses the accurate 1 - s); N has the
        straightforward diagonal s_j - s_j^2's s_j; G = A / T^2."""
        parts = self.softmax(logits, given)
        s = parts.s
        mass = (self.coefficients.sum(axis=-1) * (self.factor / self.temperature))[:, None, None]
        size = np.abs(softmax_jacobian(s, parts.complement)) * mass
        gross = s[:, :, None] * s[:, None, :] + np.eye(s.shape[-1]) * s[:, :, None]
        return Scales(size, gross * mass, mass)

    def loss_scales(self, logits: np.ndarray, given: Softmax | None = None) -> Scales:
        """Of each row's loss: N = sum_c a_c (1 + |log s_c|), every log s_c being off by u rho absolute."""
        parts = self.softmax(logits, given)
        gross = (self.coefficients * (1.0 + np.abs(parts.log_s))).sum(axis=-1)
        return Scales(np.abs(self.row_losses(logits, parts)), gross, gross)


def cross_entropy(targets: np.ndarray, reduction: str = "mean", temperature: float = 1.0) -> CrossEntropy:
    """Plain categorical cross-entropy -sum_i y_i log s_i, averaged over rows for reduction=mean."""
    return CrossEntropy(reduction, float(targets.shape[0]), temperature, coefficients=targets)


def torch_cross_entropy(
    classes: int,
    *,
    labels: np.ndarray | None = None,
    targets: np.ndarray | None = None,
    reduction: str = "mean",
    weights: np.ndarray | None = None,
    label_smoothing: float = 0.0,
    ignore_index: int | None = None,
    temperature: float = 1.0,
) -> CrossEntropy:
    """torch.nn.functional.cross_entropy's exact semantics, as coefficients and a normaliser.

    Class-index labels: a = (1 - e) w_y [c = y] + (e / C) w_c on rows whose label is not ignore_index (0 on
    ignored rows), and the mean divides by the summed weights w_y of the rows not ignored (the count of
    them without weights); the smoothing term is scaled by the weights and shares that divisor.
    Probability targets: a = w_c ((1 - e) t_c + e / C), and the mean divides by N, whatever the weights.
    """
    w = np.ones(classes) if weights is None else np.asarray(weights, dtype=np.float64)
    if labels is not None:
        kept = np.ones(labels.shape[0], dtype=bool) if ignore_index is None else labels != ignore_index
        safe = np.where(kept, labels, 0)  # an ignored label may be out of range (torch's -100)
        label_weight = np.where(kept, w[safe], 0.0)
        coefficients = np.zeros((labels.shape[0], classes))
        coefficients[np.arange(labels.shape[0]), safe] = (1.0 - label_smoothing) * label_weight
        if label_smoothing:
            coefficients += np.where(kept, label_smoothing / classes, 0.0)[:, None] * w[None, :]
        # Without weights each kept row weighs 1: counting them is exact and cheaper than summing.
        normalizer = exact_sum(label_weight) if weights is not None else float(np.count_nonzero(kept))
    else:
        assert targets is not None
        coefficients = w[None, :] * ((1.0 - label_smoothing) * targets + label_smoothing / classes)
        normalizer = float(targets.shape[0])
    return CrossEntropy(reduction, normalizer, temperature, coefficients=coefficients)




def _weights(batch: Batch, settings: Settings) -> np.ndarray | None:
    if settings.weights is None:
        return None
    if len(settings.weights) != batch.classes:
        raise InputError(f"--weights: {len(settings.weights)} weights for {batch.classes} classes")
    return np.array(settings.weights)


def build(batch: Batch, settings: Settings, dtype: np.dtype) -> CrossEntropy:
    """The loss the settings describe on this batch, in `dtype`, with the batch's own mean divisor."""
    if batch.labels is None and settings.ignore_index is not None:
        raise InputError("--ignore-index applies to class labels, not to target distributions (as in torch)")
    loss = torch_cross_entropy(
        batch.classes,
        labels=batch.labels,
        targets=None if batch.labels is not None else batch.targets,
        reduction=settings.reduction,
        weights=_weights(batch, settings),
        label_smoothing=settings.label_smoothing,
        ignore_index=settings.ignore_index,
        temperature=settings.temperature,
    )
    return replace(loss, coefficients=loss.coefficients.astype(dtype))


def divisor_rows(batch: Batch, settings: Settings) -> np.ndarray:
    """Each row's share of the mean's divisor: its label's weight, 0 if ignored (1 per row for targets)."""
    weights = _weights(batch, settings)
    if batch.labels is None:
        return np.ones(batch.rows)
    labels = batch.labels
    kept = np.ones(batch.rows, dtype=bool) if settings.ignore_index is None else labels != settings.ignore_index
    if weights is None:
        return kept.astype(np.float64)
    return np.where(kept, weights[np.where(kept, labels, 0)], 0.0)


def counts_rows(settings: Settings) -> bool:
    """Without weights or an ignored label, every row counts once."""
    return settings.weights is None and settings.ignore_index is None


def explain(loss: Loss, z: np.ndarray, s: np.ndarray, row: int) -> list[str]:
    """Cross-entropy and its gradient with the row's numbers; y are its coefficients (the target row of plain
    cross-entropy; weights, smoothing and an ignored row folded in)."""
    assert isinstance(loss, CrossEntropy)
    y = loss.coefficients[row]
    k = range(len(z))
    lines = ["3. Cross-entropy: L = −Σ_i y_i log s_i", "   y = (" + ", ".join(shown(v) for v in y) + ")"]
    terms = [f"{shown(y[i])}·log {shown(s[i])}" for i in k if y[i] != 0]
    value = float(-(y * softmax_parts(z[None, :]).log_s[0]).sum())
    lines += [f"   L = −({' + '.join(terms) or '0'}) = {shown(value)}", ""]
    if np.isclose(y.sum(), 1.0):
        lines.append("4. Gradient: ∂L/∂z_j = s_j·Σ_i y_i − y_j = s_j − y_j (the y_i sum to 1)")
    else:
        lines.append(f"4. Gradient: ∂L/∂z_j = s_j·Σ_i y_i − y_j (here Σ_i y_i = {shown(float(y.sum()))})")
    gradient = s * y.sum() - y
    lines += [f"   ∂L/∂z_{j + 1} = {shown(s[j])} − {shown(y[j])} = {shown(gradient[j])}" for j in k]
    lines.append("   (for a batch with reduction mean, each row's gradient is divided by N)")
    return lines


KIND = LossKind("cross_entropy", ("weights", "label_smoothing", "ignore_index"), build, divisor_rows, counts_rows,
                explain)
