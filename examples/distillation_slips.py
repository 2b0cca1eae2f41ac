"""Distillation losses written by hand, as training code writes them, with the slips that reached real projects.

Every function takes (logits, teacher_logits), both N x C (the student's and the teacher's), and returns
(loss, gradient by the student's logits), at temperature T = 2. `gradcheck check --impl` passes the teacher
logits as the second argument for --loss kl, reverse-kl and jsd. Run from the repository root:

    gradcheck check -i examples/distillation.json --loss kl --reduction mean --temperature 2 \\
        --impl examples/distillation_slips.py:kl_mean                       # passes
    gradcheck check -i examples/distillation.json --loss kl --reduction mean --temperature 2 \\
        --impl examples/distillation_slips.py:kl_batchmean_for_mean         # fails: a factor C
    gradcheck check -i examples/distillation.json --loss jsd --beta 0.1 --t2-scaling --reduction sum \\
        --temperature 2 --impl examples/distillation_slips.py:jsd_swapped_weights  # fails

The gradients are each formula's own exact derivative: a slip here is a wrong formula, consistently
differentiated, which a check of the gradient against the loss's own differences would never catch.
"""

from __future__ import annotations

import numpy as np

T = 2.0  # the temperature every function uses: check with --temperature 2
BETA = 0.1  # the JSD's beta: check with --beta 0.1 (0.5 would make swapped weights harmless)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _forward_kl(logits: np.ndarray, teacher: np.ndarray, teacher_temperature: float = T
                ) -> tuple[np.ndarray, np.ndarray]:
    """Row losses sum p (log p - log q) and their gradients (q - p) / T by the student's logits."""
    log_q, log_p = _log_softmax(logits / T), _log_softmax(teacher / teacher_temperature)
    p, q = np.exp(log_p), np.exp(log_q)
    return (p * (log_p - log_q)).sum(axis=1), (q - p) / T


def _reverse_kl(logits: np.ndarray, teacher: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row losses sum q (log q - log p) and their gradients q (r - <q, r>) / T, r = log q - log p."""
    log_q, log_p = _log_softmax(logits / T), _log_softmax(teacher / T)
    q, r = np.exp(log_q), log_q - log_p
    return (q * r).sum(axis=1), q * (r - (q * r).sum(axis=1, keepdims=True)) / T


def _jsd(logits: np.ndarray, teacher: np.ndarray, beta: float, teacher_temperature: float = T
         ) -> tuple[np.ndarray, np.ndarray]:
    """Liger-Kernel's generalised JSD per row, beta KL(p || M) + (1 - beta) KL(q || M), M = beta p + (1 - beta) q,
    and its gradient q (g - <q, g>) / T with g = (1 - beta)(log q - log M)."""
    log_q, log_p = _log_softmax(logits / T), _log_softmax(teacher / teacher_temperature)
    p, q = np.exp(log_p), np.exp(log_q)
    log_m = np.log(beta * p + (1 - beta) * q)
    rows = (beta * p * (log_p - log_m) + (1 - beta) * q * (log_q - log_m)).sum(axis=1)
    g = (1 - beta) * (log_q - log_m)
    return rows, q * (g - (q * g).sum(axis=1, keepdims=True)) / T


def kl_mean(logits: np.ndarray, teacher: np.ndarray) -> tuple[float, np.ndarray]:
    """Correct for --loss kl --reduction mean: torch's kl_div(..., reduction="mean") divides by N C."""
    rows, gradient = _forward_kl(logits, teacher)
    return float(rows.sum() / logits.size), gradient / logits.size


def kl_batchmean(logits: np.ndarray, teacher: np.ndarray) -> tuple[float, np.ndarray]:
    """Correct for --loss kl --reduction batchmean: the KL divergence per sample, divided by N."""
    rows, gradient = _forward_kl(logits, teacher)
    return float(rows.sum() / logits.shape[0]), gradient / logits.shape[0]


def kl_batchmean_for_mean(logits: np.ndarray, teacher: np.ndarray) -> tuple[float, np.ndarray]:
    """Slip, checked with --reduction mean: batchmean's 1/N where torch's mean divides by N C (C times too big)."""
    return kl_batchmean(logits, teacher)


def kl_swapped_direction(logits: np.ndarray, teacher: np.ndarray) -> tuple[float, np.ndarray]:
    """Slip, checked with --loss kl --reduction mean: KL(student || teacher) where KL(teacher || student) is asked."""
    rows, gradient = _reverse_kl(logits, teacher)
    return float(rows.sum() / logits.size), gradient / logits.size


def reverse_kl_mean(logits: np.ndarray, teacher: np.ndarray) -> tuple[float, np.ndarray]:
    """Correct for --loss reverse-kl --reduction mean."""
    rows, gradient = _reverse_kl(logits, teacher)
    return float(rows.sum() / logits.size), gradient / logits.size


def jsd(logits: np.ndarray, teacher: np.ndarray) -> tuple[float, np.ndarray]:
    """Correct for --loss jsd --beta 0.1 --t2-scaling --reduction sum: the rows' JSD summed, times T^2."""
    rows, gradient = _jsd(logits, teacher, BETA)
    return float(rows.sum() * T**2), gradient * T**2


def jsd_swapped_weights(logits: np.ndarray, teacher: np.ndarray) -> tuple[float, np.ndarray]:
    """Slip (the weights of trl PR #5731): M = (1 - beta) p + beta q and the KLs weighted the other way round,
    which is JSD with 1 - beta; harmless only at beta = 0.5."""
    rows, gradient = _jsd(logits, teacher, 1 - BETA)
    return float(rows.sum() * T**2), gradient * T**2


def jsd_teacher_without_temperature(logits: np.ndarray, teacher: np.ndarray) -> tuple[float, np.ndarray]:
    """Slip (the temperature of trl PR #5731): the student's logits divided by T, the teacher's not."""
    rows, gradient = _jsd(logits, teacher, BETA, teacher_temperature=1.0)
    return float(rows.sum() * T**2), gradient * T**2
