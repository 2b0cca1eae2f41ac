"""Accuracy of each finite-difference method: the worst element's error relative to the largest gradient
element, on random logits of scale 1, 10 and 100 (float64), beside the textbook version of central
differences (difference the batch-mean loss, decimal step 1e-6 * max(1, |z|), log-sum-exp re-centred at
every perturbed point).

Rows marked (re-eval) re-evaluate the whole row loss at each perturbed point, as for a user's own loss
(--impl); the others use the losses' exact perturbations.

The second table is the same measure across temperatures (softmax(z / T), logit scales 1 to 100,
cross-entropy with class weights and label smoothing, on labels and on soft targets): the default step is
T eta, so every method meets its target at every temperature. `--fixed-step` takes the step eta whatever T
(as gradcheck did before the step followed T), to show what that cost. (The squared error is left out:
there the float64 rounding of the analytic gradient itself, a few eps, is what the most accurate methods
measure.)

Run: python benchmarks/accuracy.py [--rows 512] [--classes 10] [--seeds 5] [--fixed-step]
"""

from __future__ import annotations

import argparse

import numpy as np

from gradcheck_cli.inputs.validate import one_hot
from gradcheck_cli.numerics import differences
from gradcheck_cli.numerics import softmax as core
from gradcheck_cli.numerics.losses.cross_entropy import cross_entropy, torch_cross_entropy

TARGETS = differences.ACCURACY_TARGETS
SCALES = (1.0, 10.0, 100.0)
TEMPERATURES = (0.05, 0.3, 1.0, 5.0, 20.0)


def textbook_central(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    def mean_loss(z: np.ndarray) -> float:
        return float(-(targets * core.log_softmax(z)).sum() / z.shape[0])

    gradient = np.zeros_like(logits)
    for n in range(logits.shape[0]):
        for j in range(logits.shape[1]):
            h = 1e-6 * max(1.0, abs(logits[n, j]))
            plus, minus = logits.copy(), logits.copy()
            plus[n, j] += h
            minus[n, j] -= h
            gradient[n, j] = (mean_loss(plus) - mean_loss(minus)) / (2 * h)
    return gradient


def relative_error(numeric: np.ndarray, analytic: np.ndarray) -> float:
    return float(np.max(np.abs(numeric - analytic)) / np.max(np.abs(analytic)))


def by_scale(args: argparse.Namespace) -> None:
    worst = {(name, scale): 0.0 for name in [*TARGETS, "textbook central"] for scale in SCALES}
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        for scale in SCALES:
            logits = rng.standard_normal((args.rows, args.classes)) * scale
            labels = rng.integers(0, args.classes, args.rows)
            loss = cross_entropy(one_hot(labels, args.classes))
            analytic = loss.gradient(logits)
            for name in TARGETS:
                numeric = differences.numeric_gradient(loss, logits, differences.default_eps(name), name)
                worst[name, scale] = max(worst[name, scale], relative_error(numeric, analytic))
            for name in ("central", "five-point"):  # the generic path, as a user's own loss function gets
                numeric = differences.finite_difference(loss.row_losses, logits, differences.default_eps(name), name)
                key = (f"{name} (re-eval)", scale)
                worst[key] = max(worst.get(key, 0.0), relative_error(numeric * loss.scale, analytic))
            if seed == 0:  # the textbook loop is slow: one batch of 32 rows
                few = slice(0, 32)
                numeric = textbook_central(logits[few], loss.coefficients[few])
                reference = cross_entropy(loss.coefficients[few]).gradient(logits[few])
                worst["textbook central", scale] = relative_error(numeric, reference)

    print(f"worst |numeric - analytic| / max |analytic|, {args.rows} x {args.classes} logits, {args.seeds} seeds")
    print(f"{'method':18}" + "".join(f"{'scale ' + format(s, 'g'):>12}" for s in SCALES) + f"{'target':>10}  met")
    for name in [*TARGETS, "central (re-eval)", "five-point (re-eval)", "textbook central"]:
        errors = [worst[name, scale] for scale in SCALES]
        target = None if "(" in name else TARGETS.get(name)
        met = "" if target is None else ("yes" if max(errors) <= target else "NO")
        target_text = "" if target is None else f"{target:.0e}"
        print(f"{name:18}" + "".join(f"{e:12.1e}" for e in errors) + f"{target_text:>10}  {met}")


def by_temperature(args: argparse.Namespace) -> None:
    """The worst error over logit scales 1 to 100, with weights and smoothing, at each temperature."""
    worst = {(name, temperature): 0.0 for name in TARGETS for temperature in TEMPERATURES}
    for seed in range(args.seeds):
        rng = np.random.default_rng(100 + seed)
        targets = rng.dirichlet(np.ones(args.classes), args.rows)
        labels = rng.integers(0, args.classes, args.rows)
        weights = 10.0 ** rng.uniform(-2, 2, args.classes)
        for scale in SCALES:
            logits = rng.standard_normal((args.rows, args.classes)) * scale
            for temperature in TEMPERATURES:
                options = {"weights": weights, "label_smoothing": 0.1, "temperature": temperature}
                losses = (torch_cross_entropy(args.classes, targets=targets, **options),
                          torch_cross_entropy(args.classes, labels=labels, reduction="sum", **options))
                for loss in losses:
                    analytic = loss.gradient(logits)
                    for name in TARGETS:
                        eps = differences.default_eps(name, temperature=1.0 if args.fixed_step else temperature)
                        error = relative_error(differences.numeric_gradient(loss, logits, eps, name), analytic)
                        worst[name, temperature] = max(worst[name, temperature], error)

    step = "eta whatever T" if args.fixed_step else "T eta"
    print(f"\nthe same by temperature (step {step}; scales 1-100; weights and smoothing, labels and soft targets)")
    print(f"{'method':18}" + "".join(f"{'T ' + format(t, 'g'):>10}" for t in TEMPERATURES) + f"{'target':>10}  met")
    for name in TARGETS:
        errors = [worst[name, t] for t in TEMPERATURES]
        met = "yes" if max(errors) <= TARGETS[name] else "NO"
        print(f"{name:18}" + "".join(f"{e:10.1e}" for e in errors) + f"{TARGETS[name]:>10.0e}  {met}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--fixed-step", action="store_true", help="the step eta whatever the temperature")
    args = parser.parse_args()
    by_scale(args)
    by_temperature(args)


if __name__ == "__main__":
    main()
