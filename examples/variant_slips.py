"""Cross-entropy's variants, BCE with logits and the focal loss written by hand, as training code writes them,
with the slips that reached real projects planted one at a time.

Every function takes (logits, targets), both N x C, and returns (loss, gradient by the logits) with the loss
averaged as torch's mean does (over rows; over N x C for BCE). Run from the repository root:

    gradcheck check -i examples/variants.json --logit-scale 1.5 --softcap 5 --z-loss 0.01 \\
        --impl examples/variant_slips.py:capped_cross_entropy          # passes
    gradcheck check -i examples/variants.json --logit-scale 1.5 --softcap 5 --z-loss 0.01 \\
        --impl examples/variant_slips.py:softcap_z_tanh                # fails (unsloth-zoo PR #593)
    gradcheck check -i examples/multilabel.json --loss bce --pos-weight 3,0.5,2,1 \\
        --impl examples/variant_slips.py:bce_with_logits               # passes
    gradcheck check -i examples/variants.json --loss focal --gamma 2 \\
        --impl examples/variant_slips.py:focal_missing_minus_one       # fails (torchvision #8519)

The CE slips are wrong formulas consistently differentiated (their gradients match their own losses), except
where the slip is in the backward itself (logit scale, z-loss, focal): then the gradient disagrees with its loss.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

SCALE, SOFTCAP, Z_LOSS = 1.5, 5.0, 0.01  # check with --logit-scale 1.5 --softcap 5 --z-loss 0.01
POS_WEIGHT = np.array([3.0, 0.5, 2.0, 1.0])  # check with --pos-weight 3,0.5,2,1
GAMMA = 2.0  # check with --gamma 2
PADDED = 3  # lanes a kernel pads the vocabulary with

Transform = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # z -> (y, dy/dz)


def _capped(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Right: y = C tanh(A z / C), dy/dz = A (1 - tanh^2(A z / C))."""
    t = np.tanh(SCALE * z / SOFTCAP)
    return SOFTCAP * t, SCALE * (1 - t * t)


def _cross_entropy(logits: np.ndarray, targets: np.ndarray, transform: Transform = _capped, padded: int = 0,
                   z_factor: float = 2.0) -> tuple[float, np.ndarray]:
    """Mean over rows of -sum t log softmax(y) + Z lse(y)^2; `padded` lanes of logit 0 join the softmax (a slip),
    z_factor is the 2 of d(Z lse^2) = 2 Z lse s (another)."""
    y, slope = transform(logits)
    y = np.concatenate([y, np.zeros((y.shape[0], padded))], axis=1)
    top = y.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(y - top).sum(axis=1))
    log_s = y - lse[:, None]
    s = np.exp(log_s)[:, : logits.shape[1]]
    rows = -(targets * log_s[:, : logits.shape[1]]).sum(axis=1) + Z_LOSS * lse**2
    by_y = s * targets.sum(axis=1, keepdims=True) - targets + z_factor * Z_LOSS * lse[:, None] * s
    return float(rows.mean()), by_y * slope / logits.shape[0]


def capped_cross_entropy(logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """Correct: logit scale, soft-capping and z-loss, as Gemma 2 and PaLM define them."""
    return _cross_entropy(logits, targets)


def softcap_z_tanh(logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """Slip (unsloth-zoo PR #593): soft-capping written z tanh(z / C) instead of C tanh(z / C)."""

    def z_tanh(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w = SCALE * z
        t = np.tanh(w / SOFTCAP)
        return w * t, SCALE * (t + w / SOFTCAP * (1 - t * t))

    return _cross_entropy(logits, targets, z_tanh)


def softcap_never_applied(logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """Slip (ml-cross-entropy #48): the soft-capping option accepted and never applied."""
    return _cross_entropy(logits, targets, lambda z: (SCALE * z, np.full_like(z, SCALE)))


def padded_lanes_with_mass(logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """Slip (unsloth PR #10616): the vocabulary padded with lanes of logit 0 (not -inf) after the cap, so the
    padding takes probability mass from every row."""
    return _cross_entropy(logits, targets, padded=PADDED)


def logit_scale_in_backward(logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """Slip (Fast-LLM #228): the backward applies the logit scale in the wrong place, evaluating the cap's
    derivative at the unscaled logit: A (1 - tanh^2(z / C)) instead of A (1 - tanh^2(A z / C))."""
    loss, _ = _cross_entropy(logits, targets)
    t = np.tanh(logits / SOFTCAP)
    wrong = _cross_entropy(logits, targets, lambda z: (_capped(z)[0], SCALE * (1 - t * t)))[1]
    return loss, wrong


def z_loss_missing_two(logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """Slip (Liger-Kernel PR #239's kind): the z-loss's derivative written Z lse s, not 2 Z lse s."""
    loss, _ = _cross_entropy(logits, targets)
    return loss, _cross_entropy(logits, targets, z_factor=1.0)[1]


def _bce(logits: np.ndarray, targets: np.ndarray, sign: float = -1.0) -> tuple[float, np.ndarray]:
    """torch's stable form: (1 - t) x + (1 + (p - 1) t) (log1p(e^-|x|) + max(sign x, 0)); right with sign -1."""
    x, t = logits, targets
    weight = 1 + (POS_WEIGHT - 1) * t
    softplus = np.log1p(np.exp(-np.abs(x))) + np.maximum(sign * x, 0)  # softplus(sign x)
    elements = (1 - t) * x + weight * softplus
    slope = sign * np.exp(-np.logaddexp(0, -sign * x))  # d softplus(sign x) / dx = sign sigmoid(sign x)
    return float(elements.mean()), ((1 - t) + weight * slope) / x.size


def bce_with_logits(logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """Correct: torch's binary_cross_entropy_with_logits with pos_weight, mean over N x C; finite at -120."""
    return _bce(logits, targets)


def bce_stable_form_sign(logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """Slip (pytorch PR #2221): the stable form's max(-x, 0) written max(x, 0), a sign missing."""
    return _bce(logits, targets, sign=1.0)


def _focal(logits: np.ndarray, targets: np.ndarray, exponent_drop: float) -> tuple[float, np.ndarray]:
    """Mean over rows of -(1 - s_y)^gamma log s_y; its gradient with gamma u^(gamma - exponent_drop)."""
    top = logits.max(axis=1, keepdims=True)
    log_s = logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))
    s = np.exp(log_s)
    log_sy, s_y = (log_s * targets).sum(axis=1), (s * targets).sum(axis=1)
    u = 1 - s_y
    rows = -(u**GAMMA) * log_sy
    bracket = GAMMA * u ** (GAMMA - exponent_drop) * log_sy * s_y - u**GAMMA
    return float(rows.mean()), bracket[:, None] * (targets - s) / logits.shape[0]


def focal(logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """Correct: the softmax focal loss of Lin et al., no alpha."""
    return _focal(logits, targets, 1.0)


def focal_missing_minus_one(logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """Slip (torchvision #8519's kind): the derivative of u^gamma written gamma u^gamma, the -1 missing."""
    return _focal(logits, targets, 0.0)
