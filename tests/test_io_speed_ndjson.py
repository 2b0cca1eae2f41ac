"""ndjson row records carry each row's log-sum-exp (issue 14's leftover), as the JSON report's `lse` has it.

The records are made from whole-array formatting (render/ndjson_rows.py); these tests hold the new field to an
independent computation, to the JSON report's array, and to its absence where there is no softmax (bce).
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from gradcheck_cli.batch import Batch
from gradcheck_cli.checks.rows import check_rows
from gradcheck_cli.numerics import differences
from gradcheck_cli.numerics.losses import accepted_kind
from gradcheck_cli.render import ndjson_rows
from gradcheck_cli.settings import Settings

LOGITS = [[1.5, -2.0, 0.25, 3.0], [0.0, 0.0, 10.0, -4.0], [-30.0, 2.0, 2.0, 1e-3]]
LABELS = [3, 2, 0]


def _arguments(logits: list[list[float]]) -> list[str]:
    rows = [arg for row in logits for arg in ("--logits", ",".join(map(repr, row)))]
    return [*rows, "--labels", ",".join(map(str, LABELS))]


def _records(gradcheck, *options: str) -> tuple[list[dict], dict]:
    run = gradcheck("check", *_arguments(LOGITS), *options, "-f", "ndjson")
    assert run.exit_code == 0, run
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    return lines[:-1], lines[-1]


def _independent_lse(logits: np.ndarray, scale: float, temperature: float) -> np.ndarray:
    """log sum_j exp(A z_j / T) per row, by numpy's logaddexp reduction (not the project's softmax code)."""
    return np.logaddexp.reduce(scale * logits / temperature, axis=1)


@pytest.mark.parametrize("scale, temperature", [(1.0, 1.0), (1.0, 2.5), (0.75, 0.5)])
def test_row_records_carry_the_rows_lse(gradcheck, scale, temperature):
    """Each record's `lse` is its row's log-sum-exp of A z / T. Rounding: the reference takes max(u) plus
    log of a sum of C <= 4 terms in [0, 1], each exp and log within an ulp, so a few ulps of |lse| <= 60:
    1e-12 relative is far above that and far below any wrong scale or temperature."""
    rows, _ = _records(gradcheck, "--temperature", str(temperature), "--logit-scale", str(scale))
    expected = _independent_lse(np.array(LOGITS), scale, temperature)
    assert [row["row"] for row in rows] == [0, 1, 2]
    np.testing.assert_allclose([row["lse"] for row in rows], expected, rtol=1e-12, atol=0)


def test_row_records_place_lse_after_the_probabilities(gradcheck):
    """The field sits where the JSON report puts its `lse`: right after the probabilities."""
    rows, _ = _records(gradcheck)
    assert list(rows[0]) == ["row", "line", "loss", "probabilities", "lse", "gradient", "max_abs_error"]


def test_row_records_equal_the_reports_lse(gradcheck):
    """The ndjson rows' lse and the JSON report's array are the same numbers (one computation, two writers)."""
    rows, _ = _records(gradcheck, "--softcap", "5")
    run = gradcheck("check", *_arguments(LOGITS), "--softcap", "5", "-f", "json")
    assert [row["lse"] for row in rows] == json.loads(run.stdout)["lse"]


def test_bce_records_have_no_lse(gradcheck):
    """bce has no softmax, so no log-sum-exp: its records keep exactly the fields they had."""
    rows, _ = _records(gradcheck, "--loss", "bce")
    assert "lse" not in rows[0] and list(rows[0]) == ["row", "line", "loss", "probabilities", "gradient",
                                                      "max_abs_error"]


@pytest.mark.parametrize("encoder", ["json", "orjson"])
def test_both_writers_give_the_lse(encoder, monkeypatch):
    """The standard-library writer (byte for byte json.dumps) and the orjson one both splice the lse in."""
    if encoder == "json":
        monkeypatch.setattr(ndjson_rows, "orjson_module", lambda: None)
    else:
        pytest.importorskip("orjson")
    logits, labels = np.array(LOGITS), np.array(LABELS)
    batch = Batch(logits, labels, np.eye(4)[labels], row_lines=None)
    resolved = differences.resolve(Settings(temperature=2.0))
    part = check_rows(batch, resolved, accepted_kind(resolved), 3.0)
    written = io.StringIO()
    ndjson_rows.write_rows(written, 7, batch, part)
    records = [json.loads(line) for line in written.getvalue().splitlines()]
    assert [record["row"] for record in records] == [7, 8, 9]
    np.testing.assert_allclose([record["lse"] for record in records], _independent_lse(logits, 1.0, 2.0),
                               rtol=1e-12, atol=0)
    if encoder == "json":  # json.dumps's spacing, as the rest of the record
        assert ', "lse": ' in written.getvalue().splitlines()[0]
