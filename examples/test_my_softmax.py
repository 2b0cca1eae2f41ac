"""pytest tests of examples/my_softmax.py with gradcheck's assertion helper (README: "Use from Python and pytest").

    python -m pytest examples/test_my_softmax.py              # 3 passed, 3 xfailed (1 skipped without torch)
    python -m pytest examples/test_my_softmax.py --runxfail   # shows what gradcheck says about each planted bug

The correct functions pass. Each planted bug is marked xfail(strict=True): the test passes only when gradcheck
catches the bug (an AssertionError), so the planted bugs never fail a run by accident and a gradcheck that
missed one would fail it.
"""

import pytest
from my_softmax import forgot_one_over_n, mse, mse_factor_two, naive_softmax_cross_entropy, softmax_cross_entropy

from gradcheck_cli import assert_gradients_match

LOGITS = [[1.1, 2.2, 0.2, -1.7], [1.0, 2.0, 3.0, 0.5], [1000.0, 0.0, -1000.0, 3.0]]
LABELS = [2, 1, 0]
TARGETS = [[0.1, 0.2, 0.6, 0.1], [0.25, 0.25, 0.25, 0.25], [0.0, 0.0, 1.0, 0.0]]


def planted(bug: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, raises=AssertionError, reason=f"planted bug: {bug}")


def test_softmax_cross_entropy():
    assert_gradients_match(softmax_cross_entropy, LOGITS, labels=LABELS)


def test_mse():
    assert_gradients_match(mse, LOGITS, targets=TARGETS, loss="mse")


def test_torch_cross_entropy_in_float32():
    """A torch function gets torch tensors (float32 here) and is held to float32's tolerances."""
    torch = pytest.importorskip("torch", reason="the torch example needs torch")

    def cross_entropy(logits, targets):
        logits = logits.detach().requires_grad_()
        loss = torch.nn.functional.cross_entropy(logits, targets)
        (gradient,) = torch.autograd.grad(loss, logits)
        return loss, gradient

    assert_gradients_match(cross_entropy, torch.tensor(LOGITS, dtype=torch.float32), torch.tensor(LABELS))


@planted("the gradient forgets the 1/N of the mean")
def test_forgot_one_over_n():
    assert_gradients_match(forgot_one_over_n, LOGITS, labels=LABELS)


@planted("no max subtraction: e^1000 overflows")
def test_naive_softmax_cross_entropy():
    assert_gradients_match(naive_softmax_cross_entropy, LOGITS, labels=LABELS)


@planted("g = 2 (s - t) for the 1/2-scaled squared error")
def test_mse_factor_two():
    assert_gradients_match(mse_factor_two, LOGITS, targets=TARGETS, loss="mse")
