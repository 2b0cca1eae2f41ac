"""Streaming: chunk boundaries change nothing, JSON Lines streams the same way, ndjson, summaries, wide rows."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest

from gradcheck_cli import pipeline
from gradcheck_cli import terminal as terminal_room
from gradcheck_cli.checks import runner
from gradcheck_cli.checks.runner import Keep
from gradcheck_cli.errors import InputError
from gradcheck_cli.inputs import fork_safety, pipes, readahead, source
from gradcheck_cli.inputs.gather import InputRequest
from gradcheck_cli.settings import Settings


def write_csv(path, logits, labels, comments=True):
    lines = ["# a dump", "z" + ",z".join(str(c) for c in range(1, logits.shape[1])) + ",label"]
    lines[1] = ",".join(f"z{c}" for c in range(logits.shape[1])) + ",label"
    for n, (row, label) in enumerate(zip(logits, labels, strict=True)):
        if comments and n % 7 == 3:
            lines += ["", "# skipped"]
        lines.append(",".join(repr(float(v)) for v in row) + f",{label}")
    path.write_text("\n".join(lines) + "\n")


def write_jsonl(path, logits, labels):
    path.write_text("".join(json.dumps({"logits": row.tolist(), "label": int(label)}) + "\n"
                            for row, label in zip(logits, labels, strict=True)))


def case(rows=37, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((rows, classes)) * 4, rng.integers(0, classes, rows)


def check_whole(path, settings):
    """The file read as one batch."""
    with pipeline.open_check(InputRequest(input_path=str(path)), settings) as job:
        assert job.input.whole is not None
        return job.run(Keep(arrays=False))


def check_chunks(path, settings, chunk_bytes, on_rows=None):
    """The file read in chunks of about chunk_bytes."""
    with pipeline.open_check(InputRequest(input_path=str(path)), settings, chunk_bytes=chunk_bytes) as job:
        assert job.input.whole is None
        return job.run(Keep(arrays=False), on_rows)


def count_rows(path):
    with source.open_source(str(path), "auto") as opened:
        return source.count_rows(opened)


def checks_dict(checks):
    return [check._asdict() for check in checks]


SETTINGS = [
    Settings(),
    Settings(reduction="sum", method="five-point"),
    Settings(reduction="none", order=2),
    Settings(weights=(0.5, 1.0, 2.0, 0.1, 3.0), ignore_index=2),
    Settings(label_smoothing=0.2, temperature=1.7, dtype="float32"),
    Settings(loss="mse"),
]


@pytest.mark.parametrize("settings", SETTINGS, ids=["mean", "sum-5pt", "none-hessian", "weights-ignore", "smooth-T-f32", "mse"])
@pytest.mark.parametrize("chunk_bytes", [1, 150, 700, 1 << 20])
@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_chunk_boundaries_change_nothing(tmp_path, settings, chunk_bytes, kind):
    logits, labels = case()
    path = tmp_path / f"data.{kind}"
    (write_csv if kind == "csv" else write_jsonl)(path, logits, labels)
    whole = check_whole(path, settings)
    streamed = check_chunks(path, settings, chunk_bytes)
    assert checks_dict(streamed.checks) == checks_dict(whole.checks)
    if settings.reduction != "none":
        assert streamed.loss == whole.loss  # to the last bit: the loss is an exactly rounded sum
    assert (streamed.rows, streamed.classes) == (whole.rows, whole.classes)
    for check in streamed.checks:
        row = check.worst_index[0]
        assert streamed.line_of(row) == whole.line_of(row)


def test_count_rows_skips_header_comments_and_blank_lines(tmp_path):
    logits, labels = case(rows=20)
    path = tmp_path / "data.csv"
    write_csv(path, logits, labels)
    path.write_text(path.read_text() + "   \n\t\n")
    assert count_rows(path) == 20


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("last_newline", [True, False])
@pytest.mark.parametrize("comments", [True, False])
def test_every_newline_and_blank_line_streams_as_the_whole_file_reads(tmp_path, newline, last_newline, comments):
    logits, labels = case(rows=20)
    path = tmp_path / "data.csv"
    write_csv(path, logits, labels, comments)
    lines = ["", " \t", *(line for line in path.read_text().splitlines() if comments or line[:1] != "#")]
    lines.insert(9, "   ")
    path.write_bytes((newline.join(lines) + (newline if last_newline else "")).encode())
    whole = check_whole(path, Settings())
    assert count_rows(path) == 20  # the mean's divisor
    streamed = check_chunks(path, Settings(), 150)
    assert checks_dict(streamed.checks) == checks_dict(whole.checks)
    assert streamed.loss == whole.loss
    assert [streamed.line_of(row) for row in range(20)] == [whole.line_of(row) for row in range(20)]


def test_big_files_stream_and_summarise(gradcheck, tmp_path, monkeypatch):
    monkeypatch.setattr(source, "STREAM_ABOVE_BYTES", 100)
    monkeypatch.setattr(source, "CHUNK_BYTES", 300)
    monkeypatch.setattr(runner, "FULL_LIMIT", 100)  # arrays are kept by the number of logits, not of bytes
    logits, labels = case(rows=60)
    path = tmp_path / "big.csv"
    write_csv(path, logits, labels)
    run = gradcheck("check", "-i", str(path), "-f", "json")
    assert run.exit_code == 0, run
    report = json.loads(run.stdout)
    assert report["arrays"] is False and "probabilities" not in report
    assert report["shape"] == {"rows": 60, "classes": 5}
    in_memory = json.loads(gradcheck("check", "-i", str(path), "-f", "json", "--full").stdout)
    assert in_memory["arrays"] is True
    assert report["checks"] == in_memory["checks"] and report["loss"] == in_memory["loss"]
    assert report["worst_rows"] == in_memory["worst_rows"]


def test_tables_summarise_big_inputs(gradcheck, tmp_path):
    logits, labels = case(rows=2100, classes=10)
    path = tmp_path / "big.jsonl"
    write_jsonl(path, logits, labels)
    run = gradcheck("check", "-i", str(path))
    assert run.exit_code == 0, run
    assert "Worst rows" in run.stdout and "Softmax probabilities" not in run.stdout
    assert max(len(line) for line in run.stdout.splitlines()[:-1]) <= 80


def test_ndjson_streams_one_line_per_sample_then_the_report(gradcheck, tmp_path):
    logits, labels = case(rows=9)
    path = tmp_path / "data.csv"
    write_csv(path, logits, labels)
    run = gradcheck("check", "-i", str(path), "-f", "ndjson")
    assert run.exit_code == 0, run
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert [line["row"] for line in lines[:-1]] == list(range(9))
    assert lines[3]["line"] is not None and lines[0]["line"] == 3
    assert lines[-1]["passed"] is True and lines[-1]["arrays"] is False
    full = json.loads(gradcheck("check", "-i", str(path), "-f", "json").stdout)
    assert [line["probabilities"] for line in lines[:-1]] == full["probabilities"]
    assert [line["gradient"]["analytic"] for line in lines[:-1]] == full["gradient"]["analytic"]


def test_ndjson_from_arguments(gradcheck):
    run = gradcheck("check", "--logits", "1,2,3", "--logits", "3,2,1", "--labels", "0,1", "-f", "ndjson")
    assert run.exit_code == 0, run
    lines = run.stdout.splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["line"] is None


@pytest.mark.parametrize(("text", "message"), [
    ('{"logits": [1, 2], "label": 0}\n{"logits": [1, 2, 3], "label": 0}\n', "data.jsonl:2: ragged logits"),
    ('{"logits": [1, 2], "label": 0}\n{"logits": [1, NaN], "label": 0}\n', "data.jsonl:2: NaN is not allowed"),
    ('{"logits": [1, 2], "label": 5}\n', "data.jsonl:1: label 5 is out of range"),
    ('{"logits": [1, 2]}\n', 'give exactly one of "label" or "targets"'),
    ('{"logits": [1, 2], "label": 0}\n{"logits": [1, 2], "targets": [0.5, 0.5]}\n', "mixes labels and targets"),
    ('{"logits": [1, 2], "label": 0.5}\n', "expected an integer class index"),
])
def test_json_lines_errors_name_the_line(gradcheck, tmp_path, text, message):
    path = tmp_path / "data.jsonl"
    path.write_text(text)
    run = gradcheck("check", "-i", str(path))
    assert run.exit_code == 2, run
    assert message in run.stderr, run


def test_a_bad_cell_deep_in_a_streamed_file_names_its_line_and_column(gradcheck, tmp_path, monkeypatch):
    monkeypatch.setattr(source, "STREAM_ABOVE_BYTES", 100)
    monkeypatch.setattr(source, "CHUNK_BYTES", 200)
    logits, labels = case(rows=40)
    path = tmp_path / "big.csv"
    write_csv(path, logits, labels, comments=False)
    lines = path.read_text().splitlines()
    lines[30] = lines[30].replace(",", ",oops", 1)
    path.write_text("\n".join(lines) + "\n")
    run = gradcheck("check", "-i", str(path))
    assert run.exit_code == 2, run
    assert f"big.csv:31:{lines[30].index('oops') + 1}: 'oops" in run.stderr, run


def test_a_row_of_3000_classes_checks_without_the_full_jacobian(gradcheck):
    row = ",".join(repr(float(v)) for v in np.random.default_rng(1).standard_normal(3000) * 5)
    run = gradcheck("check", "--logits", row, "--labels", "7")
    assert run.exit_code == 0, run
    assert "3000 x 3000 per row, checked without building it" in run.stdout


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_reading_ahead_in_a_process_changes_nothing(tmp_path, monkeypatch, kind):
    """Parsing in a forked reader gives what parsing in this process gives, errors included, in order."""
    import multiprocessing

    logits, labels = case(rows=60)
    labels[50] = 7  # out of range for 5 classes: an error after several chunks were checked
    path = tmp_path / f"data.{kind}"
    (write_csv if kind == "csv" else write_jsonl)(path, logits, labels)

    def run(platform, safe=True):
        monkeypatch.setattr(readahead.sys, "platform", platform)
        # Forced safe: this test's child only parses, so torch or JAX loaded by an earlier test cannot hurt it
        # (their warning at a fork is silenced here); whether such a process forks is the next test's.
        monkeypatch.setattr(fork_safety, "fork_is_safe", lambda: safe)
        seen, readers = [], []

        def each(start, *_):
            seen.append(start)
            readers.append(len(multiprocessing.active_children()))

        with pytest.raises(InputError) as error, warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            check_chunks(path, Settings(reduction="sum"), 300, each)
        return str(error.value), seen, max(readers)

    forked, in_process, threaded = run("linux"), run("darwin"), run("linux", safe=False)
    assert forked[:2] == in_process[:2] == threaded[:2]
    # one reader process, or none: on macOS, and where a fork would lose another thread (inputs/fork_safety.py)
    assert (forked[2], in_process[2], threaded[2]) == (1, 0, 0)
    assert "label 7 is out of range" in forked[0] and len(forked[1]) > 3
    assert multiprocessing.active_children() == []  # the reader is gone after the error


def test_a_batch_crosses_the_read_ahead_pipe_as_raw_bytes_not_pickled(tmp_path):
    """The reader's batches reach the checking process whole (every array, dtype and field), but only a small
    header is pickled: the arrays' bytes are written as they are in memory and read straight into the arrays
    the checks get (pickling them cost both processes about 5% of a streamed check)."""
    from gradcheck_cli.batch import Batch

    logits, labels = case(rows=10_000, classes=10)
    batch = Batch(logits=logits, labels=labels, targets=np.eye(10)[labels], source="data.csv",
                  row_lines=np.arange(2, 10_002, dtype=np.int64))
    path = tmp_path / "frames"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        for item in (batch, InputError("data.csv:9: a bad cell"), None):
            pipes.send_item(fd, item)
        (header,) = pipes.LENGTH.unpack(os.pread(fd, pipes.LENGTH.size, 0))
        os.lseek(fd, 0, os.SEEK_SET)
        received, error, end = (pipes.receive_item(fd) for _ in range(3))
        with pytest.raises(EOFError):  # the pipe's end, where a frame should begin
            pipes.receive_item(fd)
    finally:
        os.close(fd)
    assert end is None
    assert header < 2048 < logits.nbytes
    assert isinstance(received, Batch) and received.source == "data.csv"
    for name in ("logits", "labels", "targets", "row_lines"):
        sent, got = getattr(batch, name), getattr(received, name)
        assert got.dtype == sent.dtype and np.array_equal(got, sent) and got.flags.writeable, name
    assert isinstance(error, InputError) and str(error) == "data.csv:9: a bad cell"


@pytest.mark.parametrize(
    ("megabytes", "kind", "terminal", "drawn"),
    [(40, "csv", True, True), (20, "csv", True, False), (40, "csv", False, False), (8, "jsonl", True, True)],
)
def test_a_progress_bar_only_on_a_terminal_and_for_a_second_or_more(monkeypatch, megabytes, kind, terminal, drawn):
    """About a second of work or more, on a terminal's stderr; never on a pipe, never on stdout."""
    import io
    import sys

    class Stderr(io.StringIO):
        def isatty(self):
            return terminal

    stderr, stdout = Stderr(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    monkeypatch.setattr(sys, "stdout", stdout)
    with terminal_room.progress(megabytes << 20, kind, lambda: 100) as advance:
        advance(60)
        advance(40)
    assert ("checking rows" in stderr.getvalue()) == drawn
    assert stdout.getvalue() == ""
