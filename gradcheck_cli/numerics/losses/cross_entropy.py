"""Cross-entropy with torch.nn.functional.cross_entropy's semantics: labels or soft targets, class weights,
label smoothing, ignore_index, reductions, temperature."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from gradcheck_cli.batch import Batch
from gradcheck_cli.errors import InputError
from gradcheck_cli.numerics.differences import Perturbation, softmax_perturbation
from gradcheck_cli.numerics.exact import exact_sum
from gradcheck_cli.numerics.losses.base import Loss, LossKind, Scales, formatted_lines, shown, shown_each
from gradcheck_cli.numerics.losses.z_loss import (
    log_sum_exp,
    lse_extent,
    z_loss_gradient_change,
    z_loss_hessian,
    z_loss_hessian_scales,
    z_loss_scales,
)
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
    # z-loss (PaLM): S lse^2 added to each row, S here per row (0 on ignored rows); None: no z-loss.
    z_weights: np.ndarray | None = None
    method: str = "central"  # the finite-difference method whose truncation the z-loss's scales bound

    @cached_property
    def _labelled(self) -> tuple[np.ndarray, ...] | None:
        """Where the coefficients are not 0, when at most a quarter of them are (class labels: one a row), else
        None. Once per loss: the gradient, its scales and its differences all skip the a_j terms elsewhere."""
        given = self.coefficients != 0
        count = np.count_nonzero(given)
        if 4 * count >= given.size:
            return None
        if given.ndim == 2:  # at most one a row (class labels): argmax finds it, 50 times as fast as nonzero
            rows = np.flatnonzero(given.any(axis=1))
            if rows.size == count:
                return rows, given[rows].argmax(axis=1)
        return np.nonzero(given)

    def _sparse(self, s: np.ndarray) -> tuple[np.ndarray, ...] | None:
        """The non-zero coefficients' places (_labelled) when s has the coefficients' shape, else None."""
        return self._labelled if s.shape == self.coefficients.shape else None

    def row_losses(self, logits: np.ndarray, given: Softmax | None = None) -> np.ndarray:
        parts = self.softmax(logits, given)
        rows = -(self.coefficients * parts.log_s).sum(axis=-1)
        if self.z_weights is not None:
            lse = log_sum_exp(logits, parts, self.temperature)
            rows = rows + self.z_weights * lse * lse
        return rows

    def row_gradients(self, logits: np.ndarray, given: Softmax | None = None) -> np.ndarray:
        """The gradient of each row's own loss, before the reduction's scale."""
        # s_j A - a_j rewritten as s_j (A - a_j) - a_j (1 - s_j), with the accurate 1 - s_j: the naive form
        # cancels catastrophically at the label of a confident row.
        parts = self.softmax(logits, given)
        a = self.coefficients
        total = a.sum(axis=-1, keepdims=True)
        at = self._sparse(parts.s)
        if at is None:
            others = total - a
            gradient = (parts.s * others - a * parts.complement) / self.temperature
        else:  # a_j (1 - s_j) is +0 off the labels, and x - 0 is x: those elements are s_j (A - a_j) alone
            labels = parts.s[at] * _others_at(total, a, at) - a[at] * parts.complement[at]
            gradient = _times_others(parts.s, total, a)
            gradient[at] = labels
            if self.temperature != 1:  # x / 1 is x: that pass is skipped
                gradient /= self.temperature
        if self.z_weights is not None:  # d(S lse^2)/du_j = 2 S lse s_j
            lse = log_sum_exp(logits, parts, self.temperature)
            gradient += (2 * self.z_weights * lse)[:, None] * parts.s / self.temperature
        return gradient

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
        total = a.sum(axis=-1, keepdims=True)

        z_weights = self.z_weights
        lse = None if z_weights is None else log_sum_exp(base, parts, self.temperature)

        # With class labels a row has one non-zero a_j: the a-term of every other element is 0, so for one step
        # over every column it is computed only where a_j is not (a quarter of the numeric gradient's time).
        labelled = self._sparse(s)
        others = None if labelled is not None else total - a  # A - a_j: made whole only where a is dense

        def perturb(column: int | slice, offsets: np.ndarray) -> np.ndarray:
            u = offsets / self.temperature
            lift = np.log1p(s[:, column] * np.expm1(u))  # the change of lse
            if labelled is not None and np.ndim(u) == 0 and column == slice(None):
                at_labels = _others_at(total, a, labelled) * lift[labelled]
                change = _times_others(lift, total, a, own=z_weights is None)  # the z-loss needs lift below
                change[labelled] = at_labels + a[labelled] * np.log1p(complement[labelled] * np.expm1(-u))
            else:
                near = others[:, column] if others is not None else np.broadcast_to(total, a.shape)[:, column] - a[
                    :, column]
                change = near * lift + a[:, column] * np.log1p(complement[:, column] * np.expm1(-u))
            if z_weights is None or lse is None:
                return change
            # S (lse + d)^2 - S lse^2 = S d (2 lse + d): proportional to the change, as the rest
            weight, level = (z_weights, lse) if np.ndim(change) == 1 else (z_weights[:, None], lse[:, None])
            return change + weight * lift * (2 * level + lift)

        return perturb

    def gradient_perturbation(self, base: np.ndarray, given: Softmax | None = None) -> Perturbation:
        """g(z + d e_j) - g(z) exactly: the gradient (s A - a) / T moves by A / T times the change of s, and the
        z-loss's 2 S lse s / T by z_loss.z_loss_gradient_change's exact change (column j an int)."""
        parts = self.softmax(base, given)
        change = softmax_perturbation(base / self.temperature, parts)
        mass = self.coefficients.sum(axis=-1, keepdims=True) * self.factor
        if self.z_weights is None:
            return lambda column, offsets: change(column, offsets / self.temperature) * mass
        z_change = z_loss_gradient_change(self.z_weights, base, parts, self.temperature)

        def perturb(column: int | slice, offsets: np.ndarray) -> np.ndarray:
            assert isinstance(column, int)  # numeric_hessian moves one column at a time
            u = offsets / self.temperature
            moved = change(column, u)
            return moved * mass + z_change(column, u, moved) * self.factor

        return perturb

    def hessian(self, logits: np.ndarray) -> np.ndarray:
        """d2L/dz2 per row (N x C x C): the gradient (s A - a) / T differentiates to A J / T^2, the z-loss's
        2 S lse s / T to 2 S (lse J + s s^T) / T^2."""
        parts = softmax_parts(logits / self.temperature)
        jacobian = softmax_jacobian(parts.s, parts.complement)
        # Divided by T twice, not by T**2: that underflows to 0 for T below 1e-154 (and 1/0 raises).
        factor = self.coefficients.sum(axis=-1) * (self.factor / self.temperature)
        hessian = jacobian * factor[:, None, None]
        if self.z_weights is not None:
            unit = self.factor / self.temperature
            hessian += z_loss_hessian(self.z_weights, logits, parts, self.temperature) * unit
        return hessian

    def hessian_multiple(self, logits: np.ndarray, given: Softmax | None = None) -> np.ndarray | None:
        """m per row with d2L/dz2 = m ds/dz (checks/jacobian.py decides it in O(N C)): the gradient
        (s A - a) / T times the reduction's scale differentiates to A / T times that scale times ds/dz, A the
        row's summed coefficients (ds/dz carries the other 1/T). A z-loss adds S (2 lse lse' ...): no such m."""
        return None if self.z_weights is not None else self.coefficients.sum(axis=-1) * self.factor

    def gradient_scales(self, logits: np.ndarray, given: Softmax | None = None) -> Scales:
        """Per element, over T and times the reduction's scale: S = A s_j (1 - s_j), the size of every
        u-derivative of s_j A - a_j; N = s_j A + a_j, what the straightforward s A - a rounds; G = A."""
        parts = self.softmax(logits, given)
        a, s = self.coefficients, parts.s
        mass = a.sum(axis=-1, keepdims=True) * self.factor
        size = np.multiply(mass, s)
        size *= parts.complement
        gross = s * mass
        at = self._sparse(s)
        if at is None:
            gross += a * self.factor
        else:  # a_j times the factor (> 0) is +0 off the labels, and x + 0 is x
            gross[at] += a[at] * self.factor
        scales = Scales(size, gross, mass)
        if self.z_weights is None:
            return scales
        z = z_loss_scales(self.z_weights, logits, parts, self.temperature, self.method)
        return Scales(scales.scale + z.scale * self.factor, scales.gross + z.gross * self.factor,
                      scales.row + z.row * self.factor)

    def hessian_scales(self, logits: np.ndarray, given: Softmax | None = None) -> Scales:
        """S = |A J| / T^2 scaled (no cancellation: J's diagonal uses the accurate 1 - s); N has the
        straightforward diagonal s_j - s_j^2's s_j; G = A / T^2."""
        parts = self.softmax(logits, given)
        s = parts.s
        mass = (self.coefficients.sum(axis=-1) * (self.factor / self.temperature))[:, None, None]
        size = np.abs(softmax_jacobian(s, parts.complement)) * mass
        gross = s[:, :, None] * s[:, None, :] + np.eye(s.shape[-1]) * s[:, :, None]
        scales = Scales(size, gross * mass, mass)
        if self.z_weights is None:
            return scales
        z = z_loss_hessian_scales(self.z_weights, logits, parts, self.temperature, self.method)
        unit = self.factor / self.temperature
        return Scales(scales.scale + z.scale * unit, scales.gross + z.gross * unit, scales.row + z.row * unit)

    def loss_scales(self, logits: np.ndarray, given: Softmax | None = None) -> Scales:
        """Of each row's loss: N = sum_c a_c (1 + |log s_c|), every log s_c being off by u rho absolute."""
        parts = self.softmax(logits, given)
        gross = (self.coefficients * (1.0 + np.abs(parts.log_s))).sum(axis=-1)
        if self.z_weights is not None:  # S lse^2 with lse off by u (|max u| + log_total + 1) absolute
            lse, extent = log_sum_exp(logits, parts, self.temperature), lse_extent(logits, parts, self.temperature)
            gross = gross + self.z_weights * np.abs(lse) * (np.abs(lse) + 2 * extent)
        return Scales(np.abs(self.row_losses(logits, parts)), gross, gross)


def _others_at(total: np.ndarray, a: np.ndarray, at: tuple[np.ndarray, ...]) -> np.ndarray:
    """A - a_j (A a row's summed coefficients, N x 1) at the places `at` of a (the non-zero coefficients)."""
    return np.broadcast_to(total, a.shape)[at] - a[at]


def _times_others(values: np.ndarray, total: np.ndarray, a: np.ndarray, own: bool = False) -> np.ndarray:
    """values_j (A - a_j) right off the non-zero coefficients, as a new array (or in `values` itself, if `own`):
    there a_j is +0 or -0 and A - a_j is A exactly (A = a.sum, which numpy starts from +0: never -0), so the
    A - a array is not made; where every A is 1 (class labels), x times 1 is x and that pass goes too."""
    fits = np.result_type(values, total) == values.dtype
    if fits and bool((total == 1.0).all()):
        return values if own else values.copy()
    return np.multiply(values, total, out=values if own and fits else None)


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


def build(batch: Batch, settings: Settings, dtype: np.dtype) -> Loss:
    """The loss the settings describe on this batch, in `dtype`, with the batch's own mean divisor; the z-loss
    on the rows kept, and the logit transforms (transformed.py) around it all."""
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
    z_weights = None
    if settings.z_loss:
        kept = divisor_rows(batch, settings._replace(weights=None))  # 1 on rows not ignored, unweighted by class
        z_weights = (settings.z_loss * kept).astype(dtype)
    # The coefficients were made just now, for this loss alone: in float64 they are kept as they are (no copy).
    exact = replace(loss, coefficients=loss.coefficients.astype(dtype, copy=False), z_weights=z_weights,
                    method=settings.method)
    if settings.logit_scale == 1.0 and settings.softcap is None:
        return exact
    from gradcheck_cli.numerics.losses.transformed import transformed  # here: start-up pays only when used

    return transformed(exact, settings)


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
    """Cross-entropy and its gradient with the row's numbers, classes numbered from 0 as check numbers them; y
    are its coefficients (the target row of plain cross-entropy; weights, smoothing and an ignored row folded in).

    A wide row has C lines: each kind is formatted by one call for every class (base.shown's format, "#.3g"),
    and only the non-zero terms of L are written.
    """
    assert isinstance(loss, CrossEntropy)

    each = shown_each

    y = loss.coefficients[row]
    y_text = each(y)
    used = np.flatnonzero(y)
    total = float(y.sum())
    gradient = s * total - y
    pairs = [text for pair in zip(each(y[used]), each(s[used]), strict=True) for text in pair]
    terms = ("%s·log %s + " * used.size % tuple(pairs))[:-3]
    value = float(-(y[used] * softmax_parts(z[None, :]).log_s[0][used]).sum())
    lines = ["3. Cross-entropy: L = −Σ_i y_i log s_i", "   y = (" + ", ".join(y_text) + ")",
             f"   L = −({terms or '0'}) = {shown(value)}", ""]
    if np.isclose(total, 1.0):
        lines.append("4. Gradient: ∂L/∂z_j = s_j·Σ_i y_i − y_j = s_j − y_j (the y_i sum to 1)")
    else:
        lines.append(f"4. Gradient: ∂L/∂z_j = s_j·Σ_i y_i − y_j (here Σ_i y_i = {shown(total)})")
    values: list[object] = [None] * (y.size * 4)  # a column per slice, then one formatting call for every line
    values[0::4], values[1::4], values[2::4], values[3::4] = range(y.size), each(s), y_text, each(gradient)
    lines += ("   ∂L/∂z_%d = %s − %s = %s\n" * y.size % tuple(values)).split("\n")[:-1]
    lines.append("   (for a batch with reduction mean, each row's gradient is divided by N)")
    return lines


def explain_with_z_loss(loss: Loss, z: np.ndarray, s: np.ndarray, row: int) -> list[str]:
    """explain's lines, then the z-loss's: S lse^2 and its gradient 2 S lse s_j added to each element."""
    lines = explain(loss, z, s, row)
    if not isinstance(loss, CrossEntropy) or loss.z_weights is None:
        return lines
    weight, lse = float(loss.z_weights[row]), float(np.logaddexp.reduce(z))
    a = loss.coefficients[row]
    total = s * a.sum() - a + 2 * weight * lse * s
    lines += ["", (f"5. z-loss: + S·lse², S = {shown(weight)} (0 on an ignored row), lse = log Σ_j e^(z_j) = "
                   f"{shown(lse)}: + {shown(weight * lse * lse)}"),
              "   ∂(S·lse²)/∂z_j = 2·S·lse·s_j (∂lse/∂z_j = s_j), added to each ∂L/∂z_j above:"]
    constant = f"2×{shown(weight)}×{shown(lse)}"
    lines += formatted_lines("   ∂L/∂z_%d = %s + %s×%s = %s", range(len(z)), shown_each(s * a.sum() - a),
                             [constant] * len(z), shown_each(s), shown_each(total))
    return lines


def explain_variants(loss: Loss, z: np.ndarray, s: np.ndarray, row: int) -> list[str]:
    """explain_with_z_loss, through transformed.explained's chain rule when the logits are transformed."""
    from gradcheck_cli.numerics.losses.transformed import explained  # here: start-up pays only when used

    return explained(explain_with_z_loss)(loss, z, s, row)


KIND = LossKind("cross_entropy", ("weights", "label_smoothing", "ignore_index", "z_loss", "softcap", "logit_scale"),
                build, divisor_rows, counts_rows, explain_variants)
