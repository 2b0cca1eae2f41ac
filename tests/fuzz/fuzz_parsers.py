"""Coverage-guided fuzzing of every input parser with atheris (hand-run; not part of pytest).

    pip install atheris && python tests/fuzz/fuzz_parsers.py PARSER [-max_total_time=120]

PARSER is one of: row, labels, csv, json, jsonl, weights. Any exception other than InputError is a bug
(atheris reports it with the input that caused it); so is a parse that returns a non-finite number.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    import numpy as np

    from gradcheck_cli import inputs
    from gradcheck_cli.errors import InputError


def _weights(text: str) -> None:
    from gradcheck_cli.options import NON_NEGATIVE

    for token in text.replace(",", " ").split():
        try:
            value = NON_NEGATIVE.convert(token, None, None)
        except Exception as error:  # click.BadParameter is the refusal here
            if type(error).__name__ != "BadParameter":
                raise
            continue
        assert np.isfinite(value) and value >= 0


PARSERS = {
    "row": lambda text: inputs.parse_row(text, "--logits"),
    "labels": lambda text: inputs.parse_labels(text, "--labels"),
    "csv": lambda text: inputs.read_csv(text, "f.csv"),
    "json": lambda text: inputs.read_json(text, "f.json"),
    "jsonl": lambda text: inputs.read_jsonl(text, "f.jsonl"),
    "weights": _weights,
}


def main() -> None:
    parser = PARSERS[sys.argv.pop(1)]

    def one(data: bytes) -> None:
        text = atheris.FuzzedDataProvider(data).ConsumeUnicodeNoSurrogates(4096)
        try:
            result = parser(text)
        except InputError:
            return
        logits = getattr(result, "logits", result)
        if logits is not None and isinstance(logits, (list, np.ndarray)):
            assert np.isfinite(np.asarray(logits, dtype=np.float64)).all()

    atheris.Setup(sys.argv, one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
