"""`assert_gradients_match`: a user's loss-and-gradient function against the reference, in its own precision.

The function is called as --impl calls it, f(logits, targets) -> (loss, gradient), with the caller's kind of
arrays (torch tensors stay torch tensors, in their dtype and on their device). Its loss and gradient are then
checked as values the user supplied (`supplied loss`, `supplied gradient`) against the float64 reference taken
at exactly the logits and targets the function saw. No finite differences of the user's loss are taken: in a
low precision they would measure its rounding, not its derivative.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gradcheck_cli.api import keywords
from gradcheck_cli.api.arrays import as_float64, dtype_name, like
from gradcheck_cli.api.checking import ImplFunction, batch_from_arrays, check
from gradcheck_cli.errors import InputError
from gradcheck_cli.settings import DTYPES

if TYPE_CHECKING:
    from gradcheck_cli.report import Report

# check()'s keywords that say how to check (the values themselves come from the function).
SETTINGS_OPTIONS = frozenset({*keywords.SETTINGS_KEYWORDS, "full"})


def gradients_report(fn: ImplFunction, logits: Any, labels: Any = None, targets: Any = None, **options: Any) -> Report:
    """The Report of the check assert_gradients_match makes (for a test that wants to look at it).

    `options` are check()'s keywords. Unless given, `dtype` follows the logits (float32 tensors or arrays
    check against float32's tolerances, everything else float64's); see assert_gradients_match.
    """
    unknown = sorted(set(options) - SETTINGS_OPTIONS)
    if unknown:  # the loss, gradient and implementation come from fn; the rest is how to check them
        options_text = ", ".join(sorted(SETTINGS_OPTIONS))
        raise TypeError(f"unexpected keyword argument {unknown[0]!r}; the options are {options_text}")
    name = dtype_name(logits)
    if name not in DTYPES and "float" in name and (options.get("atol") is None or options.get("rtol") is None):
        raise InputError(
            f"logits are {name}: gradcheck has no default tolerances for {name} yet; pass atol= and rtol= "
            f"for your function's precision (README: 'Use from Python and pytest')"
        )
    if options.get("dtype") is None:
        options["dtype"] = name if name in DTYPES else "float64"
    ignore_index = keywords.settings_from(options).ignore_index  # every option checked before fn runs
    batch = batch_from_arrays(logits, labels, targets, {}, None, ignore_index)
    seen_targets = like(logits, batch.targets)
    result = fn(like(logits, batch.logits), seen_targets)
    if not (isinstance(result, tuple | list) and len(result) == 2):
        raise InputError(f"the function must return (loss, gradient), got {type(result).__name__}")
    loss, gradient = as_float64(result[0], "the function's loss"), as_float64(result[1], "the function's gradient")
    # Targets given as numbers are checked as the function saw them (rounded to its dtype); labels stay labels.
    answers = {"labels": labels} if labels is not None else {"targets": as_float64(seen_targets, "targets")}
    return check(batch.logits, **answers, gradient=gradient, loss_value=loss, **options)


def assert_gradients_match(
    fn: ImplFunction, logits: Any, labels: Any = None, targets: Any = None, **options: Any
) -> Report:
    """Assert that fn(logits, targets) -> (loss, gradient) matches gradcheck's reference; return the Report.

    fn gets the logits as you pass them (a torch tensor stays a tensor of its dtype, on its device; lists
    become float64 numpy arrays) and the targets as N x C rows of the same kind (one-hot rows for labels), and
    returns the loss for the reduction (a number, or N row losses for reduction="none") and dL/dlogits.
    `options` are check()'s keywords (reduction, weights, temperature, atol, rtol, ...). Default tolerances
    follow the logits' dtype: float64 the method's (1e-10 + 1e-7 |expected| for central differences),
    float32 1e-6 + 3e-5 |expected|, bfloat16 and float16 torch.testing's for the dtype plus the baseline
    verdict (README: "Half precision"). On a mismatch raises AssertionError with Report.failure_message(): each
    failing check, how many elements mismatch, and the worst five with their indices and both values.

    Example:

        assert_gradients_match(softmax_cross_entropy, [[1.1, 2.2, 0.2, -1.7]], labels=[2])
    """
    __tracebackhide__ = True  # pytest shows the test's line, not this one
    report = gradients_report(fn, logits, labels, targets, **options)
    report.assert_ok()
    return report
