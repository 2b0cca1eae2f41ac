"""What a plain check pays for at start-up: the modules it loads and the garbage collections it runs.

Each start-up test runs gradcheck in a fresh interpreter (what a user's `gradcheck check` is), so that modules
another test imported do not hide an import, and reads what the run loaded or did from inside it.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from gradcheck_cli import cli, terminal
from gradcheck_cli.batch import Batch
from gradcheck_cli.checks.slip_sample import MIN_ROWS, SAMPLE_LOGITS
from gradcheck_cli.checks.users import UsersValues
from gradcheck_cli.settings import Settings

ROW = ["--logits", "1.1,2.2,0.2,-1.7", "--labels", "2"]
# Loaded only when a run needs them: the diagnosis of the user's values and its sample, --impl's worker and
# its checks, a chunked file's read-ahead, tensor files, JSON output; and difflib, which click loads to
# suggest an option when one is not found.
NOT_FOR_A_PLAIN_CHECK = ("gradcheck_cli.checks.slip_", "gradcheck_cli.checks.diagnose", "gradcheck_cli.checks.impl",
                         "gradcheck_cli.checks.worker", "gradcheck_cli.checks.taylor", "gradcheck_cli.checks.own_loss",
                         "gradcheck_cli.checks.returned", "gradcheck_cli.inputs.readahead",
                         "gradcheck_cli.inputs.tensors", "gradcheck_cli.render.json_report", "difflib", "heapq")
# What reads files: a check of logits given as arguments needs none of it.
FILE_MACHINERY = ("gradcheck_cli.inputs.source", "gradcheck_cli.inputs.line_counts", "gradcheck_cli.inputs.labelled")


def _run_in_child(args: list[str], cwd: Path, before_main: str = "", after_main: str = "") -> str:
    """stderr of a fresh interpreter that runs `gradcheck check ARGS` (exit 0 or 1 expected), with `before_main` run
    once the command line is imported and `after_main` once it is done (both may write to stderr)."""
    probe = "\n".join([
        "import sys",
        f"sys.argv = ['gradcheck', 'check', *{args!r}]",
        "from gradcheck_cli.cli import main",
        before_main,
        "try:",
        "    main()",
        "except SystemExit as end:",
        "    assert end.code in (0, 1), end.code",
        after_main,
    ])
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=cwd,
                         env={"NO_COLOR": "1", "COLUMNS": "80", "PATH": ""}, check=False)
    assert run.returncode == 0, run
    return run.stderr


def _loaded(args: list[str], cwd: Path) -> set[str]:
    return set(_run_in_child(args, cwd, after_main="sys.stderr.write(' '.join(sys.modules))").split())


def _unwanted(modules: set[str]) -> list[str]:
    return sorted(name for name in modules if name.startswith(NOT_FOR_A_PLAIN_CHECK))


def test_a_plain_check_loads_no_diagnosis_impl_or_suggestion_modules(tmp_path: Path) -> None:
    """Protects start-up: a one-row check without the user's values, given as arguments or as a JSON file
    (`-i FILE`, the short option click would first miss among the long ones, loading difflib to suggest
    one), loads none of the modules only other runs need; the diagnosis' sample modules are imported by the
    user's values only once an input outgrows the limit kept whole (checks/users.py)."""
    document = tmp_path / "one_row.json"
    document.write_text(json.dumps({"logits": [[1.1, 2.2, 0.2, -1.7]], "labels": [2]}))
    for args in (ROW, ["-i", str(document)], ["-i", str(document), "-q", "-f", "table"]):
        loaded = _loaded(args, tmp_path)
        assert "gradcheck_cli.checks.runner" in loaded  # the probe ran a check
        assert _unwanted(loaded) == [], args
        assert ("gradcheck_cli.inputs.source" in loaded) == (args != ROW)


def test_logits_given_as_arguments_load_no_file_machinery(tmp_path: Path) -> None:
    """Protects start-up: a check of logits on the command line (rows labelled -100 too, which are counted
    without inputs/labelled.py) imports nothing that opens, counts or scans files."""
    for args in (ROW, ["--logits", "1,2,3", "--logits", "3,2,1", "--labels", "-100,1"]):
        loaded = _loaded(args, tmp_path)
        assert sorted(name for name in loaded if name.startswith(FILE_MACHINERY)) == [], args


def test_rows_labelled_minus_100_given_as_arguments_are_ignored(gradcheck) -> None:
    """Protects pipeline._count_label's count of an input read whole: the note and the ignored row are as
    inputs/labelled.py counts them for a file."""
    run = gradcheck("check", "--logits", "1,2,3", "--logits", "3,2,1", "--logits", "0,0,1", "--labels", "-100,1,-100",
                    "-f", "json")
    assert run.exit_code == 0, run
    report = json.loads(run.stdout)
    note = "2 of 3 rows ignored: their label is -100, torch's default ignore_index (--ignore-index changes it)"
    assert report["notes"] == [note]
    assert report["settings"]["ignore_index"] == -100


def test_supplied_values_still_load_the_diagnosis(tmp_path: Path) -> None:
    """Protects the probe above from passing vacuously: a failing supplied gradient is diagnosed, which loads
    the slip catalogue (so the names it looks for are the ones that get loaded)."""
    document = tmp_path / "wrong_gradient.json"
    document.write_text(json.dumps({"logits": [[1.1, 2.2, 0.2, -1.7]], "labels": [2],
                                    "gradient": [[0.2, 0.7, -0.9, 0.1]]}))
    loaded = _loaded(["-i", str(document)], tmp_path)
    assert any(name.startswith("gradcheck_cli.checks.slip_") for name in loaded)
    assert "gradcheck_cli.checks.diagnose" in loaded


def test_a_one_row_check_runs_no_garbage_collection(tmp_path: Path) -> None:
    """Protects cli._fewer_collections: once the command line is imported, a one-row check (importing numpy,
    rich and the checks) makes no collection at all; with the default threshold (700) it makes dozens."""
    count = "gc.callbacks.append(lambda phase, info: phase == 'start' and collections.append(info['generation']))"
    report = "sys.stderr.write(str(len(collections)))"
    made = _run_in_child(ROW, tmp_path, "\n".join(["import gc", "collections = []", count]), report)
    assert made.strip() == "0"
    default = _run_in_child(ROW, tmp_path, "\n".join(["import gc", "collections = []", count,
                                                     "cli = sys.modules['gradcheck_cli.cli']",
                                                     "cli.GEN0_OBJECTS = gc.get_threshold()[0]"]), report)
    assert int(default) > 10


def test_a_run_that_ends_the_process_leaves_its_objects_to_the_system(tmp_path: Path) -> None:
    """Protects the freeze in cli._fewer_collections: when the command line is the process's (sys.argv), the
    objects alive at the end are frozen, so Python's shutdown does not walk them in full collections (45-50 ms
    of a one-row check); the run's output is still all there."""
    frozen = _run_in_child(ROW, tmp_path, after_main="import gc; sys.stderr.write(str(gc.get_freeze_count()))")
    assert int(frozen) > 10_000  # numpy's, rich's and gradcheck's objects
    run = subprocess.run([sys.executable, "-m", "gradcheck_cli", "check", *ROW, "-f", "json"], capture_output=True,
                         text=True, cwd=tmp_path, env={"PATH": ""}, check=False)
    assert run.returncode == 0 and json.loads(run.stdout)["passed"] is True, run


def test_the_collection_threshold_is_restored(gradcheck, monkeypatch) -> None:
    """Protects a program that calls gradcheck's main in-process: the threshold is GEN0_OBJECTS while the
    command runs and the program's own again afterwards, however the command ends."""
    seen: list[tuple[int, int, int]] = []
    monkeypatch.setattr(terminal, "note", lambda message: seen.append(gc.get_threshold()))
    before = gc.get_threshold()
    assert gradcheck("check", *ROW).exit_code == 0
    assert gradcheck("check", "--logits", "1,nan").exit_code == 2
    assert seen and {threshold[0] for threshold in seen} == {cli.GEN0_OBJECTS}
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0  # nothing of the calling program's frozen


def test_a_short_option_with_an_equals_sign_reads_as_the_long_one(gradcheck, tmp_path: Path) -> None:
    """Protects the parser's table (sectioned_help.make_parser): `-i=FILE` reads FILE as `--input=FILE` does,
    bundled flags (-qv) and an attached value (-iFILE) still work, and a flag given a value is refused."""
    document = tmp_path / "one_row.json"
    document.write_text(json.dumps({"logits": [[1.1, 2.2, 0.2, -1.7]], "labels": [2]}))
    expected = gradcheck("check", "--input", str(document), "-f", "json")
    assert expected.exit_code == 0, expected
    for form in (["-i=" + str(document)], ["-i" + str(document)], ["-i", str(document)]):
        run = gradcheck("check", *form, "-f", "json")
        assert (run.exit_code, run.stdout) == (0, expected.stdout), (form, run)
    bundled = gradcheck("check", "-i", str(document), "-qv")
    assert bundled.exit_code == 0, bundled
    assert bundled.stdout.startswith("PASS"), bundled
    assert "gradcheck: read 1 x 4 logits" in bundled.stderr, bundled
    refused = gradcheck("check", "-i", str(document), "-q=1")
    assert refused.exit_code == 2, refused
    assert refused.stderr == "gradcheck: error: Option '-q' does not take a value.\n"


def test_a_sample_begun_without_a_budget_takes_slip_samples(tmp_path: Path) -> None:
    """Protects users.UsersValues' default (sample_logits None, resolved when a sample begins): an input past
    the limit is sampled with slip_sample.SAMPLE_LOGITS, the rows kept whole so far handed to the sample."""
    settings = Settings(atol=1e-10, rtol=1e-7)
    logits = np.arange(12.0).reshape(3, 4)
    batch = Batch(logits, np.array([0, 1, 2]), np.eye(4)[[0, 1, 2]], supplied={"gradient": np.zeros((3, 4))})
    users = UsersValues(settings, limit=12)
    users.add(batch, logits, {})
    assert users.sample is None and len(users.parts) == 1  # 12 logits: kept whole
    users.add(batch, logits, {})  # 24: past the limit, the sample begins with the first batch's rows
    assert users.sample is not None and users.parts == []
    assert users.sample.sample_logits == SAMPLE_LOGITS
    assert users.sample.budget(4) == max(MIN_ROWS, SAMPLE_LOGITS // 4)
    assert users.sample.rows == 6  # both batches' rows: the budget holds them all
