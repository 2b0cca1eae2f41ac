"""A kernel-style loss for `--framework torch`: f(logits, labels) -> loss only, as fused kernels are called.

gradcheck calls it with torch tensors in --dtype and takes the gradient with torch.autograd.grad. Labels of
-100 are ignored, as F.cross_entropy ignores them.
"""

import torch
import torch.nn.functional as F


def fused_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy upcast to float32 (what correct half-precision kernels do), mean over kept rows."""
    return F.cross_entropy(logits.float(), labels)
