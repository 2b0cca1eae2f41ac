"""Fast and bounded output (issue 13, part A): what a run keeps and writes never grows with N x C^2 or with
the whole output, and the faster writers and readers give exactly what the plain ones gave.

Memory is measured in subprocesses (resource.getrusage of the children) under an address-space limit, so a
regression fails quickly instead of swapping the machine; nothing here is timed (benchmarks/performance.py is).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from gradcheck_cli import pipeline
from gradcheck_cli.batch import Batch
from gradcheck_cli.checks import runner
from gradcheck_cli.checks.rows import check_rows
from gradcheck_cli.errors import InputError
from gradcheck_cli.inputs import jsonl_format
from gradcheck_cli.inputs.gather import InputRequest
from gradcheck_cli.numerics import differences
from gradcheck_cli.numerics.losses import accepted_kind
from gradcheck_cli.render import json_report, ndjson_rows
from gradcheck_cli.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
MB = 1 << 20


def peak_of(arguments: list[str], limit_bytes: int = 2 << 30) -> tuple[int, str, int]:
    """Run `python -m gradcheck_cli ARGUMENTS` under an address-space limit: (exit code, stderr, peak RSS bytes).

    ru_maxrss of the children is the largest of every process waited for so far, so each call uses a fresh
    intermediate Python that runs one command and reports its own children's peak.
    """
    probe = (
        "import resource, subprocess, sys\n"
        f"resource.setrlimit(resource.RLIMIT_AS, ({limit_bytes}, {limit_bytes}))\n"
        "run = subprocess.run([sys.executable, '-m', 'gradcheck_cli', *sys.argv[1:]], stdout=subprocess.DEVNULL,"
        " stderr=subprocess.PIPE, text=True)\n"
        "print(run.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "sys.stderr.write(run.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe, *arguments], capture_output=True, text=True, check=True,
                          cwd=ROOT)
    code, peak_kb = (int(word) for word in done.stdout.split())
    return code, done.stderr, peak_kb * 1024


def write_json(path: Path, rows: int, classes: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.write_text(json.dumps({"logits": (rng.standard_normal((rows, classes)) * 3).tolist(),
                                "labels": rng.integers(0, classes, rows).tolist()}))
    return path


def arguments_batch(rows: int, classes: int, seed: int = 1) -> InputRequest:
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((rows, classes)) * 4
    return InputRequest(logits_args=tuple(",".join(repr(float(v)) for v in row) for row in logits),
                        labels_arg=",".join(str(k) for k in rng.integers(0, classes, rows)))


# --- the Keep policy counts what is kept --------------------------------------------------------------------


@pytest.mark.parametrize(("keep", "rows", "classes", "expected"), [
    (runner.Keep(True, None), 2000, 10, (True, True)),  # 20,000 logits of 10 classes: as before
    (runner.Keep(True, None), 2001, 10, (False, False)),  # past 20,000 logits: as before
    (runner.Keep(True, None), 400, 50, (True, True)),  # 1,000,000 Jacobian entries: the most kept
    (runner.Keep(True, None), 1, 1001, (False, False)),  # JSON needs its Jacobian: the whole is summarised
    (runner.Keep(True, 50), 1, 1001, (True, False)),  # tables show no Jacobian past 50 classes anyway
    (runner.Keep(True, 50), 400, 50, (True, True)),  # ...and below it keep exactly what they kept before
    (runner.Keep(True, None, limit=None), 1, 20000, (True, True)),  # --full keeps everything
    (runner.Keep(False, 0), 1, 3, (False, False)),  # github and ndjson keep nothing
])
def test_the_default_counts_the_jacobian_it_keeps(keep, rows, classes, expected):
    """The keep-everything default counts N x C^2 for the Jacobian (it counted N x C logits only, and built a
    20,000 x 20,000 Jacobian for one wide row); narrow rows and tables keep exactly what they kept before."""
    assert keep.keeps(rows, classes) == expected


def test_a_wide_row_is_summarised_in_json_and_says_why(gradcheck):
    """1 x 1,500 with -f json: arrays false (schema-valid) and a note naming the Jacobian's count and --full."""
    rng = np.random.default_rng(0)
    run = gradcheck("check", "--logits", ",".join(f"{v:.4f}" for v in rng.standard_normal(1500)), "--labels", "3",
                    "-f", "json")
    assert run.exit_code == 0, run
    document = json.loads(run.stdout)
    assert document["arrays"] is False and "jacobian" not in document
    assert any("1 x 1500 x 1500 Jacobian is 2,250,000 numbers" in note and "--full" in note
               for note in document["notes"]), document["notes"]
    tables = gradcheck("check", "--logits", ",".join(f"{v:.4f}" for v in rng.standard_normal(1500)), "--labels", "3")
    assert "Softmax probabilities" in tables.stdout and "checked without building it" in tables.stdout, tables


def test_one_row_of_20000_classes_as_json_stays_small(tmp_path):
    """`check -i one_row_c20000.json -f json` was killed at 12.5 GB: it must finish under a 2 GB address
    space, with a peak far below the 3.2 GB of one 20,000 x 20,000 Jacobian."""
    path = write_json(tmp_path / "wide.json", 1, 20_000)
    code, stderr, peak = peak_of(["check", "-i", str(path), "-f", "json"])
    assert code == 0, stderr
    assert peak < 300 * MB, f"peak {peak / MB:.0f} MB"


def test_full_refuses_arrays_the_disk_cannot_hold_before_checking(gradcheck, monkeypatch):
    """--full with a Jacobian that cannot be kept is exit 2 with what to do instead, decided before any check
    runs (the check of the batch is never called) and with nothing on stdout."""
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(1 << 40, 1 << 40, 100 * MB))

    def never(*args, **kwargs):
        raise AssertionError("the batch was checked before --full was refused")

    monkeypatch.setattr(runner, "check_rows", never)
    row = ",".join(str(v % 7) for v in range(3000))  # 3000^2 x 8 bytes = 72 MB, over the 32 MB kept in memory
    run = gradcheck("check", "--logits", row, "--labels", "1", "-f", "json", "--full")
    assert run.exit_code == 2, run
    assert run.stdout == "" and len(run.stderr.strip().splitlines()) == 1, run
    assert "--full: the 1 x 3000 x 3000 Jacobian" in run.stderr and "leave out --full" in run.stderr, run


# --- kept arrays past SPILL_BYTES live in unlinked temporary files --------------------------------------------


@pytest.mark.parametrize("settings", [Settings(), Settings(dtype="float32", temperature=1.7, reduction="none")])
def test_spilled_arrays_read_back_exactly_and_leave_no_file(tmp_path, monkeypatch, settings):
    """Arrays past SPILL_BYTES go to temporary files (the Jacobian in blocks of BLOCK_NUMBERS, never a batch's
    N x C x C at once) and come back as maps equal to the in-memory arrays, bit for bit; the files are
    unlinked from the start, so the temporary directory stays empty whatever happens."""
    import tempfile

    request = arguments_batch(30, 6)
    in_memory = pipeline.check(request, settings, keep=runner.Keep(limit=None))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(runner, "SPILL_BYTES", 1000)
    monkeypatch.setattr(runner._Kept, "BLOCK_NUMBERS", 7)  # a block is part of one sample's 6 x 6 Jacobian
    spilled = pipeline.check(request, settings, keep=runner.Keep(limit=None))
    assert isinstance(spilled.jacobian, np.memmap) and isinstance(spilled.probabilities, np.memmap)
    for name in ("probabilities", "jacobian", "analytic_gradient", "numeric_gradient"):
        kept, expected = getattr(spilled, name), getattr(in_memory, name)
        assert kept.dtype == expected.dtype and np.array_equal(kept, expected), name
    assert json_report.render_json(spilled) == json_report.render_json(in_memory)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("rows", "classes", "numbers"), [(7, 5, 60), (3, 40, 100), (2, 9, 5), (4, 3, 1 << 20)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_jacobian_blocks_are_softmax_jacobian_bit_for_bit(rows, classes, numbers, dtype):
    """Whole rows of Jacobians, or rows i of one sample's Jacobian, in order: the same bits as building it."""
    from gradcheck_cli.numerics.softmax import softmax_jacobian, softmax_parts

    parts = softmax_parts((np.random.default_rng(rows).standard_normal((rows, classes)) * 5).astype(dtype))
    whole = softmax_jacobian(parts.s, parts.complement)
    whole /= dtype(1.7)
    blocks = list(runner._jacobian_blocks(parts.s, parts.complement, dtype(1.7), numbers))
    assert max(block.size for block in blocks) <= max(numbers, classes)
    joined = np.concatenate([block.ravel() for block in blocks])
    assert joined.dtype == whole.dtype and np.array_equal(joined, whole.ravel())


def test_json_full_memory_is_a_blocks_not_the_outputs(tmp_path):
    """-f json --full of 10,000 x 10 writes 31 MB of text (1.31 million numbers). It used to build the whole
    text and, before it, a dict of Python lists (~35 bytes a number): over 75 MB above the plain table check
    of the same input. Now it holds the kept arrays (10.5 MB of float64: 131 numbers a row, below the 32 MB
    spill threshold) and one block of text (~1.5 MB): within 20 MB of the table check."""
    path = write_json(tmp_path / "tall.json", 10_000, 10)
    code, stderr, table_peak = peak_of(["check", "-i", str(path)])
    assert code == 0, stderr
    code, stderr, json_peak = peak_of(["check", "-i", str(path), "-f", "json", "--full"])
    assert code == 0, stderr
    assert json_peak - table_peak < 20 * MB, f"json --full {json_peak / MB:.0f} MB, tables {table_peak / MB:.0f} MB"


@pytest.mark.parametrize("rows", [1, 3])
def test_json_full_of_wide_rows_holds_a_block_not_a_rows_jacobian_text(tmp_path, rows):
    """-f json --full of 1 x 3,000: the row's Jacobian is 9 million numbers (72 MB, spilled to a file). The
    writer's blocks were whole rows, so that row's text was made at once: 737 MB at its peak (and 1 x 20,000
    was killed for memory with 72 GB of disk to spare). Its own rows are now written a block at a time, and
    the mapped pages of every row after the first are let go as they are written, as the first row's are:
    within 30 MB of the table check of the same input (47 MB against 33 MB when measured)."""
    path = write_json(tmp_path / "wide.json", rows, 3_000)
    code, stderr, table_peak = peak_of(["check", "-i", str(path)])
    assert code == 0, stderr
    code, stderr, json_peak = peak_of(["check", "-i", str(path), "-f", "json", "--full"])
    assert code == 0, stderr
    assert json_peak - table_peak < 30 * MB, f"json --full {json_peak / MB:.0f} MB, tables {table_peak / MB:.0f} MB"


# --- the JSON document is written in blocks, byte for byte as before ----------------------------------------


REPORT_CASES = [
    (arguments_batch(9, 4), Settings()),
    (arguments_batch(9, 4), Settings(reduction="none")),
    (arguments_batch(9, 4), Settings(reduction="none", dtype="float32", temperature=1.7)),
    (arguments_batch(12, 5), Settings(reduction="none", weights=(1e308,) * 5)),  # losses overflow: nulls
    (arguments_batch(12, 5), Settings(loss="mse", order=2)),
    (InputRequest(input_path=str(ROOT / "examples" / "batch.csv")), Settings()),
]


@pytest.mark.parametrize("block", [json_report.BLOCK_NUMBERS, 7, 1])
@pytest.mark.parametrize(("request_", "settings"), REPORT_CASES)
def test_the_json_writer_prints_what_json_dumps_of_to_dict_printed(request_, settings, block, monkeypatch):
    """The document written block by block is byte for byte json.dumps(report.to_dict()) (how it was made
    before), for every reduction, dtype, non-finite values and any block size; so is the summary."""
    monkeypatch.setattr(json_report, "BLOCK_NUMBERS", block)
    for keep in (runner.Keep(), runner.Keep(arrays=False)):
        report = pipeline.check(request_, settings, keep=keep)
        assert json_report.render_json(report) == json.dumps(report.to_dict(), allow_nan=False)


def test_orjson_formats_the_same_numbers_when_installed(monkeypatch):
    """Past FAST_ABOVE numbers orjson (optional) formats the arrays: other spellings, the very same values."""
    pytest.importorskip("orjson")
    report = pipeline.check(arguments_batch(40, 6), Settings(reduction="none", dtype="float32"),
                            keep=runner.Keep(limit=None))
    plain = json_report.render_json(report)
    monkeypatch.setattr(json_report, "FAST_ABOVE", 0)
    assert json.loads(json_report.render_json(report)) == json.loads(plain)


# --- ndjson rows: one formatting call per array, the records as before -------------------------------------


def record_by_record(start: int, batch: Batch, part) -> str:
    """The rows as the writer used to make them: one JSONEncoder call per record (the reference here)."""
    from gradcheck_cli.report import finite_or_none

    error = np.abs(part.analytic_gradient - part.numeric_gradient).max(axis=1)
    lines = [None] * batch.rows if batch.row_lines is None else np.asarray(batch.row_lines).tolist()
    columns = zip(range(start, start + batch.rows), lines,
                  *(finite_or_none(v) for v in (part.row_losses, part.probabilities, part.analytic_gradient,
                                                part.numeric_gradient, error)), strict=True)
    lse = runner.row_lse(part, part.reference_loss.temperature)  # None for bce
    lses = [None] * batch.rows if lse is None else finite_or_none(lse)
    encode = json.JSONEncoder(allow_nan=False).encode
    return "".join(encode({"row": row, "line": line, "loss": loss, "probabilities": p,
                           **({} if lse is None else {"lse": k}),
                           "gradient": {"analytic": a, "numeric": n}, "max_abs_error": e}) + "\n"
                   for (row, line, loss, p, a, n, e), k in zip(columns, lses, strict=True))


@pytest.mark.parametrize("settings", [Settings(), Settings(dtype="float32"), Settings(loss="mse"),
                                      Settings(reduction="none", weights=(1e308,) * 6)])
@pytest.mark.parametrize("lines", [None, "file"])
@pytest.mark.parametrize("encoder", ["json", "orjson"])
def test_ndjson_rows_are_the_records_they_were(settings, lines, encoder, monkeypatch):
    """Rows made from whole-array formatting equal the record-by-record encoding: byte for byte with the
    standard library, the same records with orjson (compact, and some numbers spelt differently)."""
    if encoder == "json":
        monkeypatch.setattr(ndjson_rows, "orjson_module", lambda: None)
    else:
        pytest.importorskip("orjson")
    rng = np.random.default_rng(5)
    logits, labels = rng.standard_normal((25, 6)) * 6, rng.integers(0, 6, 25)
    batch = Batch(logits, labels, np.eye(6)[labels], row_lines=None if lines is None else 3 + 2 * np.arange(25))
    resolved = differences.resolve(settings)
    part = check_rows(batch, resolved, accepted_kind(resolved), 25.0)
    written = io.StringIO()
    ndjson_rows.write_rows(written, 40, batch, part)
    expected = record_by_record(40, batch, part)
    if encoder == "json":
        assert written.getvalue() == expected
    else:
        assert [json.loads(line) for line in written.getvalue().splitlines()] == \
               [json.loads(line) for line in expected.splitlines()]


# --- JSON Lines: one json.loads per block, exactly what the line-by-line reader gives -------------------------


def read_jsonl(text: str, chunk_lines: int, strict_only: bool, monkeypatch) -> list | str:
    """Every piece's arrays and lines (or the error) of the text cut into blocks of chunk_lines lines."""
    lines = text.split("\n")
    blocks = [(1 + k, "\n".join(lines[k:k + chunk_lines])) for k in range(0, len(lines), chunk_lines)]
    with monkeypatch.context() as patch:
        if strict_only:
            patch.setattr(jsonl_format, "_plain_block", lambda *args: None)
        try:
            parsed = list(jsonl_format.pieces(iter(blocks), "f.jsonl"))
        except InputError as error:
            return str(error)
    return [(piece.logits.tolist(), piece.row_lines.tolist(), piece.answers[0].values.tolist(),
             piece.answers[0].values.dtype.str, piece.answers[0].are_labels) for piece in parsed]


GOOD = '{"logits": [1.5, -2, 3e2], "label": 2}'
JSONL_LINES = [
    GOOD, '{"label": 0, "logits": [0, 0.25, 1]}', '{"logits": [1, 2, 3], "labels": 1}',
    '{"logits": [1, 2, 3], "label": 2.0}', '{"logits": [1, 2, 3], "label": [1]}', '{"logits": [[1, 2, 3]], "label": 0}',
    '{"logits": [1, 2, 3], "targets": [0.2, 0.3, 0.5]}', '{"logits": [1, 2, 3], "label": true}',
    '{"logits": [1, 2, 3], "label": null}', '{"logits": [1, 2, NaN], "label": 0}', '{"logits": [1, 2, 1e400], "label": 0}',
    '{"logits": [1, 2, 3], "label": 0, "label": 1}', '{"logits": [1, 2, 3], "\\u006cabel": 1}',
    '{"logits": [1, 2, 3], "label": 99999999999999999999999}', '{"logits": [1, 2, 3], "label": "1"}',
    '{"logits": [1, 2], "label": 0}', '{"logits": [1, 2, 3], "label": 0}, {"logits": [1, 2, 3], "label": 0}',
    '{"logits": [1, 2,', '3], "label": 0}', '{"logits": [1, 2, 3], "label": 0, "extra": 1}', '{"logits": [1, 2, 3]}',
    '', '   ', '{"logits": [1, 2, 3], "label": 1}\r', '[1, 2, 3]', '{"logits": [], "label": 0}', '{"logits": 3, "label": 0}',
    '{"logits": [1, 2, 3], "label": 1.5}', '{"logits": [1, 2, 3], "label": -3}', '{"logits": [true, 2, 3], "label": 0}',
]


@pytest.mark.parametrize("line", JSONL_LINES)
@pytest.mark.parametrize("chunk_lines", [1, 4])
def test_each_kind_of_line_reads_as_the_strict_reader_reads_it(line, chunk_lines, monkeypatch):
    """Every odd line (constants, duplicate or escaped keys, nested rows, two objects on a line, one object
    over two lines, huge numbers...) among good ones: the same arrays, lines and kinds, or the same error."""
    text = "\n".join([GOOD, line, GOOD, GOOD, ""])
    assert read_jsonl(text, chunk_lines, False, monkeypatch) == read_jsonl(text, chunk_lines, True, monkeypatch)


@hypothesis_settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(JSONL_LINES), min_size=1, max_size=12), st.integers(1, 6))
def test_any_mix_of_lines_reads_as_the_strict_reader_reads_it(lines, chunk_lines):
    """Random mixes of good and odd lines in random blocks: the fast path never accepts or reads differently
    from the line-by-line reader (a block it cannot prove plain goes to that reader)."""
    text = "\n".join(lines)
    with pytest.MonkeyPatch.context() as monkeypatch:
        assert read_jsonl(text, chunk_lines, False, monkeypatch) == read_jsonl(text, chunk_lines, True, monkeypatch)


# --- file lines: runs of consecutive lines and the worst rows, never a number per row -----------------------


def test_contiguous_lines_are_one_run_however_many_chunks():
    """A file without blank or comment lines keeps one run (it kept 8 bytes a row: 80 MB at 10 million rows),
    and a broken-up file falls back to the worst rows' lines, which is what reports ask for."""
    lines = runner._Lines()
    for first in range(0, 100_000, 1000):
        lines.add(first, np.arange(first, first + 1000) + 2, [])
    assert (lines.rows, lines.lines) == ([0], [2])
    line_of = lines.lookup(100_000)
    assert (line_of(0), line_of(54_321), line_of(99_999), line_of(100_000)) == (2, 54_323, 100_001, None)


def test_past_max_runs_the_worst_rows_lines_are_kept(monkeypatch, tmp_path):
    """With the runs dropped, every check's worst row still has its file line, the same as read whole."""
    monkeypatch.setattr(runner._Lines, "MAX_RUNS", 2)
    rng = np.random.default_rng(2)
    rows = [",".join(f"{v:.3f}" for v in rng.standard_normal(5) * 4) + f",{k % 5}" for k in range(60)]
    for k in range(len(rows) - 7, 0, -7):  # a comment every 7 rows: a new run of lines every 7 rows
        rows.insert(k, "# a comment")
    path = tmp_path / "broken.csv"
    path.write_text("z0,z1,z2,z3,z4,label\n" + "\n".join(rows) + "\n")
    request = InputRequest(input_path=str(path))
    with pipeline.open_check(request, Settings()) as job:
        whole = job.run(runner.Keep(arrays=False))
    with pipeline.open_check(request, Settings(), chunk_bytes=300) as job:
        assert job.input.whole is None
        streamed = job.run(runner.Keep(arrays=False))
    for check in streamed.checks:
        assert streamed.line_of(check.worst_index[0]) == whole.line_of(check.worst_index[0]) is not None
    assert streamed.worst_rows() == whole.worst_rows()


# --- explain: O(C) ---------------------------------------------------------------------------------------


def test_explain_of_a_wide_row_builds_no_c_by_c_jacobian(tmp_path):
    """explain of 1 x 20,000 built the 3.2 GB Jacobian to print two rows and the diagonal; under a 1 GB
    address space it must finish, with a peak far below that matrix."""
    path = write_json(tmp_path / "wide.json", 2, 20_000)
    code, stderr, peak = peak_of(["explain", "-i", str(path), "--row", "1"], limit_bytes=1 << 30)
    assert code == 0, stderr
    assert peak < 300 * MB, f"peak {peak / MB:.0f} MB"


@pytest.mark.parametrize("classes", [1, 2, 6, 7, 9])
def test_explain_prints_the_entries_an_entry_by_entry_derivation_prints(gradcheck, classes):
    """The Softmax and Jacobian lines, formatted once per kind of line, are the lines an entry-by-entry loop
    writes (the reference below, with J_ij = -s_i s_j and J_ii = s_i (1 - s_i) computed here)."""
    z = np.linspace(-2.0, 3.0, classes) ** 2
    run = gradcheck("explain", "--logits", ",".join(repr(float(v)) for v in z), "--labels", "0")
    assert run.exit_code == 0, run

    def n(value):
        return f"{value:#.3g}".rstrip(".").replace("-", "\u2212")

    e = np.exp(z - z.max())
    s = e / e.sum()
    minus, times = "\u2212", "\u00d7"  # the derivation's own signs
    expected = [f"   s_{i} = {n(e[i])} / {n(e.sum())} = {n(s[i])}" for i in range(classes)]
    for i in range(classes):
        for j in range(classes):
            if i == j:
                expected.append(f"   ∂s_{i}/∂z_{i} = s_{i}(1 {minus} s_{i}) = "
                                f"{n(s[i])}{times}{n(1 - s[i])} = {n(s[i] * (1 - s[i]))}")
            elif classes <= 6 or i < 2:
                expected.append(f"   ∂s_{i}/∂z_{j} = {minus}s_{i}·s_{j} = "
                                f"{minus}{n(s[i])}{times}{n(s[j])} = {n(-s[i] * s[j])}")
    printed = [line for line in run.stdout.splitlines() if line.startswith(("   s_", "   ∂s_"))]
    assert printed == expected


# --- the benchmark ---------------------------------------------------------------------------------------


def test_the_benchmark_explains_itself():
    """benchmarks/performance.py --help runs and names its options (the benchmark itself is never run here)."""
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "performance.py"), "--help"],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    for option in ("--quick", "--torch-python", "--repeats"):
        assert option in run.stdout, run.stdout


def test_full_of_a_streamed_file_is_refused_before_its_first_batch(gradcheck, monkeypatch, tmp_path):
    """--full of a chunked file counts its rows first (CheckJob.run passes expected_rows): a file whose
    Jacobians would not fit is refused before any batch is checked, though its first batch alone would fit."""
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(1 << 40, 1 << 40, 80 * MB))

    def never(*args, **kwargs):
        raise AssertionError("a batch was checked before --full was refused")

    monkeypatch.setattr(runner, "check_rows", never)
    rng = np.random.default_rng(3)
    path = tmp_path / "wide.csv"  # 15,000 rows x 60 (9 MB: streamed): 432 MB of Jacobians; a chunk's 49 MB
    np.savetxt(path, np.column_stack([rng.standard_normal((15_000, 60)), rng.integers(0, 60, 15_000)]),
               fmt=["%.6f"] * 60 + ["%d"], delimiter=",", header=",".join([f"z{k}" for k in range(60)] + ["label"]),
               comments="")
    run = gradcheck("check", "-i", str(path), "-f", "json", "--full")
    assert run.exit_code == 2, run
    assert run.stdout == "" and len(run.stderr.strip().splitlines()) == 1, run
    assert "--full: the 15000 x 60 x 60 Jacobian" in run.stderr, run
