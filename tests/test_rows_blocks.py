"""check_rows checks a wide batch a block of rows at a time (so a block's temporaries stay in the caches and
memory is the results' and one block's): every check, array and verdict must be the whole batch's, bit for bit."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from gradcheck_cli.batch import Batch
from gradcheck_cli.checks import rows as rows_module
from gradcheck_cli.checks.rows import check_rows
from gradcheck_cli.checks.runner import accepted_kind
from gradcheck_cli.numerics import differences
from gradcheck_cli.settings import Settings


def _batch(rows: int, classes: int, seed: int, *, labels: bool = True, supplied: dict | None = None) -> Batch:
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=4.0, size=(rows, classes))
    logits[1, :2] = logits[1].max() + 1.0  # two tied largest
    logits[2, 0] = 60.0  # a confident row
    if labels:
        chosen = rng.integers(0, classes, rows)
        targets = np.zeros((rows, classes))
        targets[np.arange(rows), chosen] = 1.0
        return Batch(logits, chosen, targets, supplied=supplied or {})
    return Batch(logits, None, rng.dirichlet(np.ones(classes), rows), supplied=supplied or {})


def _checked(batch: Batch, settings: Settings, block: int, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(rows_module, "BLOCK_ELEMENTS", block)
    settings = differences.resolve(settings)
    return check_rows(batch, settings, accepted_kind(settings), float(batch.rows))


def _planted_gradient(batch: Batch) -> dict:
    """A supplied gradient with one element off by 1e-3: its check fails at (5, 3)."""
    settings = differences.resolve(Settings())
    gradient = accepted_kind(settings).build(batch, settings, np.dtype(np.float64)).gradient(batch.logits)
    gradient[5, 3] *= 1.001
    return {"gradient": gradient}


CASES = {
    "float64": (Settings(), {}),
    "float32 (the hull candidates)": (Settings(dtype="float32"), {}),
    "bfloat16 with a supplied gradient": (Settings(dtype="bfloat16"), {"supplied": "gradient"}),
    "a failing supplied gradient": (Settings(), {"supplied": "planted"}),
    "five-point at T = 0.5": (Settings(method="five-point", temperature=0.5), {}),
    "z-loss and smoothing": (Settings(z_loss=1e-3, label_smoothing=0.1), {}),
    "soft targets": (Settings(), {"labels": False}),
    "bce": (Settings(loss="bce"), {"labels": False}),
    "focal": (Settings(loss="focal"), {}),
    "an rtol no check meets": (Settings(rtol=1e-16), {}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_blocks_of_rows_give_the_whole_batch_check(monkeypatch, case):
    """Protects the blocked check: one row per block (13 blocks) and the whole batch in one give the same checks
    (worst elements, shares, counts, failing elements) and the same arrays, bit for bit."""
    settings, how = CASES[case]
    batch = _batch(13, 9, seed=len(case), labels=how.get("labels", True))
    if how.get("supplied") == "planted":
        batch.supplied = _planted_gradient(batch)
    elif how.get("supplied") == "gradient":
        batch.supplied = {"gradient": _planted_gradient(batch)["gradient"] * 0 + batch.logits * 1e-3}
    whole = _checked(batch, settings, 1 << 30, monkeypatch)
    blocked = _checked(batch, settings, 1, monkeypatch)
    assert blocked.checks == whole.checks
    for name in ("row_losses", "analytic_gradient", "numeric_gradient", "logits"):
        assert getattr(blocked, name).tobytes() == getattr(whole, name).tobytes(), name
    for got, want in zip(blocked.softmax, whole.softmax, strict=True):
        assert got.tobytes() == want.tobytes()
    if how.get("supplied") == "planted":
        failing = next(c for c in whole.checks if c.name == "supplied gradient")
        assert not failing.passed and failing.worst_index == (5, 3)
    if case == "an rtol no check meets":
        assert not any(c.passed for c in whole.checks)


def test_a_wide_batch_is_checked_in_blocks(monkeypatch):
    """Protects that a batch wider than a block is checked a block at a time (each block's rows once, in order)."""
    seen = []
    piece = rows_module._check_piece

    def spy(batch, *args, **kwargs):
        seen.append(batch.rows)
        return piece(batch, *args, **kwargs)

    monkeypatch.setattr(rows_module, "_check_piece", spy)
    _checked(_batch(7, 100, seed=1), Settings(), 300, monkeypatch)  # 3 rows of 100 classes per block
    assert seen == [3, 3, 1]
    seen.clear()
    _checked(_batch(7, 100, seed=1), Settings(order=2), 300, monkeypatch)  # the Hessian's refusal counts all rows
    assert seen == [7]


def test_memory_of_a_wide_batch_is_its_results_and_one_block(monkeypatch):
    """Protects the memory of checking one wide batch (a whole --impl batch of 1,024 x 128,256 is 131M logits:
    each array as big as the batch is 1 GB). Beyond the batch itself, check_rows holds its results (the
    softmax's s, 1 - s and z - max, the analytic and numeric gradients: 5 arrays as big as the batch), the
    loss's coefficients (1 more) and one block's temporaries (at most 40 arrays of a block's size, 128K
    elements). Before the blocks (and the leaner compare and Jacobian), it held about 20 arrays of the batch's size."""
    batch = _batch(16, 65536, seed=2)
    size = batch.logits.nbytes
    block = 8 * rows_module.BLOCK_ELEMENTS
    settings = differences.resolve(Settings())
    kind = accepted_kind(settings)
    tracemalloc.start()
    try:
        check_rows(batch, settings, kind, 16.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= 6 * size + 40 * block, (peak / size, size)
