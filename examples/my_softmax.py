"""A small numpy softmax cross-entropy, as a course exercise would write it, with realistic bugs to catch.

Every function takes (logits, targets), both N x C, and returns (loss, gradient) with the loss averaged
over rows, which is what `gradcheck check --impl examples/my_softmax.py:FUNCTION` calls:

    gradcheck check -i examples/batch.json --impl examples/my_softmax.py:softmax_cross_entropy     # passes
    gradcheck check -i examples/batch.json --impl examples/my_softmax.py:forgot_one_over_n         # fails
    gradcheck check -i examples/batch.json --impl examples/my_softmax.py:naive_softmax_cross_entropy  # fails
    gradcheck check -i examples/batch.json --loss mse --impl examples/my_softmax.py:mse            # passes
    gradcheck check -i examples/batch.json --loss mse --impl examples/my_softmax.py:mse_factor_two # fails

Run as a script, it writes a JSON dump of its own values (probabilities, loss, gradient) beside the input,
for checking values computed elsewhere; --bug picks one of the slips:

    python examples/my_softmax.py examples/batch.json --bug forgot-1/N | gradcheck check -i -
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exps = np.exp(shifted)
    return exps / exps.sum(axis=1, keepdims=True)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax_cross_entropy(logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """Correct: mean over rows of -sum y log s (log s from log-softmax, so s = 0 cannot give log 0)."""
    n = logits.shape[0]
    loss = -(targets * log_softmax(logits)).sum() / n
    return float(loss), (softmax(logits) * targets.sum(axis=1, keepdims=True) - targets) / n


def forgot_one_over_n(logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """Bug: the loss is a mean, but the gradient forgets to divide by N (N times too large)."""
    loss, gradient = softmax_cross_entropy(logits, targets)
    return loss, gradient * logits.shape[0]


def naive_softmax_cross_entropy(logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """Bug: no max subtraction, so e^z overflows for logits near 710 and beyond (inf / inf = nan)."""
    n = logits.shape[0]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        exps = np.exp(logits)
        s = exps / exps.sum(axis=1, keepdims=True)
        loss = -(targets * np.log(s)).sum() / n
    return float(loss), (s - targets) / n


def mse(logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """Correct: L = mean over rows of 1/2 sum_k (s_k - t_k)^2, gradient s (g - <g, s>) with g = s - t."""
    n = logits.shape[0]
    s = softmax(logits)
    g = s - targets
    loss = 0.5 * (g**2).sum() / n
    return float(loss), s * (g - (g * s).sum(axis=1, keepdims=True)) / n


def mse_factor_two(logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """Bug (from one of the sources): g = 2 (s - t) although the loss has the 1/2, so the gradient doubles."""
    n = logits.shape[0]
    s = softmax(logits)
    g = 2 * (s - targets)
    loss = 0.5 * ((s - targets) ** 2).sum() / n
    return float(loss), s * (g - (g * s).sum(axis=1, keepdims=True)) / n


BUGS = {
    "none": softmax_cross_entropy,
    "forgot-1/N": forgot_one_over_n,
    "no-max-subtraction": naive_softmax_cross_entropy,
}


def main() -> None:
    parser = argparse.ArgumentParser(description="Dump this implementation's values for gradcheck to check.")
    parser.add_argument("input", help="a JSON file with logits and labels or targets")
    parser.add_argument("--bug", choices=sorted(BUGS), default="none")
    args = parser.parse_args()
    with open(args.input, encoding="utf-8") as handle:
        document = json.load(handle)
    logits = np.atleast_2d(np.array(document["logits"], dtype=np.float64))
    if "targets" in document:
        targets = np.array(document["targets"], dtype=np.float64)
    else:
        targets = np.eye(logits.shape[1])[np.array(document["labels"])]
    loss, gradient = BUGS[args.bug](logits, targets)
    with np.errstate(over="ignore", invalid="ignore"):
        naive = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    probabilities = naive if args.bug == "no-max-subtraction" else softmax(logits)
    dump = {**document, "probabilities": probabilities.tolist(), "loss": loss, "gradient": gradient.tolist()}
    # A NaN from the naive softmax becomes null: strict JSON has no NaN, and gradcheck fails a null value.
    json.dump(json.loads(json.dumps(dump).replace("NaN", "null").replace("Infinity", "null")), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
