"""The fast paths taken for speed (native JSON floats, whole-row type checks) answer as the precise ones do."""

from __future__ import annotations

import json

import pytest


@pytest.mark.parametrize(
    ("logits", "message"),
    [
        ("[[1, 2, 3], [4, true, 6]]", "logits[1][1]: expected a number, got true"),
        ('[[1, 2, 3], [4, "5", 6]]', 'logits[1][1]: expected a number, got "5"'),
        ("[[1, 2, 3], [4, 5]]", "logits[1]: ragged logits"),
        ("[[1, 2, 3], [4, null, 6]]", "logits[1][1]: expected a number, got null"),
        # Overflow without a three-digit exponent: 250 digits times 1e99.
        (f"[[1, 2, 3], [4, {'9' * 250}.0e99, 6]]", "overflows float64"),
        ("[[1, 2, 3], [4, 1e400, 6]]", "the number 1e400 overflows float64"),
    ],
)
def test_json_logits_errors_survive_the_fast_path(gradcheck, tmp_path, logits, message):
    path = tmp_path / "bad.json"
    path.write_text(f'{{"logits": {logits}, "labels": [0, 1]}}')
    run = gradcheck("check", "-i", str(path))
    assert run.exit_code == 2 and message in run.stderr, run


def test_json_logits_read_natively_equal_the_hooked_reading(gradcheck, tmp_path):
    logits = [[0.1, -2.5e-7, 3.0], [1e-300, 2.0, -1.5]]
    plain, hooked = tmp_path / "plain.json", tmp_path / "hooked.json"
    plain.write_text(json.dumps({"logits": logits, "labels": [0, 1]}))
    # A number with a three-digit exponent sends the whole text through the precise hook.
    text = json.dumps({"logits": logits, "labels": [0, 1]})
    hooked.write_text(text.replace("2.0", "0." + "0" * 99 + "2e100"))
    assert hooked.read_text() != text
    runs = [gradcheck("check", "-i", str(path), "-f", "json") for path in (plain, hooked)]
    assert runs[0].exit_code == runs[1].exit_code == 0, runs
    assert json.loads(runs[0].stdout)["probabilities"] == json.loads(runs[1].stdout)["probabilities"]


@pytest.mark.parametrize("method", ["central", "forward", "five-point", "richardson", "complex-step"])
@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_factored_jacobian_equals_perturbing_all_of_s(method, temperature):
    """The Jacobian check combines one row factor per stencil point; perturbing every s_i gives the same."""
    import numpy as np

    from gradcheck_cli.numerics import differences
    from gradcheck_cli.numerics import softmax as core

    logits = np.random.default_rng(7).normal(size=(50, 6)) * 5
    h = differences.steps(logits, differences.default_eps(method))
    scaled = logits / temperature
    s, complement = core.softmax(scaled), core.softmax_complement(scaled)
    factor, own = differences.softmax_derivative_factors(s, complement, h, method, temperature)
    whole = differences.jacobian_perturbation(logits, temperature)
    for j in range(logits.shape[1]):
        expected = differences.column_derivative(whole, h[:, j], j, method)
        actual = s * factor[:, j : j + 1]
        actual[:, j] = own[:, j]
        np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("label", ["9.223372036854776e+18", "99999999999999999999"])
def test_a_label_beyond_int64_is_refused_with_its_place(gradcheck, tmp_path, label):
    path = tmp_path / "huge.csv"
    path.write_text(f"a,b,c,label\n0,0,0,{label}\n")
    run = gradcheck("check", "-i", str(path))
    assert run.exit_code == 2 and f"huge.csv:2:7: '{label}' is far too large" in run.stderr, run


@pytest.mark.parametrize("others", [0, 40], ids=["few exponents", "many exponents"])
@pytest.mark.parametrize("literal", ["1e400", "1E+400", "-2.5e0400"])
def test_a_three_digit_exponent_is_named_however_many_exponents_the_text_has(gradcheck, tmp_path, others, literal):
    """Texts with few e's are searched at each e, others by one regex scan: both find the overflowing number."""
    row = [f"{k + 1}.5e-05" for k in range(others)] + ["0.5", literal]
    path = tmp_path / "big.json"
    path.write_text(f'{{"logits": [[{", ".join(row)}]], "labels": [0]}}')
    run = gradcheck("check", "-i", str(path))
    assert run.exit_code == 2 and f"the number {literal} overflows float64" in run.stderr, run


# Past _ORJSON_CHARACTERS a JSON text is read by orjson first (when installed), and must answer as the strict
# reader does: the same numbers bit for bit, the same errors with the same messages. No three-digit exponent
# (that text takes the strict reader's overflow hook): the extremes are written out in full.
_TRICKY = ["0.1", "-0.0", "-0", "0." + "0" * 323 + "5", "0." + "0" * 323 + "24703282292062328",
           "0." + "0" * 307 + "22250738585072011", "17976931348623157" + "0" * 292 + ".0", "9007199254740993",
           "9007199254740993.0", "123456789012345678901234567890", "1.00000000000000011102230246251565404236316680908203125",
           "4.35", "1E5", "1e+5", "-7.000000000000001", "2.5e-99"]


def _big_text(extra: str = "", labels: str = "0, 1", tricky: list[str] = _TRICKY) -> str:
    """A JSON object of 3,000 rows of logits (over 256 KB), its first row the tricky numbers, then `extra`."""
    import numpy as np

    rows = np.random.default_rng(11).normal(size=(3000, len(tricky))) * 3
    body = ", ".join("[" + ", ".join(map(repr, row)) + "]" for row in rows.tolist())
    return f'{{"logits": [[{", ".join(tricky)}], {body}], "labels": [{labels}, {", ".join(["2"] * 2999)}]{extra}}}'


def _strict(monkeypatch, read, *args):
    """read(*args) with the orjson path turned off: the strict reader's answer, or its error's message."""
    from gradcheck_cli.errors import InputError
    from gradcheck_cli.inputs import json_format

    with monkeypatch.context() as patch:
        patch.setattr(json_format, "_ORJSON_CHARACTERS", 1 << 62)
        try:
            return read(*args)
        except InputError as error:
            return str(error)


def test_a_big_json_text_read_by_orjson_is_the_strict_readers_bit_for_bit(monkeypatch):
    import numpy as np

    pytest.importorskip("orjson", reason="the fast path needs the optional orjson (pip install gradcheck[fast])")
    from gradcheck_cli.inputs import json_format

    text = _big_text()
    read = json_format._plain_document
    taken = []
    monkeypatch.setattr(json_format, "_plain_document", lambda text: taken.append(read(text)) or taken[-1])
    fast, strict = json_format.read_json(text, "big.json"), _strict(monkeypatch, json_format.read_json, text, "big.json")
    assert len(taken) == 1 and taken[0] is not None  # orjson read it; the strict reading did not ask
    assert fast.logits.tobytes() == strict.logits.tobytes()  # -0.0 and every last bit included
    assert np.array_equal(fast.answers[0].values, strict.answers[0].values)
    assert fast.logits[0].tolist() == [float(int(x)) if x.lstrip("-").isdigit() else float(x) for x in _TRICKY]


@pytest.mark.parametrize(
    ("extra", "labels", "tricky", "message"),
    [
        (', "labels": [1]', "0, 1", _TRICKY, "duplicate key 'labels'"),
        (', "lab\\u0065ls": [1]', "0, 1", _TRICKY, "duplicate key 'labels'"),
        ("", "0, 1", ["NaN", *_TRICKY[1:]], "NaN is not allowed"),
        ("", "0, 1", ["Infinity", *_TRICKY[1:]], "Infinity is not allowed"),
        ("", "0, 1", ["true", *_TRICKY[1:]], "expected a number, got true"),
        ("", "0, 1", ["null", *_TRICKY[1:]], "expected a number, got null"),
        ("", "0, 1", ['"5"', *_TRICKY[1:]], 'expected a number, got "5"'),
        ("", "0, 99999999999999999999", _TRICKY, "99999999999999999999 is far too large"),
        ("", "0, 1", [f"{'9' * 250}.0e99", *_TRICKY[1:]], "overflows float64"),
        ("", "0, 1", ["1.7976931348623159e308", *_TRICKY[1:]], "overflows float64"),
        (', "gradient": {"a": 1, "a": 2}', "0, 1", _TRICKY, "duplicate key 'a'"),
        ('} {"x": 1', "0, 1", _TRICKY, "unexpected data after the JSON value"),
    ],
    ids=["duplicate key", "escaped duplicate key", "NaN", "Infinity", "true", "null", "string", "label past 64 bits", "long mantissa",
         "past the largest float", "nested duplicate", "trailing data"])
def test_a_big_json_texts_errors_are_the_strict_readers(monkeypatch, extra, labels, tricky, message):
    """orjson overwrites a repeated key, reads true as a number in an array, an integer past 64 bits as a float:
    such texts go to the strict reader, whose message is the one given."""
    from gradcheck_cli.errors import InputError
    from gradcheck_cli.inputs import json_format

    text = _big_text(extra, labels, tricky)
    with pytest.raises(InputError) as raised:
        json_format.read_json(text, "big.json")
    assert message in str(raised.value)
    assert str(raised.value) == _strict(monkeypatch, json_format.read_json, text, "big.json")
