"""The Hessian check (issue 13): a loss whose Hessian is m_n ds/dz per row is decided in O(N C) as the Jacobian
is; any other loss is refused before it starts when its N x C x C arrays would not fit; never exit 3.

Cross-entropy says it has the structure through hessian_multiple(logits, given) -> m (N).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from gradcheck_cli.checks import jacobian
from gradcheck_cli.numerics import differences
from gradcheck_cli.numerics.losses.base import rounding_factor
from gradcheck_cli.numerics.losses.cross_entropy import torch_cross_entropy
from gradcheck_cli.numerics.softmax import softmax_parts
from gradcheck_cli.settings import Settings

EPS = float(np.finfo(np.float64).eps)


def _case(dtype: str, temperature: float, reduction: str, rows: int = 6, classes: int = 40, seed: int = 1):
    rng = np.random.default_rng(seed)
    low = (rng.standard_normal((rows, classes)) * 3).astype(dtype)
    logits = low.astype(np.float64)
    settings = differences.resolve(Settings(dtype=dtype, temperature=temperature, order=2, reduction=reduction,
                                            label_smoothing=0.1))
    plain = torch_cross_entropy(classes, labels=rng.integers(0, classes, rows), reduction=reduction,
                                temperature=temperature, label_smoothing=0.1, weights=rng.uniform(0.5, 2, classes))
    reference = plain
    analytic = replace(reference, coefficients=reference.coefficients.astype(dtype))
    parts = softmax_parts(logits / temperature), softmax_parts(low / np.dtype(dtype).type(temperature))
    return settings, low, logits, analytic, reference, parts[1], parts[0]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("temperature", [1.0, 0.5, 4.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_the_structured_hessian_equals_comparing_every_element(dtype, temperature, reduction):
    """Protects the O(N C) Hessian: it reports what comparing all N C^2 elements of the same sides reports
    (to the rounding of the numeric product and the difference, as tests/test_jacobian_check.py derives)."""
    settings, low, logits, analytic, reference, analytic_s, reference_s = _case(dtype, temperature, reduction)
    rho = rounding_factor(logits, temperature)
    fast = jacobian.hessian_check(analytic, reference, low, logits, analytic_s, reference_s, settings, rho)
    multiples = (analytic.hessian_multiple(low), reference.hessian_multiple(logits))
    full = jacobian.by_element(jacobian.jacobian_sides(analytic_s, reference_s, settings, multiples), logits,
                               settings, rho, jacobian.HESSIAN)
    assert fast.passed and full.passed and fast.name == "hessian" and len(fast.worst_index) == 3
    assert fast.elements == full.elements == low.shape[0] * low.shape[1] ** 2
    u32 = float(np.finfo(np.float32).eps) / 2
    rounding = 4 * EPS / (settings.rtol if dtype == "float64" else u32 * 2 * (2 * 40 + 16))
    assert fast.worst_share == pytest.approx(full.worst_share, rel=1e-12, abs=rounding)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_sides_are_the_hessian_and_its_differences(dtype):
    """The factored sides, expanded, are the loss's own N x C x C Hessian (its hessian()) and the differences
    of its gradient_perturbation (numeric_hessian): the structured check checks the same two things.

    Analytic: float32's a_ij is the exact product of float32 numbers, float32's own Hessian that product
    rounded, so they differ by u32 |a| (and 2 u32 on the diagonal, rounded twice more); in float64 by a few
    eps |a| (the multiple applied before or after the product). Numeric: the stencil of s_i f_k summed
    against s_i times the stencil of f_k, rounding of a few eps of the largest term over h, sum |w o| <= 2."""
    settings, low, logits, analytic, reference, analytic_s, reference_s = _case(dtype, 1.0, "mean")
    sides = jacobian.jacobian_sides(analytic_s, reference_s, settings,
                                    (analytic.hessian_multiple(low), reference.hessian_multiple(logits)))
    expanded_analytic = -sides.low[:, :, None] * sides.column[:, None, :]
    expanded_numeric = sides.s[:, :, None] * sides.factor[:, None, :]
    diagonal = np.arange(low.shape[1])
    expanded_analytic[:, diagonal, diagonal] = sides.diagonal
    expanded_numeric[:, diagonal, diagonal] = sides.own
    own_hessian = analytic.hessian(low).astype(np.float64)
    unit = np.finfo(np.dtype(dtype)).eps / 2
    assert np.abs(expanded_analytic - own_hessian).max() <= 4 * unit * np.abs(own_hessian).max()
    change = reference.gradient_perturbation(logits, reference_s)
    numeric = differences.numeric_hessian(change, low.shape[1], settings.eps, settings.method)
    largest_term = np.abs(reference.coefficients.sum(axis=-1)).max() * reference.factor  # |change| <= A s_j q
    assert np.abs(expanded_numeric - numeric).max() <= 16 * EPS * largest_term


def test_the_hessian_matches_the_derivation_by_hand():
    """d2L/dz2 of mean cross-entropy with a one-hot label, T = 2: (diag(s) - s s^T) / (N T^2), to 1e-12."""
    logits = np.array([[1.1, 2.2, 0.2, -1.7], [1.0, 2.0, 3.0, 0.0]])
    loss = torch_cross_entropy(4, labels=np.array([1, 2]), temperature=2.0)
    parts = softmax_parts(logits / 2.0)
    settings = differences.resolve(Settings(temperature=2.0, order=2))
    sides = jacobian.jacobian_sides(parts, parts, settings, (loss.hessian_multiple(logits),) * 2)
    s = parts.s
    by_hand = (np.einsum("ni,ij->nij", s, np.eye(4)) - s[:, :, None] * s[:, None, :]) / (2 * 2.0**2)
    built = -sides.low[:, :, None] * sides.column[:, None, :]
    built[:, range(4), range(4)] = sides.diagonal
    assert np.abs(built - by_hand).max() <= 1e-12 * np.abs(by_hand).max()


def test_a_wrong_hessian_element_fails_at_its_place(monkeypatch):
    """A slip of 1e-6 in one numeric element fails the structured check where comparing every element does."""
    settings, low, logits, analytic, reference, analytic_s, reference_s = _case("float64", 1.0, "mean")
    exact = differences.softmax_derivative_factors

    def slipped(*args, **kwargs):
        factor, own = exact(*args, **kwargs)
        factor[4, 7] *= 1 + 1e-6
        return factor, own

    monkeypatch.setattr(differences, "softmax_derivative_factors", slipped)
    rho = rounding_factor(logits, 1.0)
    result = jacobian.hessian_check(analytic, reference, low, logits, analytic_s, reference_s, settings, rho)
    assert not result.passed and result.worst_index[0] == 4 and result.worst_index[2] == 7
    assert result.mismatches >= 1 and result.elements == low.shape[0] * low.shape[1] ** 2


def _write(path: Path, rows: int, classes: int) -> Path:
    rng = np.random.default_rng(rows + classes)
    path.write_text(json.dumps({"logits": np.round(rng.standard_normal((rows, classes)) * 3, 6).tolist(),
                                "labels": rng.integers(0, classes, rows).tolist()}))
    return path


def test_a_structured_loss_checks_rows_of_50257_in_o_n_c(gradcheck, tmp_path):
    """The issue's rows (8 x 50,257 was exit 3 for 151 GiB): --order 2 passes (exit 0), every element judged."""
    path = _write(tmp_path / "wide.json", 3, 50_257)
    run = gradcheck("check", "-i", str(path), "--order", "2", "-f", "json")
    assert run.exit_code == 0, run
    hessian = next(check for check in json.loads(run.stdout)["checks"] if check["name"] == "hessian")
    assert hessian["passed"]


@pytest.mark.parametrize(("rows", "classes", "way_out"), [
    (1, 2100, "check the gradient alone (--order 1): not even one row fits"),
    (8, 1000, "give at most 4 rows per input, or check the gradient alone (--order 1)"),
])
def test_a_loss_without_the_structure_is_refused_up_front(gradcheck, tmp_path, rows, classes, way_out):
    """mse's Hessian has no m ds/dz form: past the memory bound it is exit 2 with one line and the way out,
    before anything is built (never MemoryError, exit 3)."""
    path = _write(tmp_path / "wide.json", rows, classes)
    run = gradcheck("check", "-i", str(path), "--order", "2", "--loss", "mse")
    assert run.exit_code == 2, run
    assert run.stdout == ""
    assert run.stderr.count("\n") == 1 and way_out in run.stderr, run
    assert f"{rows * classes**2:,} elements" in run.stderr


@pytest.mark.parametrize("options", [{"loss": "mse"}, {"z_loss": 1e-4}])
def test_a_wide_hessian_without_the_structure_is_refused_before_any_check(monkeypatch, options):
    """The refusal comes before the batch's other checks (the gradient's finite differences, the Jacobian),
    which at 8 x 50,257 took longer than the refusal's whole point: saying at once what to do instead."""
    from gradcheck_cli.batch import Batch
    from gradcheck_cli.checks.rows import check_rows
    from gradcheck_cli.errors import InputError
    from gradcheck_cli.numerics.losses import accepted_kind

    def no_check(*args, **kwargs):
        raise AssertionError("a check ran before the refusal")

    monkeypatch.setattr(differences, "numeric_gradient", no_check)
    rng = np.random.default_rng(5)
    logits, labels = rng.standard_normal((8, 1000)), rng.integers(0, 1000, 8)
    batch = Batch(logits=logits, labels=labels, targets=np.eye(1000)[labels])
    settings = differences.resolve(Settings(order=2, **options))
    with pytest.raises(InputError, match="give at most 4 rows per input"):
        check_rows(batch, settings, accepted_kind(settings), 8.0)


def test_a_loss_without_the_structure_is_still_checked_below_the_bound(gradcheck, tmp_path):
    """Under the bound the generic path runs as before: mse's Hessian checked element by element."""
    run = gradcheck("check", "-i", str(_write(tmp_path / "small.json", 3, 30)), "--order", "2", "--loss", "mse")
    assert run.exit_code == 0, run
    assert "hessian" in run.stdout
