"""The user's code (`--impl`) can never produce a false verdict, corrupt stdout, hang the run or leave a process.

Every case is a real module written to tmp_path and run by a real `gradcheck` process (or in-process through
CliRunner where descriptors do not matter): exits of the user's code, output at import time, on descriptor 1
and from forked children, endless loops (--impl-timeout), a ./rich.py beside the module, and what is left
running afterwards. The function runs in a forked worker (checks/worker.py); the last cases hold the
in-process fallback (no fork) to the same rules where it can keep them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from gradcheck_cli.checks import worker
from gradcheck_cli.checks.impl import Implementation
from gradcheck_cli.errors import InputError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "my_softmax.py"
ARGS = ("--logits", "1.1,2.2,0.2,-1.7", "--logits", "1,2,3,0.5", "--labels", "2,1")
CORRECT = """
import numpy as np

def correct(z, t):
    m = z.max(1, keepdims=True)
    ls = z - m - np.log(np.exp(z - m).sum(1, keepdims=True))
    return -(t * ls).sum() / len(z), (np.exp(ls) - t) / len(z)
"""


def module(tmp_path: Path, source: str, name: str = "mine") -> Path:
    """A module of the user's: the correct function above, then `source`."""
    path = tmp_path / f"{name}.py"
    path.write_text(CORRECT + textwrap.dedent(source))
    return path


def gradcheck_process(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """gradcheck in a process of its own (-P: as the installed `gradcheck` command, no current directory on its path)."""
    return subprocess.run([sys.executable, "-P", "-m", "gradcheck_cli", "check", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def reference_json(gradcheck, tmp_path: Path) -> dict:
    """The report of the plain correct function: what a check must print whatever else the code does."""
    run = gradcheck("check", *ARGS, "--impl", f"{module(tmp_path, '', 'plain')}:correct", "-f", "json")
    assert run.exit_code == 0 and run.stderr == "", run
    return json.loads(run.stdout)


def alive(pid: int) -> bool:
    """Whether a process still runs (a zombie waiting for a reaper that never comes counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def wait_for_file(path: Path, seconds: float = 30) -> str:
    deadline = time.monotonic() + seconds
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < deadline, f"{path} never written"
        time.sleep(0.02)
    return path.read_text().strip()


def assert_gone(pid: int, seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)  # a process this test started: leave nothing behind, then fail
        pytest.fail(f"process {pid} outlived gradcheck")


# --- exits of the user's code are never a pass -----------------------------------------------------------------------

EXITS = {
    "sys.exit(0)": ("import sys\ndef f(z, t):\n    sys.exit(0)\n", "f called sys.exit(0)"),
    "os._exit(0)": ("import os\ndef f(z, t):\n    os._exit(0)\n",
                    "your code ended the process running it with exit status 0 (os._exit?) while running f"),
    "a crash": ("import os, signal\ndef f(z, t):\n    os.kill(os.getpid(), signal.SIGSEGV)\n",
                "the process running your code was killed by SIGSEGV"),
    "sys.exit at import": ("import sys\nsys.exit(0)\ndef f(z, t):\n    pass\n",
                           "mine.py: it called sys.exit(0) while being imported"),
    "os._exit at import": ("import os\nos._exit(0)\ndef f(z, t):\n    pass\n",
                           "exit status 0 (os._exit?) while importing /"),
    "exit on the second call": ("""
        import os
        calls = []
        def f(z, t):
            calls.append(1)
            if len(calls) == 2:
                os._exit(0)
            return correct(z, t)
        """, "exit status 0 (os._exit?) while running f"),
}


@pytest.mark.parametrize("case", list(EXITS))
def test_an_exit_or_crash_of_the_users_code_is_exit_2_saying_what_happened(tmp_path, case):
    """sys.exit(0) or os._exit(0) in the user's function made gradcheck exit 0 with no output: a false pass."""
    source, message = EXITS[case]
    run = gradcheck_process(*ARGS, "--impl", f"{module(tmp_path, source)}:f", "-f", "json")
    assert run.returncode == 2, run
    assert run.stdout == "", run
    assert len(run.stderr.splitlines()) == 1 and message in run.stderr, run
    assert "gradcheck: error: --impl" in run.stderr


# --- nothing the user's code writes reaches stdout -------------------------------------------------------------------

NOISY = {
    "print at import": "print('imported!')\nf = correct\n",
    "descriptor 1 at import": "import os\nos.write(1, b'imported on fd 1!')\nf = correct\n",
    "descriptor 1 in a call": "import os\ndef f(z, t):\n    os.write(1, b'called on fd 1!')\n    return correct(z, t)\n",
    "a subprocess": ("import subprocess, sys\ndef f(z, t):\n"
                     "    subprocess.run([sys.executable, '-c', 'print(\"from a subprocess!\")'])\n"
                     "    return correct(z, t)\n"),
    "a forked child that returns": (
        "import os\ndef f(z, t):\n    child = os.fork()\n    if child == 0:\n"
        "        print('from the forked child!', flush=True)\n        os.write(1, b'child on fd 1!')\n"
        "    else:\n        os.waitpid(child, 0)\n    return correct(z, t)\n"),
    "a fork at import": ("import os\nif os.fork() == 0:\n    print('forked at import!', flush=True)\nf = correct\n"),
}


@pytest.mark.parametrize("case", list(NOISY))
def test_output_of_the_users_code_goes_to_stderr_and_the_json_is_untouched(gradcheck, tmp_path, case):
    """Output printed at import time, written to descriptor 1, or produced by a fork corrupted the JSON on stdout;
    a forked child that returned from the function answered a second time."""
    expected = reference_json(gradcheck, tmp_path)
    run = gradcheck_process(*ARGS, "--impl", f"{module(tmp_path, NOISY[case])}:f", "-f", "json")
    assert run.returncode == 0, run
    assert run.stdout.count("\n") == 1, run
    report = json.loads(run.stdout)
    assert report["checks"] == expected["checks"] and report["loss"] == expected["loss"]
    assert "!" in run.stderr, run  # what it wrote is passed on, to stderr


# --- --impl-timeout ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("source", "activity"), ids=["a call", "the import"], argvalues=[
    ("""
        import os
        def f(z, t):
            open(os.environ['PID_FILE'], 'w').write(str(os.getpid()))
            while True:
                pass
        """, "running f"),
    ("import os\nopen(os.environ['PID_FILE'], 'w').write(str(os.getpid()))\nwhile True:\n    pass\n", "importing {path}"),
])
def test_an_endless_loop_stops_at_the_timeout_with_exit_2_and_no_process_left(tmp_path, monkeypatch, source, activity):
    """There was no timeout: an endless loop in the user's code ran forever."""
    monkeypatch.setenv("PID_FILE", str(tmp_path / "pid"))
    started = time.monotonic()
    path = module(tmp_path, source)
    run = gradcheck_process(*ARGS, "--impl", f"{path}:f", "--impl-timeout", "0.5")
    assert time.monotonic() - started < 30
    assert run.returncode == 2 and run.stdout == "", run
    assert f"--impl {path}:f: {activity.format(path=path)} took longer than 0.5 s (--impl-timeout)" in run.stderr, run
    assert_gone(int(wait_for_file(tmp_path / "pid")))


def test_what_the_users_code_started_is_stopped_with_it(tmp_path, monkeypatch):
    """A process the user's function forks and leaves running is killed with the worker (its process group)."""
    monkeypatch.setenv("PID_FILE", str(tmp_path / "pid"))
    source = """
        import os, time
        def f(z, t):
            pid_file = os.environ['PID_FILE']
            if not os.path.exists(pid_file) and os.fork() == 0:  # once, on the first call
                open(pid_file + '.part', 'w').write(str(os.getpid()))
                os.rename(pid_file + '.part', pid_file)
                time.sleep(600)
                os._exit(0)
            while not os.path.exists(pid_file):
                time.sleep(0.01)
            return correct(z, t)
        """
    run = gradcheck_process(*ARGS, "--impl", f"{module(tmp_path, source)}:f", "-q")
    assert run.returncode == 0, run
    assert_gone(int(wait_for_file(tmp_path / "pid")))


def test_the_worker_dies_with_gradcheck(tmp_path, monkeypatch):
    """gradcheck killed (SIGKILL, no cleanup) while the user's function loops: the worker must not run on."""
    monkeypatch.setenv("PID_FILE", str(tmp_path / "pid"))
    source = """
        import os
        def f(z, t):
            open(os.environ['PID_FILE'], 'w').write(str(os.getpid()))
            while True:
                pass
        """
    process = subprocess.Popen([sys.executable, "-m", "gradcheck_cli", "check", *ARGS, "--impl",
                                f"{module(tmp_path, source)}:f"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               stdin=subprocess.DEVNULL)
    try:
        worker_pid = int(wait_for_file(tmp_path / "pid"))
    finally:
        process.kill()
        process.wait()
    assert_gone(worker_pid)


def test_ctrl_c_during_a_call_stops_the_worker_and_exits_130(tmp_path, monkeypatch):
    """Ctrl-C while the user's function runs: gradcheck exits 130 as anywhere else, and the worker goes with it."""
    monkeypatch.setenv("PID_FILE", str(tmp_path / "pid"))
    source = """
        import os, time
        def f(z, t):
            open(os.environ['PID_FILE'], 'w').write(str(os.getpid()))
            time.sleep(600)
        """
    process = subprocess.Popen([sys.executable, "-m", "gradcheck_cli", "check", *ARGS, "--impl",
                                f"{module(tmp_path, source)}:f"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, text=True)
    interrupted_cleanly(process, tmp_path / "pid")


def interrupted_cleanly(process: subprocess.Popen, pid_file: Path, timeout: float = 30) -> None:
    """Ctrl-C once the worker has written its pid: exit 130, nothing on stdout, and the worker gone."""
    try:
        worker_pid = int(wait_for_file(pid_file, timeout))
        process.send_signal(signal.SIGINT)
        stdout, _ = process.communicate(timeout=30)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 130 and stdout == ""
    assert_gone(worker_pid)


def test_the_timeout_option_names_its_default_and_refuses_nonsense(gradcheck):
    """--impl-timeout's default is the library's (checks.worker.DEFAULT_TIMEOUT), shown in --help."""
    help_text = " ".join(gradcheck("check", "--help").stdout.split())
    expected = ("--impl-timeout SECONDS Longest the import of --impl's module, or one call of its function, may take; "
                f"past it the check stops with exit 2. [default: {worker.DEFAULT_TIMEOUT}]")
    assert expected in help_text
    for value in ("0", "-1", "inf", "soon"):
        run = gradcheck("check", *ARGS, "--impl", f"{EXAMPLE}:softmax_cross_entropy", "--impl-timeout", value)
        assert run.exit_code == 2 and "--impl-timeout" in run.stderr, run


# --- only what the user named is imported --------------------------------------------------------------------------


def test_a_module_beside_the_users_is_not_imported_by_gradcheck(tmp_path):
    """`--impl mine:f` put the current directory first on gradcheck's sys.path, so a ./rich.py ran in the renderer."""
    (tmp_path / "rich.py").write_text("open('pwned', 'w').close()\nraise SystemExit('a ./rich.py was imported')\n")
    (tmp_path / "helper.py").write_text("SCALE = 1.0\n")
    (tmp_path / "mine.py").write_text(CORRECT + "import helper\nf = correct\n")  # its own siblings still import
    run = gradcheck_process(*ARGS, "--impl", "mine:f", cwd=tmp_path)
    assert run.returncode == 0, run
    assert "PASS: all 7 checks agree" in run.stdout, run  # the tables, drawn by rich: gradcheck's, not ./rich.py
    assert not (tmp_path / "pwned").exists()


def test_a_file_module_imports_its_own_siblings_and_dataclasses(tmp_path):
    """path/to/file.py:f looks in the file's own directory first, and is registered while it runs (dataclasses)."""
    package = tmp_path / "code"
    package.mkdir()
    (package / "helper.py").write_text("SCALE = 1.0\n")
    (package / "mine.py").write_text(CORRECT + "import dataclasses, helper\n@dataclasses.dataclass\nclass A:\n"
                                     "    x: int = 1\nf = correct\n")
    run = gradcheck_process(*ARGS, "--impl", f"{package / 'mine.py'}:f", "-q", cwd=tmp_path)
    assert run.returncode == 0, run


# --- the worker's answers are the function's, exactly -------------------------------------------------------------------


@pytest.mark.parametrize(("function", "reduction"), [("softmax_cross_entropy", "mean"),
                                                    ("forgot_one_over_n", "mean"), ("float32", "none")])
def test_the_worker_gives_the_same_report_as_a_call_in_this_process(gradcheck, tmp_path, monkeypatch, function,
                                                                    reduction):
    """Logits sent once and then only the elements that move must give the same numbers as copying them whole."""
    path = module(tmp_path, """
        def float32(z, t):
            z = z.astype(np.float32)
            t = t.astype(np.float32)
            m = z.max(1, keepdims=True)
            ls = z - m - np.log(np.exp(z - m).sum(1, keepdims=True))
            rows = -(t * ls).sum(1)
            return rows, np.exp(ls) - t
        """)
    spec = f"{EXAMPLE}:{function}" if function != "float32" else f"{path}:float32"
    args = ("check", *ARGS, "--logits", "1000,0,-1000,3", "--labels", "2,1,0", "--reduction", reduction,
            "--impl", spec, "-f", "json")
    forked = gradcheck(*args)
    monkeypatch.setattr(worker, "can_fork", lambda: False)
    in_process = gradcheck(*args)
    assert forked.exit_code == in_process.exit_code and forked.exit_code in (0, 1), (forked, in_process)
    assert forked.stdout == in_process.stdout


def test_calls_sent_ahead_never_wait_on_a_full_pipe(tmp_path):
    """8000 x 40 row losses: each call sent ahead moves a column of 8000 logits (128 KB) and answers 8000 losses
    (64 KB), more than both pipes hold; gradcheck must write requests only as the pipe takes them while it reads
    answers, or both processes wait on each other forever."""
    rng = np.random.default_rng(3)
    rows = np.column_stack([rng.normal(0, 2, (8000, 40)).round(6), rng.integers(0, 40, 8000)])
    data = tmp_path / "wide.csv"
    np.savetxt(data, rows, delimiter=",", fmt=["%.6f"] * 40 + ["%d"],
               header=",".join([*(f"z{j}" for j in range(40)), "label"]), comments="")
    path = module(tmp_path, """
        def rows(z, t):
            m = z.max(1, keepdims=True)
            ls = z - m - np.log(np.exp(z - m).sum(1, keepdims=True))
            return -(t * ls).sum(1), np.exp(ls) - t
        """)
    run = gradcheck_process("-i", str(data), "--reduction", "none", "--impl", f"{path}:rows", "-q", timeout=120)
    assert run.returncode == 0, run


def test_close_stops_the_worker_and_leaves_nothing(tmp_path):
    """Implementation.load starts a worker; leaving its `with` (an error included) kills and reaps it."""
    path = module(tmp_path, "import os\ndef pid(z, t):\n    return float(os.getpid()), np.zeros_like(z)\n")
    with pytest.raises(RuntimeError), Implementation.load(f"{path}:pid") as implementation:
        loss, _ = implementation.call(np.zeros((1, 2)), np.array([[1.0, 0.0]]), "mean")
        worker_pid = int(loss)
        assert worker_pid != os.getpid() and alive(worker_pid)
        raise RuntimeError("the check stops here")
    assert not alive(worker_pid)


def test_after_an_error_the_worker_is_called_on_the_right_logits(tmp_path):
    """The worker keeps logits it was sent even when the call then fails: the next call must not reuse them."""
    path = module(tmp_path, """
        def picky(z, t):
            if z[0, 0] > 100:
                raise ValueError('too large')
            return float(z[0, 0]), np.zeros_like(z)
        """)
    small, large, targets = np.array([[1.0, 2.0]]), np.array([[1000.0, 2.0]]), np.array([[1.0, 0.0]])
    with Implementation.load(f"{path}:picky") as implementation:
        assert float(implementation.call(small, targets, "mean")[0]) == 1.0
        with pytest.raises(InputError, match="picky raised ValueError: too large"):
            implementation.call(large, targets, "mean")
        assert float(implementation.call(small, targets, "mean")[0]) == 1.0


def test_an_array_changed_in_place_after_a_call_is_sent_again(tmp_path):
    """Protects the worker's fingerprints of what it holds (worker._Worker.call keeps no copy): a buffer the
    caller reuses, its values changed in place (a zero's sign included), is sent again, never taken as held."""
    path = module(tmp_path, """
        def first(z, t):
            return float(np.copysign(1.0, z[0, 0]) * (1 + abs(z[0, 0]))), np.zeros_like(z)
        """)
    buffer, targets = np.array([[0.0, 2.0]]), np.array([[1.0, 0.0]])
    with Implementation.load(f"{path}:first") as implementation:
        assert float(implementation.call(buffer, targets, "mean")[0]) == 1.0
        buffer[0, 0] = -0.0
        assert float(implementation.call(buffer, targets, "mean")[0]) == -1.0
        buffer[0, 0] = 4.0
        assert float(implementation.call(buffer, targets, "mean")[0]) == 5.0


def _open_memory_files() -> int:
    return sum("memfd:" in os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
               if os.path.exists(f"/proc/self/fd/{fd}"))


def test_large_arrays_cross_in_memory_files_exactly_and_none_is_left_open(tmp_path):
    """Protects the memory-file transfer (worker_process._encode): 300 x 1,000 logits (2.4 MB, over
    _SHARED_BYTES) reach the worker bit for bit (-0.0, a subnormal), its gradient comes back bit for
    bit as a writable array mapped from a memory file (not pickled through the pipe), and once the worker is
    closed this process holds no memory file."""
    path = module(tmp_path, """
        def echo(z, t):
            return float(np.sum(z == -0.0)), z.copy()
        """)
    logits = np.random.default_rng(5).standard_normal((300, 1000))
    logits[0, :3] = [-0.0, 5e-324, np.nextafter(1.0, 2.0)]
    targets = np.eye(1000)[np.arange(300) % 1000]
    before = _open_memory_files()
    with Implementation.load(f"{path}:echo") as implementation:
        _, gradient = implementation.call(logits, targets, "mean")
        assert np.array_equal(gradient.view(np.uint64), logits.view(np.uint64))
        assert gradient.flags.writeable and not gradient.flags.owndata
        base = gradient
        while getattr(base, "base", None) is not None and not isinstance(base, memoryview):
            base = base.base
        assert "mmap" in type(getattr(base, "obj", base)).__name__, type(base)
        gradient[0, 0] = 7.0  # copy-on-write: the worker's copy is untouched, the next call agrees again
        assert np.array_equal(implementation.call(logits, targets, "mean")[1], logits)
    del gradient, base  # a mapped array holds its file until it goes
    assert _open_memory_files() == before


# --- where there is no fork: the same rules, in this process --------------------------------------------------------


@pytest.fixture
def no_fork(monkeypatch):
    monkeypatch.setattr(worker, "can_fork", lambda: False)


def test_in_process_an_exit_is_still_exit_2(gradcheck, tmp_path, no_fork):
    path = module(tmp_path, "import sys\ndef f(z, t):\n    sys.exit(0)\n", "in_process_exit")
    run = gradcheck("check", *ARGS, "--impl", f"{path}:f")
    assert run.exit_code == 2 and "f called sys.exit(0)" in run.stderr, run
    assert run.stdout == ""


def test_in_process_descriptor_1_goes_to_stderr_and_sys_path_is_left_as_it_was(gradcheck, tmp_path, capfd, no_fork):
    source = """
        import os
        os.write(1, b'import on fd 1|')
        def f(z, t):
            os.write(1, b'call on fd 1|')
            return correct(z, t)
        """
    path_before = list(sys.path)
    run = gradcheck("check", *ARGS, "--impl", f"{module(tmp_path, source, 'in_process_mine')}:f", "-f", "json")
    assert run.exit_code == 0, run
    json.loads(run.stdout)
    captured = capfd.readouterr()
    assert "on fd 1" not in captured.out
    assert "import on fd 1|" in captured.err and "call on fd 1|" in captured.err
    assert sys.path == path_before


def test_python_m_does_not_import_a_module_of_the_current_directory(tmp_path):
    """`python -m gradcheck_cli` from a folder holding a rich.py must not run it (python -m puts cwd first)."""
    (tmp_path / "rich.py").write_text("raise SystemExit('the rich.py of the current directory ran')\n")
    run = subprocess.run([sys.executable, "-m", "gradcheck_cli", "check", "--logits", "1,2", "--labels", "0", "-q"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert run.returncode == 0 and run.stdout.startswith("PASS"), run.stderr
