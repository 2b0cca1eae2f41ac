"""explain's numbers written for a whole array at once (numerics/shown.py) and its lines joined in one go
(api/explaining.py's block): the text must be exactly what Python's own "%#.3g" formatting writes."""

from __future__ import annotations

import numpy as np
import pytest

from gradcheck_cli.api import explaining
from gradcheck_cli.numerics import shown
from gradcheck_cli.numerics.shown import numbers, python_numbers


def _hard_values() -> np.ndarray:
    """Values where a table lookup can go wrong: every decimal exponent, powers of ten and their neighbours
    (log10 misses by one there), exact decimal ties and the doubles just beside them (x.xx5: round half to even
    of the double's exact value), 99.95 / 999.5-style carries into the next exponent, both positional limits
    (1e-4 .. 999) and the special values Python writes itself."""
    rng = np.random.default_rng(7)
    powers = 10.0 ** np.arange(-323, 309)
    ties = (rng.integers(1000, 10_000, 20_000) * 10 + 5) / 10.0 ** rng.integers(-8, 10, 20_000)
    carries = np.array([9.995, 99.95, 999.5, 0.09995, 0.0009995, 0.00009995, 9995.0, 99_950.0, 1.125, 0.125])
    return np.concatenate([
        powers, -powers, np.nextafter(powers, 0), np.nextafter(powers, np.inf),
        ties, np.nextafter(ties, 0), np.nextafter(ties, np.inf), -ties,
        carries, np.nextafter(carries, 0), np.nextafter(carries, np.inf), -carries,
        rng.standard_normal(50_000) * 10.0 ** rng.integers(-300, 300, 50_000),
        rng.random(50_000) ** 8,  # softmax-like: many tiny probabilities
        np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324, -5e-324, 1.7976931348623157e308, 1e-4, 999.0]),
    ])


def test_every_number_is_written_as_pythons_own_format_writes_it():
    """Protects the table formatter: each string equals "%#.3g" of the value (point of "150." dropped, real
    minus), at ties, carries, powers of ten, subnormals and specials; a wrong rounding guard fails here."""
    values = _hard_values()
    assert numbers(values) == python_numbers(values.tolist())


def test_a_list_of_numbers_and_a_short_array_are_written_the_same_way():
    """Short inputs take Python's own path, lists are read as floats: the same strings either way."""
    assert numbers([0.15, -1, 150.0]) == ["0.150", "\u22121.00", "150"]
    values = np.linspace(-3, 3, 100)
    assert numbers(values) == numbers(values.tolist()) == python_numbers(values.tolist())


def test_a_value_next_to_a_rounding_boundary_is_handed_to_python(monkeypatch):
    """Protects the tie guard: 0.09995 is just below 0.09995 in binary, so "%#.3g" writes 0.0999; scaled it
    reads 999.5 and a lookup without the guard would write 0.100."""
    assert numbers(np.full(100, 0.09995)) == ["0.0999"] * 100
    monkeypatch.setattr(shown, "TIE_MARGIN", -1.0)  # no element sent to Python: the guard is what helps
    assert numbers(np.full(100, 0.09995)) != ["0.0999"] * 100


def test_block_fills_each_line_from_the_columns():
    """Protects block(): the k-th line is the template filled from every column's k-th string, no trailing break."""
    assert explaining.block("a%s=%s;", ["1", "2"], ["x", "y"]) == "a1=x;\na2=y;"
    assert explaining.block("   s_%s", []) == ""
    with pytest.raises(AssertionError):
        explaining.block("%s and %s", ["1"])


def test_a_wide_derivation_is_the_text_pythons_formatting_writes(monkeypatch):
    """Protects the whole derivation at 3,000 classes: the same lines as with every number written by
    Python's "%#.3g" (the formatter swapped for the reference)."""
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((2, 3000)) * 4
    fast = explaining.explain(logits, labels=[5, 2999], row=1).text
    monkeypatch.setattr(explaining, "numbers", lambda values: python_numbers(
        [float(value) for value in values] if isinstance(values, list) else np.ravel(values).tolist()))
    assert explaining.explain(logits, labels=[5, 2999], row=1).text == fast
