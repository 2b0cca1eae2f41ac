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

    from gradcheck_cli.errors import InputError
    from gradcheck_cli.inputs import numbers, reader


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
    "row": lambda text: numbers.parse_row(text, "--logits"),
    "labels": lambda text: numbers.parse_labels(text, "--labels"),
    # A format's reader on one block of text, as the pipeline hands a file read whole to it.
    "csv": lambda text: list(reader("csv").pieces(iter([(1, text)]), "f.csv")),
    "json": lambda text: [reader("json").read_json(text, "f.json")],
    "jsonl": lambda text: list(reader("jsonl").pieces(iter([(1, text)]), "f.jsonl")),
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
        for piece in result if isinstance(result, list) and result and hasattr(result[0], "logits") else [result]:
            logits = getattr(piece, "logits", piece)
            if logits is not None and isinstance(logits, (list, np.ndarray)):
                assert np.isfinite(np.asarray(logits, dtype=np.float64)).all()

    atheris.Setup(sys.argv, one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
