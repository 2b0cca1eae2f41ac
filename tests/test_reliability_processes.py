"""Nothing left behind, nothing read without a bound, and honest exit codes, tested on real processes.

Each signal test runs `python -m gradcheck_cli` on a big CSV with `-f ndjson` and never reads its stdout: the
checking process stalls on its first write, and the read-ahead process fills its queue and waits in
Queue.put, which is where a CI step's timeout finds a `gradcheck ... | jq` that stopped moving. The test then
signals the checking process and looks, through /proc, at what is left: no process of it, no file in the
private TMPDIR, and its stdout at end of file (nobody holds it open). Every process is started in its own
session, so whatever a failing test leaves is killed as a group on the way out.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import click
import numpy as np
import pytest

from gradcheck_cli import pipeline
from gradcheck_cli.checks.runner import Keep
from gradcheck_cli.errors import InputError
from gradcheck_cli.inputs import readahead, source
from gradcheck_cli.inputs.gather import InputRequest
from gradcheck_cli.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="processes are watched through /proc")
# The big CSV: 16 MB is 16 chunks, more than the 8 the read-ahead queue holds plus the ones in hand, so the
# reader is still at work (or waiting to put) when the stalled checking process is signalled.
BIG_BYTES = 16 << 20
# Runs a command (stdin passed on), then prints its exit code and the peak memory (KB) of the largest of its
# processes (ru_maxrss of the children: the command and the read-ahead process it waited for).
PROBE = ("import json, resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True); "
         "print(json.dumps([r.returncode, r.stderr.decode(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))")


# --- processes and what they leave ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 16 MB CSV of 10 classes with a label column (a 4,000-row block, repeated); the check passes."""
    rng = np.random.default_rng(0)
    logits, labels = rng.standard_normal((4000, 10)) * 3, rng.integers(0, 10, 4000)
    block = "".join(",".join(f"{value:.6f}" for value in row) + f",{label}\n"
                    for row, label in zip(logits, labels, strict=True))
    path = tmp_path_factory.mktemp("big") / "big.csv"
    with path.open("w") as handle:
        handle.write(",".join(f"z{c}" for c in range(10)) + ",label\n")
        for _ in range(-(-BIG_BYTES // len(block))):
            handle.write(block)
    return path


@pytest.fixture
def private_tmp(tmp_path: Path) -> Path:
    """An empty TMPDIR of this test's own, to see whether anything is left in it."""
    folder = tmp_path / "tmpdir"
    folder.mkdir()
    return folder


@pytest.fixture
def started(private_tmp: Path):
    """start(*args, stdin=...) runs gradcheck in its own session with the private TMPDIR; on leaving the test
    its whole process group is killed, so an orphan of a failing test never outlives it."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(*args: str, stdin: object = subprocess.DEVNULL, **env: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen([sys.executable, "-m", "gradcheck_cli", *args], stdin=stdin,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                                   env={**os.environ, "TMPDIR": str(private_tmp), **env})
        processes.append(process)
        return process

    yield start
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        for stream in (process.stdout, process.stderr):
            assert stream is not None
            stream.close()


def _parents() -> dict[int, int]:
    """Every process's parent, from /proc."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                status = Path(f"/proc/{entry}/stat").read_text()
            except OSError:  # ended meanwhile
                continue
            parents[int(entry)] = int(status.rsplit(")", 1)[1].split()[1])
    return parents


def _alive(pid: int) -> bool:
    """Running or sleeping; a zombie (ended, waiting to be reaped) is not alive."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _children(pid: int, seconds: float = 20.0) -> list[int]:
    """The processes pid started, once there is one (the read-ahead process forks when the check starts)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if children := [child for child, parent in _parents().items() if parent == pid]:
            return children
        time.sleep(0.02)
    raise AssertionError(f"process {pid} started no read-ahead process within {seconds} s")


def _until(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _read_to_end(stream: io.BufferedReader, seconds: float) -> bytes | None:
    """What is left in a pipe, read until its end; None if it has not ended within seconds (a writer holds it)."""
    data, deadline = [], time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if select.select([stream], [], [], left)[0]:
            if not (piece := os.read(stream.fileno(), 1 << 16)):
                return b"".join(data)
            data.append(piece)
    return None


def _stalled_check(start, big: Path, stdin_pipe: bool) -> tuple[subprocess.Popen[bytes], list[int]]:
    """gradcheck streaming big (a file, or stdin fed by cat) to a stdout nobody reads, and its reader."""
    if stdin_pipe:
        with subprocess.Popen(["cat", str(big)], stdout=subprocess.PIPE) as cat:
            process = start("check", "-i", "-", "-f", "ndjson", stdin=cat.stdout)
            assert cat.stdout is not None
            cat.stdout.close()
    else:
        process = start("check", "-i", str(big), "-f", "ndjson")
    readers = _children(process.pid)
    time.sleep(0.3)  # well into the stream: the reader parses ahead, the checking process waits on stdout
    assert process.poll() is None and all(_alive(reader) for reader in readers)
    return process, readers


@LINUX
@pytest.mark.parametrize(("stop", "stdin_pipe"), [
    (signal.SIGTERM, False), (signal.SIGHUP, False), (signal.SIGKILL, False), (signal.SIGTERM, True),
    (signal.SIGKILL, True),
], ids=["SIGTERM", "SIGHUP", "SIGKILL", "SIGTERM-stdin", "SIGKILL-stdin"])
def test_a_signal_mid_stream_leaves_no_process_no_file_and_no_open_stdout(started, big_csv, private_tmp, stop,
                                                                          stdin_pipe):
    """SIGTERM and SIGHUP clean up as Ctrl-C does and exit 128 + the signal, without a word; after SIGKILL the
    kernel ends the reader (PR_SET_PDEATHSIG). Either way `| jq` sees the end of its input at once, and a
    spooled stdin leaves no file (it never had a name)."""
    process, readers = _stalled_check(started, big_csv, stdin_pipe)
    _stopped_cleanly(process, readers, private_tmp, stop)


def _stopped_cleanly(process: subprocess.Popen[bytes], children: list[int], private_tmp: Path, stop: int) -> None:
    """`stop` sent: exit 128 + it (killed, for SIGKILL), no child of it alive, its stdout at its end, nothing in
    TMPDIR, and not a word on stderr (but after SIGKILL)."""
    os.kill(process.pid, stop)
    assert process.wait(timeout=20) == (-stop if stop == signal.SIGKILL else 128 + stop)
    assert process.stdout is not None and process.stderr is not None
    assert _read_to_end(process.stdout, 10) is not None, "something still holds gradcheck's stdout open"
    assert _until(lambda: not any(_alive(child) for child in children), 10), "a child process outlived it"
    assert os.listdir(private_tmp) == []
    stderr = _read_to_end(process.stderr, 10)
    assert stderr is not None and (stop == signal.SIGKILL or stderr.strip() == b""), stderr


@LINUX
def test_sigterm_while_stdin_is_being_copied_leaves_nothing(started, private_tmp):
    """Stopped half-way through copying stdin (its writer still has more to say), nothing is left in TMPDIR."""
    process = started("check", "-i", "-", "-v", stdin=subprocess.PIPE)
    assert process.stdin is not None and process.stderr is not None
    process.stdin.write(b"z0,z1,label\n" + b"1.5,-2.25,0\n" * 20_000)  # more than the first block, less than all
    process.stdin.flush()
    # -v announces the read before stdin is copied; by the time it has, some of it has been.
    assert process.stderr.readline() == b"gradcheck: reading -\n"
    time.sleep(0.3)
    os.kill(process.pid, signal.SIGTERM)
    assert process.wait(timeout=20) == 128 + signal.SIGTERM
    process.stdin.close()
    assert os.listdir(private_tmp) == []


@LINUX
def test_a_fifo_given_with_i_is_read_like_stdin(started, tmp_path):
    """-i FIFO (or `<(...)`): opening it waits for the writer, then it is copied once, as stdin is."""
    fifo = tmp_path / "logits.csv"
    os.mkfifo(fifo)
    process = started("check", "-i", str(fifo), "-f", "json")
    with fifo.open("w") as writer:  # waits for gradcheck to open it
        writer.write("z0,z1,z2,label\n1.1,2.2,0.2,2\n0.5,-1,3,0\n")
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert json.loads(stdout)["shape"] == {"rows": 2, "classes": 3}


@LINUX
def test_a_fifo_without_a_writer_waits_until_stopped(started, tmp_path, private_tmp):
    """With no writer, gradcheck waits, as `cat FIFO` does; SIGTERM stops the wait cleanly (exit 143)."""
    fifo = tmp_path / "never.csv"
    os.mkfifo(fifo)
    process = started("check", "-i", str(fifo))
    time.sleep(0.5)
    assert process.poll() is None  # still waiting for a writer
    os.kill(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 128 + signal.SIGTERM and stderr.strip() == b"", stderr
    assert os.listdir(private_tmp) == []


@LINUX
def test_a_reader_killed_from_outside_ends_the_check_instead_of_hanging_it(started, big_csv):
    """The checking process does not wait forever for a reader that died (the OOM killer, a stray kill -9):
    it says so in one line and exits 3."""
    process, readers = _stalled_check(started, big_csv, stdin_pipe=False)
    for reader in readers:
        os.kill(reader, signal.SIGKILL)
    _, stderr = process.communicate(timeout=60)  # reading its stdout lets it go on, to what the reader sent
    assert process.returncode == 3, stderr
    assert stderr.decode() == ("gradcheck: error: internal error: RuntimeError: the process reading the input "
                               "ended before it was done (exit code -9) (re-run with --debug for the traceback)\n")


def test_the_reader_stops_waiting_to_send_when_its_parent_is_gone():
    """Its queue's put never waits forever: a reader whose parent died (had PR_SET_PDEATHSIG been missing)
    sees it."""
    import queue

    parsed: queue.Queue[None] = queue.Queue(1)
    assert readahead._put(parsed, None, os.getppid()) is True  # room in the queue, the parent is there
    start = time.monotonic()
    assert readahead._put(parsed, None, -1) is False  # full, and "the parent" is not this process's
    assert time.monotonic() - start < 5 * readahead._POLL_SECONDS


# --- the ndjson rows' formatter (render/forked_writer.py) -------------------------------------------------------

# More than the first batch's records (about 10,000 rows of ~1 KB each on big_csv): read that much, and the
# checking process has moved on to its second batch, which the forked formatter writes.
FIRST_BATCH_BYTES = 16 << 20


def _read_at_least(stream: io.BufferedReader, size: int, seconds: float = 60.0) -> int:
    got, deadline = 0, time.monotonic() + seconds
    while got < size and time.monotonic() < deadline:
        if select.select([stream], [], [], 1.0)[0]:
            piece = os.read(stream.fileno(), 1 << 20)
            assert piece, "gradcheck's stdout ended early"
            got += len(piece)
    return got


def _formatting(start, big: Path) -> tuple[subprocess.Popen[bytes], list[int]]:
    """gradcheck -f ndjson on big, its first batch's records read, then its stdout left unread: the read-ahead
    and the formatter (writing the second batch's records, stalled) are its two children."""
    process = start("check", "-i", str(big), "-f", "ndjson")
    assert process.stdout is not None
    assert _read_at_least(process.stdout, FIRST_BATCH_BYTES) >= FIRST_BATCH_BYTES
    assert _until(lambda: len([child for child, parent in _parents().items()
                               if parent == process.pid and _alive(child)]) == 2, 20), "no formatter was forked"
    return process, [child for child, parent in _parents().items() if parent == process.pid]


@LINUX
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_signal_while_the_formatter_writes_leaves_no_process(started, big_csv, private_tmp, stop):
    """From the second batch on, ndjson records are written by a forked formatter; stopped then, the check
    leaves neither it nor the reader behind, and nobody holds its stdout open."""
    process, children = _formatting(started, big_csv)
    _stopped_cleanly(process, children, private_tmp, stop)


@LINUX
def test_a_reader_of_ndjson_that_leaves_ends_the_formatting_quietly(started, big_csv):
    """`gradcheck ... -f ndjson | head`: the formatter meets the closed pipe and ends; the check goes on without
    formatting and exits with its verdict (0), saying nothing."""
    process, children = _formatting(started, big_csv)
    assert process.stdout is not None
    process.stdout.close()
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0 and stderr == b"", stderr
    assert _until(lambda: not any(_alive(child) for child in children), 10)


@LINUX
def test_ndjson_records_written_by_the_formatter_are_those_written_in_process(gradcheck, tmp_path):
    """A streamed file's records (9 MB: 9 batches) through the forked formatter (stdout a file) are byte for byte
    those the checking process writes itself (in-process stdout: no descriptor to hand over), the report last."""
    rng = np.random.default_rng(5)
    path = tmp_path / "rows.csv"
    np.savetxt(path, np.column_stack([rng.standard_normal((90_000, 10)) * 3, rng.integers(0, 10, 90_000)]),
               fmt=["%.6f"] * 10 + ["%d"], delimiter=",", header=",".join([*(f"z{c}" for c in range(10)), "label"]),
               comments="")
    with (tmp_path / "out.ndjson").open("wb") as out:
        run = subprocess.run([sys.executable, "-m", "gradcheck_cli", "check", "-i", str(path), "-f", "ndjson"],
                             stdout=out, stderr=subprocess.PIPE, check=False)
    assert run.returncode == 0 and run.stderr == b"", run.stderr
    in_process = gradcheck("check", "-i", str(path), "-f", "ndjson")
    assert in_process.exit_code == 0, in_process
    written = (tmp_path / "out.ndjson").read_text()
    assert path.stat().st_size > source.STREAM_ABOVE_BYTES
    assert written.count("\n") == 90_001 and written == in_process.stdout


@LINUX
def test_rows_checked_before_an_input_error_are_all_written_by_the_formatter(gradcheck, tmp_path):
    """A bad cell in a streamed file's seventh batch: exit 2 with its line, after every record of the batches
    before it, as when the checking process writes them itself (the formatter is let finish, not killed)."""
    rng = np.random.default_rng(6)
    rows = [",".join(f"{value:.6f}" for value in row) + f",{label}"
            for row, label in zip(rng.standard_normal((90_000, 10)) * 3, rng.integers(0, 10, 90_000), strict=True)]
    rows[66_000] = "oops" + rows[66_000][rows[66_000].index(","):]
    path = tmp_path / "bad.csv"
    path.write_text(",".join([*(f"z{c}" for c in range(10)), "label"]) + "\n" + "\n".join(rows) + "\n")
    with (tmp_path / "out.ndjson").open("wb") as out:
        run = subprocess.run([sys.executable, "-m", "gradcheck_cli", "check", "-i", str(path), "-f", "ndjson"],
                             stdout=out, stderr=subprocess.PIPE, check=False)
    in_process = gradcheck("check", "-i", str(path), "-f", "ndjson")
    assert run.returncode == in_process.exit_code == 2
    assert run.stderr.decode() == in_process.stderr and "66002" in in_process.stderr
    written = (tmp_path / "out.ndjson").read_text()
    assert written == in_process.stdout and written.count("\n") > 50_000


FORMATTED = """
import multiprocessing, os, sys
from gradcheck_cli.render.forked_writer import forked_writer
from gradcheck_cli.terminal import Output

def write(stream, item):
    if item == int(sys.argv[1]):
        raise ValueError("a bug in the formatting")
    stream.write(f"{item} {os.getpid()}\\n")

try:
    with forked_writer(Output(), write) as send:
        for item in range(6):
            send(item)
finally:
    print("children", len(multiprocessing.active_children()), os.getpid(), file=sys.stderr)
"""


@LINUX
def test_the_first_item_is_written_here_the_rest_in_order_by_one_formatter():
    """The first batch is written by the checking process (nothing to overlap yet), every later one by one forked
    process, in the order sent; on leaving, that process has ended."""
    run = subprocess.run([sys.executable, "-c", FORMATTED, "-1"], capture_output=True, text=True, check=True)
    lines = [line.split() for line in run.stdout.splitlines()]
    (_, children, parent), = [run.stderr.split()]
    assert [int(item) for item, _ in lines] == list(range(6)) and children == "0"
    assert lines[0][1] == parent and len({pid for _, pid in lines[1:]}) == 1 and lines[1][1] != parent


@LINUX
def test_a_formatter_that_fails_is_an_error_of_the_run_not_silence():
    """A bug in the forked formatting is not taken for a reader that left: the run fails with a RuntimeError
    (exit 3 from the command line), after the records written before it, and no process is left."""
    run = subprocess.run([sys.executable, "-c", FORMATTED, "3"], capture_output=True, text=True, check=False)
    assert run.returncode == 1
    assert "RuntimeError: the process writing the rows failed (exit code 70)" in run.stderr
    assert "children 0" in run.stderr
    assert [line.split()[0] for line in run.stdout.splitlines()] == ["0", "1", "2"]


# --- files that change while they are read ------------------------------------------------------------------


@pytest.mark.parametrize("change", ["grow", "truncate"])
def test_a_file_that_changes_while_it_is_streamed_is_refused(tmp_path, change):
    """The mean's divisor was counted on the file as it was; rows added later (or cut) must not be checked
    against it: exit 2, saying the file changed, instead of a loss 20% off (or a line past the end). The file
    changes while the first batch is being checked: the reader, 8 batches ahead at most, is far from its end."""
    path = tmp_path / "data.csv"
    rows = "".join(f"{k % 7 - 3}.5,{k % 5}.25,-1,{k % 3}\n" for k in range(3000))
    path.write_text("z0,z1,z2,label\n" + rows)

    def change_the_file(start, *_):
        if start == 0:
            with path.open("r+") as handle:
                handle.seek(0, os.SEEK_END) if change == "grow" else handle.truncate(len(rows) // 3)
                handle.write(rows[:1000] if change == "grow" else "")

    with pytest.raises(InputError, match=f"^{re.escape(str(path))}: the file changed while it was read"), \
            pipeline.open_check(InputRequest(input_path=str(path)), Settings(), chunk_bytes=300) as job:
        job.run(Keep(arrays=False), change_the_file)


def test_a_file_that_changes_before_it_is_counted_or_read_whole_is_refused(tmp_path):
    """The row count (the mean's divisor) and a whole read look at the file as it was opened, too."""
    path = tmp_path / "data.csv"
    path.write_text("z0,z1,label\n1,2,0\n")
    for read in (source.count_rows, lambda opened: list(source.text_blocks(opened, None))):
        with source.open_source(str(path), "auto") as opened:
            with path.open("a") as handle:
                handle.write("3,4,1\n")
            with pytest.raises(InputError, match=r"data\.csv: the file changed while it was read"):
                read(opened)


# --- bounded reads -------------------------------------------------------------------------------------------


@contextlib.contextmanager
def exec_after_fork() -> Iterator[None]:
    """Around a Popen with a preexec_fn (the child forks, sets a limit or a signal, then execs): JAX, once an
    earlier test imported it here, warns at every fork that its threads may deadlock the child, a warning for a
    child that goes on running Python; this one only calls setrlimit or signal before exec, so it is silenced
    for this fork only (gradcheck's own forks avoid such a process: inputs/fork_safety.py)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        yield


def _small_files(limit_bytes: int):
    """preexec_fn: files may grow to limit_bytes at most (writing past it fails, SIGXFSZ ignored)."""
    import resource

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return limit


def _measured(*args: str, stdin: object = subprocess.DEVNULL, env: dict[str, str] | None = None,
              timeout: float = 60) -> tuple[int, str, int]:
    """Exit code, stderr and the peak memory (MB) of `python -m gradcheck_cli ARGS`. No file it writes may
    pass 64 MB (so a run that copied without a bound fails fast instead of filling the disk), and a run that
    times out is killed with everything it started."""
    with exec_after_fork():
        probe = subprocess.Popen([sys.executable, "-c", PROBE, sys.executable, "-m", "gradcheck_cli", *args],
                                 stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                 start_new_session=True, preexec_fn=_small_files(64 << 20))
    try:
        stdout, _ = probe.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(probe.pid, signal.SIGKILL)
        probe.wait()
    code, stderr, peak_kb = json.loads(stdout)
    return code, stderr, peak_kb >> 10


@pytest.fixture(scope="module")
def baseline_mb() -> int:
    """The peak memory of a one-row check: the interpreter with numpy, click and rich."""
    code, stderr, peak = _measured("check", "--logits", "1,2", "--labels", "0")
    assert code == 0, stderr
    return peak


@LINUX
@pytest.mark.parametrize("given", ["-i /dev/zero", "-i - < /dev/zero"])
def test_dev_zero_is_refused_from_its_first_block(given, private_tmp, baseline_mb):
    """Binary data is refused from the first 64 KB, before a byte is copied (stdin) or read on (a device):
    no 512 MB read, no GBs spooled. Memory: the first block and the modules loaded on the way, a few MB
    above a one-row check; 16 MB above it is a wide margin that reading 512 MB could never meet."""
    with open("/dev/zero", "rb") as zeros:
        args = ("check", "-i", "/dev/zero") if given == "-i /dev/zero" else ("check", "-i", "-")
        env = {**os.environ, "TMPDIR": str(private_tmp)}
        code, stderr, peak = _measured(*args, stdin=zeros, env=env, timeout=30)
    name = "/dev/zero" if given == "-i /dev/zero" else "<stdin>"
    assert code == 2, stderr
    assert stderr == f"gradcheck: error: {name}: binary data (a NUL byte on line 1, offset 0), expected text\n"
    assert peak < baseline_mb + 16, (peak, baseline_mb)
    assert os.listdir(private_tmp) == []


@LINUX
def test_a_line_without_an_end_is_refused_in_bounded_memory(tmp_path, baseline_mb):
    """A 24 MB line (1.5 times MAX_LINE_BYTES) after two good rows: refused naming its line, having looked
    through MAX_LINE_BYTES of it in 64 KB pieces and kept none. Each process holds one 1 MB chunk and a piece
    beyond a one-row check, plus the streaming modules (multiprocessing, the CSV reader): a few MB. The bound,
    MAX_LINE_BYTES above the one-row check, is what one kept line would cost; reading the line whole (as
    before) costs 48 MB at least, as bytes and again as text."""
    path = tmp_path / "long.csv"
    with path.open("wb") as handle:
        handle.write(b"z0,z1,label\n1,2,0\n3,4,1\n")
        for _ in range(24):
            handle.write(b"1," * (1 << 19))
        handle.write(b"0\n5,6,0\n")
    code, stderr, peak = _measured("check", "-i", str(path))
    assert code == 2 and stderr == (f"gradcheck: error: {path}:4: a line longer than 16 MB; a file is read a line "
                                    "at a time, and a line that long is not a row of logits\n"), stderr
    assert peak < baseline_mb + (source.MAX_LINE_BYTES >> 20), (peak, baseline_mb)


@pytest.mark.parametrize("chunk", [1, 7, 64])
@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_lines_up_to_the_bound_are_read_and_longer_ones_refused_with_their_line(tmp_path, monkeypatch, chunk,
                                                                                 newline):
    """The bound is exact, and the same for the rows (read in chunks) and for the row count, whatever ends the
    lines: a line of MAX_LINE_BYTES is read, one byte more is refused, naming its line."""
    monkeypatch.setattr(source, "MAX_LINE_BYTES", 40)
    monkeypatch.setattr(source, "CHUNK_BYTES", chunk)  # the row count reads in chunks of this size
    path = tmp_path / "data.csv"
    rest = ",2,3,4,5,6,7,8,0"
    for width in (40, 41):
        line = "1." + "0" * (width - 2 - len(rest)) + rest  # 1.000...0,2,...: width characters
        lines = ["z0,z1,z2,z3,z4,z5,z6,z7,label", "1,2,3,4,5,6,7,8,0", line, "1,2,3,4,5,6,7,8,1"]
        path.write_bytes((newline.join(lines) + newline).encode())
        with source.open_source(str(path), "csv") as opened:
            if width == 40:
                assert "".join(text for _, text in source.text_blocks(opened, chunk)) == "\n".join(lines) + "\n"
                assert source.count_rows(opened) == 3
                continue
            for read in (lambda: list(source.text_blocks(opened, chunk)), lambda: source.count_rows(opened)):
                with pytest.raises(InputError, match=r"data.csv:3: a line longer than 40 bytes"):
                    read()


@pytest.mark.parametrize("character", ["é", "€", "𝄞"])
@pytest.mark.parametrize("shift", [0, 1, 2, 3])
def test_a_character_cut_by_the_first_block_is_not_binary(tmp_path, character, shift):
    """The first block ends where it ends: a UTF-8 character it cuts in two is text, not an error (the shifts
    put the cut at each byte of the character); a stray byte there is still refused."""
    path = tmp_path / "data.csv"
    comment = b"#" + b"x" * shift + character.encode() * (source.FIRST_BLOCK_BYTES // len(character.encode()))
    path.write_bytes(comment + b"\nz0,label\n1,0\n")
    with source.open_source(str(path), "auto") as opened:
        assert source.count_rows(opened) == 1
    path.write_bytes(b"#" * (source.FIRST_BLOCK_BYTES - 1) + b"\x80\nz0,label\n1,0\n")
    with pytest.raises(InputError, match=r"not UTF-8 text \(byte 0x80 on line 1, offset 65535\)"), \
            source.open_source(str(path), "auto"):
        pass


class _Endless(io.RawIOBase):
    """A stdin of valid CSV rows, size bytes in all, each read a view of one pattern (the test holds 1 MB)."""

    ROWS = b"1.5,-2.25,0\n" * ((1 << 20) // 12 + 2)

    def __init__(self, size: int) -> None:
        self.left, self.at = size, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        size = min(len(buffer), self.left, 1 << 20)
        buffer[:size] = memoryview(self.ROWS)[self.at : self.at + size]
        self.left -= size
        self.at = (self.at + size) % 12
        return size


def test_the_copy_of_stdin_is_bounded_and_held_in_bounded_memory(gradcheck, monkeypatch, private_tmp):
    """stdin is copied a block at a time, up to MAX_SPOOL_BYTES, then refused with the way out. Memory: the
    first 64 KB, and one 1 MB block at a time, which may pass through a buffer of the same size on its way:
    under 2.1 MB. 4 MB leaves room for the run's own objects; a copy held in memory would need 8 MB."""
    import tempfile
    import tracemalloc

    monkeypatch.setattr(source, "MAX_SPOOL_BYTES", 8 << 20)
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    tracemalloc.start()
    try:
        run = gradcheck("check", "-i", "-", input=io.BufferedReader(_Endless(12 << 20)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert run.exit_code == 2, run
    assert run.stderr == ("gradcheck: error: <stdin>: over 8 MB from a pipe, the most gradcheck copies to a "
                          "temporary file to read; write it to a file and give that with -i instead (a file "
                          "streams without a limit)\n"), run
    assert peak < 4 << 20, peak
    assert os.listdir(private_tmp) == []


# --- environment problems are exit 2 --------------------------------------------------------------------------


def test_a_temporary_file_that_cannot_grow_is_exit_2(big_csv, private_tmp):
    """Writing the copy of stdin fails (here: a 1 MB file size limit, EFBIG): one line, exit 2, not exit 3."""
    with big_csv.open("rb") as stdin, exec_after_fork():
        run = subprocess.run([sys.executable, "-m", "gradcheck_cli", "check", "-i", "-"], stdin=stdin,
                             capture_output=True, timeout=60, env={**os.environ, "TMPDIR": str(private_tmp)},
                             preexec_fn=_small_files(1 << 20))
    assert run.returncode == 2, run.stderr
    assert run.stderr.decode() == (f"gradcheck: error: <stdin>: cannot copy it to a temporary file in {private_tmp}: "
                                   f"{os.strerror(errno.EFBIG)}\n")


def _can_mount_in_a_namespace() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


@LINUX
@pytest.mark.skipif(not _can_mount_in_a_namespace(), reason="needs unshare -rm and tmpfs (user namespaces)")
def test_a_full_tmpdir_is_exit_2(big_csv, tmp_path):
    """A real ENOSPC: TMPDIR on a 1 MB tmpfs (mounted in a user namespace of the test's own)."""
    small = tmp_path / "small"
    small.mkdir()
    script = 'mount -t tmpfs -o size=1m tmpfs "$1" && TMPDIR="$1" exec "$0" -m gradcheck_cli check -i -'
    with big_csv.open("rb") as stdin:
        run = subprocess.run(["unshare", "-rm", "sh", "-c", script, sys.executable, str(small)], stdin=stdin,
                             capture_output=True, timeout=60)
    assert run.returncode == 2, run.stderr
    assert re.fullmatch(rf"gradcheck: error: <stdin>: no space left in {small} after copying \d+ (KB|bytes|MB) of "
                        r"it to a temporary file; free some space there or point TMPDIR at a bigger disk\n",
                        run.stderr.decode()), run.stderr


@LINUX
@pytest.mark.parametrize("output", ["ndjson", "json", "table"])
def test_a_file_that_cannot_be_read_is_exit_2(gradcheck, output):
    """A read error (EIO: /proc/self/mem opens, but its first page cannot be read) is an input problem."""
    run = gradcheck("check", "-i", "/proc/self/mem", "-f", output)
    assert run.exit_code == 2, run
    assert run.stderr == f"gradcheck: error: /proc/self/mem: cannot read: {os.strerror(errno.EIO)}\n", run


# --- the environment ----------------------------------------------------------------------------------------------


def test_no_undocumented_variable_sets_an_option(gradcheck, tmp_path, monkeypatch):
    """No auto_envvar_prefix: GRADCHECK_CHECK_REDUCTION does nothing, and GRADCHECK_CHECK_IMPL runs nothing."""
    marker = tmp_path / "ran"
    (tmp_path / "planted.py").write_text(f"open({str(marker)!r}, 'w').close()\n"
                                         "def f(logits, targets):\n    return 0.0, logits\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    run = gradcheck("check", "--logits", "1,2,3", "--labels", "0", "-f", "json",
                    env={"GRADCHECK_CHECK_REDUCTION": "sum", "GRADCHECK_CHECK_IMPL": "planted:f"})
    assert run.exit_code == 0, run
    assert json.loads(run.stdout)["settings"]["reduction"] == "mean"
    assert not marker.exists()


def _variables_read() -> set[str]:
    """Every environment variable gradcheck reads, from the code: each option's envvar=, os.environ in the
    package, shell completion's, the temporary directory's (tempfile) and rich's."""
    import inspect
    import tempfile

    import rich.console

    from gradcheck_cli.cli import main
    from gradcheck_cli.commands.completion import COMPLETE_VAR

    context = click.Context(main)
    commands = [main, *(main.get_command(context, name) for name in main.list_commands(context))]
    names = {param.envvar for command in commands if command is not None for param in command.params
             if isinstance(param.envvar, str)}
    read = re.compile(r"""environ(?:\.get)?[(\[]\s*["'](\w+)["']""")
    for module in (ROOT / "gradcheck_cli").rglob("*.py"):
        names |= set(read.findall(module.read_text()))
    names |= set(read.findall(inspect.getsource(rich.console)))
    names |= set(re.findall(r"'(T\w+)'", inspect.getsource(tempfile._candidate_tempdir_list)))  # type: ignore[attr-defined]
    return names | {COMPLETE_VAR}


def _named(text: str) -> set[str]:
    return set(re.findall(r"\b_?[A-Z][A-Z0-9_]*[A-Z0-9]\b", text))


def test_every_environment_variable_is_listed_in_help_and_in_the_readme(gradcheck):
    """gradcheck --help and the README name exactly the variables the code reads: nothing runs unlisted."""
    expected = _variables_read()
    assert {"GRADCHECK_ATOL", "GRADCHECK_QUIET", "NO_COLOR", "FORCE_COLOR", "TERM", "COLUMNS", "TMPDIR"} <= expected
    help_text = gradcheck("--help").stdout
    assert _named(help_text.split("Environment", 1)[1]) == expected
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### What gradcheck reads from the environment", 1)[1].split("\n#", 1)[0]
    assert set(re.findall(r"`(_?[A-Z][A-Z0-9_]*)`", section)) == expected
