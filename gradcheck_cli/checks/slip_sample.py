"""A bounded sample of an input's rows, to diagnose an input too big to keep whole (users.py).

Past users.DIAGNOSIS_LIMIT logits an input is still checked in full, batch by batch, but its rows are no
longer all kept: RowSample keeps at most `budget` rows (SAMPLE_LOGITS // C, at least MIN_ROWS) with their
logits, labels, targets, teacher logits and the user's values, chosen as the batches pass, whatever their
number and sizes, from four pools:
- `worst`: the rows of the failing checks' worst elements, by the share of its tolerance each used (every
  batch's checks name their worst elements, so the input's worst element is always kept);
- `ignored`: rows labelled ignore_index, and `overflow`: rows where e^(z/T) without the row maximum
  subtracted is not finite in float32 or float64, so ignored-rows-not-zeroed and no-max-subtraction can be
  told on a sample;
- `spread`: row 0 (grad-output-broadcast's g_0), then the rows of smallest splitmix64 hash of their index and
  the seed: a deterministic, uniform sample across the input that does not depend on how it was split.
The pools of ignored and overflowing rows take their rows by the same hash. The whole input's numbers that
hypotheses need (N, the rows not ignored, the summed weights, the mean's divisors under the conventions
they recompute with) are summed over every row as it passes: slip_context.Totals. Memory is the budget's
rows plus the batch being read, whatever N.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from gradcheck_cli.batch import Batch
from gradcheck_cli.checks.slip_context import DISTILLATION_LOSSES, Totals
from gradcheck_cli.checks.slip_formulas import overflowing_rows
from gradcheck_cli.numerics.exact import ExactSum
from gradcheck_cli.numerics.losses import loss_kind
from gradcheck_cli.report import CheckResult
from gradcheck_cli.settings import DIVIDING_REDUCTIONS, Settings

SAMPLE_LOGITS = 1 << 20  # 8 MB of float64 logits, and as much again for each array of the user's kept with them
MIN_ROWS = 4  # rows kept however wide they are (C = 128,256: 8 rows, some 8 MB an array)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def row_priority(rows: np.ndarray, seed: int | None) -> np.ndarray:
    """splitmix64 of the row's index and the seed (0 when none): a pseudo-random order fixed by the index
    alone, in [0, 1) (uint64 arithmetic wraps, as splitmix64 means it to)."""
    offset = np.full(rows.shape, (0 if seed is None else seed) % 2**64, dtype=np.uint64)
    with np.errstate(over="ignore"):
        state = (rows.astype(np.uint64) + np.uint64(1) + offset * _GOLDEN) * _GOLDEN
        state = (state ^ (state >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        state = (state ^ (state >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        state ^= state >> np.uint64(31)
    return (state >> np.uint64(11)).astype(np.float64) / 2.0**53


class _Pool(NamedTuple):
    """Up to `size` rows of the input, those of smallest key (ties: the smaller row)."""

    size: int
    keys: np.ndarray
    rows: np.ndarray

    def merged(self, keys: np.ndarray, rows: np.ndarray) -> _Pool:
        if keys.size > self.size:  # only the batch's best `size` can enter: sort no more than twice the pool
            best = np.argpartition(keys, self.size - 1)[: self.size]
            keys, rows = keys[best], rows[best]
        keys, rows = np.concatenate([self.keys, keys]), np.concatenate([self.rows, rows])
        order = np.lexsort((rows, keys))
        keys, rows = keys[order], rows[order]
        _, first = np.unique(rows, return_index=True)  # a row named twice (two checks) keeps its best key
        first = np.sort(first)[: self.size]
        return _Pool(self.size, keys[first], rows[first])


def _empty_pool(size: int) -> _Pool:
    return _Pool(size, np.empty(0), np.empty(0, dtype=np.int64))


class _Rows(NamedTuple):
    """The kept rows: the input's index of each (ascending) and their arrays (None where the input has none)."""

    input_rows: np.ndarray
    logits: np.ndarray
    labels: np.ndarray | None
    targets: np.ndarray
    teacher: np.ndarray | None
    values: dict[str, np.ndarray]

    def taken(self, chosen: np.ndarray) -> _Rows:
        return _Rows(self.input_rows[chosen], self.logits[chosen], None if self.labels is None else self.labels[chosen],
                     self.targets[chosen], None if self.teacher is None else self.teacher[chosen],
                     {name: value[chosen] for name, value in self.values.items()})

    def joined(self, other: _Rows) -> _Rows:
        def both(mine: np.ndarray | None, theirs: np.ndarray | None) -> np.ndarray | None:
            return None if mine is None or theirs is None else np.concatenate([mine, theirs])

        values = {name: np.concatenate([value, other.values[name]]) for name, value in self.values.items()}
        joined = _Rows(np.concatenate([self.input_rows, other.input_rows]), np.concatenate([self.logits, other.logits]),
                       both(self.labels, other.labels), np.concatenate([self.targets, other.targets]),
                       both(self.teacher, other.teacher), values)
        return joined.taken(np.argsort(joined.input_rows, kind="stable"))


class _Sums:
    """The whole input's Totals, summed exactly over its rows as they pass."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.rows = self.kept = 0
        self.weights = ExactSum()
        self.divisors: dict[str, ExactSum] = {}

    def add(self, batch: Batch) -> None:
        settings, kind = self.settings, loss_kind(self.settings.loss)
        kept = np.ones(batch.rows, dtype=bool)
        if batch.labels is not None and settings.ignore_index is not None:
            kept = batch.labels != settings.ignore_index
        weights = 1.0 if settings.weights is None else np.asarray(settings.weights, dtype=np.float64)
        self.rows += batch.rows
        self.kept += int(np.count_nonzero(kept))
        weighted = (batch.targets * weights)[kept]
        self.weights.add(weighted[weighted != 0])  # exactly summed: the nonzero terms only (one a row for labels)
        self._add("", kind.divisor_rows(batch, settings))
        if batch.labels is None:
            return
        if settings.ignore_index is not None and 0 <= settings.ignore_index < batch.classes:
            self._add("counted", kind.divisor_rows(batch, settings._replace(ignore_index=None)))
        for shift in (1, -1):  # as label_shift shifts them: the ignored rows stay
            labels = np.where(kept, (batch.labels + shift) % batch.classes, batch.labels)
            self._add(f"shift{shift:+d}", kind.divisor_rows(dataclasses.replace(batch, labels=labels), settings))

    def _add(self, variant: str, shares: np.ndarray) -> None:
        self.divisors.setdefault(variant, ExactSum()).add(shares)

    def totals(self, sample_rows: np.ndarray) -> Totals:
        """The loss's own divisor convention: kl_div's sum and none divide by 1, the other losses keep theirs."""
        settings = self.settings
        dividing = settings.reduction in DIVIDING_REDUCTIONS or settings.loss not in DISTILLATION_LOSSES
        divisors = {variant: total.value() if dividing else 1.0 for variant, total in self.divisors.items()}
        return Totals(self.rows, self.kept, self.weights.value(), divisors, sample_rows)


class RowSample:
    """A sample of at most `budget` rows of an input read in batches, and the whole input's Totals."""

    def __init__(self, settings: Settings, sample_logits: int = SAMPLE_LOGITS) -> None:
        self.settings, self.sample_logits = settings, sample_logits
        self.sums = _Sums(settings)
        self.pools: dict[str, _Pool] = {}
        self.kept: _Rows | None = None

    @property
    def rows(self) -> int:
        return 0 if self.kept is None else int(self.kept.input_rows.size)

    def budget(self, classes: int) -> int:
        """How many rows of `classes` logits the sample keeps at most."""
        return max(MIN_ROWS, self.sample_logits // classes)

    def add(self, batch: Batch, logits: np.ndarray, values: dict[str, np.ndarray], start: int,
            checks: list[CheckResult] | None = None) -> None:
        """The batch's rows (the input's start, start + 1, ...) offered to the pools; `values` the user's
        per-row arrays of them, `checks` the batch's checks (their worst elements), when known."""
        self.sums.add(batch)
        if not self.pools:
            self.pools = _pools(self.budget(batch.classes))
        index = np.arange(start, start + batch.rows, dtype=np.int64)
        priority = row_priority(index, self.settings.seed)
        offered = {"spread": (np.where(index == 0, -1.0, priority), index),
                   "worst": _worst(checks or [], values, start),
                   "overflow": _chosen(priority, index, _overflowing(logits, self.settings.temperature))}
        if batch.labels is not None and self.settings.ignore_index is not None:
            offered["ignored"] = _chosen(priority, index, batch.labels == self.settings.ignore_index)
        for name, (keys, rows) in offered.items():
            self.pools[name] = self.pools[name].merged(keys, rows)
        wanted = np.concatenate([pool.rows for pool in self.pools.values()])
        chosen = np.isin(index, wanted)
        new = _Rows(index, logits, batch.labels, batch.targets.astype(np.float64), batch.teacher_logits,
                    values).taken(chosen)
        if self.kept is not None:
            new = self.kept.taken(np.isin(self.kept.input_rows, wanted)).joined(new)
        self.kept = new

    def batch(self) -> Batch:
        """The sampled rows as one batch (its labels, targets and teacher logits)."""
        assert self.kept is not None
        kept = self.kept
        return Batch(kept.logits, kept.labels, kept.targets, teacher_logits=kept.teacher)

    def values(self, name: str) -> np.ndarray:
        assert self.kept is not None
        return self.kept.values[name]

    def totals(self) -> Totals:
        assert self.kept is not None
        return self.sums.totals(self.kept.input_rows)

    def described(self) -> str:
        """Which rows the sample holds, for a note: its pools with their rows (a few each)."""
        assert self.kept is not None
        if self.rows == self.sums.rows:
            budget = sum(pool.size for pool in self.pools.values())
            return f"decided on all {self.rows:,} rows (a sample of up to {budget:,} rows holds them all)"
        names = {"worst": "the failing checks' worst elements", "ignored": "ignored rows",
                 "overflow": "rows whose e^(z/T) overflows", "spread": "row 0 and rows spread across the input"}
        parts = [f"{names[name]} ({_listed(pool.rows)})" for name, pool in self.pools.items() if pool.rows.size]
        return (f"decided on a sample of {self.rows} of the {self.sums.rows:,} rows: " + "; ".join(parts) +
                f" (spread by a hash of the row index and the seed, {self.settings.seed or 0})")


def _pools(budget: int) -> dict[str, _Pool]:
    """The budget shared out: a quarter for the worst rows, an eighth each for ignored and overflowing ones, the
    rest (at least one row) spread."""
    worst, special = max(1, budget // 4), max(1, budget // 8)
    spread = max(1, budget - worst - 2 * special)
    return {"worst": _empty_pool(worst), "ignored": _empty_pool(special), "overflow": _empty_pool(special),
            "spread": _empty_pool(spread)}


def _chosen(priority: np.ndarray, index: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return priority[rows], index[rows]


def _overflowing(logits: np.ndarray, temperature: float) -> np.ndarray:
    found = overflowing_rows(logits, temperature)
    return np.logical_or.reduce([rows for _, rows in found])


def _worst(checks: list[CheckResult], values: dict[str, np.ndarray], start: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows of the worst elements of the batch's failing checks of the user's per-row values, keyed by minus
    the share of its tolerance each used (a NaN's share first of all)."""
    shares, rows = [], []
    for check in checks:
        if check.passed or check.name not in values:
            continue
        for element in check.worst_elements:
            if element.position:
                rows.append(start + element.position[0])
                shares.append(element.share)
    keys = -np.nan_to_num(np.asarray(shares, dtype=np.float64), nan=np.inf)
    return keys, np.asarray(rows, dtype=np.int64)


def _listed(rows: np.ndarray, shown: int = 8) -> str:
    ordered = np.sort(rows)
    text = ", ".join(str(row) for row in ordered[:shown].tolist())
    return text + (f", ... {rows.size} rows" if rows.size > shown else "")
