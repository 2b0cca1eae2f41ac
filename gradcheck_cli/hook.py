"""`gradcheck-hook OPTIONS... FILES...`: the pre-commit entry point, one `gradcheck check -i FILE` per file.

pre-commit appends the staged file names after the hook's own args, so everything that names an existing
.json, .jsonl or .csv file is an input and the rest are options for every check. Exits with the worst code.
"""

from __future__ import annotations

import sys
from pathlib import Path

DUMP_SUFFIXES = (".json", ".jsonl", ".csv")


def main(argv: list[str] | None = None) -> int:
    from gradcheck_cli.cli import main as gradcheck

    args = sys.argv[1:] if argv is None else argv
    files = [arg for arg in args if arg.endswith(DUMP_SUFFIXES) and Path(arg).is_file()]
    options = [arg for arg in args if arg not in files]
    worst = 0
    for path in files:
        try:
            gradcheck(["check", "-i", path, "-q", *options], prog_name="gradcheck")
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
            if code:
                print(f"gradcheck-hook: {path}: exit {code}", file=sys.stderr)  # noqa: T201 - stderr, for the hook log
            worst = max(worst, code)
    return worst


if __name__ == "__main__":
    sys.exit(main())
