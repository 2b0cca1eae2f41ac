"""`gradcheck-hook [CHECK OPTIONS]... FILES...`: the pre-commit entry point, one `gradcheck check` per file.

pre-commit runs the entry with the hook's `args:` and then the staged file names. The options are those of
`gradcheck check` and apply to every file; check's own options tell them from the files (an option that takes
a value takes the next word, so `--labels-file labels.csv` is not a file to check). Each file gets one line on
stdout that names it, with its PASS or FAIL verdict or why it was skipped; a file gradcheck cannot read is one
error line on stderr that names it. The exit code is the worst of the files'.

Which files are inputs: a name that follows the convention (INPUT_NAMES, also the default `files:` of
.pre-commit-hooks.yaml) is always checked, so a broken dump is an error. Any other file the hook is given is
checked too, unless it is JSON that is not a gradcheck input (not an object with "logits", or not JSON at all,
as a tsconfig.json with comments): a widened `files:` never turns package.json into an error.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import sys
import textwrap
from collections.abc import Iterable
from contextlib import redirect_stderr, redirect_stdout
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

import click

from gradcheck_cli.report import EXIT_DISAGREE, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE

if TYPE_CHECKING:
    from gradcheck_cli.terminal import Output

# The naming convention of gradcheck inputs: `*.gradcheck.json` (.jsonl, .ndjson, .csv), or any such file in a
# folder named `gradcheck`. .pre-commit-hooks.yaml and the README's snippet use this pattern (a test holds them).
INPUT_NAMES = re.compile(r"((^|/)gradcheck/.*|\.gradcheck)\.(json|jsonl|ndjson|csv)$")
_JSON_SUFFIXES = (".json", ".jsonl", ".ndjson")
_ERROR_PREFIX = "gradcheck: error: "
_SIGNALLED = 128  # an exit code above this one is 128 + the signal that ended the check (130 for Ctrl-C)
# check's options that the hook sets itself, and why.
_HOOK_SETS = {
    "input_path": "the files to check follow the options, as pre-commit passes them",
    "output_format": "the hook writes one line per file",
}
HOOK_HELP = """Check each file with `gradcheck check`: the entry point of the pre-commit hook.

The options are those of `gradcheck check` (see `gradcheck check --help`) and apply to every file; pre-commit
passes the staged files after the hook's `args:`. Each file gets one line that names it: PASS, or FAIL and
where, or why it was skipped. A file gradcheck cannot read is an error line naming it. The exit code is the
worst of the files': 0 every check agrees, 1 a check disagrees, 2 a bad file or option, 3 internal error.

Files named *.gradcheck.json (.jsonl, .ndjson, .csv), or any such file in a folder named gradcheck, are
always checked. Other files are checked too, except JSON that is not a gradcheck input (not an object with a
"logits" key), which is skipped, so package.json is never an error.

Example:

    gradcheck-hook --reduction sum dumps/batch.gradcheck.json
"""


@click.command(
    help=HOOK_HELP,
    context_settings={"help_option_names": ["-h", "--help"], "ignore_unknown_options": True},
)
@click.version_option(None, "-V", "--version", package_name="gradcheck", prog_name="gradcheck-hook")
@click.option("--debug", is_flag=True, help="Show the full traceback of an internal error.")
@click.argument("words", nargs=-1, type=click.UNPROCESSED, metavar="[CHECK OPTIONS]... FILES...")
def hook(words: tuple[str, ...], debug: bool) -> int:
    from gradcheck_cli import terminal
    from gradcheck_cli.commands.check import check

    options, files = split_arguments(words, check)
    _check_options(options, check)
    if not files:
        raise click.UsageError("no files to check: name them after the options (pre-commit passes the staged ones)")
    out, worst = terminal.Output(), 0
    for path in files:
        reason = not_an_input(path)
        if reason is not None:
            out.echo(_wrap(f"{path}: skipped, not a gradcheck input ({reason})"))
            continue
        code = _report(path, *_run_check(path, options, debug), out)
        if code > _SIGNALLED:  # Ctrl-C, SIGTERM or SIGHUP: stop here, as a single check would
            return code
        worst = max(worst, code)
    return worst


def main(argv: list[str] | None = None) -> int:
    """Run the hook on `argv` (default: the command line) and return its exit code."""
    try:
        return int(hook.main(args=argv, prog_name="gradcheck-hook", standalone_mode=False) or 0)
    except click.UsageError as error:
        hint = f" (see '{error.ctx.command_path} --help')" if error.ctx else ""
        _fail(f"{error.format_message()}{hint}")
        return EXIT_USAGE
    except (click.exceptions.Abort, KeyboardInterrupt):
        return EXIT_INTERRUPTED


def split_arguments(words: Iterable[str], command: click.Command) -> tuple[list[str], list[str]]:
    """The words that are `command`'s options (with their values), and the rest: the files, in order.

    A word after `--`, or one that does not start with '-' and is not the value of the option before it, is a
    file; an unknown option stays among the options, for click to name it.
    """
    takes_value = {
        name: param.nargs
        for param in command.params
        if isinstance(param, click.Option) and not param.is_flag and not param.count
        for name in param.opts
    }
    options: list[str] = []
    files: list[str] = []
    rest = iter(words)
    for word in rest:
        if word == "--":
            files.extend(rest)
        elif word.startswith("-") and word != "-":
            options.append(word)
            options.extend(islice(rest, takes_value.get(word, 0)))  # missing at the end: click says so
        else:
            files.append(word)
    return options, files


def _check_options(options: list[str], check: click.Command) -> None:
    """Refuse, once and before any file, the options the hook sets itself and any that check would refuse."""
    for param in check.params:
        why = _HOOK_SETS.get(param.name or "")
        for word in options if why else ():
            # --format json, --format=json, -f json, -fjson
            name = word.split("=", 1)[0] if word.startswith("--") else word[:2]
            if name in param.opts:
                raise click.UsageError(f"{name} is not a hook option: {why}")
    with check.make_context("gradcheck check", list(options)):
        pass


def not_an_input(path: str) -> str | None:
    """Why a file outside the naming convention is not a gradcheck input, or None when it is to be checked."""
    if INPUT_NAMES.search(path) or not path.endswith(_JSON_SUFFIXES):
        return None
    try:
        document = _first_json_value(Path(path))
    except OSError:
        return None  # check says what is wrong with the file, naming it
    except ValueError:  # a JSON syntax error, or not UTF-8
        return "not JSON"
    if not isinstance(document, dict):
        return "JSON that is not an object"
    return None if "logits" in document else 'a JSON object without "logits"'


def _first_json_value(path: Path) -> object:
    """The JSON document, or the first record of JSON Lines (a big file is not read whole for one line)."""
    with path.open(encoding="utf-8-sig") as stream:
        if path.suffix == ".json":
            return json.load(stream)
        return json.loads(next((line for line in stream if line.strip()), "null"))


def _run_check(path: str, options: list[str], debug: bool) -> tuple[int, str, str]:
    """`gradcheck check -q` on one file, in this process: its exit code, stdout and stderr."""
    from gradcheck_cli.cli import main as gradcheck

    words = [*(["--debug"] if debug else []), "check", *options, "--format", "table", "--quiet", "--input", path]
    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        try:
            gradcheck(words, prog_name="gradcheck")
            code = EXIT_INTERNAL  # the group always exits with a code; reaching here would be a bug
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else EXIT_INTERNAL
    return code, stdout.getvalue(), stderr.getvalue()


def _report(path: str, code: int, stdout: str, stderr: str, out: Output) -> int:
    """Pass on what check wrote to stderr, then this file's one line: its verdict, or its error."""
    lines = stderr.splitlines()
    errors = [line for line in lines if line.startswith(_ERROR_PREFIX)]
    for line in lines:
        if line not in errors:
            click.echo(line, err=True)  # -v steps, what an --impl function printed, a --debug traceback
    if code <= EXIT_DISAGREE:
        out.echo(_wrap(f"{path}: {' '.join(stdout.split())}"))
    elif code > _SIGNALLED:
        _fail(f"{path}: interrupted")
    else:
        message = errors[-1].removeprefix(_ERROR_PREFIX) if errors else f"exit {code}"
        _fail(f"{path}: {message.removeprefix(f'{path}: ')}")
    return code


def _wrap(line: str) -> str:
    """A result line at word boundaries to the terminal's width (COLUMNS, else 80), never inside a number."""
    width = max(shutil.get_terminal_size().columns, 40)
    return textwrap.fill(line, width, subsequent_indent="    ", break_long_words=False, break_on_hyphens=False)


def _fail(message: str) -> None:
    click.echo(f"gradcheck-hook: error: {' '.join(message.split())}", err=True)


if __name__ == "__main__":
    sys.exit(main())
